//! The queue between [`KeyStateFeed::publish`](super::KeyStateFeed::publish) and a database:
//! the request path only does a non-blocking send; a task writes batches and retries them with
//! backoff while the database is away.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::event::SharedEvent;
use super::feed::FeedError;

/// Events queued at most; more are dropped (and counted) while the database is away.
const CAPACITY: usize = 4096;
/// Events written per statement at most.
const BATCH: usize = 256;

pub(super) struct Outbox {
    tx: mpsc::Sender<SharedEvent>,
    dropped: Arc<AtomicU64>,
}

impl Outbox {
    /// Starts the writer task; `write` stores one batch of JSON rows.
    pub(super) fn spawn<W, Fut>(mut write: W) -> Outbox
    where
        W: FnMut(Vec<String>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), FeedError>> + Send,
    {
        let (tx, mut rx) = mpsc::channel::<SharedEvent>(CAPACITY);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first.to_json()];
                while batch.len() < BATCH {
                    match rx.try_recv() {
                        Ok(event) => batch.push(event.to_json()),
                        Err(_) => break,
                    }
                }
                let mut backoff = Duration::from_millis(100);
                let mut failing = false;
                loop {
                    match write(batch.clone()).await {
                        Ok(()) => {
                            if failing {
                                tracing::info!(
                                    events = batch.len(),
                                    "shared key events written after the database came back"
                                );
                            }
                            break;
                        }
                        Err(e) => {
                            if !failing {
                                tracing::warn!(error = %e, events = batch.len(), "shared key events not written yet; retrying");
                                failing = true;
                            }
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                        }
                    }
                }
            }
        });
        Outbox {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    pub(super) fn send(&self, event: SharedEvent) {
        if self.tx.try_send(event).is_err() {
            let before = self.dropped.fetch_add(1, Ordering::Relaxed);
            if before.is_power_of_two() || before == 0 {
                tracing::warn!(
                    dropped = before + 1,
                    "shared key event queue full: the database is away too long; events dropped"
                );
            }
        }
    }

    pub(super) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}
