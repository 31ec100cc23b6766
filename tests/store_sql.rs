//! The stores end to end, one table of engines (SQLite, PostgreSQL, MySQL/MariaDB): key state
//! across a restart, settings; and for the networked stores: no secret at rest, a newer schema
//! refused, a full channel, the database going away and coming back. The SQL servers come
//! from the environment (`sql_servers`: skipped with a notice when unset, failing under CI).
#![cfg(all(feature = "sqlite", feature = "postgres", feature = "mysql"))]

#[path = "sql_servers/mod.rs"]
mod sql_servers;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use gemini_balance::classify::{FailureClass, Outcome, QuotaScope};
use gemini_balance::keys::{DisabledReason, KeyId, KeyObserver, KeyPool, KeyStatus};
use gemini_balance::store::logs::{ErrorQuery, RequestQuery};
use gemini_balance::store::stats::WriterStats;
use gemini_balance::store::{
    KeyStateStore, SettingsStore, SqlStore, SqliteStore, StatsStore, UsageSink,
};
use gemini_balance::usage::{AttemptRecord, ClientId, RequestRecord};
use http::StatusCode;
use sql_servers::{Server, TestDb};

const MODEL: &str = "gemini-2.0-flash";

/// A made-up key in Gemini's format whose last four characters are `n`.
fn key(n: u32) -> String {
    let key = format!("AIzaSyStoreTest_abcdefghijklmnopqrs{n:04}");
    assert_eq!(key.len(), 39);
    key
}

/// What the tests need of a store, whatever the engine.
trait TestStore: KeyStateStore + SettingsStore + UsageSink + StatsStore + KeyObserver {
    fn stop(&self);
    fn flush_all(&self);
    fn writer(&self) -> WriterStats;
}

impl TestStore for SqliteStore {
    fn stop(&self) {
        self.shutdown().unwrap()
    }

    fn flush_all(&self) {
        self.flush().unwrap()
    }

    fn writer(&self) -> WriterStats {
        self.writer_stats()
    }
}

impl TestStore for SqlStore {
    fn stop(&self) {
        self.shutdown().unwrap()
    }

    fn flush_all(&self) {
        self.flush().unwrap()
    }

    fn writer(&self) -> WriterStats {
        self.writer_stats()
    }
}

/// Where a store lives; opened again and again.
enum Place {
    Sqlite(tempfile::TempDir),
    Sql(TestDb),
}

impl Place {
    fn name(&self) -> &'static str {
        match self {
            Place::Sqlite(_) => "sqlite",
            Place::Sql(db) => db.server.name(),
        }
    }

    fn open(&self) -> Arc<dyn TestStore> {
        match self {
            Place::Sqlite(dir) => Arc::new(SqliteStore::open(dir.path().join("usage.db")).unwrap()),
            Place::Sql(db) => Arc::new(db.builder().open().unwrap()),
        }
    }
}

/// Every engine this machine can reach, each in a place of its own.
fn places(test: &str) -> Vec<Place> {
    let mut places = vec![Place::Sqlite(tempfile::tempdir().unwrap())];
    for server in Server::ALL {
        if let Some(db) = TestDb::new(server, test) {
            places.push(Place::Sql(db));
        }
    }
    places
}

/// The networked engines this machine can reach.
fn servers(test: &str) -> Vec<TestDb> {
    Server::ALL
        .into_iter()
        .filter_map(|server| TestDb::new(server, test))
        .collect()
}

#[test]
fn key_state_survives_a_restart() {
    for place in places("key_state") {
        let name = place.name();
        let keys: Vec<String> = (1..=5).map(key).collect();
        let ids: Vec<KeyId> = keys.iter().map(|k| KeyId::of(k)).collect();
        let store = place.open();
        let observer: Arc<dyn KeyObserver> = store.clone();
        let pool = KeyPool::builder()
            .keys(&keys)
            .max_failures(3)
            .observer(observer)
            .build()
            .unwrap();
        let report = |n: usize, outcome: Outcome| {
            pool.probe(&ids[n])
                .unwrap()
                .report_for(Some(MODEL), &outcome);
        };
        report(
            0,
            Outcome::Failure(FailureClass::KeyRejected {
                status: StatusCode::BAD_REQUEST,
                reason: format!("API_KEY_INVALID for {}", keys[0]),
            }),
        );
        report(
            1,
            Outcome::Failure(FailureClass::RateLimited {
                retry_after: Some(Duration::from_secs(3600)),
                scope: QuotaScope::PerMinute,
            }),
        );
        report(
            2,
            Outcome::Failure(FailureClass::ServerError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
            }),
        );
        assert!(pool.disable(&ids[3]));
        assert_eq!(pool.reset(&ids[3..4]), 1);
        assert_eq!(pool.remove(&ids[4..5]).len(), 1);
        let before: Vec<_> = ids[..4]
            .iter()
            .map(|id| pool.snapshot(id).unwrap())
            .collect();
        drop(pool);
        store.stop();
        drop(store);

        let store = place.open();
        let states = store.load_key_states().unwrap();
        assert!(!states.iter().any(|s| s.id == ids[4]), "{name}: removed");
        let pool = KeyPool::builder()
            .keys(&keys[..4])
            .max_failures(3)
            .build()
            .unwrap();
        assert_eq!(pool.restore(&states), 4, "{name}");
        let after: Vec<_> = ids[..4]
            .iter()
            .map(|id| pool.snapshot(id).unwrap())
            .collect();
        assert_eq!(
            after[0].status,
            KeyStatus::Disabled(DisabledReason::Rejected {
                status: 400,
                // The key in the reason is kept as its fingerprint only.
                reason: format!("API_KEY_INVALID for {}", KeyId::of(&keys[0]).mask()),
            }),
            "{name}"
        );
        match (&before[1].status, &after[1].status) {
            (KeyStatus::CoolingDown(was), KeyStatus::CoolingDown(is)) => {
                assert_eq!(is.len(), 1, "{name}");
                assert_eq!(is[0].model, MODEL, "{name}");
                let drift = match is[0].until.duration_since(was[0].until) {
                    Ok(d) => d,
                    Err(e) => e.duration(),
                };
                assert!(drift < Duration::from_secs(1), "{name}: {drift:?}");
            }
            other => panic!("{name}: expected a cooldown before and after: {other:?}"),
        }
        for _ in 0..10 {
            let lease = pool.pick(Some(MODEL), None).unwrap();
            assert_ne!(lease.id(), &ids[1], "{name}");
            assert_ne!(lease.id(), &ids[0], "{name}");
        }
        assert_eq!(after[2].consecutive_failures, 1, "{name}");
        assert_eq!(
            after[2].last_error.as_ref().map(|e| e.class.name()),
            Some("server_error"),
            "{name}"
        );
        assert_eq!(after[3].status, KeyStatus::Active, "{name}");
        store.stop();
    }
}

#[test]
fn settings_are_kept_and_refuse_keys() {
    for place in places("settings") {
        let name = place.name();
        let store = place.open();
        store.set_setting("MAX_FAILURES", "3").unwrap();
        store.set_setting("MAX_RETRIES", "2").unwrap();
        store.set_setting("MAX_FAILURES", "5").unwrap();
        let err = store
            .set_setting("API_KEYS", &format!("[\"{}\"]", key(1)))
            .unwrap_err();
        assert!(err.to_string().contains("API key"), "{name}: {err}");
        assert!(store.delete_setting("MAX_RETRIES").unwrap(), "{name}");
        assert!(!store.delete_setting("MAX_RETRIES").unwrap(), "{name}");
        store.stop();
        drop(store);

        let store = place.open();
        let settings = store.settings().unwrap();
        assert_eq!(settings.len(), 1, "{name}");
        assert_eq!(settings[0].name, "MAX_FAILURES", "{name}");
        assert_eq!(settings[0].value, "5", "{name}");
        assert!(settings[0].updated_ms > 0, "{name}");
        store.stop();
    }
}

/// A request that failed on one key (its message and body quoting the key) and succeeded on
/// another, from a client token.
fn secret_record(id: u64) -> RequestRecord {
    let now = SystemTime::now();
    let mut r = RequestRecord::new(id, now);
    r.route = format!("/v1beta/models/{MODEL}:generateContent?key={}", key(1));
    r.model = Some(MODEL.into());
    r.key = Some(KeyId::of(&key(2)));
    r.client = Some(ClientId::of("sk-client-secret-token-0001"));
    r.status = 200;
    r.success = true;
    r.attempts = 2;
    r.request_body = Some(format!(r#"{{"note":"{}"}}"#, key(1)));
    r.attempt_log.push(AttemptRecord {
        at: now,
        key: KeyId::of(&key(1)),
        model: Some(MODEL.into()),
        status: Some(400),
        class: Some("key_rejected"),
        latency: Duration::from_millis(30),
        error_message: Some(format!("API key not valid: {}", key(1))),
    });
    r
}

#[test]
fn no_secret_reaches_the_database() {
    for db in servers("no_secret") {
        let name = db.server.name();
        let store = db.builder().open().unwrap();
        store.record(secret_record(1));
        store.flush().unwrap();
        let pool = KeyPool::builder()
            .keys([key(1), key(2)])
            .observer(Arc::new(store.clone()))
            .build()
            .unwrap();
        pool.probe(&KeyId::of(&key(1))).unwrap().report_for(
            Some(MODEL),
            &Outcome::Failure(FailureClass::KeyRejected {
                status: StatusCode::BAD_REQUEST,
                reason: format!("bad key {}", key(1)),
            }),
        );
        store.load_key_states().unwrap();
        store.shutdown().unwrap();
        let mut everything = String::new();
        for table in [
            "request_log",
            "attempt_log",
            "error_log",
            "usage_minute",
            "usage_hour",
            "fingerprint",
            "key_state",
            "settings",
        ] {
            everything.push_str(&db.dump(table));
        }
        assert!(
            everything.contains(KeyId::of(&key(1)).mask()),
            "{name}: {everything}"
        );
        for secret in [key(1), key(2), "sk-client-secret-token-0001".to_owned()] {
            assert!(!everything.contains(&secret), "{name}: {secret} at rest");
            // Nor any 12 characters of it in a row.
            for window in secret.as_bytes().windows(12) {
                let piece = std::str::from_utf8(window).unwrap();
                if piece.contains("…") || piece.starts_with("AIzaSyStoreT") {
                    continue;
                }
                assert!(!everything.contains(piece), "{name}: {piece} of {secret}");
            }
        }
    }
}

#[test]
fn a_newer_schema_is_refused() {
    for db in servers("newer_schema") {
        let name = db.server.name();
        db.builder().open().unwrap().shutdown().unwrap();
        let table = match db.server {
            Server::Postgres => format!("{}.schema_version", db.name),
            Server::MySql => format!("{}.schema_version", db.name),
        };
        db.admin(&format!("UPDATE {table} SET version = 99"));
        let err = db.builder().open().unwrap_err();
        assert!(err.to_string().contains("newer"), "{name}: {err}");
    }
}

/// A database of version 1 (before the writers' marks) is brought to the current version
/// with its rows kept, and written to.
#[test]
fn a_version_1_schema_is_migrated() {
    for db in servers("migrate_v1") {
        let name = db.server.name();
        let store = db.builder().gather(Duration::ZERO).open().unwrap();
        store.record(RequestRecord::new(1, SystemTime::now()));
        store.shutdown().unwrap();
        db.admin(&format!("DROP TABLE {}.writer_mark", db.name));
        db.admin(&format!(
            "UPDATE {}.schema_version SET version = 1",
            db.name
        ));
        let store = db.builder().gather(Duration::ZERO).open().unwrap();
        store.record(RequestRecord::new(2, SystemTime::now()));
        store.shutdown().unwrap();
        assert_eq!(db.count("SELECT version FROM schema_version"), 3, "{name}");
        assert_eq!(db.count("SELECT COUNT(*) FROM request_log"), 2, "{name}");
        assert_eq!(
            db.count("SELECT COUNT(*) FROM writer_mark"),
            1,
            "{name}: the second writer's mark"
        );
    }
}

#[test]
fn a_full_channel_drops_and_counts_without_blocking() {
    for db in servers("full_channel") {
        let name = db.server.name();
        let store = db
            .builder()
            .channel_capacity(8)
            .gather(Duration::from_secs(2))
            .open()
            .unwrap();
        // The writer takes the first record, then gathers for two seconds: the rest queue.
        store.record(RequestRecord::new(1, SystemTime::now()));
        std::thread::sleep(Duration::from_millis(200));
        let start = Instant::now();
        for id in 2..=200 {
            store.record(RequestRecord::new(id, SystemTime::now()));
        }
        let took = start.elapsed();
        store.flush().unwrap();
        let stats = store.writer_stats();
        assert!(stats.dropped >= 150, "{name}: {stats:?} ({took:?})");
        assert_eq!(stats.written + stats.dropped, 200, "{name}: {stats:?}");
        assert_eq!(stats.lost, 0, "{name}");
        assert_eq!(
            db.count("SELECT COUNT(*) FROM request_log"),
            stats.written as i64,
            "{name}"
        );
        store.shutdown().unwrap();
    }
}

/// The database goes away while requests are recorded, then comes back: what was queued is
/// written, what did not fit is counted as dropped, nothing is lost or counted twice.
#[test]
fn the_database_going_away_loses_nothing_silently() {
    for db in servers("db_away") {
        let name = db.server.name();
        let relay = db.relay();
        let store = db
            .builder_through(&relay)
            .channel_capacity(64)
            .gather(Duration::ZERO)
            .connect_timeout(Duration::from_millis(500))
            .open()
            .unwrap();
        for id in 1..=10 {
            store.record(RequestRecord::new(id, SystemTime::now()));
        }
        store.flush().unwrap();
        assert_eq!(store.writer_stats().written, 10, "{name}");

        relay.cut();
        let start = Instant::now();
        for id in 11..=210 {
            store.record(RequestRecord::new(id, SystemTime::now()));
            if id % 50 == 0 {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        // Recording never waited for the database.
        assert!(start.elapsed() < Duration::from_secs(5), "{name}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !store.is_retrying() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(store.is_retrying(), "{name}: the writer noticed the outage");
        let during = store.writer_stats();
        assert!(during.dropped > 0, "{name}: {during:?}");

        relay.restore();
        store.flush().unwrap();
        let after = store.writer_stats();
        assert_eq!(after.lost, 0, "{name}: {after:?}");
        assert_eq!(after.written + after.dropped, 210, "{name}: {after:?}");
        assert_eq!(
            db.count("SELECT COUNT(*) FROM request_log"),
            after.written as i64,
            "{name}: every record counted as written is there, once"
        );
        // The statistics agree.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let summary = runtime.block_on(StatsStore::summary(&store)).unwrap();
        assert_eq!(summary.last_hour.calls, after.written, "{name}");
        let errors = runtime
            .block_on(store.errors(ErrorQuery::default()))
            .unwrap();
        assert_eq!(errors.total, 0, "{name}");
        store.shutdown().unwrap();
    }
}

/// A request that failed once (an error row, with `body` as its request body) and then
/// succeeded, for `model`.
fn failed_once(id: u64, model: Option<&str>, body: Option<String>) -> RequestRecord {
    let now = SystemTime::now();
    let mut r = RequestRecord::new(id, now);
    r.route = "/v1beta/models/m:generateContent".into();
    r.model = model.map(str::to_owned);
    r.key = Some(KeyId::of(&key(2)));
    r.status = 200;
    r.success = true;
    r.attempts = 2;
    r.request_body = body;
    r.attempt_log.push(AttemptRecord {
        at: now,
        key: KeyId::of(&key(1)),
        model: model.map(str::to_owned),
        status: Some(500),
        class: Some("server_error"),
        latency: Duration::from_millis(30),
        error_message: Some("internal".into()),
    });
    r
}

/// Records `records` as one batch: the writer takes a first record, then gathers while the
/// rest queue; the flush writes them together.
fn record_one_batch(store: &dyn TestStore, records: Vec<RequestRecord>) {
    let mut records = records.into_iter();
    if let Some(first) = records.next() {
        store.record(first);
    }
    std::thread::sleep(Duration::from_millis(100));
    for r in records {
        store.record(r);
    }
    store.flush_all();
}

/// MySQL's TEXT holds 65,535 bytes: a request body of 64 KiB (the most kept) once lost its
/// whole batch there.
#[test]
fn a_large_request_body_is_kept_cut() {
    for db in servers("large_body") {
        let name = db.server.name();
        let store = db
            .builder()
            .gather(Duration::from_millis(500))
            .open()
            .unwrap();
        record_one_batch(
            &store,
            vec![
                failed_once(1, Some(MODEL), None),
                failed_once(2, Some(MODEL), Some("x".repeat(70_000))),
                failed_once(3, Some(MODEL), Some(format!("{}é", "x".repeat(65_534)))),
                failed_once(4, Some(MODEL), Some("y".repeat(100))),
            ],
        );
        let stats = store.writer_stats();
        assert_eq!(stats.lost, 0, "{name}: {stats:?}");
        assert_eq!(stats.written, 4, "{name}: {stats:?}");
        assert_eq!(db.count("SELECT COUNT(*) FROM error_log"), 4, "{name}");
        let longest = db.count("SELECT MAX(OCTET_LENGTH(request_body)) FROM error_log");
        assert!(
            (60_000..=64 * 1024).contains(&longest),
            "{name}: {longest} bytes"
        );
        store.shutdown().unwrap();
    }
}

/// PostgreSQL's text refuses NUL; a client's model name, an upstream message or a body can
/// hold one, and it once lost the batch. Stored as U+FFFD, everywhere.
#[test]
fn nul_characters_are_stored_replaced() {
    for place in places("nul") {
        let name = place.name();
        let store = place.open();
        let mut odd = failed_once(2, Some("a\0b"), Some("{\"x\":\"\0\"}".into()));
        odd.route = "/v1/chat/completions\0".into();
        odd.attempt_log[0].error_message = Some("bad\0thing".into());
        record_one_batch(
            &*store,
            vec![
                failed_once(1, Some(MODEL), None),
                odd,
                failed_once(3, Some(MODEL), None),
            ],
        );
        // A key state with a NUL in its reason, written with the next batch.
        let keys = [key(1), key(2)];
        let observer: Arc<dyn KeyObserver> = store.clone();
        let pool = KeyPool::builder()
            .keys(&keys)
            .observer(observer)
            .build()
            .unwrap();
        pool.probe(&KeyId::of(&key(1))).unwrap().report_for(
            Some(MODEL),
            &Outcome::Failure(FailureClass::KeyRejected {
                status: StatusCode::BAD_REQUEST,
                reason: "API_KEY_INVALID\0".into(),
            }),
        );
        store.record(failed_once(4, Some(MODEL), None));
        store.flush_all();
        let stats = store.writer();
        assert_eq!(stats.lost, 0, "{name}: {stats:?}");
        assert_eq!(stats.written, 4, "{name}: {stats:?}");
        let states = store.load_key_states().unwrap();
        let rejected = states
            .iter()
            .find(|s| s.id == KeyId::of(&key(1)))
            .unwrap_or_else(|| panic!("{name}: the key's state is stored"));
        assert_eq!(
            rejected.status,
            KeyStatus::Disabled(DisabledReason::Rejected {
                status: 400,
                reason: "API_KEY_INVALID\u{FFFD}".into(),
            }),
            "{name}"
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let errors = runtime
            .block_on(store.errors(ErrorQuery::default()))
            .unwrap();
        assert_eq!(errors.total, 4, "{name}");
        assert!(
            errors
                .entries
                .iter()
                .any(|e| e.model.as_deref() == Some("a\u{FFFD}b")
                    && e.message.as_deref() == Some("bad\u{FFFD}thing")),
            "{name}: {:?}",
            errors.entries
        );
        let requests = runtime
            .block_on(store.requests(RequestQuery::default()))
            .unwrap();
        assert_eq!(requests.entries.len(), 4, "{name}");
        store.stop();
    }
}

/// Rollup rows that differ in the batch but are stored alike (no model and the model "",
/// long names cut to the same text) once made PostgreSQL refuse the batch ("ON CONFLICT DO
/// UPDATE command cannot affect row a second time").
#[test]
fn rollup_values_stored_alike_are_merged() {
    for place in places("rollup_alike") {
        let name = place.name();
        let store = place.open();
        let long = "m".repeat(300);
        let long_a = format!("{long}a");
        let long_b = format!("{long}b");
        record_one_batch(
            &*store,
            vec![
                failed_once(1, None, None),
                failed_once(2, Some(""), None),
                failed_once(3, Some(&long_a), None),
                failed_once(4, Some(&long_b), None),
                failed_once(5, Some(MODEL), None),
            ],
        );
        let stats = store.writer();
        assert_eq!(stats.lost, 0, "{name}: {stats:?}");
        assert_eq!(stats.written, 5, "{name}: {stats:?}");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let summary = runtime.block_on(StatsStore::summary(&*store)).unwrap();
        assert_eq!(summary.last_hour.calls, 5, "{name}");
        store.stop();
    }
}

/// A row the database refuses (here a CHECK constraint refuses status 599 and one key's
/// state) costs that row only: the rest of its batch is written, and so are later batches
/// and the other keys' states.
#[test]
fn a_refused_row_costs_only_itself() {
    for db in servers("refused_row") {
        let name = db.server.name();
        let store = db
            .builder()
            .gather(Duration::from_millis(500))
            .open()
            .unwrap();
        let bad_key = KeyId::of(&key(9));
        db.admin(&format!(
            "ALTER TABLE {0}.request_log ADD CONSTRAINT no_599 CHECK (status <> 599); \
             ALTER TABLE {0}.key_state ADD CONSTRAINT no_key_9 CHECK (key_id <> '{1}')",
            db.name,
            bad_key.hex()
        ));
        let keys = [key(1), key(9)];
        let pool = KeyPool::builder()
            .keys(&keys)
            .observer(Arc::new(store.clone()))
            .build()
            .unwrap();
        let reject = |k: &str| {
            pool.probe(&KeyId::of(k)).unwrap().report_for(
                Some(MODEL),
                &Outcome::Failure(FailureClass::ServerError {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                }),
            );
        };
        reject(&key(9));
        let mut bad = failed_once(3, Some(MODEL), None);
        bad.status = 599;
        let mut batch: Vec<RequestRecord> = (1..=6)
            .map(|id| failed_once(id, Some(MODEL), None))
            .collect();
        batch[2] = bad;
        record_one_batch(&store, batch);
        let stats = store.writer_stats();
        assert_eq!(stats.lost, 1, "{name}: {stats:?}");
        assert_eq!(stats.written, 5, "{name}: {stats:?}");

        // Later batches, and another key's state, are written.
        reject(&key(1));
        record_one_batch(
            &store,
            (7..=9)
                .map(|id| failed_once(id, Some(MODEL), None))
                .collect(),
        );
        let stats = store.writer_stats();
        assert_eq!(stats.lost, 1, "{name}: {stats:?}");
        assert_eq!(stats.written, 8, "{name}: {stats:?}");
        assert_eq!(db.count("SELECT COUNT(*) FROM request_log"), 8, "{name}");
        assert_eq!(db.count("SELECT COUNT(*) FROM error_log"), 8, "{name}");
        let states = store.load_key_states().unwrap();
        assert!(
            states.iter().any(|s| s.id == KeyId::of(&key(1))),
            "{name}: {states:?}"
        );
        assert!(!states.iter().any(|s| s.id == bad_key), "{name}");
        store.shutdown().unwrap();
    }
}

/// A batch whose commit went through but whose answer was lost (the connection cut at that
/// moment) is retried, and not written twice: the retry finds the writer's mark of that batch.
#[test]
fn a_batch_whose_commit_answer_was_lost_is_written_once() {
    for db in servers("commit_lost") {
        let name = db.server.name();
        let relay = db.relay();
        let store = db
            .builder_through(&relay)
            .gather(Duration::ZERO)
            .connect_timeout(Duration::from_millis(500))
            .open()
            .unwrap();
        store.record(RequestRecord::new(1, SystemTime::now()));
        store.flush().unwrap();
        relay.lose_next_commit_answer();
        store.record(RequestRecord::new(2, SystemTime::now()));
        store.flush().unwrap();
        store.record(RequestRecord::new(3, SystemTime::now()));
        store.flush().unwrap();
        let stats = store.writer_stats();
        assert_eq!(
            (stats.written, stats.dropped, stats.lost),
            (3, 0, 0),
            "{name}: {stats:?}"
        );
        store.shutdown().unwrap();
        assert_eq!(
            db.count("SELECT COUNT(*) FROM request_log"),
            3,
            "{name}: a batch written twice"
        );
        assert_eq!(
            db.count("SELECT SUM(calls) FROM usage_hour WHERE dim = ''"),
            3,
            "{name}: the rollups count a batch twice"
        );
    }
}

/// A database that stops answering (connections open, no reply) does not hold shutdown past
/// its timeout: what is queued is counted as lost and the store stops.
#[test]
fn shutdown_is_bounded_when_the_database_stops_answering() {
    for db in servers("stalled") {
        let name = db.server.name();
        let relay = db.relay();
        let store = db
            .builder_through(&relay)
            .gather(Duration::ZERO)
            .connect_timeout(Duration::from_millis(500))
            .shutdown_timeout(Duration::from_secs(1))
            .open()
            .unwrap();
        store.record(RequestRecord::new(1, SystemTime::now()));
        store.flush().unwrap();
        relay.stall();
        // The relay notices within 20 ms.
        std::thread::sleep(Duration::from_millis(200));
        for id in 2..=6 {
            store.record(RequestRecord::new(id, SystemTime::now()));
        }
        let (done, stopped) = std::sync::mpsc::channel();
        let stopping = store.clone();
        std::thread::spawn(move || {
            let _ = done.send(stopping.shutdown());
        });
        // Far above the 1 s timeout: the test is that it ends at all.
        let result = stopped.recv_timeout(Duration::from_secs(25));
        // Closes the stalled connections (their transactions would hold the schema's drop).
        relay.cut();
        assert!(
            matches!(result, Ok(Ok(()))),
            "{name}: shutdown hung: {result:?}"
        );
        let stats = store.writer_stats();
        assert_eq!(stats.written, 1, "{name}: {stats:?}");
        assert_eq!(stats.lost, 5, "{name}: {stats:?}");
    }
}

/// Records sent while the store shuts down are each counted once: written, dropped or lost.
#[test]
fn records_racing_shutdown_are_all_counted() {
    for db in servers("shutdown_race") {
        let name = db.server.name();
        let store = db.builder().gather(Duration::ZERO).open().unwrap();
        let senders: Vec<_> = (0..4u64)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for i in 0..2_000u64 {
                        store.record(RequestRecord::new(t * 10_000 + i + 1, SystemTime::now()));
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(5));
        store.shutdown().unwrap();
        for sender in senders {
            sender.join().unwrap();
        }
        let stats = store.writer_stats();
        assert_eq!(stats.queued, 0, "{name}: {stats:?}");
        assert_eq!(
            stats.written + stats.dropped + stats.lost,
            8_000,
            "{name}: {stats:?}"
        );
        assert_eq!(
            db.count("SELECT COUNT(*) FROM request_log"),
            stats.written as i64,
            "{name}"
        );
    }
}

/// Instances starting together on a new schema all open it (PostgreSQL's `CREATE SCHEMA IF
/// NOT EXISTS` races between them; the migration runs once, under its lock).
#[test]
fn instances_starting_together_all_open() {
    for db in servers("start_together") {
        let name = db.server.name();
        let builders: Vec<_> = (0..4).map(|_| db.builder()).collect();
        let opened: Vec<_> = builders
            .into_iter()
            .map(|builder| std::thread::spawn(move || builder.open()))
            .collect();
        for store in opened {
            let store = store.join().unwrap();
            let store = store.unwrap_or_else(|e| panic!("{name}: {e}"));
            store.shutdown().unwrap();
        }
        assert_eq!(db.count("SELECT COUNT(*) FROM schema_version"), 1, "{name}");
    }
}

/// Client quotas (`quota::QuotaStore`): limits and names kept, use added up over the instances
/// on one database and read back as totals of the current windows; a database of schema
/// version 1 gets the quota tables.
#[test]
fn quotas_are_kept_and_added_up_over_instances() {
    use gemini_balance::quota::{Limits, QuotaRow, QuotaStore, QuotaUse, Window};
    for db in servers("quotas") {
        let name = db.server.name();
        // An older database: version 1, without the quota tables.
        db.builder().open().unwrap().shutdown().unwrap();
        db.admin(&format!("DROP TABLE {}.quota_use", db.name));
        db.admin(&format!("DROP TABLE {}.quota_limit", db.name));
        db.admin(&format!(
            "UPDATE {}.schema_version SET version = 1",
            db.name
        ));
        let a = db.builder().open().unwrap();
        let b = db.builder().open().unwrap();
        assert_eq!(
            db.count(&format!("SELECT version FROM {}.schema_version", db.name)),
            3,
            "{name}"
        );
        let row = QuotaRow {
            id: "00112233445566aa".into(),
            name: Some("Team A — 東京".into()),
            limits: Some(Limits {
                tokens_per_day: Some(1000),
                ..Limits::default()
            }),
        };
        a.save_quota_row(&row).unwrap();
        assert_eq!(b.quota_rows().unwrap(), vec![row.clone()], "{name}");
        assert!(
            a.save_quota_row(&QuotaRow {
                name: Some(key(1)),
                ..row.clone()
            })
            .is_err(),
            "{name}: a key as a name"
        );
        let current = [(Window::Minute, 100), (Window::Day, 10), (Window::Month, 5)];
        let used = |requests, tokens| {
            current
                .iter()
                .map(|(window, bucket)| QuotaUse {
                    id: row.id.clone(),
                    window: *window,
                    bucket: *bucket,
                    requests,
                    tokens,
                })
                .collect::<Vec<_>>()
        };
        a.exchange_quota_use(&used(2, 30), &current).unwrap();
        // A past minute's use (sent late).
        let mut old = used(1, 1);
        old.truncate(1);
        old[0].bucket = 97;
        b.exchange_quota_use(&old, &current).unwrap();
        // The same window's use twice in one exchange (a minute rolled over during a failed
        // exchange, then the failed use given back): added up, not refused.
        let mut twice = used(1, 10);
        twice.extend(used(0, 2));
        // An identity the column cannot hold is left out, not a failure of every exchange.
        twice.push(QuotaUse {
            id: "x".repeat(300),
            ..used(1, 1)[0].clone()
        });
        let totals = b.exchange_quota_use(&twice, &current).unwrap();
        assert_eq!(totals.len(), 3, "{name}: {totals:?}");
        for total in &totals {
            assert_eq!((total.requests, total.tokens), (3, 42), "{name}: {total:?}");
        }
        // The past minute's row is gone; past days and months are kept.
        assert_eq!(
            db.count(&format!("SELECT COUNT(*) FROM {}.quota_use", db.name)),
            3,
            "{name}"
        );
        a.save_quota_row(&QuotaRow {
            id: row.id.clone(),
            name: None,
            limits: None,
        })
        .unwrap();
        assert!(b.quota_rows().unwrap().is_empty(), "{name}");
        a.shutdown().unwrap();
        b.shutdown().unwrap();
    }
}
