//! [`PostgresFeed`]: the shared key events in a PostgreSQL table, with `LISTEN/NOTIFY`.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use tokio::sync::Notify;

use super::event::SharedEvent;
use super::feed::{FeedEntry, FeedError, KeyStateFeed, READ_BATCH};
use super::outbox::Outbox;
use crate::sql_error::transient;

/// The `NOTIFY` channel (database-wide; a wake-up only, the rows are the truth).
const CHANNEL: &str = "gemini_balance_key_events";
/// Reads happen at least this often, should a notification be lost (a reconnecting listener).
const POLL: Duration = Duration::from_millis(500);

/// A [`KeyStateFeed`] on PostgreSQL: a `key_events` table (a sequence and one JSON row per
/// event) in the connection's schema, and a `NOTIFY` on every write so the other instances
/// read at once; a poll every 500 ms covers a lost notification.
///
/// Writes go through a bounded queue and a task that retries with backoff while the server is
/// away; connections are re-established as needed.
///
/// ```no_run
/// use gemini_balance::keys::KeyPool;
/// use gemini_balance::keys::shared::{PostgresFeed, SharedKeys};
///
/// # async fn run(pool: KeyPool) -> Result<(), Box<dyn std::error::Error>> {
/// let feed = PostgresFeed::connect("postgres://proxy@db.internal/gemini").await?;
/// let shared = SharedKeys::start(pool, feed).await;
/// # Ok(())
/// # }
/// ```
pub struct PostgresFeed {
    pool: PgPool,
    outbox: Outbox,
    wake: Arc<Notify>,
    listener: tokio::task::JoinHandle<()>,
}

impl fmt::Debug for PostgresFeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresFeed")
            .field("dropped", &self.outbox.dropped())
            .finish_non_exhaustive()
    }
}

impl Drop for PostgresFeed {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

fn err(what: &str) -> impl FnOnce(sqlx::Error) -> FeedError + '_ {
    move |e| {
        let permanent = !transient(&e);
        FeedError::with_source(what.to_owned(), e).permanent(permanent)
    }
}

impl PostgresFeed {
    /// Connects to `url` (`postgres://user:password@host:port/database`) and creates the table
    /// if needed. The password never appears in errors.
    pub async fn connect(url: &str) -> Result<Self, FeedError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|_| FeedError::new("not a PostgreSQL URL (postgres://user@host/database)"))?;
        Self::connect_with(options).await
    }

    /// Connects with prepared options (for a schema: `.options([("search_path", "mine")])`).
    pub async fn connect_with(options: PgConnectOptions) -> Result<Self, FeedError> {
        let pool = PgPoolOptions::new()
            .max_connections(3)
            .acquire_timeout(Duration::from_secs(3))
            .connect_with(options)
            .await
            .map_err(err("connecting to PostgreSQL"))?;
        let mut tx = pool.begin().await.map_err(err("creating key_events"))?;
        // Instances starting together: one creates, the others wait and find it.
        sqlx::query("SELECT pg_advisory_xact_lock(7154826517)")
            .execute(&mut *tx)
            .await
            .map_err(err("creating key_events"))?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS key_events (seq BIGSERIAL PRIMARY KEY, body TEXT NOT NULL)",
        )
        .execute(&mut *tx)
        .await
        .map_err(err("creating key_events"))?;
        tx.commit().await.map_err(err("creating key_events"))?;

        let wake = Arc::new(Notify::new());
        let listener = tokio::spawn(listen(pool.clone(), wake.clone()));
        let writer = pool.clone();
        let outbox = Outbox::spawn(move |rows| {
            let pool = writer.clone();
            async move {
                let mut tx = pool.begin().await.map_err(err("writing key_events"))?;
                sqlx::query("INSERT INTO key_events (body) SELECT unnest($1::text[])")
                    .bind(rows)
                    .execute(&mut *tx)
                    .await
                    .map_err(err("writing key_events"))?;
                // Delivered at commit, to every listening instance.
                sqlx::query("SELECT pg_notify($1, '')")
                    .bind(CHANNEL)
                    .execute(&mut *tx)
                    .await
                    .map_err(err("writing key_events"))?;
                tx.commit().await.map_err(err("writing key_events"))
            }
        });
        Ok(PostgresFeed {
            pool,
            outbox,
            wake,
            listener,
        })
    }

    /// Events dropped: the queue was full (the server away for long), or the server refused
    /// to store them (a permanent error, such as a missing table; logged).
    pub fn dropped(&self) -> u64 {
        self.outbox.dropped()
    }
}

/// Wakes the reader on every notification; reconnects with backoff.
async fn listen(pool: PgPool, wake: Arc<Notify>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let listener = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        match listener.await {
            Ok(mut listener) => {
                backoff = Duration::from_millis(100);
                // Whatever was written while not listening.
                wake.notify_one();
                while listener.recv().await.is_ok() {
                    wake.notify_one();
                }
            }
            Err(e) => tracing::debug!(error = %e, "LISTEN on PostgreSQL failed; retrying"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

impl KeyStateFeed for PostgresFeed {
    fn publish(&self, event: SharedEvent) {
        self.outbox.send(event);
    }

    async fn flush(&self) {
        self.outbox.flushed().await;
    }

    async fn read_after(&self, seq: u64) -> Result<Vec<FeedEntry>, FeedError> {
        let rows: Vec<(i64, String)> =
            sqlx::query_as("SELECT seq, body FROM key_events WHERE seq > $1 ORDER BY seq LIMIT $2")
                .bind(i64::try_from(seq).unwrap_or(i64::MAX))
                .bind(READ_BATCH as i64)
                .fetch_all(&self.pool)
                .await
                .map_err(err("reading key_events"))?;
        Ok(entries(rows))
    }

    async fn changed(&self) {
        let _ = tokio::time::timeout(POLL, self.wake.notified()).await;
    }

    async fn delete(&self, seqs: Vec<u64>) -> Result<(), FeedError> {
        let seqs: Vec<i64> = seqs
            .into_iter()
            .filter_map(|s| i64::try_from(s).ok())
            .collect();
        sqlx::query("DELETE FROM key_events WHERE seq = ANY($1)")
            .bind(seqs)
            .execute(&self.pool)
            .await
            .map_err(err("pruning key_events"))?;
        Ok(())
    }
}

/// Rows to entries; a row this version cannot read (written by a newer one) is skipped.
pub(super) fn entries(rows: Vec<(i64, String)>) -> Vec<FeedEntry> {
    rows.into_iter()
        .filter_map(|(seq, body)| {
            Some(FeedEntry {
                seq: u64::try_from(seq).ok()?,
                event: SharedEvent::from_json(&body)?,
            })
        })
        .collect()
}
