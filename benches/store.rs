//! SQLite store benchmarks: the cost of `record()` on the request path (with room in the
//! channel, and when it is full), the writer thread's CPU time per record at the proxy's pace,
//! the sustained insert rate through the writer thread, the memory a full channel holds, and
//! the statistics queries over 1,000,000 requests in 24 h.
//!
//! Run with `cargo bench --bench store` (figures and method: `docs/performance.md`).
//! `cargo test --bench store` runs every benchmark once on small data as a smoke test.
//! `GB_STORE_BENCH=writer_cpu` (or `memory`, `record`, `sustained`, `stats`) runs one group
//! only, skipping the others' setup (the statistics database takes a while to build).
//! `writer_cpu` also reads `GB_WRITER_CPU_PER_TICK` (records per 5 ms, default `50,10`),
//! `GB_WRITER_CPU_GATHER_MS` (the store's `gather`) and `GB_WRITER_CPU_SEQUENTIAL_IDS=1`.

use std::hint::black_box;
use std::path::Path;
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use criterion::{criterion_main, BatchSize, Criterion, Throughput};
use gemini_balance::keys::KeyId;
use gemini_balance::store::logs::{ErrorQuery, RequestQuery};
use gemini_balance::store::stats::{Filter, Granularity, Window};
use gemini_balance::store::{SqliteStore, StatsStore, UsageBy, UsageSink};
use gemini_balance::usage::{AttemptRecord, ClientId, RequestRecord};
use rusqlite::Connection;

/// Distinct keys, used round-robin.
const KEYS: usize = 100;
/// Models, clients.
const MODELS: [&str; 4] = [
    "gemini-2.0-flash",
    "gemini-2.5-flash",
    "gemini-2.5-pro",
    "gemini-embedding-001",
];
const CLIENTS: usize = 5;
/// Records per sustained-rate sample.
const SUSTAINED: usize = 200_000;
/// Requests in the statistics database (spread over 24 h).
const STATS_ROWS: usize = 1_000_000;
/// Records sent per timed chunk in the `record()` benchmark (well under the channel size).
const CHUNK: usize = 1_000;

/// `true` for `cargo bench` (not `cargo test`, `--test` or `--list`).
fn benchmarking() -> bool {
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    has("--bench") && !has("--test") && !has("--list")
}

/// `false` when `GB_STORE_BENCH` names another group.
fn selected(group: &str) -> bool {
    std::env::var("GB_STORE_BENCH").map_or(true, |only| only == group)
}

/// The ids the records use, made once (a `KeyId` is hashed from its key).
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

/// Request `i`, as the usage layer would record it: 93% succeed on the first attempt, 5% are
/// retried after a 429 on the previous key, 2% fail with a 500 (with the upstream message).
fn record(i: usize, at: SystemTime) -> RequestRecord {
    let ids = ids();
    let model = MODELS[i % MODELS.len()];
    let key = ids.keys[i % KEYS].clone();
    let mut r = RequestRecord::new(i as u64 ^ 0x9E37_79B9_7F4A_7C15, at);
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
            r.success = false;
            r.attempt_log.push(attempt(
                key,
                500,
                Some("server_error"),
                Some("An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting"),
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
        r.tokens.thoughts = 100;
        r.tokens.total = r.tokens.prompt + 400;
    }
    r
}

/// Sends records without dropping any: waits while the channel is more than half full.
fn send_paced(store: &SqliteStore, records: impl Iterator<Item = RequestRecord>, capacity: u64) {
    for r in records {
        while store.queued() > capacity / 2 {
            thread::sleep(Duration::from_micros(200));
        }
        store.record(r);
    }
}

fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// RSS growth with a full channel of the default capacity: the writer is held up by another
/// connection's write lock while records are sent, first the channel's worth, then ten
/// times more (which must all be dropped without growing memory).
fn memory(_: &mut Criterion) {
    if !selected("memory") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("memory.db");
    let store = SqliteStore::builder(&path)
        .busy_timeout(Duration::from_secs(600))
        .open()
        .expect("open");
    let capacity = store.writer_stats().capacity as usize;
    let blocker = Connection::open(&path).expect("open blocker");
    blocker
        .execute_batch("BEGIN IMMEDIATE")
        .expect("take the write lock");
    let now = SystemTime::now();
    let _ = record(0, now); // ids and allocator warm
    let Some(before) = rss_bytes() else {
        println!("memory: /proc/self/status unavailable, not measured");
        return;
    };
    for i in 0..capacity + 2_000 {
        store.record(record(i, now));
    }
    let full = rss_bytes().unwrap_or(0);
    for i in 0..10 * capacity {
        store.record(record(i, now));
    }
    let after_more = rss_bytes().unwrap_or(0);
    let stats = store.writer_stats();
    println!(
        "memory with a full channel (capacity {capacity}): RSS +{:.1} MiB ({:.0} bytes per queued \
         record); after {} more records (dropped): +{:.1} MiB; queued {}, dropped {}",
        full.saturating_sub(before) as f64 / 1048576.0,
        full.saturating_sub(before) as f64 / stats.queued.max(1) as f64,
        10 * capacity,
        after_more.saturating_sub(before) as f64 / 1048576.0,
        stats.queued,
        stats.dropped,
    );
    blocker.execute_batch("ROLLBACK").expect("release");
    store.shutdown().expect("shutdown");
}

/// CPU time (on-CPU nanoseconds from `schedstat`) used so far by the store's writer threads
/// (`gemini-balance-sqlite`, cut to 15 characters by the kernel). Read from `/proc`: the
/// writer is another thread, and the crate forbids `unsafe` (no `clock_gettime` of a thread).
fn writer_cpu_time() -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut found = false;
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let dir = task.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim_end() != "gemini-balance-" {
            continue;
        }
        let schedstat = std::fs::read_to_string(dir.join("schedstat")).ok()?;
        let ns: u64 = schedstat.split_whitespace().next()?.parse().ok()?;
        total += Duration::from_nanos(ns);
        found = true;
    }
    found.then_some(total)
}

/// A request as the proxy records it at full speed: a successful `generateContent` answered by
/// the first key tried (one attempt), one of the proxy benchmark's 10 keys in turn, its one
/// client token and model, token counts; no error, no body.
fn proxy_record(i: usize) -> RequestRecord {
    let ids = ids();
    let at = SystemTime::now();
    let model = MODELS[0];
    let key = ids.keys[i % 10].clone();
    // The usage layer's ids are random; time-ordered ones would append to the attempt log's
    // request-id index instead of landing all over it (`GB_WRITER_CPU_SEQUENTIAL_IDS=1`).
    static SEQUENTIAL: OnceLock<bool> = OnceLock::new();
    let sequential =
        *SEQUENTIAL.get_or_init(|| std::env::var_os("GB_WRITER_CPU_SEQUENTIAL_IDS").is_some());
    let id = if sequential {
        (i as u64) << 8
    } else {
        fastrand::u64(..)
    };
    let mut r = RequestRecord::new(id, at);
    r.route = format!("/v1beta/models/{model}:generateContent");
    r.model = Some(model.to_owned());
    r.key = Some(key.clone());
    r.client = Some(ids.clients[0].clone());
    r.status = 200;
    r.success = true;
    r.attempts = 1;
    r.latency = Duration::from_millis(2);
    r.time_to_first_byte = Some(Duration::from_millis(2));
    r.tokens.prompt = 12;
    r.tokens.candidates = 30;
    r.tokens.total = 42;
    r.attempt_log.push(AttemptRecord {
        at,
        key,
        model: Some(model.to_owned()),
        status: Some(200),
        class: None,
        latency: Duration::from_millis(2),
        error_message: None,
    });
    r
}

/// The writer's CPU time per record at the proxy's pace: `per_tick` records every 5 ms (the
/// writer's default gather), for `run`. Returns (CPU per record, records per batch).
fn writer_cpu_run(dir: &Path, per_tick: usize, run: Duration) -> Option<(Duration, f64)> {
    let path = dir.join(format!("writer-cpu-{}.db", fastrand::u64(..)));
    let mut builder = SqliteStore::builder(&path);
    if let Some(ms) = std::env::var("GB_WRITER_CPU_GATHER_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        builder = builder.gather(Duration::from_millis(ms));
    }
    let store = builder.open().expect("open");
    let tick = Duration::from_millis(5);
    let mut sent = 0;
    let pace = |until: Instant, sent: &mut usize| {
        let mut next = Instant::now();
        while next < until {
            for _ in 0..per_tick {
                store.record(proxy_record(*sent));
                *sent += 1;
            }
            next += tick;
            thread::sleep(next.saturating_duration_since(Instant::now()));
        }
    };
    // Warm-up: the tables' first pages, the statement cache, the known fingerprints.
    pace(Instant::now() + run / 4, &mut sent);
    store.flush().expect("flush");
    let (cpu_before, stats_before) = (writer_cpu_time()?, store.writer_stats());
    pace(Instant::now() + run, &mut sent);
    store.flush().expect("flush");
    let (cpu_after, stats_after) = (writer_cpu_time()?, store.writer_stats());
    assert_eq!(stats_after.dropped, 0, "the writer must keep up");
    let records = stats_after.written - stats_before.written;
    let batches = (stats_after.batches - stats_before.batches).max(1);
    store.shutdown().expect("shutdown");
    drop(store);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    Some((
        (cpu_after - cpu_before) / u32::try_from(records.max(1)).unwrap_or(u32::MAX),
        records as f64 / batches as f64,
    ))
}

/// Prints the writer's CPU time per record for ~50 and ~10 records every 5 ms (the proxy
/// benchmark at 64 connections and at 1 connection): median and range of 3 runs.
fn writer_cpu(_: &mut Criterion) {
    if !selected("writer_cpu") {
        return;
    }
    let (run, runs) = if benchmarking() {
        (Duration::from_secs(2), 3)
    } else {
        (Duration::from_millis(100), 1)
    };
    // `GB_WRITER_CPU_PER_TICK=10,50,200` measures other paces.
    let paces: Vec<usize> = std::env::var("GB_WRITER_CPU_PER_TICK")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![50, 10]);
    let dir = tempfile::tempdir().expect("temp dir");
    for per_tick in paces {
        let mut samples = Vec::new();
        for _ in 0..runs {
            match writer_cpu_run(dir.path(), per_tick, run) {
                Some(sample) => samples.push(sample),
                None => {
                    println!("writer_cpu: /proc/self/task/*/schedstat unavailable, not measured");
                    return;
                }
            }
        }
        samples.sort_by_key(|(cpu, _)| *cpu);
        let micros = |d: Duration| d.as_secs_f64() * 1e6;
        println!(
            "writer_cpu/{per_tick}_per_5ms: {:.1} us of writer CPU per record [{:.1}-{:.1}], \
             {:.0} records per batch ({} runs of {:.1} s)",
            micros(samples[samples.len() / 2].0),
            micros(samples[0].0),
            micros(samples[samples.len() - 1].0),
            samples[samples.len() / 2].1,
            samples.len(),
            run.as_secs_f64(),
        );
    }
}

/// `record()` with room in the channel (the writer draining on the other core), and on a full
/// channel (the drop path).
fn record_cost(c: &mut Criterion) {
    if !selected("record") {
        return;
    }
    let mut group = c.benchmark_group("record");
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path().join("record.db")).expect("open");
    let now = SystemTime::now();
    group.bench_function("with_room", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            let mut left = iters as usize;
            while left > 0 {
                let n = left.min(CHUNK);
                let records: Vec<RequestRecord> = (0..n).map(|i| record(i, now)).collect();
                let start = Instant::now();
                for r in records {
                    store.record(r);
                }
                timed += start.elapsed();
                // Untimed: let the writer catch up so the channel never fills.
                store.flush().expect("flush");
                left -= n;
            }
            timed
        })
    });
    assert_eq!(store.dropped(), 0, "the with_room benchmark must not drop");
    store.shutdown().expect("shutdown");

    let path = dir.path().join("full.db");
    let full = SqliteStore::builder(&path)
        .channel_capacity(1_024)
        .busy_timeout(Duration::from_secs(600))
        .open()
        .expect("open");
    let blocker = Connection::open(&path).expect("open blocker");
    blocker
        .execute_batch("BEGIN IMMEDIATE")
        .expect("take the write lock");
    for i in 0..4_096 {
        full.record(record(i, now));
    }
    group.bench_function("channel_full", |b| {
        b.iter_batched(|| record(7, now), |r| full.record(r), BatchSize::SmallInput)
    });
    blocker.execute_batch("ROLLBACK").expect("release");
    full.shutdown().expect("shutdown");
    group.finish();
}

/// Wall time for `n` records from the first `record()` to the end of `flush()`, on a fresh
/// database whose channel holds them all (so none is dropped and the sender never waits).
fn sustained_run(dir: &Path, records: Vec<RequestRecord>) -> Duration {
    let n = records.len();
    let path = dir.join(format!("sustained-{}.db", fastrand::u64(..)));
    let store = SqliteStore::builder(&path)
        .channel_capacity(n + 1)
        .open()
        .expect("open");
    let start = Instant::now();
    for r in records {
        store.record(r);
    }
    store.flush().expect("flush");
    let elapsed = start.elapsed();
    assert_eq!(store.writer_stats().written, n as u64);
    store.shutdown().expect("shutdown");
    drop(store);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    elapsed
}

fn sustained(c: &mut Criterion) {
    if !selected("sustained") {
        return;
    }
    let n = if benchmarking() { SUSTAINED } else { 2_000 };
    let dir = tempfile::tempdir().expect("temp dir");
    let mut group = c.benchmark_group("sustained_insert");
    group.sample_size(10);
    group.throughput(Throughput::Elements(n as u64));
    let now = SystemTime::now();
    group.bench_function(format!("{n}_records"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let records: Vec<RequestRecord> = (0..n).map(|i| record(i, now)).collect();
                total += sustained_run(dir.path(), records);
            }
            total
        })
    });
    group.finish();
}

/// Bytes per request on disk: `n` records of the usual mix (spread over an hour, so the
/// rollups have their real share), the pages in use divided by `n`, printed.
fn size(_c: &mut Criterion) {
    if !selected("size") {
        return;
    }
    let n = if benchmarking() { 200_000 } else { 2_000 };
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("size.db");
    let store = SqliteStore::builder(&path)
        .channel_capacity(n + 1)
        .open()
        .expect("open");
    let start = SystemTime::now() - Duration::from_secs(3600);
    for i in 0..n {
        let at = start + Duration::from_millis((i as u64 * 3_600_000) / n as u64);
        store.record(record(i, at));
    }
    store.flush().expect("flush");
    store.shutdown().expect("shutdown");
    let conn = Connection::open(&path).expect("open");
    let pragma = |name: &str| -> u64 {
        conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0))
            .expect("pragma") as u64
    };
    let used = (pragma("page_count") - pragma("freelist_count")) * pragma("page_size");
    let table = |name: &str| -> u64 {
        conn.query_row(
            "SELECT SUM(pgsize) FROM dbstat WHERE name = ?1",
            [name],
            |r| r.get::<_, Option<i64>>(0),
        )
        .ok()
        .flatten()
        .unwrap_or(0) as u64
    };
    println!(
        "store size: {n} requests: {used} bytes in use, {:.0} bytes per request",
        used as f64 / n as f64
    );
    for name in [
        "request_log",
        "request_log_at",
        "attempt_log",
        "attempt_log_at",
        "attempt_log_request",
        "error_log",
        "usage_minute",
        "usage_hour",
    ] {
        let bytes = table(name);
        if bytes > 0 {
            println!("  {name}: {:.0} bytes per request", bytes as f64 / n as f64);
        }
    }
}

/// The statistics database: `rows` requests spread evenly over the last 24 hours, written
/// through the store (so the rollups are the writer's). Prints the sustained rate it took.
fn stats_db(dir: &Path, rows: usize) -> (SqliteStore, SystemTime) {
    let path = dir.join("stats.db");
    let store = SqliteStore::builder(&path)
        .channel_capacity(65_536)
        .open()
        .expect("open");
    let now = SystemTime::now();
    let span = Duration::from_secs(86_400);
    let step = span.as_nanos() / rows as u128;
    let start = Instant::now();
    send_paced(
        &store,
        (0..rows).map(|i| {
            let ago = span - Duration::from_nanos((step * i as u128) as u64);
            record(i, now - ago)
        }),
        65_536,
    );
    store.flush().expect("flush");
    let elapsed = start.elapsed();
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0)
        + std::fs::metadata(format!("{}-wal", path.display()))
            .map(|m| m.len())
            .unwrap_or(0);
    println!(
        "stats database: {rows} requests over 24 h written in {:.1} s ({:.0} records/s, \
         paced, record construction included); {:.0} MiB on disk",
        elapsed.as_secs_f64(),
        rows as f64 / elapsed.as_secs_f64(),
        size as f64 / 1048576.0
    );
    (store, now)
}

fn queries(c: &mut Criterion) {
    if !selected("stats") {
        return;
    }
    let rows = if benchmarking() { STATS_ROWS } else { 10_000 };
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, now) = stats_db(dir.path(), rows);
    let day = Window::ending(now, Duration::from_secs(86_400));
    let key = ids().keys[3].hex();
    let mut group = c.benchmark_group(format!("stats_{rows}_rows"));
    group.sample_size(20);
    // Through the trait, as the admin API asks: each query on Tokio's blocking pool, on the
    // store's read-only connection.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let wait = |future| runtime.block_on(future);
    let stats: &dyn StatsStore = &store;
    // Sanity: the answers cover every row.
    let models = wait(stats.usage(UsageBy::Model, day)).expect("query");
    let calls: u64 = models.iter().map(|m| m.counts.calls).sum();
    assert_eq!(calls, rows as u64, "{models:?}");
    group.bench_function("summary_1m_1h_24h_month", |b| {
        b.iter(|| black_box(runtime.block_on(stats.summary()).expect("query")))
    });
    for (name, by) in [
        ("by_key_24h", UsageBy::Key),
        ("by_model_24h", UsageBy::Model),
        ("by_client_24h", UsageBy::Client),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| black_box(runtime.block_on(stats.usage(by, day)).expect("query")))
        });
    }
    group.bench_function("top_429_keys_24h", |b| {
        b.iter(|| {
            black_box(
                runtime
                    .block_on(stats.top_rate_limited_keys(day, 20))
                    .expect("query"),
            )
        })
    });
    group.bench_function("series_minutes_1h", |b| {
        b.iter(|| {
            black_box(
                runtime
                    .block_on(stats.series(Granularity::Minute, None))
                    .expect("query"),
            )
        })
    });
    group.bench_function("series_hours_24h", |b| {
        b.iter(|| {
            black_box(
                runtime
                    .block_on(stats.series(Granularity::Hour, None))
                    .expect("query"),
            )
        })
    });
    let model = Filter::Model(MODELS[1].to_owned());
    group.bench_function("series_hours_24h_one_model", |b| {
        b.iter(|| {
            black_box(
                runtime
                    .block_on(stats.series(Granularity::Hour, Some(model.clone())))
                    .expect("query"),
            )
        })
    });
    let key_id = ids().keys[3].clone();
    group.bench_function("models_of_key_24h_raw", |b| {
        b.iter(|| {
            black_box(
                runtime
                    .block_on(stats.models_of_key(key_id.clone(), day))
                    .expect("query"),
            )
        })
    });
    let pages = [
        ("errors_page_1", ErrorQuery::default()),
        (
            "errors_page_1_of_one_key",
            ErrorQuery {
                key_id: Some(key.clone()),
                ..ErrorQuery::default()
            },
        ),
        (
            "errors_text_search",
            ErrorQuery {
                search: Some("internal error".to_owned()),
                ..ErrorQuery::default()
            },
        ),
        (
            "errors_page_100",
            ErrorQuery {
                offset: 99 * 50,
                ..ErrorQuery::default()
            },
        ),
    ];
    for (name, query) in &pages {
        group.bench_function(*name, |b| {
            b.iter(|| {
                black_box(
                    runtime
                        .block_on(stats.errors(query.clone()))
                        .expect("query"),
                )
            })
        });
    }
    let by_key = RequestQuery {
        key_id: Some(key.clone()),
        ..RequestQuery::default()
    };
    group.bench_function("requests_page_1_of_one_key", |b| {
        b.iter(|| {
            black_box(
                runtime
                    .block_on(stats.requests(by_key.clone()))
                    .expect("query"),
            )
        })
    });
    // The worst case of a key filter (no per-key index on the request log): a key
    // with no request scans the whole log, unless the query bounds the time.
    let unused = RequestQuery {
        key_id: Some("0123456789abcdef".to_owned()),
        ..RequestQuery::default()
    };
    group.bench_function("requests_page_1_of_an_unused_key", |b| {
        b.iter(|| {
            black_box(
                runtime
                    .block_on(stats.requests(unused.clone()))
                    .expect("query"),
            )
        })
    });
    let unused_last_hour = RequestQuery {
        from_ms: Some(day.to_ms - 3_600_000),
        ..unused.clone()
    };
    group.bench_function("requests_page_1_of_an_unused_key_last_hour", |b| {
        b.iter(|| {
            black_box(
                runtime
                    .block_on(stats.requests(unused_last_hour.clone()))
                    .expect("query"),
            )
        })
    });
    group.finish();
    store.shutdown().expect("shutdown");
}

/// The generated group function is `pub` and undocumented; a private module keeps the
/// workspace's `missing_docs` lint off it.
mod group {
    criterion::criterion_group!(
        benches,
        super::memory,
        super::size,
        super::writer_cpu,
        super::record_cost,
        super::sustained,
        super::queries
    );
}
criterion_main!(group::benches);
