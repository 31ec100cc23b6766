//! `SqliteStore` end to end: concurrent writers, the full-channel path, key state across a
//! restart, no secret in the database file, a crash (SIGKILL) mid-write, settings, log pages
//! and admin deletions.
#![cfg(feature = "sqlite")]

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use gemini_balance::classify::{FailureClass, Outcome, QuotaScope};
use gemini_balance::keys::{DisabledReason, KeyId, KeyPool, KeyStatus};
use gemini_balance::store::logs::{AttemptEntry, ErrorQuery, RequestQuery};
use gemini_balance::store::stats::Window;
use gemini_balance::store::{KeyStateStore, SqliteStore, StatsStore, UsageSink};
use gemini_balance::usage::RequestId;
use gemini_balance::usage::{AttemptRecord, ClientId, RequestRecord};
use http::StatusCode;
use rusqlite::Connection;

const MODEL: &str = "gemini-2.0-flash";

/// A made-up key in Gemini's format whose last four characters are `n`.
fn key(n: u32) -> String {
    let key = format!("AIzaSyStoreTest_abcdefghijklmnopqrs{n:04}");
    assert_eq!(key.len(), 39);
    key
}

/// A request with `failed` failed attempts (429 on key `n + i`) before a success on key `n`.
fn record(id: u64, n: u32, failed: u32, at: SystemTime) -> RequestRecord {
    let mut r = RequestRecord::new(id, at);
    r.route = format!("/v1beta/models/{MODEL}:generateContent");
    r.model = Some(MODEL.to_owned());
    let final_key = KeyId::of(&key(n));
    r.key = Some(final_key.clone());
    r.client = Some(ClientId::of("sk-client-token-0123456789"));
    r.status = 200;
    r.success = true;
    r.attempts = failed + 1;
    r.latency = Duration::from_millis(120);
    r.time_to_first_byte = Some(Duration::from_millis(80));
    r.tokens.prompt = 10;
    r.tokens.candidates = 20;
    r.tokens.total = 30 + u64::from(n % 7);
    for i in 0..failed {
        r.attempt_log.push(AttemptRecord {
            at,
            key: KeyId::of(&key(n + 1000 + i)),
            model: Some(MODEL.to_owned()),
            status: Some(429),
            class: Some("rate_limited"),
            latency: Duration::from_millis(30),
            error_message: Some("Resource has been exhausted (e.g. check quota).".to_owned()),
        });
    }
    r.attempt_log.push(AttemptRecord {
        at,
        key: final_key,
        model: Some(MODEL.to_owned()),
        status: Some(200),
        class: None,
        latency: Duration::from_millis(80),
        error_message: None,
    });
    r
}

fn count(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// Waits for a future of the store's async interface (`StatsStore`) from a plain test.
fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

/// The attempts of one request, as the admin API reads them.
fn attempts(store: &SqliteStore, id: u64) -> Vec<AttemptEntry> {
    block_on(StatsStore::attempts(store, RequestId::from(id))).unwrap()
}

fn open_raw(path: &Path) -> Connection {
    Connection::open(path).unwrap()
}

#[test]
fn concurrent_writers_lose_nothing() {
    const THREADS: u64 = 4;
    const PER_THREAD: u64 = 5_000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.db");
    // Room for every record: this test is about the writer, not about drops.
    let store = SqliteStore::builder(&path)
        .channel_capacity((THREADS * PER_THREAD) as usize)
        .open()
        .unwrap();
    let now = SystemTime::now();
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = store.clone();
            thread::spawn(move || {
                for i in 0..PER_THREAD {
                    let id = t * 1_000_000 + i;
                    // Every tenth request was retried once after a 429.
                    let failed = u32::from(i % 10 == 0);
                    store.record(record(id, (i % 50) as u32, failed, now));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    store.shutdown().unwrap();
    let stats = store.writer_stats();
    assert_eq!(stats.dropped, 0);
    assert_eq!(stats.written, THREADS * PER_THREAD);
    assert_eq!(stats.queued, 0);
    assert!(!stats.running);

    let conn = open_raw(&path);
    let total = (THREADS * PER_THREAD) as i64;
    assert_eq!(count(&conn, "SELECT count(*) FROM request_log"), total);
    let mut stmt = conn.prepare("SELECT request_id FROM request_log").unwrap();
    let ids: HashSet<i64> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let expected: HashSet<i64> = (0..THREADS)
        .flat_map(|t| (0..PER_THREAD).map(move |i| (t * 1_000_000 + i) as i64))
        .collect();
    assert_eq!(ids, expected, "every request id is in the database once");
    let retried = total / 10;
    assert_eq!(
        count(&conn, "SELECT count(*) FROM attempt_log"),
        total + retried
    );
    assert_eq!(count(&conn, "SELECT count(*) FROM error_log"), retried);
    // The rollups agree with the raw rows.
    let raw_tokens = count(&conn, "SELECT sum(total_tokens) FROM request_log");
    for table in ["usage_minute", "usage_hour"] {
        let sql = format!(
            "SELECT sum(calls), sum(total_tokens), sum(attempts), sum(rate_limited_attempts) \
             FROM {table} WHERE dim = ''"
        );
        let sums: (i64, i64, i64, i64) = conn
            .query_row(&sql, [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .unwrap();
        assert_eq!(
            sums,
            (total, raw_tokens, total + retried, retried),
            "{table}"
        );
    }
    // And so do the statistics the library answers with.
    let reopened = SqliteStore::open(&path).unwrap();
    let summary = reopened.summary().unwrap();
    assert_eq!(summary.last_day.calls, total as u64);
    assert_eq!(summary.last_day.tokens.total, raw_tokens as u64);
    assert_eq!(summary.last_minute.calls, total as u64);
    assert_eq!(summary.last_minute.rate_limited_attempts, retried as u64);
    let by_key = reopened
        .usage_by_key(Window::last(Duration::from_secs(86_400)))
        .unwrap();
    // 50 final keys, plus the keys that answered 429.
    assert_eq!(
        by_key.iter().filter(|k| k.counts.calls > 0).count(),
        50,
        "{by_key:?}"
    );
    assert_eq!(
        by_key.iter().map(|k| k.counts.calls).sum::<u64>(),
        total as u64
    );
    assert!(by_key
        .iter()
        .all(|k| k.mask.as_deref().is_some_and(|m| m.starts_with("AIza…"))));
}

#[test]
fn a_full_channel_drops_and_counts_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.db");
    let store = SqliteStore::builder(&path)
        .channel_capacity(8)
        .batch_size(4)
        .busy_timeout(Duration::from_secs(60))
        .open()
        .unwrap();
    // Another connection holds the write lock: the writer stalls on its first batch.
    let blocker = open_raw(&path);
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();

    let now = SystemTime::now();
    let started = Instant::now();
    for id in 0..100 {
        store.record(record(id, 1, 0, now));
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(1),
        "record() never waits for the database: {elapsed:?}"
    );
    // At most the channel (8) plus the batch the writer took (4) were accepted.
    let dropped = store.dropped();
    assert!(dropped >= 88, "dropped {dropped}");
    assert_eq!(store.writer_stats().dropped, dropped);
    assert_eq!(store.queued() + dropped, 100);

    blocker.execute_batch("ROLLBACK").unwrap();
    store.shutdown().unwrap();
    let stats = store.writer_stats();
    assert_eq!(stats.written + stats.dropped, 100, "{stats:?}");
    assert_eq!(stats.lost, 0);
    let conn = open_raw(&path);
    assert_eq!(
        count(&conn, "SELECT count(*) FROM request_log"),
        stats.written as i64
    );
    // After shutdown, records are dropped and counted too.
    store.record(record(1_000, 1, 0, now));
    assert_eq!(store.dropped(), dropped + 1);
}

#[test]
fn a_briefly_locked_database_delays_writes_but_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.db");
    let store = SqliteStore::builder(&path)
        .busy_timeout(Duration::from_millis(200))
        .open()
        .unwrap();
    let blocker = open_raw(&path);
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    for id in 0..10 {
        store.record(record(id, 1, 0, SystemTime::now()));
    }
    // Longer than the busy timeout, shorter than its retries.
    thread::sleep(Duration::from_millis(500));
    blocker.execute_batch("COMMIT").unwrap();
    store.flush().unwrap();
    let stats = store.writer_stats();
    assert_eq!((stats.written, stats.lost), (10, 0), "{stats:?}");
}

#[test]
fn a_database_locked_for_long_loses_the_batch_and_counts_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.db");
    let store = SqliteStore::builder(&path)
        .busy_timeout(Duration::from_millis(50))
        .open()
        .unwrap();
    store.flush().unwrap();
    let blocker = open_raw(&path);
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    for id in 0..10 {
        store.record(record(id, 1, 0, SystemTime::now()));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.writer_stats().lost < 10 {
        assert!(Instant::now() < deadline, "{:?}", store.writer_stats());
        thread::sleep(Duration::from_millis(20));
    }
    blocker.execute_batch("COMMIT").unwrap();
    // The writer goes on once the lock is gone.
    store.record(record(10, 1, 0, SystemTime::now()));
    store.shutdown().unwrap();
    let stats = store.writer_stats();
    assert_eq!(
        (stats.written, stats.lost, stats.queued),
        (1, 10, 0),
        "{stats:?}"
    );
    assert_eq!(
        count(&open_raw(&path), "SELECT count(*) FROM request_log"),
        1
    );
}

#[test]
fn key_state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.db");
    let keys: Vec<String> = (1..=5).map(key).collect();
    let ids: Vec<KeyId> = keys.iter().map(|k| KeyId::of(k)).collect();

    let store = SqliteStore::open(&path).unwrap();
    let pool = KeyPool::builder()
        .keys(&keys)
        .max_failures(3)
        .observer(Arc::new(store.clone()))
        .build()
        .unwrap();
    let report = |n: usize, outcome: Outcome| {
        pool.probe(&ids[n])
            .unwrap()
            .report_for(Some(MODEL), &outcome);
    };
    // Key 1: rejected by the upstream, disabled.
    report(
        0,
        Outcome::Failure(FailureClass::KeyRejected {
            status: StatusCode::BAD_REQUEST,
            reason: "API_KEY_INVALID".to_owned(),
        }),
    );
    // Key 2: rate limited for one model for an hour.
    report(
        1,
        Outcome::Failure(FailureClass::RateLimited {
            retry_after: Some(Duration::from_secs(3600)),
            scope: QuotaScope::PerMinute,
        }),
    );
    // Key 3: one counted failure.
    report(
        2,
        Outcome::Failure(FailureClass::ServerError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
        }),
    );
    // Key 4: disabled, then reset: the latest state (active) is what is kept.
    assert!(pool.disable(&ids[3]));
    assert_eq!(pool.reset(&ids[3..4]), 1);
    // Key 5: removed from the pool, so forgotten.
    assert_eq!(pool.remove(&ids[4..5]).len(), 1);
    let before: Vec<_> = ids[..4]
        .iter()
        .map(|id| pool.snapshot(id).unwrap())
        .collect();
    drop(pool);
    store.shutdown().unwrap();
    drop(store);

    let store = SqliteStore::open(&path).unwrap();
    let states = store.load_key_states().unwrap();
    assert!(
        !states.iter().any(|s| s.id == ids[4]),
        "a removed key is forgotten"
    );
    let pool = KeyPool::builder()
        .keys(&keys[..4])
        .max_failures(3)
        .build()
        .unwrap();
    assert_eq!(pool.restore(&states), 4);
    let after: Vec<_> = ids[..4]
        .iter()
        .map(|id| pool.snapshot(id).unwrap())
        .collect();

    assert_eq!(
        after[0].status,
        KeyStatus::Disabled(DisabledReason::Rejected {
            status: 400,
            reason: "API_KEY_INVALID".to_owned()
        })
    );
    match (&before[1].status, &after[1].status) {
        (KeyStatus::CoolingDown(was), KeyStatus::CoolingDown(is)) => {
            assert_eq!(was.len(), 1);
            assert_eq!(is.len(), 1);
            assert_eq!(is[0].model, MODEL);
            let drift = match is[0].until.duration_since(was[0].until) {
                Ok(d) => d,
                Err(e) => e.duration(),
            };
            assert!(
                drift < Duration::from_secs(1),
                "cooldown end moved by {drift:?}"
            );
        }
        other => panic!("expected a cooldown before and after: {other:?}"),
    }
    // The cooldown is in force: the key is not picked for that model.
    for _ in 0..10 {
        let lease = pool.pick(Some(MODEL), None).unwrap();
        assert_ne!(lease.id(), &ids[1]);
        assert_ne!(lease.id(), &ids[0]);
    }
    assert_eq!(after[2].status, KeyStatus::Active);
    assert_eq!(after[2].consecutive_failures, 1);
    assert_eq!(
        after[2].last_error.as_ref().map(|e| e.class.name()),
        Some("server_error")
    );
    assert_eq!(after[3].status, KeyStatus::Active);
    assert_eq!(after[3].consecutive_failures, 0);
    for (b, a) in before.iter().zip(&after) {
        assert!(a.requests >= b.requests, "totals are restored");
        assert_eq!(a.failures, b.failures);
    }
    store.shutdown().unwrap();
}

/// Every byte of the database, its WAL and shared-memory file.
fn database_bytes(path: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let file = format!("{}{suffix}", path.display());
        if let Ok(mut b) = std::fs::read(&file) {
            bytes.append(&mut b);
        }
    }
    bytes
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn no_secret_reaches_the_database_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.db");
    let secret = key(4242);
    let other_secret = key(4343);
    let client_token = "sk-very-secret-client-token-abcdef";
    let store = SqliteStore::open(&path).unwrap();
    let pool = KeyPool::builder()
        .keys([&secret])
        .observer(Arc::new(store.clone()))
        .build()
        .unwrap();
    let id = KeyId::of(&secret);
    pool.probe(&id).unwrap().report_for(
        Some(MODEL),
        &Outcome::Failure(FailureClass::KeyRejected {
            status: StatusCode::FORBIDDEN,
            reason: format!("key {secret} suspended"),
        }),
    );

    let mut r = RequestRecord::new(99, SystemTime::now());
    r.route = format!("/v1beta/models/{MODEL}:generateContent");
    r.model = Some(MODEL.to_owned());
    r.key = Some(id.clone());
    r.client = Some(ClientId::of(client_token));
    r.status = 403;
    r.request_body = Some(format!(r#"{{"contents":[],"note":"{other_secret}"}}"#));
    r.attempt_log.push(AttemptRecord {
        at: SystemTime::now(),
        key: id.clone(),
        model: Some(MODEL.to_owned()),
        status: Some(403),
        class: Some("key_rejected"),
        latency: Duration::from_millis(10),
        error_message: Some(format!(
            "Consumer 'api_key:{secret}' has been suspended; also {other_secret}."
        )),
    });
    store.record(r);
    assert!(store
        .set_setting("API_KEYS", &format!("[\"{secret}\"]"))
        .is_err());
    store.set_setting("MAX_FAILURES", "3").unwrap();

    // While running (the rows are in the WAL) and after shutdown (checkpointed).
    store.flush().unwrap();
    let running = database_bytes(&path);
    store.shutdown().unwrap();
    let closed = database_bytes(&path);
    for bytes in [&running, &closed] {
        for needle in [secret.as_str(), other_secret.as_str(), client_token] {
            assert!(!contains(bytes, needle), "{needle} is in the database");
        }
        // The test is not vacuous: the rows are there, with fingerprints.
        assert!(contains(bytes, id.mask()));
        assert!(contains(bytes, &id.hex()));
        assert!(contains(bytes, "has been suspended"));
        assert!(contains(bytes, &ClientId::of(client_token).hex()));
    }
    // The redacted message reads as the fingerprint.
    let conn = open_raw(&path);
    let message: String = conn
        .query_row("SELECT message FROM error_log", [], |r| r.get(0))
        .unwrap();
    assert!(
        message.contains(&format!("api_key:{}'", id.mask())),
        "{message}"
    );
}

/// Not a test on its own: the child process of `a_killed_writer_leaves_an_intact_database`.
/// It writes records until it is killed, printing how many are committed.
#[test]
#[ignore = "helper process for a_killed_writer_leaves_an_intact_database"]
fn kill_test_child_writer() {
    let Ok(path) = std::env::var("GEMINI_BALANCE_KILL_TEST_DB") else {
        return;
    };
    let store = SqliteStore::builder(&path).batch_size(256).open().unwrap();
    let reporter = store.clone();
    thread::spawn(move || loop {
        println!("written {}", reporter.writer_stats().written);
        thread::sleep(Duration::from_millis(10));
    });
    let now = SystemTime::now();
    for id in 0.. {
        store.record(record(id, (id % 20) as u32, u32::from(id % 5 == 0), now));
        if store.queued() > 4_000 {
            thread::sleep(Duration::from_millis(1));
        }
    }
}

#[test]
fn a_killed_writer_leaves_an_intact_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "kill_test_child_writer",
            "--ignored",
            "--nocapture",
        ])
        .env("GEMINI_BALANCE_KILL_TEST_DB", &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut committed = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("written ") {
            committed = n.trim().parse::<i64>().unwrap();
            // Kill it in full flight, well past the first batches.
            if committed >= 20_000 || Instant::now() > deadline {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        committed >= 20_000,
        "the child wrote only {committed} records"
    );

    let conn = open_raw(&path);
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let rows = count(&conn, "SELECT count(*) FROM request_log");
    assert!(
        rows >= committed,
        "{rows} rows, {committed} reported committed"
    );
    // Every committed batch is whole: raw rows and rollups moved together.
    let rolled = count(&conn, "SELECT sum(calls) FROM usage_minute WHERE dim = ''");
    assert_eq!(rolled, rows);
    let attempts = count(&conn, "SELECT count(*) FROM attempt_log");
    let rolled_attempts = count(&conn, "SELECT sum(attempts) FROM usage_hour WHERE dim = ''");
    assert_eq!(attempts, rolled_attempts);
    drop(conn);
    // And the store opens it again and goes on.
    let store = SqliteStore::open(&path).unwrap();
    store.record(record(u64::MAX, 1, 0, SystemTime::now()));
    store.shutdown().unwrap();
    let conn = open_raw(&path);
    assert_eq!(count(&conn, "SELECT count(*) FROM request_log"), rows + 1);
}

#[test]
fn commits_reach_the_database_file_within_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.db");
    let store = SqliteStore::open(&path).unwrap();
    store.record(record(1, 1, 0, SystemTime::now()));
    store.flush().unwrap();
    // The database file alone (without its WAL) is what survives a power loss when the WAL
    // was not synced: the writer checkpoints about a second after committing.
    let copy = dir.path().join("copy.db");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        std::fs::copy(&path, &copy).unwrap();
        let rows = Connection::open(&copy)
            .and_then(|c| {
                c.query_row("SELECT count(*) FROM request_log", [], |r| {
                    r.get::<_, i64>(0)
                })
            })
            .unwrap_or(0);
        let _ = std::fs::remove_file(format!("{}-wal", copy.display()));
        if rows == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "not checkpointed after 10 s");
        thread::sleep(Duration::from_millis(100));
    }
    store.shutdown().unwrap();
}

#[test]
fn settings_are_kept_and_refuse_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.db");
    let store = SqliteStore::open(&path).unwrap();
    store.set_setting("MAX_FAILURES", "3").unwrap();
    store.set_setting("MAX_RETRIES", "2").unwrap();
    store.set_setting("MAX_FAILURES", "5").unwrap();
    let err = store
        .set_setting("API_KEYS", &format!("[\"{}\"]", key(1)))
        .unwrap_err();
    assert!(err.to_string().contains("API key"), "{err}");
    store
        .set_setting(
            "CUSTOM_HEADERS",
            r#"{"x-relay-auth":"relay-credential-0123"}"#,
        )
        .unwrap();
    assert!(store.delete_setting("MAX_RETRIES").unwrap());
    assert!(!store.delete_setting("MAX_RETRIES").unwrap());
    // A deleted value leaves no copy in the file (a secret an older version kept here).
    assert!(store.delete_setting("CUSTOM_HEADERS").unwrap());
    // At once, not only once the store is closed: the write-ahead log held the old page.
    assert!(!contains(&database_bytes(&path), "relay-credential-0123"));
    store.shutdown().unwrap();
    assert!(!contains(&database_bytes(&path), "relay-credential-0123"));

    let store = SqliteStore::open(&path).unwrap();
    let settings = store.settings().unwrap();
    assert_eq!(settings.len(), 1);
    assert_eq!(settings[0].name, "MAX_FAILURES");
    assert_eq!(settings[0].value, "5");
    assert!(settings[0].updated_ms > 0);
}

#[test]
fn error_and_request_logs_page_filter_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("usage.db")).unwrap();
    let now = SystemTime::now();
    let hour_ago = now - Duration::from_secs(3600);
    for id in 0..30 {
        let at = if id < 10 { hour_ago } else { now };
        // Two failed attempts each (keys 1000+n and 1001+n), then a success on key n.
        store.record(record(id, (id % 3) as u32, 2, at));
    }
    let mut failed = record(100, 7, 0, now);
    failed.status = 500;
    failed.success = false;
    failed.attempt_log[0].status = Some(500);
    failed.attempt_log[0].class = Some("server_error");
    failed.attempt_log[0].error_message = Some("Internal error encountered.".to_owned());
    store.record(failed);
    store.flush().unwrap();

    let all = store.error_log(&ErrorQuery::default()).unwrap();
    assert_eq!(all.total, 61);
    assert_eq!(all.entries.len(), 50);
    assert_eq!(all.entries[0].class, "server_error", "newest first");
    let second = store
        .error_log(&ErrorQuery {
            offset: 50,
            ..ErrorQuery::default()
        })
        .unwrap();
    assert_eq!(second.entries.len(), 11);
    let key_1000 = KeyId::of(&key(1000)).hex();
    let by_key = store
        .error_log(&ErrorQuery {
            key_id: Some(key_1000.clone()),
            ..ErrorQuery::default()
        })
        .unwrap();
    assert_eq!(by_key.total, 10); // requests with n = 0
    assert!(by_key.entries.iter().all(|e| e.key_id == key_1000));
    let searched = store
        .error_log(&ErrorQuery {
            search: Some("INTERNAL".to_owned()),
            status: Some(500),
            ..ErrorQuery::default()
        })
        .unwrap();
    assert_eq!(searched.total, 1);
    let wildcard = store
        .error_log(&ErrorQuery {
            search: Some("%".to_owned()),
            ..ErrorQuery::default()
        })
        .unwrap();
    assert_eq!(wildcard.total, 0, "% is literal");
    let recent = store
        .error_log(&ErrorQuery {
            from_ms: Some(stats_ms(now - Duration::from_secs(60))),
            class: Some("rate_limited".to_owned()),
            ..ErrorQuery::default()
        })
        .unwrap();
    assert_eq!(recent.total, 40);

    let detail = block_on(StatsStore::error(&store, searched.entries[0].id))
        .unwrap()
        .unwrap();
    assert_eq!(
        detail.message.as_deref(),
        Some("Internal error encountered.")
    );
    assert_eq!(detail.request_id.to_string(), format!("{:016x}", 100));
    let attempts = self::attempts(&store, 5);
    assert_eq!(attempts.len(), 3);
    assert_eq!(attempts[2].status, Some(200));

    let requests = store
        .request_log(&RequestQuery {
            success: Some(true),
            limit: 25,
            ..RequestQuery::default()
        })
        .unwrap();
    assert_eq!(requests.entries.len(), 25);
    assert!(requests.has_more);
    assert!(requests
        .entries
        .iter()
        .all(|r| r.success && r.attempts == 3));
    let failed = store
        .request_log(&RequestQuery {
            success: Some(false),
            ..RequestQuery::default()
        })
        .unwrap();
    assert_eq!(failed.entries.len(), 1);
    assert!(!failed.has_more);
    assert_eq!(failed.entries[0].status, 500);

    // Deletions: by id, and older than a time.
    assert_eq!(store.delete_error_logs(&[detail.id, detail.id]).unwrap(), 1);
    let half_hour_ago = now - Duration::from_secs(1800);
    assert_eq!(store.delete_error_logs_before(half_hour_ago).unwrap(), 20);
    assert_eq!(store.error_log(&ErrorQuery::default()).unwrap().total, 40);
    let ids: Vec<i64> = failed.entries.iter().map(|r| r.id).collect();
    assert_eq!(store.delete_request_logs(&ids).unwrap(), 1);
    // 10 requests and their 30 attempts.
    assert_eq!(store.delete_request_logs_before(half_hour_ago).unwrap(), 40);
    let left = store
        .request_log(&RequestQuery {
            limit: 1000,
            ..RequestQuery::default()
        })
        .unwrap();
    assert_eq!(left.entries.len(), 20);
    // The statistics come from the rollups and keep the deleted requests.
    let summary = store.summary().unwrap();
    assert_eq!(summary.last_day.calls, 31);
    store.shutdown().unwrap();
}

fn stats_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn opening_creates_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data").join("nested").join("usage.db");
    let store = SqliteStore::open(&path).unwrap();
    store.shutdown().unwrap();
    assert!(path.is_file());
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.db");
    let conn = open_raw(&path);
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = SqliteStore::open(&path).unwrap_err().to_string();
    assert!(err.contains("schema version 99"), "{err}");
}

#[tokio::test]
async fn async_reads_run_off_the_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("usage.db")).unwrap();
    store.record(record(1, 1, 0, SystemTime::now()));
    let flushed = store.clone();
    tokio::task::spawn_blocking(move || flushed.flush())
        .await
        .unwrap()
        .unwrap();
    let models: Vec<String> = store
        .read_async(|c| {
            let mut stmt = c.prepare("SELECT model FROM request_log")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
        .unwrap();
    assert_eq!(models, [MODEL]);
    let by_model = store
        .usage(
            gemini_balance::store::UsageBy::Model,
            Window::last(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    assert_eq!(by_model.len(), 1);
    assert_eq!(by_model[0].id, MODEL);
    assert_eq!(by_model[0].counts.calls, 1);
}

/// A request id as the usage layer makes them: the arrival millisecond above a counter.
fn timed_id(at: SystemTime, n: u64) -> u64 {
    ((stats_ms(at) as u64) << 20) | n
}

#[test]
fn a_request_served_by_its_first_attempt_keeps_it_in_its_own_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.db");
    let store = SqliteStore::open(&path).unwrap();
    let now = SystemTime::now();
    // Served by the first attempt: no attempt row.
    let lone = timed_id(now, 1);
    store.record(record(lone, 3, 0, now));
    // A 429 then a success: both attempts in attempt_log.
    let retried = timed_id(now, 2);
    store.record(record(retried, 4, 1, now));
    // One attempt that failed: in attempt_log (and the error log).
    let failed_id = timed_id(now, 3);
    let mut failed = record(failed_id, 5, 0, now);
    failed.status = 500;
    failed.success = false;
    failed.attempt_log[0].status = Some(500);
    failed.attempt_log[0].class = Some("server_error");
    store.record(failed);
    // An id that does not carry its arrival time (a library user's own ids): attempt_log.
    store.record(record(7, 6, 0, now));
    store.flush().unwrap();

    let conn = open_raw(&path);
    assert_eq!(count(&conn, "SELECT count(*) FROM attempt_log"), 4);
    assert_eq!(
        count(
            &conn,
            &format!("SELECT count(*) FROM attempt_log WHERE request_id = {lone}")
        ),
        0
    );
    assert_eq!(
        count(
            &conn,
            "SELECT count(*) FROM request_log WHERE lone_attempt_latency_ms IS NOT NULL"
        ),
        1
    );

    // The admin's view of its attempts is the same as if it had its own row.
    let attempts = self::attempts(&store, lone);
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    let a = &attempts[0];
    assert_eq!(a.at_ms, stats_ms(now));
    assert_eq!(a.key_id, KeyId::of(&key(3)).hex());
    assert_eq!(a.key_mask, KeyId::of(&key(3)).mask());
    assert_eq!(a.model.as_deref(), Some(MODEL));
    assert_eq!(a.status, Some(200));
    assert_eq!(a.class, None);
    assert_eq!(a.latency_ms, 80);
    let attempts = self::attempts(&store, retried);
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0].status, Some(429));
    let attempts = self::attempts(&store, failed_id);
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].class.as_deref(), Some("server_error"));
    assert!(self::attempts(&store, timed_id(now, 99)).is_empty());

    // The last minute's counts (from the raw logs) and the rollups agree: 5 attempts, 2 failed.
    let summary = store.summary().unwrap();
    assert_eq!(summary.last_minute.calls, 4);
    assert_eq!(summary.last_minute.attempts, 5);
    assert_eq!(summary.last_minute.failed_attempts, 2);
    assert_eq!(summary.last_minute.rate_limited_attempts, 1);
    let rollup: (i64, i64) = conn
        .query_row(
            "SELECT sum(attempts), sum(failed_attempts) FROM usage_minute WHERE dim = ''",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(rollup, (5, 2));

    // Deleting the request deletes what there is of it.
    let id: i64 = conn
        .query_row(
            &format!("SELECT id FROM request_log WHERE request_id = {lone}"),
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(store.delete_request_logs(&[id]).unwrap(), 1);
    assert!(self::attempts(&store, lone).is_empty());
}

/// Client quotas (`quota::QuotaStore`): limits, names and the use of the current windows are
/// in the file after a restart; a past minute's use is deleted on the way.
#[test]
fn quotas_survive_a_restart() {
    use gemini_balance::quota::{Limits, QuotaRow, QuotaStore, QuotaUse, Window as QuotaWindow};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("quotas.db");
    let row = QuotaRow {
        id: "*".into(),
        name: None,
        limits: Some(Limits {
            requests_per_minute: Some(60),
            ..Limits::default()
        }),
    };
    let current = [
        (QuotaWindow::Minute, 1000),
        (QuotaWindow::Day, 20),
        (QuotaWindow::Month, 7),
    ];
    let add: Vec<QuotaUse> = current
        .iter()
        .map(|(window, bucket)| QuotaUse {
            id: "c".into(),
            window: *window,
            bucket: *bucket,
            requests: 1,
            tokens: 5,
        })
        .collect();
    let store = SqliteStore::open(&path).unwrap();
    store.save_quota_row(&row).unwrap();
    store.exchange_quota_use(&add, &current).unwrap();
    store.shutdown().unwrap();
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.quota_rows().unwrap(), vec![row]);
    // Three minutes later (two past minutes are kept, for instances whose clocks differ).
    let next_minute = [
        (QuotaWindow::Minute, 1003),
        (QuotaWindow::Day, 20),
        (QuotaWindow::Month, 7),
    ];
    let totals = store.exchange_quota_use(&[], &next_minute).unwrap();
    let mut windows: Vec<_> = totals.iter().map(|t| (t.window, t.tokens)).collect();
    windows.sort_by_key(|(w, _)| w.as_str());
    assert_eq!(
        windows,
        vec![(QuotaWindow::Day, 5), (QuotaWindow::Month, 5)]
    );
    store.shutdown().unwrap();
    let conn = Connection::open(&path).unwrap();
    let minutes: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM quota_use WHERE win = 'minute'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(minutes, 0, "the past minute's row is deleted");
}
