//! The queue between [`KeyStateFeed::publish`](super::KeyStateFeed::publish) and a database:
//! the request path only does a non-blocking send; a task writes batches and retries them with
//! backoff while the database is away. A batch the database refuses (a permanent error) is
//! dropped and counted, so that it cannot hold up every later event.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::event::SharedEvent;
use super::feed::FeedError;

/// Events queued at most; more are dropped (and counted) while the database is away.
const CAPACITY: usize = 4096;
/// Events written per statement at most.
const BATCH: usize = 256;

pub(super) struct Outbox {
    tx: mpsc::Sender<SharedEvent>,
    dropped: Arc<AtomicU64>,
    /// Events accepted and not yet written.
    pending: Arc<watch::Sender<u64>>,
}

impl Outbox {
    /// Starts the writer task; `write` stores one batch of JSON rows.
    pub(super) fn spawn<W, Fut>(mut write: W) -> Outbox
    where
        W: FnMut(Vec<String>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), FeedError>> + Send,
    {
        let (tx, mut rx) = mpsc::channel::<SharedEvent>(CAPACITY);
        let dropped = Arc::new(AtomicU64::new(0));
        let counted = dropped.clone();
        let refusals = AtomicU64::new(0);
        let pending = Arc::new(watch::Sender::new(0u64));
        let written = pending.clone();
        tokio::spawn(async move {
            let dropped = counted;
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
                            let done = batch.len() as u64;
                            written.send_modify(|n| *n = n.saturating_sub(done));
                            break;
                        }
                        Err(e) if e.is_permanent() => {
                            // Retrying a refused statement would stop every later event.
                            let done = batch.len() as u64;
                            written.send_modify(|n| *n = n.saturating_sub(done));
                            let before = dropped.fetch_add(batch.len() as u64, Ordering::Relaxed);
                            let refused = refusals.fetch_add(1, Ordering::Relaxed);
                            if refused.is_power_of_two() || refused == 0 {
                                tracing::warn!(error = %e, events = batch.len(), dropped = before + batch.len() as u64, "shared key events refused by the database; dropped");
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
            dropped,
            pending,
        }
    }

    pub(super) fn send(&self, event: SharedEvent) {
        // Counted before the send, so that the writer never takes away more than was added.
        self.pending.send_modify(|n| *n += 1);
        if self.tx.try_send(event).is_err() {
            self.pending.send_modify(|n| *n = n.saturating_sub(1));
            let before = self.dropped.fetch_add(1, Ordering::Relaxed);
            if before.is_power_of_two() || before == 0 {
                tracing::warn!(
                    dropped = before + 1,
                    "shared key event queue full: the database is away too long; events dropped"
                );
            }
        }
    }

    /// Events dropped: the queue full, or refused by the database.
    pub(super) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Resolves once every event accepted so far is written.
    pub(super) async fn flushed(&self) {
        let mut pending = self.pending.subscribe();
        let _ = pending.wait_for(|n| *n == 0).await;
    }
}
