//! PostgreSQL and MySQL/MariaDB store benchmarks (`store::SqlStore`): the cost of `record()` on
//! the request path, the records per second one instance writes (batched multi-row inserts and
//! rollup upserts), and the statistics queries over 1,000,000 requests in 24 h.
//!
//! Needs the servers of `GEMINI_BALANCE_TEST_POSTGRES_URL` and `GEMINI_BALANCE_TEST_MYSQL_URL`
//! (an engine whose variable is unset is skipped). Each run works in a schema (PostgreSQL) or
//! database (MySQL) of its own, dropped afterwards.
//!
//! Run with `cargo bench --bench sql_store --features postgres,mysql` (figures and method:
//! `docs/performance.md`). `cargo test --bench sql_store --features postgres,mysql` runs it once
//! on small data as a smoke test. `GB_SQL_BENCH_ROWS` sets the size of the statistics database
//! (default 1,000,000).

#[path = "../tests/sql_servers/mod.rs"]
mod sql_servers;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use gemini_balance::keys::KeyId;
use gemini_balance::store::logs::{ErrorQuery, RequestQuery};
use gemini_balance::store::stats::{Granularity, Window};
use gemini_balance::store::{SqlStore, StatsStore, UsageBy, UsageSink};
use gemini_balance::usage::{AttemptRecord, ClientId, RequestId, RequestRecord};
use sql_servers::{Server, TestDb};

const KEYS: usize = 100;
const MODELS: [&str; 4] = [
    "gemini-2.0-flash",
    "gemini-2.5-flash",
    "gemini-2.5-pro",
    "gemini-embedding-001",
];
const CLIENTS: usize = 5;

/// `true` for `cargo bench` (not `cargo test`).
fn benchmarking() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test")
}

struct Ids {
    keys: Vec<KeyId>,
    clients: Vec<ClientId>,
}

fn ids() -> &'static Ids {
    static IDS: OnceLock<Ids> = OnceLock::new();
    IDS.get_or_init(|| Ids {
        keys: (0..KEYS)
            .map(|i| KeyId::of(&format!("AIzaSyBench_abcdefghijklmnopqrstuvw{i:04}")))
            .collect(),
        clients: (0..CLIENTS)
            .map(|i| ClientId::of(&format!("sk-bench-client-token-{i:04}")))
            .collect(),
    })
}

/// Request `i` as the usage layer records it (the SQLite benchmark's mix): 93% succeed at
/// once, 5% after a 429 on another key, 2% fail with a 500.
fn record(i: usize, at: SystemTime) -> RequestRecord {
    let ids = ids();
    let model = MODELS[i % MODELS.len()];
    let key = ids.keys[i % KEYS].clone();
    // Ids as the usage layer makes them: the arrival millisecond above a counter.
    let mut r = RequestRecord::new(RequestId::at(at, i as u64), at);
    r.route = format!("/v1beta/models/{model}:generateContent");
    r.model = Some(model.to_owned());
    r.key = Some(key.clone());
    r.client = Some(ids.clients[i % CLIENTS].clone());
    r.latency = Duration::from_millis(400 + (i % 300) as u64);
    r.time_to_first_byte = Some(Duration::from_millis(350));
    let attempt =
        |key: KeyId, status: u16, class: Option<&'static str>, msg: Option<&str>| AttemptRecord {
            at,
            key,
            model: Some(model.to_owned()),
            status: Some(status),
            class,
            latency: Duration::from_millis(300),
            error_message: msg.map(str::to_owned),
        };
    match i % 100 {
        0..=1 => {
            r.status = 500;
            r.attempt_log.push(attempt(
                key,
                500,
                Some("server_error"),
                Some("An internal error has occurred. Please retry."),
            ));
        }
        2..=6 => {
            let other = ids.keys[(i + KEYS - 1) % KEYS].clone();
            r.status = 200;
            r.success = true;
            r.attempt_log.push(attempt(
                other,
                429,
                Some("rate_limited"),
                Some("Resource has been exhausted (e.g. check quota)."),
            ));
            r.attempt_log.push(attempt(key, 200, None, None));
        }
        _ => {
            r.status = 200;
            r.success = true;
            r.attempt_log.push(attempt(key, 200, None, None));
        }
    }
    r.attempts = r.attempt_log.len() as u32;
    if r.success {
        r.tokens.prompt = 120 + (i % 50) as u64;
        r.tokens.candidates = 300;
        r.tokens.total = r.tokens.prompt + 300;
    }
    r
}

/// Sends `n` records spread over the last `span`, never dropping (waits while the channel is
/// more than half full); returns when all are written.
fn fill(store: &SqlStore, n: usize, span: Duration, capacity: u64) {
    let now = SystemTime::now();
    for i in 0..n {
        let back = span.mul_f64((n - i) as f64 / n as f64);
        while store.writer_stats().queued > capacity / 2 {
            std::thread::sleep(Duration::from_micros(200));
        }
        store.record(record(i, now - back));
    }
    store.flush().unwrap();
}

/// CPU time (user + system) of this process so far, from `/proc/self/stat` (Linux; zero
/// elsewhere): with the store's thread in this process, the client side of the writes.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name; in clock
    // ticks of 1/100 s on Linux.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let full = benchmarking();
    let rows: usize = std::env::var("GB_SQL_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 1_000_000 } else { 2_000 });
    let sustained = if full { 200_000 } else { 2_000 };
    for server in Server::ALL {
        let Some(db) = TestDb::new(server, "bench") else {
            continue;
        };
        let name = server.name();
        println!("== {name}");

        // record(): the request path, with room in the channel (the writer drains meanwhile).
        let capacity = 1 << 20;
        let store = db.builder().channel_capacity(capacity).open().unwrap();
        let prepared: Vec<RequestRecord> = (0..100_000.min(sustained * 10))
            .map(|i| record(i, SystemTime::now()))
            .collect();
        let mut chunks = Vec::new();
        let mut it = prepared.into_iter().peekable();
        while it.peek().is_some() {
            let chunk: Vec<RequestRecord> = it.by_ref().take(1_000).collect();
            let n = chunk.len() as u32;
            let start = Instant::now();
            for r in chunk {
                store.record(r);
            }
            chunks.push(start.elapsed() / n);
        }
        println!(
            "record(): median {:?} per record (chunks of 1,000)",
            median(chunks)
        );
        store.flush().unwrap();

        // Records per second written by one instance: queued at once, timed until written.
        let records: Vec<RequestRecord> = (0..sustained)
            .map(|i| record(i, SystemTime::now()))
            .collect();
        let before = store.writer_stats();
        let cpu = cpu_time();
        let start = Instant::now();
        for r in records {
            store.record(r);
        }
        store.flush().unwrap();
        let took = start.elapsed();
        let cpu = cpu_time().saturating_sub(cpu);
        let after = store.writer_stats();
        assert_eq!(after.dropped, 0, "{name}: {after:?}");
        let written = after.written - before.written;
        println!(
            "sustained: {written} records in {took:.2?}: {:.0} records/s ({} batches); \
             this process's CPU {cpu:.2?} ({:.1} µs per record)",
            written as f64 / took.as_secs_f64(),
            after.batches - before.batches,
            cpu.as_secs_f64() * 1e6 / written as f64
        );
        store.shutdown().unwrap();
        drop(store);

        // Statistics over `rows` requests in the last 24 h (`GB_SQL_BENCH_ROWS=0`: skipped).
        if rows == 0 {
            continue;
        }
        let db = TestDb::new(server, "bench_stats").unwrap();
        let store = db.builder().channel_capacity(1 << 16).open().unwrap();
        let start = Instant::now();
        fill(&store, rows, Duration::from_secs(86_000), 1 << 16);
        println!("filled {rows} requests in {:.1?}", start.elapsed());
        let stats: Arc<dyn StatsStore> = Arc::new(store.clone());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let day = Window::last(Duration::from_secs(86_400));
        let time = |label: &str, f: &dyn Fn()| {
            f();
            let runs: Vec<Duration> = (0..10)
                .map(|_| {
                    let start = Instant::now();
                    f();
                    start.elapsed()
                })
                .collect();
            println!("{label}: median {:.2?}", median(runs));
        };
        time("summary (1 min, 1 h, 24 h, month)", &|| {
            runtime.block_on(stats.summary()).unwrap();
        });
        time("usage per key, 24 h", &|| {
            runtime.block_on(stats.usage(UsageBy::Key, day)).unwrap();
        });
        time("usage per model, 24 h", &|| {
            runtime.block_on(stats.usage(UsageBy::Model, day)).unwrap();
        });
        time("series, 24 hours", &|| {
            runtime
                .block_on(stats.series(Granularity::Hour, None))
                .unwrap();
        });
        time("series, 60 minutes", &|| {
            runtime
                .block_on(stats.series(Granularity::Minute, None))
                .unwrap();
        });
        time("top rate-limited keys, 24 h", &|| {
            runtime
                .block_on(stats.top_rate_limited_keys(day, 10))
                .unwrap();
        });
        time("error log, first page with total", &|| {
            runtime
                .block_on(stats.errors(ErrorQuery::default()))
                .unwrap();
        });
        time("request log, first page", &|| {
            runtime
                .block_on(stats.requests(RequestQuery::default()))
                .unwrap();
        });
        store.shutdown().unwrap();
    }
}
