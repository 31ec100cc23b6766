//! [`MySqlFeed`]: the shared key events in a MySQL/MariaDB table, polled.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};

use super::event::SharedEvent;
use super::feed::{FeedEntry, FeedError, KeyStateFeed, READ_BATCH};
use super::outbox::Outbox;
use crate::sql_error::transient;

/// The default poll interval: every instance acts on a change well within a second.
const POLL: Duration = Duration::from_millis(200);

/// A [`KeyStateFeed`] on MySQL or MariaDB: a `key_events` table (an `AUTO_INCREMENT` sequence
/// and one JSON row per event) in the connection's database, read every 200 ms (MySQL has no
/// notifications; one indexed range query per poll).
///
/// Writes go through a bounded queue and a task that retries with backoff while the server is
/// away; connections are re-established as needed.
///
/// ```no_run
/// use gemini_balance::keys::KeyPool;
/// use gemini_balance::keys::shared::{MySqlFeed, SharedKeys};
///
/// # async fn run(pool: KeyPool) -> Result<(), Box<dyn std::error::Error>> {
/// let feed = MySqlFeed::connect("mysql://proxy@db.internal:3306/gemini").await?;
/// let shared = SharedKeys::start(pool, feed).await;
/// # Ok(())
/// # }
/// ```
pub struct MySqlFeed {
    pool: MySqlPool,
    outbox: Outbox,
    poll: Duration,
}

impl fmt::Debug for MySqlFeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MySqlFeed")
            .field("poll", &self.poll)
            .field("dropped", &self.outbox.dropped())
            .finish_non_exhaustive()
    }
}

fn err(what: &str) -> impl FnOnce(sqlx::Error) -> FeedError + '_ {
    move |e| {
        let permanent = !transient(&e);
        FeedError::with_source(what.to_owned(), e).permanent(permanent)
    }
}

impl MySqlFeed {
    /// Connects to `url` (`mysql://user:password@host:port/database`) and creates the table if
    /// needed. The password never appears in errors.
    pub async fn connect(url: &str) -> Result<Self, FeedError> {
        let options = MySqlConnectOptions::from_str(url)
            .map_err(|_| FeedError::new("not a MySQL URL (mysql://user@host:3306/database)"))?;
        Self::connect_with(options).await
    }

    /// Connects with prepared options (the Python server's `MYSQL_*` settings, a socket).
    pub async fn connect_with(options: MySqlConnectOptions) -> Result<Self, FeedError> {
        let pool = MySqlPoolOptions::new()
            .max_connections(3)
            .acquire_timeout(Duration::from_secs(3))
            .connect_with(options)
            .await
            .map_err(err("connecting to MySQL"))?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS key_events (\
               seq BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, \
               body TEXT NOT NULL\
             ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
        )
        .execute(&pool)
        .await
        .map_err(err("creating key_events"))?;
        let writer = pool.clone();
        let outbox = Outbox::spawn(move |rows: Vec<String>| {
            let pool = writer.clone();
            async move {
                let mut sql = String::from("INSERT INTO key_events (body) VALUES ");
                for i in 0..rows.len() {
                    sql.push_str(if i == 0 { "(?)" } else { ",(?)" });
                }
                let mut query = sqlx::query(&sql);
                for row in rows {
                    query = query.bind(row);
                }
                query
                    .execute(&pool)
                    .await
                    .map_err(err("writing key_events"))?;
                Ok(())
            }
        });
        Ok(MySqlFeed {
            pool,
            outbox,
            poll: POLL,
        })
    }

    /// Reads every `poll` instead of every 200 ms.
    pub fn poll_every(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// Events dropped: the queue was full (the server away for long), or the server refused
    /// to store them (a permanent error, such as a missing table; logged).
    pub fn dropped(&self) -> u64 {
        self.outbox.dropped()
    }
}

impl KeyStateFeed for MySqlFeed {
    fn publish(&self, event: SharedEvent) {
        self.outbox.send(event);
    }

    async fn flush(&self) {
        self.outbox.flushed().await;
    }

    async fn read_after(&self, seq: u64) -> Result<Vec<FeedEntry>, FeedError> {
        let rows: Vec<(u64, String)> =
            sqlx::query_as("SELECT seq, body FROM key_events WHERE seq > ? ORDER BY seq LIMIT ?")
                .bind(seq)
                .bind(READ_BATCH as u64)
                .fetch_all(&self.pool)
                .await
                .map_err(err("reading key_events"))?;
        Ok(rows
            .into_iter()
            .filter_map(|(seq, body)| {
                Some(FeedEntry {
                    seq,
                    event: SharedEvent::from_json(&body)?,
                })
            })
            .collect())
    }

    async fn changed(&self) {
        tokio::time::sleep(self.poll).await;
    }

    async fn delete(&self, seqs: Vec<u64>) -> Result<(), FeedError> {
        for chunk in seqs.chunks(500) {
            let mut sql = String::from("DELETE FROM key_events WHERE seq IN (");
            for i in 0..chunk.len() {
                sql.push_str(if i == 0 { "?" } else { ",?" });
            }
            sql.push(')');
            let mut query = sqlx::query(&sql);
            for seq in chunk {
                query = query.bind(*seq);
            }
            query
                .execute(&self.pool)
                .await
                .map_err(err("pruning key_events"))?;
        }
        Ok(())
    }
}
