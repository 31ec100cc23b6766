//! `StatsStore`: the same records give the same figures and logs through the trait, whatever
//! the store: in memory, SQLite, PostgreSQL, MySQL/MariaDB (what lets any store serve the
//! admin API). The SQL servers come from the environment (`sql_servers`).
#![cfg(feature = "sqlite")]

#[cfg(all(feature = "postgres", feature = "mysql"))]
#[path = "sql_servers/mod.rs"]
mod sql_servers;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use gemini_balance::keys::KeyId;
use gemini_balance::store::logs::{ErrorQuery, LogDeletion, RequestQuery};
use gemini_balance::store::stats::{Filter, Granularity, Window};
use gemini_balance::store::{MemoryStore, SqliteStore, StatsStore, UsageBy, UsageSink};
use gemini_balance::usage::{AttemptRecord, ClientId, RequestId, RequestRecord};

const FLASH: &str = "gemini-2.0-flash";

fn attempt(key: &KeyId, status: u16, class: Option<&'static str>, at: SystemTime) -> AttemptRecord {
    AttemptRecord {
        at,
        key: key.clone(),
        model: Some(FLASH.into()),
        status: Some(status),
        class,
        latency: Duration::from_millis(40),
        error_message: class.map(|_| "Quota exceeded for metric: requests per minute".into()),
    }
}

/// Two requests: one served by its first attempt, one that failed twice, rate limited both
/// times (once under a 200, as a gRPC `RESOURCE_EXHAUSTED` comes).
fn records(now: SystemTime, a: &KeyId, b: &KeyId) -> (RequestRecord, RequestRecord) {
    let at = now - Duration::from_secs(5);
    let mut ok = RequestRecord::new(RequestId::at(at, 1), at);
    ok.route = format!("/v1beta/models/{FLASH}:generateContent");
    ok.model = Some(FLASH.into());
    ok.key = Some(a.clone());
    ok.client = Some(ClientId::of("sk-client-token-0001"));
    ok.status = 200;
    ok.success = true;
    ok.attempts = 1;
    ok.tokens.total = 30;
    ok.attempt_log.push(attempt(a, 200, None, at));

    let mut failed = RequestRecord::new(RequestId::at(at, 2), at);
    failed.route = ok.route.clone();
    failed.model = Some(FLASH.into());
    failed.key = Some(b.clone());
    failed.status = 429;
    failed.attempts = 2;
    // A key quoted in the body: never served back by either store.
    failed.request_body =
        Some(r#"{"contents":[],"note":"AIzaSyA1234567890abcdefghijklmnopqrstuv"}"#.into());
    failed
        .attempt_log
        .push(attempt(a, 200, Some("rate_limited"), at));
    failed.attempt_log.push(attempt(
        b,
        429,
        Some("rate_limited"),
        at + Duration::from_millis(50),
    ));
    (ok, failed)
}

async fn check(name: &str, stats: Arc<dyn StatsStore>, a: &KeyId, b: &KeyId, failed: RequestId) {
    let day = Window::last(Duration::from_secs(86_400));
    let hour = stats.summary().await.unwrap().last_hour;
    assert_eq!(
        (hour.calls, hour.successes, hour.failures),
        (2, 1, 1),
        "{name}"
    );
    assert_eq!(
        (
            hour.attempts,
            hour.failed_attempts,
            hour.rate_limited_attempts
        ),
        (3, 2, 2),
        "{name}"
    );
    assert_eq!(hour.tokens.total, 30, "{name}");

    let keys = stats.usage(UsageBy::Key, day).await.unwrap();
    let row_a = keys.iter().find(|r| r.id == a.hex()).expect(name);
    assert_eq!(row_a.mask.as_deref(), Some(a.mask()), "{name}");
    assert_eq!(
        (row_a.counts.calls, row_a.counts.attempts),
        (1, 2),
        "{name}"
    );
    let models = stats.usage(UsageBy::Model, day).await.unwrap();
    assert_eq!(models.len(), 1, "{name}");
    assert_eq!(
        (models[0].id.as_str(), models[0].counts.calls),
        (FLASH, 2),
        "{name}"
    );
    let clients = stats.usage(UsageBy::Client, day).await.unwrap();
    assert_eq!(
        clients[0].counts.calls, 1,
        "{name}: one request had a client"
    );

    let top = stats.top_rate_limited_keys(day, 10).await.unwrap();
    assert_eq!(top.len(), 2, "{name}");
    assert!(top.iter().all(|k| k.rate_limited == 1), "{name}");
    let of_a = stats.models_of_key(a.clone(), day).await.unwrap();
    assert_eq!(
        (of_a[0].id.as_str(), of_a[0].counts.attempts),
        (FLASH, 2),
        "{name}"
    );
    assert_eq!(
        stats.key_mask(b.clone()).await.unwrap().as_deref(),
        Some(b.mask())
    );

    let minutes = stats.series(Granularity::Minute, None).await.unwrap();
    assert_eq!(minutes.len(), 60, "{name}");
    assert_eq!(
        minutes.iter().map(|p| p.counts.calls).sum::<u64>(),
        2,
        "{name}"
    );
    let only_b = stats
        .series(Granularity::Hour, Some(Filter::Key(b.hex())))
        .await
        .unwrap();
    assert_eq!(
        only_b.iter().map(|p| p.counts.calls).sum::<u64>(),
        1,
        "{name}"
    );

    let errors = stats
        .errors(ErrorQuery {
            class: Some("rate_limited".into()),
            ..ErrorQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(errors.total, 2, "{name}");
    assert!(
        errors.entries.iter().all(|e| e.request_id == failed),
        "{name}"
    );
    let under_200 = stats
        .errors(ErrorQuery {
            status: Some(200),
            search: Some("QUOTA".into()),
            ..ErrorQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(under_200.total, 1, "{name}");
    let detail = stats
        .error(under_200.entries[0].id)
        .await
        .unwrap()
        .expect(name);
    assert_eq!(
        detail.request_body.as_deref(),
        Some(r#"{"contents":[],"note":"AIza…stuv"}"#),
        "{name}"
    );

    let page = stats
        .requests(RequestQuery {
            success: Some(false),
            ..RequestQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(page.entries.len(), 1, "{name}");
    assert!(!page.has_more, "{name}");
    let entry = &page.entries[0];
    assert_eq!(entry.request_id, failed, "{name}");
    // The wire form the admin API and the web admin use: 16 hex digits.
    let json = serde_json::to_value(entry).unwrap();
    assert_eq!(json["request_id"], failed.to_string(), "{name}");
    let attempts = stats.attempts(failed).await.unwrap();
    assert_eq!(attempts.len(), 2, "{name}");
    assert_eq!(attempts[0].status, Some(200), "{name}");
    assert_eq!(attempts[0].class.as_deref(), Some("rate_limited"), "{name}");
    assert!(stats.attempts(RequestId::from(7)).await.unwrap().is_empty());
    // The request served by its first attempt: that attempt is served back too.
    let served = stats
        .requests(RequestQuery {
            success: Some(true),
            ..RequestQuery::default()
        })
        .await
        .unwrap();
    let lone = stats.attempts(served.entries[0].request_id).await.unwrap();
    assert_eq!(lone.len(), 1, "{name}");
    assert_eq!(
        (lone[0].status, lone[0].key_id.as_str(), lone[0].latency_ms),
        (Some(200), a.hex().as_str(), 40),
        "{name}"
    );

    let first = errors.entries[0].id;
    let deleted = stats.delete_errors(LogDeletion::Ids(vec![first, -1])).await;
    assert_eq!(deleted.unwrap(), 1, "{name}");
    let left = stats.errors(ErrorQuery::default()).await.unwrap();
    assert_eq!(left.total, 1, "{name}");
    let later = SystemTime::now() + Duration::from_secs(60);
    let deleted = stats.delete_requests(LogDeletion::Before(later)).await;
    // SQLite counts the attempt rows it deleted too.
    assert!(deleted.unwrap() >= 2, "{name}");
    let page = stats.requests(RequestQuery::default()).await.unwrap();
    assert!(page.entries.is_empty(), "{name}");
}

/// One store of the table: a name, the store, and what keeps it (a directory, a database).
struct Case {
    name: &'static str,
    sink: Arc<dyn UsageSink>,
    stats: Arc<dyn StatsStore>,
    flush: Box<dyn Fn()>,
    _keep: Box<dyn std::any::Any>,
}

/// Every store this build has and this machine can reach.
fn stores() -> Vec<Case> {
    let mut cases = Vec::new();
    let memory = MemoryStore::new();
    cases.push(Case {
        name: "memory",
        sink: Arc::new(memory.clone()),
        stats: Arc::new(memory),
        flush: Box::new(|| {}),
        _keep: Box::new(()),
    });
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(dir.path().join("usage.db")).unwrap();
    let flushing = sqlite.clone();
    cases.push(Case {
        name: "sqlite",
        sink: Arc::new(sqlite.clone()),
        stats: Arc::new(sqlite),
        flush: Box::new(move || flushing.flush().unwrap()),
        _keep: Box::new(dir),
    });
    #[cfg(all(feature = "postgres", feature = "mysql"))]
    for server in sql_servers::Server::ALL {
        let Some(db) = sql_servers::TestDb::new(server, "stats_store") else {
            continue;
        };
        let store = db.builder().open().unwrap();
        let flushing = store.clone();
        cases.push(Case {
            name: server.name(),
            sink: Arc::new(store.clone()),
            stats: Arc::new(store),
            flush: Box::new(move || flushing.flush().unwrap()),
            _keep: Box::new(db),
        });
    }
    cases
}

#[tokio::test]
async fn every_store_answers_alike() {
    let now = SystemTime::now();
    let a = KeyId::of("AIzaSyA1234567890abcdefghijklmnopqrstuv");
    let b = KeyId::of("AIzaSyB1234567890abcdefghijklmnopqrstuv");
    let (ok, failed) = records(now, &a, &b);
    let failed_id = failed.id;

    for case in stores() {
        case.sink.record(ok.clone());
        case.sink.record(failed.clone());
        (case.flush)();
        check(case.name, case.stats.clone(), &a, &b, failed_id).await;
    }
}
