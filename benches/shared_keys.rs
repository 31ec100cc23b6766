//! Key-state propagation latency between two instances (two pools in one process, each with
//! its own feed and connections): the time from a change on A (a key disabled, then reset,
//! alternately) until B has applied it, over PostgreSQL (`LISTEN/NOTIFY`) and MySQL/MariaDB
//! (polled every 200 ms). Prints p50, p99 and the maximum.
//!
//! Needs the servers' URLs: GEMINI_BALANCE_TEST_POSTGRES_URL, GEMINI_BALANCE_TEST_MYSQL_URL
//! (an engine without one is skipped). Each run uses its own schema or database, dropped after.
//!
//! ```text
//! cargo bench -p gemini-balance --features postgres,mysql --bench shared_keys
//! SHARED_KEYS_BENCH_CHANGES=50 cargo bench ... # fewer changes (default 200)
//! ```

use std::str::FromStr;
use std::time::{Duration, Instant};

use gemini_balance::keys::shared::{KeyStateFeed, MySqlFeed, PostgresFeed, SharedKeys};
use gemini_balance::keys::KeyPool;

const KEYS: [&str; 2] = [
    "AIzaSyA1234567890abcdefghijklmnopqrstuv",
    "AIzaSyB1234567890abcdefghijklmnopqrstuv",
];

fn pool() -> KeyPool {
    KeyPool::builder().keys(KEYS).build().unwrap()
}

async fn measure<F: KeyStateFeed>(name: &str, a_feed: F, b_feed: F, changes: usize) {
    let (a, b) = (pool(), pool());
    let _sa = SharedKeys::start(a.clone(), a_feed).await;
    let sb = SharedKeys::start(b.clone(), b_feed).await;
    let mut applied = sb.changes();
    let key = a.ids()[0].clone();
    let mut samples = Vec::with_capacity(changes);
    for i in 0..changes {
        let start = Instant::now();
        if i % 2 == 0 {
            a.disable(&key);
        } else {
            a.reset(std::slice::from_ref(&key));
        }
        match tokio::time::timeout(Duration::from_secs(10), applied.recv()).await {
            Ok(Ok(_)) => samples.push(start.elapsed()),
            other => panic!("{name}: change {i} not applied on B: {other:?}"),
        }
        // Changes spread over time, as real ones are (not a burst).
        tokio::time::sleep(Duration::from_millis(fastrand_ms())).await;
    }
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    println!(
        "{name:<22} changes {changes:>4}   p50 {:>8.1} ms   p99 {:>8.1} ms   max {:>8.1} ms",
        at(0.50).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        samples[samples.len() - 1].as_secs_f64() * 1e3,
    );
}

/// 5–255 ms between changes: longer than a poll, so that a change falls anywhere in the
/// reader's poll interval (not just after the read that applied the last one).
fn fastrand_ms() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    5 + u64::from(nanos % 250)
}

fn url(var: &str) -> Option<String> {
    let url = std::env::var(var).ok().filter(|u| !u.is_empty());
    if url.is_none() {
        eprintln!("!!! {var} is not set: that engine is skipped");
    }
    url
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this once, quickly.
    let quick = !std::env::args().any(|a| a == "--bench");
    let changes: usize = std::env::var("SHARED_KEYS_BENCH_CHANGES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(if quick { 4 } else { 200 });
    let tag = format!(
        "bench_{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            % (1 << 40)
    );

    if let Some(url) = url("GEMINI_BALANCE_TEST_POSTGRES_URL") {
        use sqlx::postgres::PgConnectOptions;
        let base = PgConnectOptions::from_str(&url).unwrap();
        let admin = sqlx::PgPool::connect_with(base.clone()).await.unwrap();
        sqlx::query(&format!("CREATE SCHEMA {tag}"))
            .execute(&admin)
            .await
            .unwrap();
        let options = base.options([("search_path", tag.as_str())]);
        let a = PostgresFeed::connect_with(options.clone()).await.unwrap();
        let b = PostgresFeed::connect_with(options).await.unwrap();
        measure("PostgreSQL (NOTIFY)", a, b, changes).await;
        let _ = sqlx::query(&format!("DROP SCHEMA {tag} CASCADE"))
            .execute(&admin)
            .await;
    }

    if let Some(url) = url("GEMINI_BALANCE_TEST_MYSQL_URL") {
        use sqlx::mysql::MySqlConnectOptions;
        let base = MySqlConnectOptions::from_str(&url).unwrap();
        let admin = sqlx::MySqlPool::connect_with(base.clone()).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {tag}"))
            .execute(&admin)
            .await
            .unwrap();
        let options = base.database(&tag);
        let a = MySqlFeed::connect_with(options.clone()).await.unwrap();
        let b = MySqlFeed::connect_with(options).await.unwrap();
        measure("MariaDB (poll 200 ms)", a, b, changes).await;
        let _ = sqlx::query(&format!("DROP DATABASE {tag}"))
            .execute(&admin)
            .await;
    }
}
