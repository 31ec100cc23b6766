//! Tests that need the store's insides: migration from an old schema, retention, and the
//! rollup windows against the raw log.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection};

use super::stats::{self, Filter, Granularity, Window};
use super::time::{hour_of, minute_of, ms_of, time_of, DAY_MS, HOUR_MS, MINUTE_MS};
use super::{schema, Retention, SqliteStore};
use crate::keys::{KeyId, KeyStatus};
use crate::store::{KeyStateStore, UsageSink};
use crate::usage::{AttemptRecord, ClientId, RequestRecord};

const KEY: &str = "AIzaSyA1234567890abcdefghijklmnopqrstuv";
const OTHER_KEY: &str = "AIzaSyB1234567890abcdefghijklmnopqrstuv";

fn count(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// A request at `at` on `key` for `model`, with one failed attempt (429 on `OTHER_KEY`) when
/// `retried`.
fn record(id: u64, at: SystemTime, key: &str, model: &str, retried: bool) -> RequestRecord {
    let mut r = RequestRecord::new(id, at);
    r.model = Some(model.to_owned());
    r.key = Some(KeyId::of(key));
    r.client = Some(ClientId::of("sk-client"));
    r.status = 200;
    r.success = true;
    r.tokens.total = 10;
    if retried {
        r.attempt_log.push(AttemptRecord {
            at,
            key: KeyId::of(OTHER_KEY),
            model: Some(model.to_owned()),
            status: Some(429),
            class: Some("rate_limited"),
            latency: Duration::from_millis(5),
            error_message: Some("quota".to_owned()),
        });
    }
    r.attempt_log.push(AttemptRecord {
        at,
        key: KeyId::of(key),
        model: Some(model.to_owned()),
        status: Some(200),
        class: None,
        latency: Duration::from_millis(5),
        error_message: None,
    });
    r.attempts = r.attempt_log.len() as u32;
    r
}

#[test]
fn a_version_1_database_is_migrated_with_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.db");
    let now = ms_of(SystemTime::now());
    let key = KeyId::of(KEY);
    {
        let mut conn = Connection::open(&path).unwrap();
        schema::migrate_to(&mut conn, 1).unwrap();
        assert_eq!(schema::version(&conn).unwrap(), 1);
        for i in 0..5_i64 {
            conn.execute(
                "INSERT INTO request_log (request_id, at_ms, protocol, route, model, key_id, \
                 key_mask, status, success, attempts, latency_ms, streamed, completion, \
                 total_tokens) VALUES (?1, ?2, 'gemini', '/v1beta/x', 'gemini-2.0-flash', ?3, \
                 ?4, 200, 1, 1, 100, 0, 'complete', 7)",
                params![i, now - i * MINUTE_MS, key.hex(), key.mask()],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO attempt_log (request_id, at_ms, key_id, key_mask, model, status, \
                 latency_ms) VALUES (?1, ?2, ?3, ?4, 'gemini-2.0-flash', 200, 50)",
                params![i, now - i * MINUTE_MS, key.hex(), key.mask()],
            )
            .unwrap();
        }
        conn.execute(
            "INSERT INTO key_state (key_id, key_mask, status, disabled_kind, disabled_status, \
             disabled_detail, updated_ms) VALUES (?1, ?2, 'disabled', 'rejected', 400, \
             'API_KEY_INVALID', ?3)",
            params![key.hex(), key.mask(), now],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO settings (name, value, updated_ms) VALUES ('MAX_FAILURES', '7', ?1)",
            [now],
        )
        .unwrap();
    }

    let store = SqliteStore::open(&path).unwrap();
    store
        .read(|c| {
            assert_eq!(schema::version(c)?, schema::SCHEMA_VERSION);
            for object in [
                "usage_minute",
                "usage_hour",
                "fingerprint",
                "error_log_key_at",
            ] {
                let n = count(
                    c,
                    &format!("SELECT count(*) FROM sqlite_master WHERE name = '{object}'"),
                );
                assert_eq!(n, 1, "{object} exists");
            }
            assert_eq!(count(c, "SELECT count(*) FROM request_log"), 5);
            Ok(())
        })
        .unwrap();
    // The old rows are in the new rollups (backfilled by the migration).
    let summary = store.summary().unwrap();
    assert_eq!(summary.last_hour.calls, 5);
    assert_eq!(summary.last_hour.tokens.total, 35);
    assert_eq!(summary.last_hour.attempts, 5);
    let keys = store
        .usage_by_key(Window::last(Duration::from_secs(3600)))
        .unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].id, key.hex());
    assert_eq!(keys[0].mask.as_deref(), Some(key.mask()));
    let models = store
        .read(|c| stats::models_of_key(c, &key.hex(), Window::last(Duration::from_secs(3600))))
        .unwrap();
    assert_eq!(models.len(), 1);
    assert_eq!(
        (models[0].id.as_str(), models[0].counts.calls),
        ("gemini-2.0-flash", 5)
    );
    // Key state and settings survived.
    let states = store.load_key_states().unwrap();
    assert_eq!(states.len(), 1);
    assert!(matches!(states[0].status, KeyStatus::Disabled(_)));
    assert_eq!(store.settings().unwrap()[0].value, "7");
    // And the store goes on writing.
    store.record(record(
        99,
        SystemTime::now(),
        KEY,
        "gemini-2.0-flash",
        false,
    ));
    store.flush().unwrap();
    assert_eq!(store.summary().unwrap().last_hour.calls, 6);
    store.shutdown().unwrap();
}

/// Waits until `done` holds on the database (retention runs in the writer's background).
fn wait_for(store: &SqliteStore, what: &str, done: impl Fn(&Connection) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !store.read(|c| Ok(done(c))).unwrap() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn retention_deletes_only_what_is_old() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.db");
    let now = SystemTime::now();
    let days = |d: u64| now - Duration::from_secs(d * 86_400);
    let ages = [1, 6, 8, 29, 31, 401];
    {
        let store = SqliteStore::builder(&path)
            .retention(Retention {
                error_logs: None,
                request_logs: None,
                usage_minutes: Duration::from_secs(1000 * 86_400),
                usage_hours: Duration::from_secs(1000 * 86_400),
                ..Retention::default()
            })
            .open()
            .unwrap();
        let mut id = 0;
        for age in ages {
            for _ in 0..10 {
                id += 1;
                store.record(record(id, days(age), KEY, "m", true));
            }
        }
        store.shutdown().unwrap();
    }
    // Error logs 7 days, request logs 30 days, minutes 3 days, hours 400 days; 3 rows per
    // statement, so each table takes several steps.
    let store = SqliteStore::builder(&path)
        .retention(Retention {
            error_logs: Some(Duration::from_secs(7 * 86_400)),
            request_logs: Some(Duration::from_secs(30 * 86_400)),
            batch_rows: 3,
            ..Retention::default()
        })
        .open()
        .unwrap();
    let cut = |d: u64| ms_of(days(d));
    let older = |table: &str, column: &str, d: u64| {
        format!("SELECT count(*) FROM {table} WHERE {column} < {}", cut(d))
    };
    let (errors_7, requests_30, attempts_30, minutes_3, hours_400) = (
        older("error_log", "at_ms", 7),
        older("request_log", "at_ms", 30),
        older("attempt_log", "at_ms", 30),
        older("usage_minute", "minute_ms", 3),
        older("usage_hour", "hour_ms", 400),
    );
    wait_for(&store, "retention", |c| {
        [
            &errors_7,
            &requests_30,
            &attempts_30,
            &minutes_3,
            &hours_400,
        ]
        .iter()
        .all(|sql| count(c, sql) == 0)
    });
    store
        .read(|c| {
            // What is younger than each limit is all there.
            assert_eq!(count(c, "SELECT count(*) FROM error_log"), 20); // 1 and 6 days
            assert_eq!(count(c, "SELECT count(*) FROM request_log"), 40); // 1, 6, 8, 29
            assert_eq!(count(c, "SELECT count(*) FROM attempt_log"), 80);
            assert_eq!(
                count(c, "SELECT sum(calls) FROM usage_minute WHERE dim = ''"),
                10
            );
            assert_eq!(
                count(c, "SELECT sum(calls) FROM usage_hour WHERE dim = ''"),
                50
            );
            Ok(())
        })
        .unwrap();
    store.shutdown().unwrap();
}

#[test]
fn by_default_request_logs_are_kept_and_error_logs_expire() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.db");
    let old = SystemTime::now() - Duration::from_secs(100 * 86_400);
    {
        let store = SqliteStore::builder(&path)
            .error_log_days(None)
            .open()
            .unwrap();
        store.record(record(1, old, KEY, "m", true));
        store.record(record(2, SystemTime::now(), KEY, "m", true));
        store.shutdown().unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    wait_for(&store, "error log retention", |c| {
        count(c, "SELECT count(*) FROM error_log") == 1
    });
    store
        .read(|c| {
            assert_eq!(count(c, "SELECT count(*) FROM request_log"), 2);
            assert_eq!(count(c, "SELECT count(*) FROM attempt_log"), 4);
            Ok(())
        })
        .unwrap();
}

#[test]
fn midnight_log_purges_also_run_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.db");
    let old = SystemTime::now() - Duration::from_secs(10 * 86_400);
    {
        let store = SqliteStore::builder(&path)
            .error_log_days(None)
            .open()
            .unwrap();
        store.record(record(1, old, KEY, "m", true));
        store.record(record(2, SystemTime::now(), KEY, "m", true));
        store.shutdown().unwrap();
    }
    // Purged at startup, before the first midnight in the zone comes.
    let store = SqliteStore::builder(&path)
        .retention(Retention {
            logs_at_midnight: true,
            request_logs: Some(Duration::from_secs(86_400)),
            ..Retention::default()
        })
        .time_zone(crate::store::TimeZone::named("Asia/Shanghai").unwrap())
        .open()
        .unwrap();
    wait_for(&store, "log retention at startup", |c| {
        count(c, "SELECT count(*) FROM error_log") == 1
            && count(c, "SELECT count(*) FROM request_log") == 1
    });
    store.shutdown().unwrap();
}

#[test]
fn a_retention_change_purges_the_logs_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.db");
    let now = SystemTime::now();
    // Kept at first: the next midnight purge is up to a day away.
    let store = SqliteStore::builder(&path)
        .retention(Retention {
            error_logs: None,
            request_logs: None,
            logs_at_midnight: true,
            ..Retention::default()
        })
        .open()
        .unwrap();
    for (id, age) in [(1, 10), (2, 3), (3, 0)] {
        let at = now - Duration::from_secs(age * 86_400);
        store.record(record(id, at, KEY, "m", true));
    }
    store.flush().unwrap();
    let rows = |table: &str| {
        store
            .read(|c| Ok(count(c, &format!("SELECT count(*) FROM {table}"))))
            .unwrap()
    };
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!((rows("error_log"), rows("request_log")), (3, 3));

    // Error logs 7 days: the 10-day-old one goes now, not at midnight.
    store
        .set_retention(Retention {
            error_logs: Some(Duration::from_secs(7 * 86_400)),
            request_logs: None,
            logs_at_midnight: true,
            ..Retention::default()
        })
        .unwrap();
    wait_for(&store, "the error log purge", |c| {
        count(c, "SELECT count(*) FROM error_log") == 2
    });
    assert_eq!(rows("request_log"), 3);

    // Then request logs 1 day (and the hourly schedule): the 10- and 3-day-old ones go.
    store
        .set_retention(Retention {
            error_logs: Some(Duration::from_secs(7 * 86_400)),
            request_logs: Some(Duration::from_secs(86_400)),
            ..Retention::default()
        })
        .unwrap();
    wait_for(&store, "the request log purge", |c| {
        count(c, "SELECT count(*) FROM request_log") == 1
            && count(c, "SELECT count(*) FROM attempt_log") == 2
    });
    store.shutdown().unwrap();
    assert!(store.set_retention(Retention::default()).is_err());
}

/// Requests spread over the last 30 hours, one every 7 minutes and 13 seconds.
fn spread_store(dir: &std::path::Path) -> (SqliteStore, i64) {
    let store = SqliteStore::open(dir.join("usage.db")).unwrap();
    let now = ms_of(SystemTime::now());
    let step = 7 * MINUTE_MS + 13_000;
    let mut at = now - 30 * HOUR_MS;
    let mut id = 0;
    while at <= now {
        id += 1;
        let (key, model) = if id % 3 == 0 {
            (OTHER_KEY, "gemini-2.5-pro")
        } else {
            (KEY, "gemini-2.0-flash")
        };
        store.record(record(id, time_of(at), key, model, id % 4 == 0));
        at += step;
    }
    store.flush().unwrap();
    (store, now)
}

/// Raw requests in the window as the rollups see it: both ends rounded out to whole minutes.
fn raw_calls(conn: &Connection, from: i64, to: i64) -> u64 {
    let to = minute_of(to - 1) + MINUTE_MS;
    let n: i64 = conn
        .query_row(
            "SELECT count(*) FROM request_log WHERE at_ms >= ?1 AND at_ms < ?2",
            params![minute_of(from), to],
            |r| r.get(0),
        )
        .unwrap();
    n as u64
}

#[test]
fn rollup_windows_match_the_raw_log() {
    let dir = tempfile::tempdir().unwrap();
    let (store, now) = spread_store(dir.path());
    let windows = [
        (now - HOUR_MS, now + 1),
        (now - 24 * HOUR_MS, now + 1),
        (
            now - 29 * HOUR_MS - 17 * MINUTE_MS,
            now - 3 * HOUR_MS + 5_000,
        ),
        (hour_of(now) - 5 * HOUR_MS, hour_of(now) - 2 * HOUR_MS),
        (now - 90 * MINUTE_MS + 1, now - 80 * MINUTE_MS),
        (now - 10 * DAY_MS, now + 1),
    ];
    store
        .read(|c| {
            for (from, to) in windows {
                let window = Window {
                    from_ms: from,
                    to_ms: to,
                };
                let raw = raw_calls(c, from, to);
                let models = stats::by_model(c, window)?;
                let calls: u64 = models.iter().map(|m| m.counts.calls).sum();
                assert_eq!(calls, raw, "window {from}..{to}");
                let keys = stats::by_key(c, window)?;
                let key_calls: u64 = keys.iter().map(|k| k.counts.calls).sum();
                assert_eq!(key_calls, raw, "window {from}..{to} per key");
            }
            // Attempts are counted per attempt key: OTHER_KEY has its own calls and every 429.
            let window = Window::last(Duration::from_secs(86_400));
            let top = stats::top_rate_limited_keys(c, window, 10)?;
            assert_eq!(top.len(), 1);
            assert_eq!(top[0].key_id, KeyId::of(OTHER_KEY).hex());
            let retried: i64 = count(
                c,
                &format!(
                    "SELECT count(*) FROM attempt_log WHERE status = 429 AND at_ms >= {}",
                    minute_of(window.from_ms)
                ),
            );
            assert_eq!(top[0].rate_limited, retried as u64);
            let clients = stats::by_client(c, window)?;
            assert_eq!(clients.len(), 1);
            assert_eq!(clients[0].mask.as_deref(), Some("…"));
            Ok(())
        })
        .unwrap();
    store.shutdown().unwrap();
}

#[test]
fn series_are_complete_and_match_the_totals() {
    let dir = tempfile::tempdir().unwrap();
    let (store, now) = spread_store(dir.path());
    let at = time_of(now);
    store
        .read(|c| {
            let minutes = stats::series(c, Granularity::Minute, at, None)?;
            assert_eq!(minutes.len(), 60);
            assert_eq!(minutes[59].start_ms, minute_of(now));
            assert!(minutes
                .windows(2)
                .all(|w| w[1].start_ms - w[0].start_ms == MINUTE_MS));
            let in_series: u64 = minutes.iter().map(|p| p.counts.calls).sum();
            assert_eq!(
                in_series,
                raw_calls(c, minute_of(now) - 59 * MINUTE_MS, now + 1)
            );
            let hours = stats::series(c, Granularity::Hour, at, None)?;
            assert_eq!(hours.len(), 24);
            assert_eq!(hours[23].start_ms, hour_of(now));
            let in_hours: u64 = hours.iter().map(|p| p.counts.calls).sum();
            assert_eq!(in_hours, raw_calls(c, hour_of(now) - 23 * HOUR_MS, now + 1));
            let pro = Filter::Model("gemini-2.5-pro".to_owned());
            let pro_hours = stats::series(c, Granularity::Hour, at, Some(&pro))?;
            let pro_calls: u64 = pro_hours.iter().map(|p| p.counts.calls).sum();
            assert!(pro_calls > 0 && pro_calls < in_hours);
            Ok(())
        })
        .unwrap();
}

#[test]
fn windows_older_than_the_minute_rows_count_whole_hours() {
    let dir = tempfile::tempdir().unwrap();
    let (store, now) = spread_store(dir.path());
    let horizon = hour_of(now) - 10 * HOUR_MS + 20 * MINUTE_MS;
    store
        .exec(move |c| {
            c.execute("DELETE FROM usage_minute WHERE minute_ms < ?1", [horizon])
                .map_err(super::sql_error("test"))?;
            Ok(())
        })
        .unwrap();
    store
        .read(|c| {
            // Starts before the oldest minute row: its first hour counts whole.
            let from = hour_of(now) - 20 * HOUR_MS + 30 * MINUTE_MS;
            let window = Window {
                from_ms: from,
                to_ms: now + 1,
            };
            let calls: u64 = stats::by_model(c, window)?
                .iter()
                .map(|m| m.counts.calls)
                .sum();
            assert_eq!(calls, raw_calls(c, hour_of(from), now + 1));
            // Starts after it: exact to the minute.
            let from = horizon + 15 * MINUTE_MS;
            let window = Window {
                from_ms: from,
                to_ms: now + 1,
            };
            let calls: u64 = stats::by_model(c, window)?
                .iter()
                .map(|m| m.counts.calls)
                .sum();
            assert_eq!(calls, raw_calls(c, from, now + 1));
            Ok(())
        })
        .unwrap();
}

#[test]
fn models_of_a_key_count_whole_hours() {
    let dir = tempfile::tempdir().unwrap();
    let (store, now) = spread_store(dir.path());
    let from = now - 24 * HOUR_MS;
    let window = Window {
        from_ms: from,
        to_ms: now + 1,
    };
    let key = KeyId::of(KEY).hex();
    let other = KeyId::of(OTHER_KEY).hex();
    let rows = store
        .read(|c| stats::models_of_key(c, &key, window))
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].id, "gemini-2.0-flash");
    let raw = |key: &str, model: &str| {
        store
            .read(|c| {
                Ok(count(
                    c,
                    &format!(
                        "SELECT count(*) FROM request_log WHERE key_id = '{key}' \
                         AND model = '{model}' AND at_ms >= {}",
                        hour_of(from)
                    ),
                ))
            })
            .unwrap() as u64
    };
    assert_eq!(rows[0].counts.calls, raw(&key, "gemini-2.0-flash"));
    assert!(rows[0].counts.calls > 0);
    // OTHER_KEY served its own requests and answered every 429, for both models.
    let rows = store
        .read(|c| stats::models_of_key(c, &other, window))
        .unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let pro = rows.iter().find(|r| r.id == "gemini-2.5-pro").unwrap();
    assert_eq!(pro.counts.calls, raw(&other, "gemini-2.5-pro"));
    let flash = rows.iter().find(|r| r.id == "gemini-2.0-flash").unwrap();
    assert_eq!(flash.counts.calls, 0);
    assert!(flash.counts.rate_limited_attempts > 0);
    assert!(store
        .read(|c| stats::models_of_key(c, "0123456789abcdef", window))
        .unwrap()
        .is_empty());
    // The mask of a key the database has seen; none for one it has not.
    let masks = store
        .read(|c| {
            Ok((
                stats::key_mask(c, &other)?,
                stats::key_mask(c, "0123456789abcdef")?,
            ))
        })
        .unwrap();
    assert_eq!(masks, (Some(KeyId::of(OTHER_KEY).mask().to_owned()), None));
}

/// Runs `f` on another thread and fails if it has not finished within a minute: a liveness
/// bound for calls that would otherwise hang the test (not a measure of speed).
fn finishes<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("{what} did not return: the writer kept gathering"))
}

#[test]
fn records_gather_into_one_batch_and_control_messages_end_the_wait() {
    let dir = tempfile::tempdir().unwrap();
    // The writer gathers for an hour after each batch that is not full, unless woken.
    let store = SqliteStore::builder(dir.path().join("usage.db"))
        .gather(Duration::from_secs(3600))
        .open()
        .unwrap();
    // While a purge is under way the writer gathers 5 ms at most: let the startup retention
    // finish first. Purges run in order, and the second is queued after the startup ones.
    for _ in 0..2 {
        store.delete_request_logs_before(UNIX_EPOCH).unwrap();
    }
    let now = SystemTime::now();
    // An idle writer writes the first record at once (then starts gathering).
    store.record(record(1, now, KEY, "gemini-2.0-flash", false));
    // (The counters move just after the commit, so wait for them rather than for the row.)
    let deadline = Instant::now() + Duration::from_secs(60);
    while store.writer_stats().batches < 1 {
        assert!(
            Instant::now() < deadline,
            "the first record was not written"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(store.writer_stats().written, 1);
    // Records sent while it gathers wait for it (record() never wakes it) and commit together.
    for id in 2..=100 {
        store.record(record(id, now, KEY, "gemini-2.0-flash", id % 10 == 0));
    }
    let s = store.clone();
    finishes("flush", move || s.flush().unwrap());
    let stats = store.writer_stats();
    assert_eq!((stats.written, stats.batches), (100, 2), "{stats:?}");
    assert_eq!(store.summary().unwrap().last_minute.calls, 100);
    // An admin write and a shutdown also end the gathering.
    store.record(record(101, now, KEY, "gemini-2.0-flash", false));
    wait_for(&store, "record 101", |c| {
        count(c, "SELECT count(*) FROM request_log") == 101
    });
    let s = store.clone();
    finishes("set_setting", move || {
        s.set_setting("MAX_FAILURES", "3").unwrap()
    });
    store.record(record(102, now, KEY, "gemini-2.0-flash", false));
    let s = store.clone();
    finishes("shutdown", move || s.shutdown().unwrap());
    assert_eq!(store.writer_stats().written, 102);
}

/// Runs `read` on its own read-only connection and, when its `commit_at`-th SQL statement
/// starts, commits `records` through the store: the writer committing in the middle of a
/// statistic, deterministically. Returns the answer and how many statements it ran.
fn read_with_commit_at<T>(
    store: &SqliteStore,
    commit_at: usize,
    records: Vec<RequestRecord>,
    read: impl FnOnce(&Connection) -> T,
) -> (T, usize) {
    use rusqlite::trace::{TraceEvent, TraceEventCodes};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    let mut conn =
        Connection::open_with_flags(store.path(), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let statements = Arc::new(AtomicUsize::new(0));
    let (seen, writer) = (statements.clone(), store.clone());
    let mut records = Some(records);
    conn.trace_v2(
        TraceEventCodes::SQLITE_TRACE_STMT,
        Some(move |event: TraceEvent<'_>| {
            if let TraceEvent::Stmt(..) = event {
                if seen.fetch_add(1, Ordering::SeqCst) + 1 == commit_at {
                    for r in records.take().unwrap_or_default() {
                        writer.record(r);
                    }
                    // Panics here would be swallowed by the trace callback; the caller checks
                    // `written` instead.
                    let _ = writer.flush();
                }
            }
        }),
    )
    .unwrap();
    let answer = read(&conn);
    (answer, statements.load(Ordering::SeqCst))
}

#[test]
fn every_window_of_a_summary_reads_one_snapshot_while_the_writer_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("usage.db")).unwrap();
    let now = SystemTime::now();
    let summary =
        |conn: &Connection| stats::summary(conn, now, &crate::store::TimeZone::utc()).unwrap();
    let (_, statements) = read_with_commit_at(&store, 0, Vec::new(), summary);
    assert!(statements >= 5, "{statements} statements");
    let mut written = 0;
    // The writer commits three requests (all in every window) before each statement in turn:
    // the first statements see none of them, the others all three, unless the whole summary
    // reads one snapshot.
    for commit_at in 1..=statements {
        let records = (0..3)
            .map(|i| record(written + i, now, KEY, "gemini-2.0-flash", false))
            .collect();
        let (summary, _) = read_with_commit_at(&store, commit_at, records, summary);
        written += 3;
        assert_eq!(store.writer_stats().written, written, "the commit happened");
        let calls = [
            summary.last_minute.calls,
            summary.last_hour.calls,
            summary.last_day.calls,
            summary.this_month.calls,
        ];
        assert!(
            calls.iter().all(|&c| c == calls[0])
                && (calls[0] + 3 == written || calls[0] == written),
            "commit before statement {commit_at} of {statements}: 1m, 1h, 24h, month = {calls:?} \
             ({written} written)"
        );
    }
    let summary = store.summary().unwrap();
    assert_eq!(summary.last_day.calls, written);
}

#[test]
fn a_read_is_one_snapshot_and_leaves_none_behind() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("usage.db")).unwrap();
    let now = SystemTime::now();
    let writer = store.clone();
    let (before, after) = store
        .read(move |c| {
            let before = count(c, "SELECT count(*) FROM request_log");
            writer.record(record(1, now, KEY, "gemini-2.0-flash", false));
            writer.flush()?;
            Ok((before, count(c, "SELECT count(*) FROM request_log")))
        })
        .unwrap();
    assert_eq!(store.writer_stats().written, 1, "committed during the read");
    assert_eq!((before, after), (0, 0), "one read, one snapshot");
    // A transaction the closure opens itself ends with the read: the next read sees new rows.
    store
        .read(|c| {
            c.execute_batch("COMMIT; BEGIN; SELECT count(*) FROM request_log;")
                .map_err(crate::store::sqlite::sql_error("test"))
        })
        .unwrap();
    store.record(record(2, now, KEY, "gemini-2.0-flash", false));
    store.flush().unwrap();
    assert_eq!(
        store
            .read(|c| Ok(count(c, "SELECT count(*) FROM request_log")))
            .unwrap(),
        2
    );
}

#[test]
fn a_usage_table_reads_one_snapshot_while_the_writer_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("usage.db")).unwrap();
    let now = SystemTime::now();
    let window = Window::ending(now, Duration::from_secs(86_400));
    let by_key = |conn: &Connection| stats::by_key(conn, window).unwrap();
    // Requests two hours ago and now: the day is read in parts (per hour, then per minute).
    let batch = |first: u64| {
        vec![
            record(first, now - Duration::from_secs(7_200), KEY, "m", false),
            record(first + 1, now, KEY, "m", false),
        ]
    };
    for r in batch(0) {
        store.record(r);
    }
    store.flush().unwrap();
    let (_, statements) = read_with_commit_at(&store, 0, Vec::new(), by_key);
    let mut written = store.writer_stats().written;
    assert_eq!(written, 2);
    for commit_at in 1..=statements {
        let (rows, _) = read_with_commit_at(&store, commit_at, batch(written), by_key);
        written += 2;
        assert_eq!(store.writer_stats().written, written, "the commit happened");
        let calls = rows.first().map_or(0, |r| r.counts.calls);
        assert!(
            calls + 2 == written || calls == written,
            "commit before statement {commit_at} of {statements}: {calls} calls ({written} written)"
        );
    }
}

#[cfg(feature = "import")]
#[test]
fn an_import_is_written_once_with_its_rollups_and_without_derived_errors() {
    use super::{ImportBatch, ImportedError};

    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("usage.db")).unwrap();
    let at = SystemTime::now() - Duration::from_secs(600);
    // Rows 1..=3 of a request log: two requests (one failed with 429) and an unreadable row.
    let mut batch = ImportBatch::new("python:x", "t_request_log", 3);
    let mut ok = record(1 << 20, at, KEY, "gemini-2.0-flash", false);
    ok.client = None;
    batch.requests.push(ok);
    let mut failed = RequestRecord::new(2 << 20, at);
    failed.key = Some(KeyId::of(OTHER_KEY));
    failed.model = Some("gemini-2.0-flash".to_owned());
    failed.status = 429;
    failed.attempts = 1;
    failed.attempt_log.push(AttemptRecord {
        at,
        key: KeyId::of(OTHER_KEY),
        model: Some("gemini-2.0-flash".to_owned()),
        status: Some(429),
        class: Some("rate_limited"),
        latency: Duration::from_millis(40),
        error_message: None,
    });
    batch.requests.push(failed);
    batch.skipped = 1;
    assert!(store.import(batch.clone()).unwrap());
    // The same rows again, or older ones: nothing is written.
    assert!(!store.import(batch.clone()).unwrap());
    batch.last_id = 2;
    assert!(!store.import(batch).unwrap());

    // The error log's own rows, with a key in the message.
    let mut errors = ImportedError::new(7, at, "rate_limited");
    errors.key = Some(KeyId::of(OTHER_KEY));
    errors.status = Some(429);
    errors.message = Some(format!("quota exceeded for key={OTHER_KEY}"));
    errors.request_body = Some(format!("{{\"key\": \"{KEY}\"}}"));
    let mut error_batch = ImportBatch::new("python:x", "t_error_logs", 1);
    error_batch.errors.push(errors);
    assert!(store.import(error_batch).unwrap());

    let mark = store
        .import_mark("python:x", "t_request_log")
        .unwrap()
        .unwrap();
    assert_eq!((mark.last_id, mark.rows), (3, 3));
    assert_eq!(
        store
            .import_mark("python:x", "t_error_logs")
            .unwrap()
            .unwrap()
            .rows,
        1
    );
    assert_eq!(
        store.import_mark("python:y", "t_request_log").unwrap(),
        None
    );
    store
        .read(|c| {
            assert_eq!(count(c, "SELECT count(*) FROM request_log"), 2);
            // Only the imported error row: the failed attempt did not make one of its own.
            assert_eq!(count(c, "SELECT count(*) FROM error_log"), 1);
            let (message, body): (String, String) = c
                .query_row("SELECT message, request_body FROM error_log", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .unwrap();
            assert!(
                !message.contains(OTHER_KEY) && message.contains("AIza…"),
                "{message}"
            );
            assert!(!body.contains(KEY), "{body}");
            assert_eq!(
                count(c, "SELECT count(*) FROM fingerprint WHERE kind = 'key'"),
                2
            );
            Ok(())
        })
        .unwrap();
    // The rollups count the imported requests and attempts.
    let window = Window::last(Duration::from_secs(3600));
    let by_key = store.usage_by_key(window).unwrap();
    let other = by_key
        .iter()
        .find(|r| r.id == KeyId::of(OTHER_KEY).hex())
        .unwrap();
    assert_eq!(
        (other.counts.calls, other.counts.failures),
        (1, 1),
        "{by_key:?}"
    );
    assert_eq!(other.counts.rate_limited_attempts, 1);
    assert_eq!(store.summary().unwrap().last_hour.calls, 2);
    store.shutdown().unwrap();
}

#[cfg(feature = "import")]
#[test]
fn a_mark_keeps_the_time_of_its_row_and_is_replaced_lower_only_once() {
    use super::ImportBatch;

    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("usage.db")).unwrap();
    let mut first = ImportBatch::new("python:x", "t_request_log", 40);
    first.last_time = Some("2025-01-15 08:00:40.000000".to_owned());
    assert!(store.import(first).unwrap());
    let mark = store
        .import_mark("python:x", "t_request_log")
        .unwrap()
        .unwrap();
    assert_eq!(
        mark.last_time.as_deref(),
        Some("2025-01-15 08:00:40.000000")
    );

    // The source's ids started again: a lower batch is refused unless it replaces the mark.
    let mut again = ImportBatch::new("python:x", "t_request_log", 3);
    again.last_time = Some("2025-01-16 09:00:03.000000".to_owned());
    assert!(!store.import(again.clone()).unwrap());
    again.replaces_mark = Some(40);
    assert!(store.import(again.clone()).unwrap());
    let mark = store
        .import_mark("python:x", "t_request_log")
        .unwrap()
        .unwrap();
    assert_eq!(
        (mark.last_id, mark.last_time.as_deref()),
        (3, Some("2025-01-16 09:00:03.000000"))
    );
    // Once: the mark is no longer where the batch expects it.
    assert!(!store.import(again).unwrap());
    store.shutdown().unwrap();
}

#[cfg(feature = "import")]
#[test]
fn imported_settings_are_remembered_as_fingerprints_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.db");
    let store = SqliteStore::open(&path).unwrap();
    assert!(store.imported_settings("python:x").unwrap().is_empty());
    let token = "sk-remembered-token-value-0042";
    store
        .remember_imported_settings(
            "python:x",
            vec![
                ("AUTH_TOKEN".to_owned(), token.to_owned()),
                ("MAX_RETRIES".to_owned(), "5".to_owned()),
            ],
        )
        .unwrap();
    store
        .remember_imported_settings("python:x", vec![("MAX_RETRIES".to_owned(), "6".to_owned())])
        .unwrap();
    let last = store.imported_settings("python:x").unwrap();
    assert_eq!(last.is_last("AUTH_TOKEN", token), Some(true));
    assert_eq!(last.is_last("MAX_RETRIES", "5"), Some(false));
    assert_eq!(last.is_last("MAX_RETRIES", "6"), Some(true));
    assert_eq!(last.is_last("TIME_OUT", "300"), None);
    // Per source: another source's fingerprint of the same value differs.
    let other = store.imported_settings("python:y").unwrap();
    assert!(other.is_empty());
    assert_ne!(
        other.fingerprint("MAX_RETRIES", "6"),
        last.fingerprint("MAX_RETRIES", "6")
    );
    store.shutdown().unwrap();
    for suffix in ["", "-wal"] {
        let Ok(bytes) = std::fs::read(format!("{}{suffix}", path.display())) else {
            continue;
        };
        assert!(
            !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
            "the database holds the value"
        );
    }
}

/// `?` turns a rusqlite error into a `StoreError` that keeps it as its cause.
#[test]
fn a_sqlite_error_converts_keeping_its_cause() {
    fn run() -> Result<(), crate::store::StoreError> {
        let conn = rusqlite::Connection::open_in_memory()?;
        conn.execute("NOT SQL", [])?;
        Ok(())
    }
    let err = run().unwrap_err();
    assert!(err.to_string().starts_with("SQLite: "), "{err}");
    assert!(std::error::Error::source(&err).is_some());
}

/// The instant `secs` seconds after the epoch.
fn unix(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

#[test]
fn this_month_is_the_month_of_the_store_time_zone() {
    let dir = tempfile::tempdir().unwrap();
    // Keep the 2024 rollups that these records make (the default retention would drop them).
    let mut retention = Retention::default();
    retention.usage_minutes = Duration::from_secs(100 * 365 * 86_400);
    retention.usage_hours = retention.usage_minutes;
    let store = SqliteStore::builder(dir.path().join("usage.db"))
        .retention(retention)
        .time_zone(crate::store::TimeZone::named("Asia/Shanghai").unwrap())
        .open()
        .unwrap();
    assert_eq!(store.time_zone().name(), "Asia/Shanghai");
    // 2024-02-29T15:30Z is still February in Shanghai; 16:30Z is already March 1st there.
    // 2024-04-01T03:30Z is still March in New York (UTC-4 in summer); 04:30Z is April.
    for (id, secs) in [
        (1, 1_709_220_600), // 2024-02-29T15:30Z
        (2, 1_709_224_200), // 2024-02-29T16:30Z
        (3, 1_709_254_800), // 2024-03-01T01:00Z
        (4, 1_711_942_200), // 2024-04-01T03:30Z
        (5, 1_711_945_800), // 2024-04-01T04:30Z
    ] {
        store.record(record(id, unix(secs), KEY, "gemini-2.0-flash", false));
    }
    store.flush().unwrap();
    let month = |tz: &crate::store::TimeZone, now: u64| {
        let s = store.read(|c| stats::summary(c, unix(now), tz)).unwrap();
        (s.this_month.calls, s.month_start_ms / 1000)
    };
    let shanghai = store.time_zone().clone();
    let new_york = crate::store::TimeZone::named("America/New_York").unwrap();
    // At 2024-03-01T02:00Z: March began at 2024-02-29T16:00Z in Shanghai, later in UTC.
    assert_eq!(month(&shanghai, 1_709_258_400), (2, 1_709_222_400));
    assert_eq!(
        month(&crate::store::TimeZone::utc(), 1_709_258_400),
        (1, 1_709_251_200)
    );
    // At 2024-04-01T12:00Z: April began at local midnight in summer time, 04:00Z, not at the
    // 05:00Z a fixed winter offset (UTC-5) would give.
    assert_eq!(month(&new_york, 1_711_972_800), (1, 1_711_944_000));
    assert_eq!(
        month(&crate::store::TimeZone::fixed(-300).unwrap(), 1_711_972_800),
        (0, 1_711_947_600)
    );
    assert_eq!(
        month(&crate::store::TimeZone::utc(), 1_711_972_800),
        (2, 1_711_929_600)
    );
    store.shutdown().unwrap();
}

/// Over its size budget, the store deletes the oldest raw log rows (requests, their attempts,
/// errors) until the pages in use are under it; the rollups keep counting every request.
#[test]
fn a_size_budget_deletes_the_oldest_log_rows_and_keeps_the_rollups() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("usage.db")).unwrap();
    let now = SystemTime::now();
    let total = 6_000u64;
    for id in 1..=total {
        // Oldest first, one a second; every third retried (an attempt and an error row).
        let at = now - Duration::from_secs(total - id);
        store.record(record(id, at, KEY, "gemini-2.0-flash", id % 3 == 0));
    }
    store.flush().unwrap();
    let used = |store: &SqliteStore| {
        store
            .read(|c| Ok(super::retention::used_bytes(c).unwrap()))
            .unwrap()
    };
    let before = used(&store);
    let oldest = |c: &Connection| count(c, "SELECT MIN(at_ms) FROM request_log");
    let first = store.read(|c| Ok(oldest(c))).unwrap();
    let max_bytes = before / 2;
    store
        .set_retention(Retention {
            max_bytes: Some(max_bytes),
            ..Retention::default()
        })
        .unwrap();
    wait_for(&store, "the budget purge", |c| {
        super::retention::used_bytes(c).unwrap() <= max_bytes
    });
    let (requests, errors, orphans, rest_oldest, calls) = store
        .read(|c| {
            Ok((
                count(c, "SELECT count(*) FROM request_log"),
                count(c, "SELECT count(*) FROM error_log"),
                count(
                    c,
                    "SELECT count(*) FROM attempt_log WHERE at_ms < (SELECT MIN(at_ms) FROM request_log)",
                ),
                oldest(c),
                count(c, "SELECT SUM(calls) FROM usage_hour WHERE dim = ''"),
            ))
        })
        .unwrap();
    assert!(
        requests > 0 && requests < total as i64,
        "some rows go, not all: {requests}"
    );
    assert!(errors < (total / 3) as i64, "errors go too: {errors}");
    assert_eq!(orphans, 0, "the attempts of deleted requests go with them");
    assert!(rest_oldest > first, "the oldest go first");
    assert_eq!(calls, total as i64, "the rollups keep every request");
    // New records are still written.
    for id in total + 1..=total + 100 {
        store.record(record(
            id,
            SystemTime::now(),
            KEY,
            "gemini-2.0-flash",
            false,
        ));
    }
    store.flush().unwrap();
    let newest = store
        .read(|c| Ok(count(c, "SELECT MAX(request_id) FROM request_log")))
        .unwrap();
    assert_eq!(newest, (total + 100) as i64);
    let disk = store.disk_space();
    assert!(disk.database_bytes > 0);
    assert!(disk.free_bytes.is_some_and(|free| free > 0), "{disk:?}");
    store.shutdown().unwrap();
}
