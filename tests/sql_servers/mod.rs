//! The PostgreSQL and MySQL/MariaDB servers the SQL store tests run against, from
//! `GEMINI_BALANCE_TEST_POSTGRES_URL` (e.g. `postgres://postgres@127.0.0.1:5432/test`) and
//! `GEMINI_BALANCE_TEST_MYSQL_URL` (e.g. `mysql://root@127.0.0.1:3306`), which `.ci/run` sets.
//! Unset: the test is skipped with a notice, except under CI (`CI=true`), where it fails.
//! Each test gets a schema (PostgreSQL) or database (MySQL) of its own, dropped afterwards.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};

use gemini_balance::store::sql::SqlStoreBuilder;
use gemini_balance::store::SqlStore;
use sqlx::Connection;

/// The engines a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    Postgres,
    MySql,
}

impl Server {
    pub const ALL: [Server; 2] = [Server::Postgres, Server::MySql];

    fn variable(self) -> &'static str {
        match self {
            Server::Postgres => "GEMINI_BALANCE_TEST_POSTGRES_URL",
            Server::MySql => "GEMINI_BALANCE_TEST_MYSQL_URL",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Server::Postgres => "postgres",
            Server::MySql => "mysql",
        }
    }

    /// The server's URL, or `None` (with a notice) outside CI when unset.
    pub fn url(self) -> Option<String> {
        match std::env::var(self.variable()) {
            Ok(url) if !url.is_empty() => Some(url.trim_end_matches('/').to_owned()),
            _ if std::env::var("CI").is_ok_and(|v| v == "true") => panic!(
                "{} is not set: under CI the {} store tests must run (bash .ci/run sets it)",
                self.variable(),
                self.name()
            ),
            _ => {
                eprintln!(
                    "\n*** SKIPPED: {} is not set; the {} store tests did not run ***\n",
                    self.variable(),
                    self.name()
                );
                None
            }
        }
    }
}

/// A schema or database of one test; dropped with this value.
#[derive(Debug)]
pub struct TestDb {
    pub server: Server,
    /// The server URL (PostgreSQL: the database holding the schema; MySQL: no database).
    server_url: String,
    /// The schema (PostgreSQL) or database (MySQL).
    pub name: String,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl TestDb {
    /// A fresh schema or database for `test`, or `None` when the server is not configured.
    pub fn new(server: Server, test: &str) -> Option<TestDb> {
        let server_url = server.url()?;
        let name = format!(
            "gbt_{}_{}_{}",
            test.chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(30)
                .collect::<String>(),
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let db = TestDb {
            server,
            server_url,
            name,
        };
        db.admin(&format!(
            "DROP {} IF EXISTS {}",
            db.kind(),
            db.drop_target()
        ));
        if server == Server::MySql {
            db.admin(&format!("CREATE DATABASE {}", db.name));
        }
        Some(db)
    }

    fn kind(&self) -> &'static str {
        match self.server {
            Server::Postgres => "SCHEMA",
            Server::MySql => "DATABASE",
        }
    }

    fn drop_target(&self) -> String {
        match self.server {
            Server::Postgres => format!("{} CASCADE", self.name),
            Server::MySql => self.name.clone(),
        }
    }

    /// The store's URL.
    pub fn url(&self) -> String {
        match self.server {
            Server::Postgres => self.server_url.clone(),
            Server::MySql => format!("{}/{}", self.server_url, self.name),
        }
    }

    /// A builder for a store in this schema or database.
    pub fn builder(&self) -> SqlStoreBuilder {
        SqlStore::builder(&self.url()).schema(self.name.clone())
    }

    /// A builder for a store in this schema or database, reached through `relay`.
    pub fn builder_through(&self, relay: &Relay) -> SqlStoreBuilder {
        SqlStore::builder(&relay.url(&self.url())).schema(self.name.clone())
    }

    /// A relay to this server.
    pub fn relay(&self) -> Relay {
        Relay::to(&self.url())
    }

    /// Runs one statement on a connection of its own (on a thread of its own, so that it
    /// works from sync and async tests alike).
    pub fn admin(&self, sql: &str) {
        let (server, url, sql) = (self.server, self.server_url.clone(), sql.to_owned());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                match server {
                    Server::Postgres => {
                        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
                        sqlx::raw_sql(&sql).execute(&mut conn).await.unwrap();
                    }
                    Server::MySql => {
                        let mut conn = sqlx::MySqlConnection::connect(&url).await.unwrap();
                        sqlx::raw_sql(&sql).execute(&mut conn).await.unwrap();
                    }
                }
            })
        })
        .join()
        .unwrap();
    }

    /// A number a query in this schema or database answers.
    pub fn count(&self, sql: &str) -> i64 {
        let server = self.server;
        let url = self.url();
        let schema = self.name.clone();
        let sql = sql.to_owned();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                match server {
                    Server::Postgres => {
                        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
                        sqlx::raw_sql(&format!("SET search_path TO {schema}"))
                            .execute(&mut conn)
                            .await
                            .unwrap();
                        sqlx::query_scalar::<_, i64>(&format!("SELECT CAST(({sql}) AS BIGINT)"))
                            .fetch_one(&mut conn)
                            .await
                            .unwrap()
                    }
                    Server::MySql => {
                        let mut conn = sqlx::MySqlConnection::connect(&url).await.unwrap();
                        sqlx::query_scalar::<_, i64>(&format!("SELECT CAST(({sql}) AS SIGNED)"))
                            .fetch_one(&mut conn)
                            .await
                            .unwrap()
                    }
                }
            })
        })
        .join()
        .unwrap()
    }

    /// Every text column of every row of `table`, for looking for secrets.
    pub fn dump(&self, table: &str) -> String {
        let server = self.server;
        let url = self.url();
        let schema = self.name.clone();
        let table = table.to_owned();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                match server {
                    Server::Postgres => {
                        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
                        sqlx::raw_sql(&format!("SET search_path TO {schema}"))
                            .execute(&mut conn)
                            .await
                            .unwrap();
                        let rows: Vec<String> =
                            sqlx::query_scalar(&format!("SELECT CAST(t.* AS TEXT) FROM {table} t"))
                                .fetch_all(&mut conn)
                                .await
                                .unwrap();
                        rows.join("\n")
                    }
                    Server::MySql => {
                        let mut conn = sqlx::MySqlConnection::connect(&url).await.unwrap();
                        let columns: Vec<String> = sqlx::query_scalar(
                            "SELECT CAST(column_name AS CHAR) FROM information_schema.columns \
                             WHERE table_schema = DATABASE() AND table_name = ?",
                        )
                        .bind(&table)
                        .fetch_all(&mut conn)
                        .await
                        .unwrap();
                        let concat = columns
                            .iter()
                            .map(|c| format!("COALESCE(CAST({c} AS CHAR), '')"))
                            .collect::<Vec<_>>()
                            .join(", '|', ");
                        let rows: Vec<String> = sqlx::query_scalar(&format!(
                            "SELECT CAST(CONCAT({concat}) AS CHAR) FROM {table}"
                        ))
                        .fetch_all(&mut conn)
                        .await
                        .unwrap();
                        rows.join("\n")
                    }
                }
            })
        })
        .join()
        .unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let sql = format!("DROP {} IF EXISTS {}", self.kind(), self.drop_target());
        let (server, url) = (self.server, self.server_url.clone());
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async move {
                match server {
                    Server::Postgres => {
                        let mut conn = sqlx::PgConnection::connect(&url).await.ok()?;
                        sqlx::raw_sql(&sql)
                            .execute(&mut conn)
                            .await
                            .ok()
                            .map(|_| ())
                    }
                    Server::MySql => {
                        let mut conn = sqlx::MySqlConnection::connect(&url).await.ok()?;
                        sqlx::raw_sql(&sql)
                            .execute(&mut conn)
                            .await
                            .ok()
                            .map(|_| ())
                    }
                }
            })
        })
        .join();
    }
}

/// A TCP relay in front of a database server that a test can cut (every connection closed,
/// new ones refused) and restore: the database "goes away" without touching the server.
#[derive(Debug)]
pub struct Relay {
    pub address: std::net::SocketAddr,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stalled: std::sync::Arc<std::sync::atomic::AtomicBool>,
    generation: std::sync::Arc<std::sync::atomic::AtomicU64>,
    lose_commit: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// Relays bytes both ways until either side closes. Once `lose_commit` is set, the next
/// `COMMIT` the client sends reaches the server, but its answer does not reach the client: the
/// connection closes 300 ms later (the server has committed; the client cannot know).
async fn pump(
    client: tokio::net::TcpStream,
    server: tokio::net::TcpStream,
    lose_commit: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let eat = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let eating = eat.clone();
    let up = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if lose_commit.load(Ordering::SeqCst)
                && buf[..n]
                    .windows(6)
                    .any(|w| w.eq_ignore_ascii_case(b"COMMIT"))
                && lose_commit.swap(false, Ordering::SeqCst)
            {
                eating.store(true, Ordering::SeqCst);
            }
            if server_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let down = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if eat.load(Ordering::SeqCst) {
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                return;
            }
            if client_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

impl Relay {
    /// A relay to the host and port of `url`, on a thread of its own.
    pub fn to(url: &str) -> Relay {
        let target = address_of(url);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let address = listener.local_addr().unwrap();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let generation = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stalled = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let lose_commit = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (cut2, generation2, stalled2) = (cut.clone(), generation.clone(), stalled.clone());
        let lose_commit2 = lose_commit.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        continue;
                    };
                    if cut2.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let born = generation2.load(Ordering::SeqCst);
                    let (cut3, generation3, stalled3) =
                        (cut2.clone(), generation2.clone(), stalled2.clone());
                    let target = target.clone();
                    let lose_commit3 = lose_commit2.clone();
                    tokio::spawn(async move {
                        let Ok(server) = tokio::net::TcpStream::connect(&target).await else {
                            return;
                        };
                        let copy = pump(client, server, lose_commit3);
                        tokio::pin!(copy);
                        loop {
                            if stalled3.load(Ordering::SeqCst) {
                                // Connections stay open; nothing goes through.
                                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                                if cut3.load(Ordering::SeqCst) {
                                    return;
                                }
                                continue;
                            }
                            tokio::select! {
                                _ = &mut copy => return,
                                _ = tokio::time::sleep(std::time::Duration::from_millis(20)) => {
                                    if cut3.load(Ordering::SeqCst)
                                        || generation3.load(Ordering::SeqCst) != born
                                    {
                                        return;
                                    }
                                }
                            }
                        }
                    });
                }
            });
        });
        Relay {
            address,
            cut,
            stalled,
            generation,
            lose_commit,
        }
    }

    /// The next `COMMIT` reaches the database but its answer is lost (the connection closes):
    /// the client cannot tell a committed transaction from one that was not.
    #[allow(dead_code)]
    pub fn lose_next_commit_answer(&self) {
        self.lose_commit.store(true, Ordering::SeqCst);
    }

    /// Closes every connection and refuses new ones.
    pub fn cut(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.cut.store(true, Ordering::SeqCst);
    }

    /// Keeps every connection open but passes nothing through: a database that stops
    /// answering without closing anything.
    #[allow(dead_code)]
    pub fn stall(&self) {
        self.stalled.store(true, Ordering::SeqCst);
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }

    /// `url` with its host and port replaced by the relay's.
    pub fn url(&self, url: &str) -> String {
        url.replacen(&address_of(url), &self.address.to_string(), 1)
    }
}

/// The `host:port` of a URL.
fn address_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, rest)| rest);
    rest.split(['/', '?']).next().unwrap_or(rest).to_owned()
}
