//! Key state shared by several pools (instances) through one feed: in memory, over the real
//! PostgreSQL (`GEMINI_BALANCE_TEST_POSTGRES_URL`, feature `postgres`) and the real MariaDB
//! (`GEMINI_BALANCE_TEST_MYSQL_URL`, feature `mysql`). Each database test gets its own schema
//! or database, dropped at the end. Without the URL the database tests are skipped with a
//! notice, except under CI (`CI=true`), where they fail.
//!
//! The pools reach the database through a loopback forwarder the tests can cut, to show that
//! pools keep serving while the database is unreachable and catch up after.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use gemini_balance::classify::{FailureClass, Outcome, QuotaScope};
use gemini_balance::keys::shared::{
    Change, FeedEntry, FeedError, KeySealer, KeyStateFeed, MemoryFeed, SharedEvent, SharedKeys,
};
use gemini_balance::keys::{ApiKey, DisabledReason, KeyId, KeyPool, KeyStatus};

const KEYS: [&str; 3] = [
    "AIzaSyA1234567890abcdefghijklmnopqrstuv",
    "AIzaSyB1234567890abcdefghijklmnopqrstuv",
    "AIzaSyC1234567890abcdefghijklmnopqrstuv",
];

/// The documented bound is one second; the tests allow scheduling slack on a loaded machine.
const BOUND: Duration = Duration::from_secs(3);
/// After the database comes back: reconnect backoff (at most 5 s) plus the bound.
const AFTER_OUTAGE: Duration = Duration::from_secs(12);

fn pool() -> KeyPool {
    KeyPool::builder().keys(KEYS).build().unwrap()
}

fn id(i: usize) -> KeyId {
    KeyId::of(KEYS[i])
}

#[cfg_attr(any(feature = "postgres", feature = "mysql"), allow(dead_code))]
/// Not a real cipher: shows the mechanism (the production sealer is an AEAD).
struct Reverse;

impl KeySealer for Reverse {
    fn seal(&self, secret: &str) -> Option<String> {
        Some(format!("rev:{}", secret.chars().rev().collect::<String>()))
    }
    fn open(&self, sealed: &str) -> Option<String> {
        Some(sealed.strip_prefix("rev:")?.chars().rev().collect())
    }
}

/// The production sealer where the features bring it; a stand-in otherwise.
fn sealer() -> Arc<dyn KeySealer> {
    #[cfg(any(feature = "postgres", feature = "mysql"))]
    return Arc::new(
        gemini_balance::keys::shared::ChaChaSealer::from_hex(&"42".repeat(32)).unwrap(),
    );
    #[cfg(not(any(feature = "postgres", feature = "mysql")))]
    Arc::new(Reverse)
}

async fn eventually(what: &str, bound: Duration, mut done: impl FnMut() -> bool) {
    let start = tokio::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < bound, "not within {bound:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn serving(pool: &KeyPool, key: &KeyId) -> bool {
    pool.snapshot(key).is_some_and(|s| s.status.is_serving())
}

fn rejected() -> Outcome {
    Outcome::Failure(FailureClass::KeyRejected {
        status: http::StatusCode::BAD_REQUEST,
        reason: "API_KEY_INVALID".into(),
    })
}

fn rate_limited() -> Outcome {
    Outcome::Failure(FailureClass::RateLimited {
        retry_after: Some(Duration::from_secs(120)),
        scope: QuotaScope::PerMinute,
    })
}

// ---------------------------------------------------------------------------------------------
// Where the feeds live.

#[cfg(any(feature = "postgres", feature = "mysql"))]
use forwarder::Forwarder;

#[cfg(any(feature = "postgres", feature = "mysql"))]
mod forwarder {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    use tokio::net::{TcpListener, TcpStream};

    /// A loopback TCP forwarder to a database server, which the test can cut.
    pub struct Forwarder {
        pub port: u16,
        down: Arc<AtomicBool>,
        connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    }

    impl Forwarder {
        pub async fn to(target: String) -> Forwarder {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let down = Arc::new(AtomicBool::new(false));
            let connections = Arc::new(Mutex::new(Vec::new()));
            let (d, c) = (down.clone(), connections.clone());
            tokio::spawn(async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if d.load(Ordering::SeqCst) {
                        continue; // dropped: the server is "down"
                    }
                    let target = target.clone();
                    let task = tokio::spawn(async move {
                        if let Ok(mut server) = TcpStream::connect(&target).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    c.lock().unwrap().push(task.abort_handle());
                }
            });
            Forwarder {
                port,
                down,
                connections,
            }
        }

        pub fn set_up(&self, up: bool) {
            self.down.store(!up, Ordering::SeqCst);
            if !up {
                for task in self.connections.lock().unwrap().drain(..) {
                    task.abort();
                }
            }
        }
    }
}

enum Env {
    Memory(MemoryFeed),
    #[cfg(feature = "postgres")]
    Postgres {
        admin: sqlx::PgPool,
        options: sqlx::postgres::PgConnectOptions,
        schema: String,
        forwarder: Forwarder,
    },
    #[cfg(feature = "mysql")]
    MySql {
        admin: sqlx::MySqlPool,
        options: sqlx::mysql::MySqlConnectOptions,
        database: String,
        forwarder: Forwarder,
    },
}

/// Any of the feeds, as one type for the scenarios.
enum Feed {
    Memory(MemoryFeed),
    #[cfg(feature = "postgres")]
    Postgres(gemini_balance::keys::shared::PostgresFeed),
    #[cfg(feature = "mysql")]
    MySql(gemini_balance::keys::shared::MySqlFeed),
}

impl KeyStateFeed for Feed {
    fn publish(&self, event: SharedEvent) {
        match self {
            Feed::Memory(f) => f.publish(event),
            #[cfg(feature = "postgres")]
            Feed::Postgres(f) => f.publish(event),
            #[cfg(feature = "mysql")]
            Feed::MySql(f) => f.publish(event),
        }
    }
    async fn read_after(&self, seq: u64) -> Result<Vec<FeedEntry>, FeedError> {
        match self {
            Feed::Memory(f) => f.read_after(seq).await,
            #[cfg(feature = "postgres")]
            Feed::Postgres(f) => f.read_after(seq).await,
            #[cfg(feature = "mysql")]
            Feed::MySql(f) => f.read_after(seq).await,
        }
    }
    async fn changed(&self) {
        match self {
            Feed::Memory(f) => f.changed().await,
            #[cfg(feature = "postgres")]
            Feed::Postgres(f) => f.changed().await,
            #[cfg(feature = "mysql")]
            Feed::MySql(f) => f.changed().await,
        }
    }
    async fn delete(&self, seqs: Vec<u64>) -> Result<(), FeedError> {
        match self {
            Feed::Memory(f) => f.delete(seqs).await,
            #[cfg(feature = "postgres")]
            Feed::Postgres(f) => f.delete(seqs).await,
            #[cfg(feature = "mysql")]
            Feed::MySql(f) => f.delete(seqs).await,
        }
    }
    async fn flush(&self) {
        match self {
            Feed::Memory(f) => f.flush().await,
            #[cfg(feature = "postgres")]
            Feed::Postgres(f) => f.flush().await,
            #[cfg(feature = "mysql")]
            Feed::MySql(f) => f.flush().await,
        }
    }
}

impl Feed {
    /// Events the feed's queue dropped (the database away too long).
    #[allow(dead_code)]
    fn dropped(&self) -> u64 {
        match self {
            Feed::Memory(_) => 0,
            #[cfg(feature = "postgres")]
            Feed::Postgres(f) => f.dropped(),
            #[cfg(feature = "mysql")]
            Feed::MySql(f) => f.dropped(),
        }
    }
}

/// The URL in `var`, or `None` after a loud notice (a failure under CI).
#[allow(dead_code)]
fn server_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{var} is not set under CI: the shared key state tests need the server"
            );
            eprintln!(
                "\n!!! SKIPPED: {var} is not set; the shared key state tests over this database \
                 did not run (e.g. {var}=postgres://postgres@127.0.0.1:5432/test or \
                 mysql://root@127.0.0.1:3306)\n"
            );
            None
        }
    }
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
fn unique(prefix: &str) -> String {
    format!("{prefix}_{:016x}", fastrand_u64())
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
fn fastrand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish()
}

impl Env {
    fn memory() -> Option<Env> {
        Some(Env::Memory(MemoryFeed::new()))
    }

    #[cfg(feature = "postgres")]
    async fn postgres() -> Option<Env> {
        use sqlx::postgres::PgConnectOptions;
        use std::str::FromStr;
        let url = server_url("GEMINI_BALANCE_TEST_POSTGRES_URL")?;
        let base = PgConnectOptions::from_str(&url).expect("a PostgreSQL URL");
        let admin = sqlx::PgPool::connect_with(base.clone()).await.unwrap();
        let schema = unique("shared_keys");
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&admin)
            .await
            .unwrap();
        let forwarder = Forwarder::to(format!("{}:{}", base.get_host(), base.get_port())).await;
        let options = base
            .host("127.0.0.1")
            .port(forwarder.port)
            .options([("search_path", schema.as_str())]);
        Some(Env::Postgres {
            admin,
            options,
            schema,
            forwarder,
        })
    }

    #[cfg(feature = "mysql")]
    async fn mysql() -> Option<Env> {
        use sqlx::mysql::MySqlConnectOptions;
        use std::str::FromStr;
        let url = server_url("GEMINI_BALANCE_TEST_MYSQL_URL")?;
        let base = MySqlConnectOptions::from_str(&url).expect("a MySQL URL");
        let admin = sqlx::MySqlPool::connect_with(base.clone()).await.unwrap();
        let database = unique("shared_keys");
        sqlx::query(&format!("CREATE DATABASE {database} CHARACTER SET utf8mb4"))
            .execute(&admin)
            .await
            .unwrap();
        let forwarder = Forwarder::to(format!("{}:{}", base.get_host(), base.get_port())).await;
        let options = base
            .host("127.0.0.1")
            .port(forwarder.port)
            .database(&database);
        Some(Env::MySql {
            admin,
            options,
            database,
            forwarder,
        })
    }

    async fn feed(&self) -> Feed {
        match self {
            Env::Memory(feed) => Feed::Memory(feed.clone()),
            #[cfg(feature = "postgres")]
            Env::Postgres { options, .. } => Feed::Postgres(
                gemini_balance::keys::shared::PostgresFeed::connect_with(options.clone())
                    .await
                    .unwrap(),
            ),
            #[cfg(feature = "mysql")]
            Env::MySql { options, .. } => Feed::MySql(
                gemini_balance::keys::shared::MySqlFeed::connect_with(options.clone())
                    .await
                    .unwrap(),
            ),
        }
    }

    async fn start(&self, pool: &KeyPool) -> SharedKeys {
        SharedKeys::builder(pool.clone())
            .sealer(sealer())
            .start(self.feed().await)
            .await
    }

    fn set_up(&self, up: bool) {
        match self {
            Env::Memory(feed) => feed.set_available(up),
            #[cfg(feature = "postgres")]
            Env::Postgres { forwarder, .. } => forwarder.set_up(up),
            #[cfg(feature = "mysql")]
            Env::MySql { forwarder, .. } => forwarder.set_up(up),
        }
    }

    /// Renames the events table behind the feeds' back (writes are then refused).
    #[allow(dead_code)]
    async fn rename_table(&self, from: &str, to: &str) {
        match self {
            Env::Memory(_) => unreachable!("no table"),
            #[cfg(feature = "postgres")]
            Env::Postgres { admin, schema, .. } => {
                sqlx::query(&format!("ALTER TABLE {schema}.{from} RENAME TO {to}"))
                    .execute(admin)
                    .await
                    .unwrap();
            }
            #[cfg(feature = "mysql")]
            Env::MySql {
                admin, database, ..
            } => {
                sqlx::query(&format!(
                    "RENAME TABLE {database}.{from} TO {database}.{to}"
                ))
                .execute(admin)
                .await
                .unwrap();
            }
        }
    }

    async fn drop_storage(&self) {
        match self {
            Env::Memory(_) => {}
            #[cfg(feature = "postgres")]
            Env::Postgres { admin, schema, .. } => {
                let _ = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                    .execute(admin)
                    .await;
            }
            #[cfg(feature = "mysql")]
            Env::MySql {
                admin, database, ..
            } => {
                let _ = sqlx::query(&format!("DROP DATABASE {database}"))
                    .execute(admin)
                    .await;
            }
        }
    }
}

/// Runs a scenario, then drops its schema or database even when it failed.
async fn run<Fut>(env: Option<Env>, scenario: impl FnOnce(Arc<Env>) -> Fut)
where
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(env) = env else { return };
    let env = Arc::new(env);
    let outcome = tokio::spawn(scenario(env.clone())).await;
    env.drop_storage().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

// ---------------------------------------------------------------------------------------------
// What every engine must do.

async fn rejected_on_a_is_not_used_by_b_or_c(env: Arc<Env>) {
    let (a, b, c) = (pool(), pool(), pool());
    let _sa = env.start(&a).await;
    let _sb = env.start(&b).await;
    let _sc = env.start(&c).await;
    a.probe(&id(0)).unwrap().report(&rejected());
    eventually("B and C take the key out", BOUND, || {
        !serving(&b, &id(0)) && !serving(&c, &id(0))
    })
    .await;
    let KeyStatus::Disabled(reason) = b.snapshot(&id(0)).unwrap().status else {
        panic!("disabled")
    };
    assert_eq!(
        reason,
        DisabledReason::Rejected {
            status: 400,
            reason: "API_KEY_INVALID".into()
        }
    );
    for _ in 0..30 {
        assert_ne!(b.pick(Some("gemini-2.0-flash"), None).unwrap().id(), &id(0));
        assert_ne!(c.pick(None, None).unwrap().id(), &id(0));
    }
}

async fn cooldown_from_a_holds_on_b(env: Arc<Env>) {
    let (a, b) = (pool(), pool());
    let _sa = env.start(&a).await;
    let _sb = env.start(&b).await;
    a.probe(&id(1))
        .unwrap()
        .report_for(Some("gemini-2.0-flash"), &rate_limited());
    eventually("B cools the key for the model", BOUND, || {
        matches!(
            b.snapshot(&id(1)).unwrap().status,
            KeyStatus::CoolingDown(_)
        )
    })
    .await;
    for _ in 0..30 {
        assert_ne!(b.pick(Some("gemini-2.0-flash"), None).unwrap().id(), &id(1));
    }
    // Other models still use it.
    let others: Vec<KeyId> = (0..6)
        .map(|_| b.pick(Some("gemini-2.5-pro"), None).unwrap().id().clone())
        .collect();
    assert!(others.contains(&id(1)));
    // The cooldown ends when it ends on A (give or take the wire's millisecond).
    let until = |p: &KeyPool| match p.snapshot(&id(1)).unwrap().status {
        KeyStatus::CoolingDown(list) => list[0].until,
        other => panic!("{other:?}"),
    };
    // The pool keeps monotonic instants: each conversion from and to wall-clock time reads both
    // clocks, and a loaded machine can pause between the two reads. The code's own tolerance
    // for "the same cooldown" is one second.
    let (ua, ub) = (until(&a), until(&b));
    let gap = ua.duration_since(ub).unwrap_or_else(|e| e.duration());
    assert!(gap < Duration::from_secs(1), "{gap:?}");
}

async fn reset_on_b_reenables_on_a(env: Arc<Env>) {
    let (a, b) = (pool(), pool());
    let _sa = env.start(&a).await;
    let _sb = env.start(&b).await;
    a.disable(&id(2));
    a.probe(&id(0))
        .unwrap()
        .report_for(Some("gemini-2.0-flash"), &rate_limited());
    eventually("B sees the disable and the cooldown", BOUND, || {
        !serving(&b, &id(2))
            && matches!(
                b.snapshot(&id(0)).unwrap().status,
                KeyStatus::CoolingDown(_)
            )
    })
    .await;
    b.reset(&[id(2), id(0)]);
    eventually("A serves both again", BOUND, || {
        a.snapshot(&id(2)).unwrap().status == KeyStatus::Active
            && a.snapshot(&id(0)).unwrap().status == KeyStatus::Active
    })
    .await;
    // Nothing bounces back and forth: a short while later both still agree.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(a.snapshot(&id(2)).unwrap().status, KeyStatus::Active);
    assert_eq!(b.snapshot(&id(2)).unwrap().status, KeyStatus::Active);
}

async fn added_and_removed_keys(env: Arc<Env>) {
    let (a, b, c) = (pool(), pool(), pool());
    let _sa = env.start(&a).await;
    let _sb = env.start(&b).await;
    let _sc = env.start(&c).await;
    a.remove(&[id(1)]);
    eventually("B and C drop the key", BOUND, || {
        b.key(&id(1)).is_none() && c.key(&id(1)).is_none()
    })
    .await;
    assert_eq!(b.len(), 2);
    let new = ApiKey::new("AIzaSyD1234567890abcdefghijklmnopqrstuv").unwrap();
    b.add([new.clone()]);
    eventually("A and C serve the key added on B", BOUND, || {
        a.key(new.id()).is_some() && c.key(new.id()).is_some()
    })
    .await;
    assert_eq!(
        c.key(new.id()).unwrap().expose_secret(),
        new.expose_secret()
    );
    assert!(c.pick(None, None).is_ok());
    // Picks on C reach the new key.
    let picked: Vec<KeyId> = (0..6)
        .map(|_| c.pick(None, None).unwrap().id().clone())
        .collect();
    assert!(picked.contains(new.id()));
    // The secret is not in the shared log in clear.
    let log = env.feed().await.read_after(0).await.unwrap();
    assert!(log
        .iter()
        .any(|e| matches!(e.event.change, Change::Added { .. })));
    for entry in &log {
        assert!(!entry.event.to_json().contains(new.expose_secret()));
    }
    // Added back on C: everywhere again.
    c.add([ApiKey::new(KEYS[1]).unwrap()]);
    eventually("A and B have the key again", BOUND, || {
        a.key(&id(1)).is_some() && b.key(&id(1)).is_some()
    })
    .await;
}

async fn a_restarted_pool_starts_from_the_shared_state(env: Arc<Env>) {
    let (a, b) = (pool(), pool());
    let _sa = env.start(&a).await;
    let _sb = env.start(&b).await;
    a.probe(&id(0)).unwrap().report(&rejected());
    a.probe(&id(1))
        .unwrap()
        .report_for(Some("gemini-2.0-flash"), &rate_limited());
    a.remove(&[id(2)]);
    eventually("B has it all", BOUND, || {
        !serving(&b, &id(0))
            && matches!(
                b.snapshot(&id(1)).unwrap().status,
                KeyStatus::CoolingDown(_)
            )
            && b.key(&id(2)).is_none()
    })
    .await;
    // A new instance with the same configured keys.
    let restarted = pool();
    let _sr = env.start(&restarted).await;
    assert!(!serving(&restarted, &id(0)));
    assert!(matches!(
        restarted.snapshot(&id(1)).unwrap().status,
        KeyStatus::CoolingDown(_)
    ));
    assert!(restarted.key(&id(2)).is_none());
    assert!(matches!(
        restarted.pick(Some("gemini-2.0-flash"), None),
        Err(gemini_balance::keys::NoKey::CoolingDown { .. })
    ));
}

async fn database_away_pools_serve_and_resync(env: Arc<Env>) {
    let (a, b) = (pool(), pool());
    let _sa = env.start(&a).await;
    let sb = env.start(&b).await;
    env.set_up(false);
    a.probe(&id(0)).unwrap().report(&rejected());
    // Both keep serving from their local state meanwhile.
    let errors_before = sb.read_errors();
    for _ in 0..20 {
        assert_ne!(a.pick(None, None).unwrap().id(), &id(0));
        assert!(b.pick(None, None).is_ok());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eventually("B notices the outage", BOUND, || {
        sb.read_errors() > errors_before
    })
    .await;
    assert!(serving(&b, &id(0)), "B cannot know yet");
    env.set_up(true);
    eventually("B catches up after the outage", AFTER_OUTAGE, || {
        !serving(&b, &id(0))
    })
    .await;
}

async fn superseded_events_are_pruned(env: Arc<Env>) {
    let (a, b) = (pool(), pool());
    let _sa = env.start(&a).await;
    // B prunes at once (no retention), every 100 ms.
    let sb = SharedKeys::builder(b.clone())
        .sealer(sealer())
        .retain(Duration::ZERO)
        .prune_every(Duration::from_millis(100))
        .start(env.feed().await)
        .await;
    let mut applied = sb.changes();
    a.disable(&id(0));
    a.disable(&id(1));
    assert!(matches!(
        tokio::time::timeout(BOUND, applied.recv()).await,
        Ok(Ok(Change::Disabled { .. }))
    ));
    eventually("B has both", BOUND, || {
        !serving(&b, &id(0)) && !serving(&b, &id(1))
    })
    .await;
    a.reset(&[id(0)]);
    let log = env.feed().await;
    let start = tokio::time::Instant::now();
    let kinds = loop {
        let kinds: Vec<Change> = log
            .read_after(0)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.event.change)
            .collect();
        if kinds.len() == 2 {
            break kinds;
        }
        assert!(start.elapsed() < BOUND * 2, "not pruned: {kinds:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(matches!(&kinds[0], Change::Disabled { key, .. } if key == &id(1)));
    assert!(matches!(&kinds[1], Change::Reset { key } if key == &id(0)));
    // A restarted instance still starts from the state.
    let restarted = pool();
    let _sr = env.start(&restarted).await;
    assert!(serving(&restarted, &id(0)));
    assert!(!serving(&restarted, &id(1)));
}

/// While the database is away, published events wait in a bounded queue; what does not fit is
/// counted, and everything else is written when the database is back.
#[allow(dead_code)]
async fn a_full_queue_is_counted_never_silently_lost(env: Arc<Env>) {
    let feed = env.feed().await;
    env.set_up(false);
    let total = 6000u64;
    for i in 0..total {
        feed.publish(event(
            3,
            i + 1,
            Change::Setting {
                name: format!("S{i}"),
            },
        ));
    }
    let dropped = feed.dropped();
    assert!(dropped > 0 && dropped < total, "{dropped}");
    env.set_up(true);
    let reader = env.feed().await;
    let start = tokio::time::Instant::now();
    loop {
        let mut stored = 0;
        let mut after = 0;
        loop {
            let batch = reader.read_after(after).await.unwrap();
            let Some(last) = batch.last() else { break };
            after = last.seq;
            stored += batch.len() as u64;
        }
        if stored == total - dropped {
            break;
        }
        assert!(
            stored < total - dropped,
            "{stored} stored, {dropped} dropped"
        );
        assert!(
            start.elapsed() < AFTER_OUTAGE,
            "{stored} stored, {dropped} dropped of {total}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(feed.dropped(), dropped);
}

/// A batch the database refuses (here: its table is gone) is dropped and counted; the events
/// after it are written, not held up behind it forever.
#[allow(dead_code)]
async fn a_refused_write_does_not_stop_the_queue(env: Arc<Env>) {
    let feed = env.feed().await;
    env.rename_table("key_events", "key_events_away").await;
    feed.publish(event(
        3,
        1,
        Change::Setting {
            name: "lost".into(),
        },
    ));
    eventually("the refused event is counted", BOUND, || {
        feed.dropped() == 1
    })
    .await;
    env.rename_table("key_events_away", "key_events").await;
    feed.publish(event(
        3,
        2,
        Change::Setting {
            name: "kept".into(),
        },
    ));
    let start = tokio::time::Instant::now();
    loop {
        let names: Vec<Change> = feed
            .read_after(0)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.event.change)
            .collect();
        if !names.is_empty() {
            assert_eq!(
                names,
                vec![Change::Setting {
                    name: "kept".into()
                }]
            );
            break;
        }
        assert!(start.elapsed() < BOUND, "the later event was not written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(feed.dropped(), 1);
}

/// `flush` (at shutdown) waits until this instance's changes are stored: not while the
/// database is away, at once when it is back.
#[allow(dead_code)]
async fn flush_waits_until_the_changes_are_stored(env: Arc<Env>) {
    let a = pool();
    let sa = env.start(&a).await;
    assert!(sa.flush(AFTER_OUTAGE).await, "nothing to write");
    env.set_up(false);
    a.disable(&id(0));
    assert!(
        !sa.flush(Duration::from_millis(300)).await,
        "the database is away: not stored"
    );
    env.set_up(true);
    assert!(sa.flush(AFTER_OUTAGE).await, "stored once it is back");
    let stored = env.feed().await.read_after(0).await.unwrap();
    assert!(
        stored
            .iter()
            .any(|e| matches!(&e.event.change, Change::Disabled { key, .. } if key == &id(0))),
        "{stored:?}"
    );
}

macro_rules! engine_tests {
    ($engine:ident, $env:expr) => {
        mod $engine {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn rejected_on_a_is_not_used_by_b_or_c() {
                run($env, super::rejected_on_a_is_not_used_by_b_or_c).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cooldown_from_a_holds_on_b() {
                run($env, super::cooldown_from_a_holds_on_b).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn reset_on_b_reenables_on_a() {
                run($env, super::reset_on_b_reenables_on_a).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn added_and_removed_keys() {
                run($env, super::added_and_removed_keys).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_restarted_pool_starts_from_the_shared_state() {
                run($env, super::a_restarted_pool_starts_from_the_shared_state).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn superseded_events_are_pruned() {
                run($env, super::superseded_events_are_pruned).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn database_away_pools_serve_and_resync() {
                run($env, super::database_away_pools_serve_and_resync).await;
            }
        }
    };
}

engine_tests!(memory, Env::memory());
#[cfg(feature = "postgres")]
engine_tests!(postgres, Env::postgres().await);
#[cfg(feature = "mysql")]
engine_tests!(mysql, Env::mysql().await);

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_full_queue_is_counted_never_silently_lost() {
    run(
        Env::postgres().await,
        a_full_queue_is_counted_never_silently_lost,
    )
    .await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_flush_waits_until_the_changes_are_stored() {
    run(
        Env::postgres().await,
        flush_waits_until_the_changes_are_stored,
    )
    .await;
}

#[cfg(feature = "mysql")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_flush_waits_until_the_changes_are_stored() {
    run(Env::mysql().await, flush_waits_until_the_changes_are_stored).await;
}

#[cfg(feature = "mysql")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_a_full_queue_is_counted_never_silently_lost() {
    run(
        Env::mysql().await,
        a_full_queue_is_counted_never_silently_lost,
    )
    .await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_refused_write_does_not_stop_the_queue() {
    run(
        Env::postgres().await,
        a_refused_write_does_not_stop_the_queue,
    )
    .await;
}

#[cfg(feature = "mysql")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_a_refused_write_does_not_stop_the_queue() {
    run(Env::mysql().await, a_refused_write_does_not_stop_the_queue).await;
}

// ---------------------------------------------------------------------------------------------
// The mechanism, over the in-memory feed.

/// One change on A is one event: B applies it and does not publish it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_applied_change_is_not_echoed() {
    let feed = MemoryFeed::new();
    let (a, b, c) = (pool(), pool(), pool());
    let _sa = SharedKeys::start(a.clone(), feed.clone()).await;
    let sb = SharedKeys::start(b.clone(), feed.clone()).await;
    let _sc = SharedKeys::start(c.clone(), feed.clone()).await;
    a.probe(&id(0)).unwrap().report(&rejected());
    eventually("B and C apply it", BOUND, || {
        !serving(&b, &id(0)) && !serving(&c, &id(0)) && sb.applied() >= 1
    })
    .await;
    // Whatever would echo has had time to.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let entries = feed.entries();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(matches!(entries[0].event.change, Change::Disabled { .. }));
    assert_eq!(sb.applied(), 1);
    // Counted failures and successes are per instance: nothing goes out.
    b.probe(&id(1))
        .unwrap()
        .report(&Outcome::Failure(FailureClass::Timeout));
    b.probe(&id(1)).unwrap().report(&Outcome::Success);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(feed.entries().len(), 1);
}

fn event(origin: u64, at_ms: u64, change: Change) -> SharedEvent {
    SharedEvent {
        origin,
        at_ms,
        change,
    }
}

/// An older change that arrives late does not undo a newer one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_later_change_wins_whatever_the_arrival_order() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let feed = MemoryFeed::new();
    let b = pool();
    let sb = SharedKeys::start(b.clone(), feed.clone()).await;
    // Another instance (origin 7) reset the key at now, then a third one's older disable
    // (now - 5 s) arrives.
    feed.publish(event(7, now, Change::Reset { key: id(0) }));
    feed.publish(event(
        9,
        now - 5_000,
        Change::Disabled {
            key: id(0),
            reason: DisabledReason::Manual,
        },
    ));
    // A cooldown made after a reset holds even when it arrives before it.
    feed.publish(event(
        9,
        now + 10,
        Change::Cooled {
            key: id(1),
            model: "m".into(),
            until_ms: now + 60_000,
        },
    ));
    feed.publish(event(7, now, Change::Reset { key: id(1) }));
    // And a newer disable wins over an older reset.
    feed.publish(event(
        9,
        now + 20,
        Change::Disabled {
            key: id(2),
            reason: DisabledReason::Manual,
        },
    ));
    feed.publish(event(7, now, Change::Reset { key: id(2) }));
    // Events are applied in the feed's order: once this notice is heard, all came in.
    let mut settings = sb.settings();
    feed.publish(event(7, now, Change::Setting { name: "END".into() }));
    let heard = tokio::time::timeout(BOUND, settings.recv()).await;
    assert_eq!(heard.unwrap().unwrap(), "END");
    assert_eq!(sb.applied(), 5);
    assert_eq!(b.snapshot(&id(0)).unwrap().status, KeyStatus::Active);
    assert!(matches!(
        b.snapshot(&id(1)).unwrap().status,
        KeyStatus::CoolingDown(_)
    ));
    assert_eq!(
        b.snapshot(&id(2)).unwrap().status,
        KeyStatus::Disabled(DisabledReason::Manual)
    );
}

/// A change made after seeing another's is ordered after it, even if this machine's clock is
/// behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_made_after_seeing_one_wins_over_it_despite_clock_skew() {
    let ahead = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + 60_000;
    let feed = MemoryFeed::new();
    let (a, b) = (pool(), pool());
    let _sa = SharedKeys::start(a.clone(), feed.clone()).await;
    let _sb = SharedKeys::start(b.clone(), feed.clone()).await;
    // An instance whose clock is a minute ahead disables the key.
    feed.publish(event(
        5,
        ahead,
        Change::Disabled {
            key: id(0),
            reason: DisabledReason::Manual,
        },
    ));
    eventually("both apply it", BOUND, || {
        !serving(&a, &id(0)) && !serving(&b, &id(0))
    })
    .await;
    // A resets it afterwards: B follows, though A's clock is "behind".
    a.reset(&[id(0)]);
    eventually("B follows A's reset", BOUND, || serving(&b, &id(0))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setting_changes_reach_the_others() {
    let feed = MemoryFeed::new();
    let (a, b) = (pool(), pool());
    let sa = SharedKeys::start(a.clone(), feed.clone()).await;
    let sb = SharedKeys::start(b.clone(), feed.clone()).await;
    let mut on_a = sa.settings();
    let mut on_b = sb.settings();
    sa.setting_changed("MAX_FAILURES");
    let name = tokio::time::timeout(BOUND, on_b.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(name, "MAX_FAILURES");
    // Not back to the instance that made it.
    assert!(
        tokio::time::timeout(Duration::from_millis(400), on_a.recv())
            .await
            .is_err()
    );
}

/// Without a sealer, a key added elsewhere is known by id only and not served here; the secret
/// is never in the feed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_sealer_added_keys_stay_per_instance() {
    let feed = MemoryFeed::new();
    let (a, b) = (pool(), pool());
    let _sa = SharedKeys::start(a.clone(), feed.clone()).await;
    let sb = SharedKeys::start(b.clone(), feed.clone()).await;
    let new = ApiKey::new("AIzaSyD1234567890abcdefghijklmnopqrstuv").unwrap();
    a.add([new.clone()]);
    eventually("B saw the event", BOUND, || sb.applied() >= 1).await;
    assert!(b.key(new.id()).is_none());
    for entry in feed.entries() {
        assert!(!entry.event.to_json().contains(new.expose_secret()));
        assert!(matches!(
            entry.event.change,
            Change::Added { sealed: None, .. }
        ));
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A log longer than a read batch, with holes left by pruning, is read at start in a few reads:
/// the start does not wait for the holes to fill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_pruned_log_is_read_at_once() {
    let feed = MemoryFeed::new();
    let now = now_ms();
    let total = 2500;
    for i in 0..total {
        feed.publish(event(
            7,
            now - 10_000 + i,
            Change::Setting {
                name: format!("S{i}"),
            },
        ));
    }
    feed.publish(event(
        7,
        now,
        Change::Disabled {
            key: id(0),
            reason: DisabledReason::Manual,
        },
    ));
    // Pruned: just after the first batch of 1,000, and in each later one.
    let pruned = vec![1001, 1500, 2002, 2400];
    feed.delete(pruned.clone()).await.unwrap();
    let b = pool();
    let start = tokio::time::Instant::now();
    let sb = SharedKeys::start(b.clone(), feed.clone()).await;
    let took = start.elapsed();
    assert!(!serving(&b, &id(0)), "the last event was applied at start");
    assert_eq!(sb.applied(), total + 1 - pruned.len() as u64);
    // Generous for a loaded machine; the stall this guards against took 10 s per batch.
    assert!(took < BOUND, "start took {took:?}");
    // And the instance follows the feed at once afterwards.
    feed.publish(event(7, now + 1, Change::Reset { key: id(0) }));
    eventually("B follows the feed", BOUND, || serving(&b, &id(0))).await;
    // A smaller read batch changes nothing but the number of reads.
    let c = pool();
    let sc = SharedKeys::start(c.clone(), feed.clone().read_batch(7)).await;
    assert!(serving(&c, &id(0)));
    assert_eq!(sc.applied(), sb.applied());
}

/// An event stamped far in the future (a clock years off, a forged row) is ignored; the clock
/// of the instances that read it stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stamped_far_ahead_is_ignored() {
    let feed = MemoryFeed::new();
    let (a, b) = (pool(), pool());
    let _sa = SharedKeys::start(a.clone(), feed.clone()).await;
    let sb = SharedKeys::start(b.clone(), feed.clone()).await;
    let mut settings = sb.settings();
    feed.publish(event(
        9,
        u64::MAX,
        Change::Disabled {
            key: id(0),
            reason: DisabledReason::Manual,
        },
    ));
    feed.publish(event(
        9,
        now_ms() + 3 * 24 * 3600 * 1000,
        Change::Disabled {
            key: id(1),
            reason: DisabledReason::Manual,
        },
    ));
    feed.publish(event(9, now_ms(), Change::Setting { name: "END".into() }));
    let heard = tokio::time::timeout(BOUND, settings.recv()).await;
    assert_eq!(heard.unwrap().unwrap(), "END");
    assert!(serving(&b, &id(0)) && serving(&b, &id(1)));
    // Local changes still get stamps (and reach the others).
    b.disable(&id(2));
    a.disable(&id(0));
    eventually("the changes cross", BOUND, || {
        !serving(&a, &id(2)) && !serving(&b, &id(0))
    })
    .await;
    assert!(serving(&a, &id(1)));
}
