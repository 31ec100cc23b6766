//! Key pool benchmarks: one `pick` + `report_for(Success)` with 10,000 keys, from one and from
//! two threads, on a healthy and on a degraded pool; and the memory one key costs.
//!
//! Run with `cargo bench --bench key_pool` (figures and method: `docs/performance.md`).
//! `cargo test --bench key_pool` runs every benchmark once as a smoke test.

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_main, BenchmarkId, Criterion, Throughput};
use gemini_balance::classify::{FailureClass, Outcome, QuotaScope};
use gemini_balance::keys::{looks_like_gemini_key, ApiKey, KeyPool, KeyStatus, Strategy};

/// Keys in the pools used for timing.
const KEYS: usize = 10_000;
/// Keys in the pool used for the memory figure.
const MEMORY_KEYS: usize = 100_000;
/// Threads in the concurrent benchmarks.
const THREADS: usize = 2;
/// The model every request is for.
const MODEL: &str = "gemini-2.0-flash";
/// Another model, for the "cooling for another model" case.
const OTHER_MODEL: &str = "gemini-2.5-pro";
/// Long enough that no cooldown ends during a run.
const COOLDOWN: Duration = Duration::from_secs(3600);

const STRATEGIES: [(Strategy, &str); 4] = [
    (Strategy::RoundRobin, "RoundRobin"),
    (Strategy::Weighted, "Weighted"),
    (Strategy::LeastInFlight, "LeastInFlight"),
    (Strategy::Random, "Random"),
];

/// `n` distinct keys in the Gemini format: `AIza` + 35 characters of `[A-Za-z0-9_-]`.
/// The first 6 characters after `AIza` encode the index (so keys are distinct), the other 29
/// are pseudo-random (deterministic, so every run uses the same keys).
fn gemini_keys(n: usize) -> Vec<String> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    (0..n)
        .map(|i| {
            let mut key = String::with_capacity(39);
            key.push_str("AIza");
            for digit in 0..6 {
                key.push(ALPHABET[(i >> (6 * digit)) & 63] as char);
            }
            for _ in 0..29 {
                // splitmix64
                state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                key.push(ALPHABET[((z ^ (z >> 31)) & 63) as usize] as char);
            }
            debug_assert!(looks_like_gemini_key(&key));
            key
        })
        .collect()
}

/// Parses the keys once; every timing pool shares these `ApiKey`s (an `ApiKey` is an `Arc`),
/// so building a pool does not hash 10,000 keys again.
fn parsed_keys(n: usize) -> Vec<ApiKey> {
    gemini_keys(n)
        .iter()
        .map(|k| ApiKey::new(k).expect("generated keys are valid"))
        .collect()
}

fn pool_of(keys: &[ApiKey], strategy: Strategy) -> KeyPool {
    let pool = KeyPool::new(strategy);
    let report = pool.add(keys.iter().cloned());
    assert_eq!(
        report.added.len(),
        keys.len(),
        "generated keys are distinct"
    );
    pool
}

/// Which keys of a degraded pool are cooling down.
#[derive(Clone, Copy)]
enum Degraded {
    /// 9 keys in 10 cooling for `MODEL`, spread evenly (every 10th key is usable).
    Interleaved90,
    /// The first 90% of the pool cooling for `MODEL`, in one run (what round-robin produces
    /// when a burst of 429s hits consecutive keys).
    Contiguous90,
    /// Every key cooling for another model: all are usable for `MODEL`, but each check takes
    /// the key's mutex to read its per-model cooldowns.
    AllCoolingOtherModel,
}

impl Degraded {
    const ALL: [(Degraded, &'static str); 3] = [
        (Degraded::Interleaved90, "interleaved_90pct"),
        (Degraded::Contiguous90, "contiguous_90pct"),
        (Degraded::AllCoolingOtherModel, "all_cooling_other_model"),
    ];
}

/// A pool where keys have reported a 429 (rate limited for an hour) first.
fn degraded_pool(keys: &[ApiKey], strategy: Strategy, layout: Degraded) -> KeyPool {
    let pool = pool_of(keys, strategy);
    let limited = Outcome::Failure(FailureClass::RateLimited {
        retry_after: Some(COOLDOWN),
        scope: QuotaScope::PerMinute,
    });
    let n = keys.len();
    for (i, id) in pool.ids().iter().enumerate() {
        let (cooling, model) = match layout {
            Degraded::Interleaved90 => (i % 10 != 0, MODEL),
            Degraded::Contiguous90 => (i < n / 10 * 9, MODEL),
            Degraded::AllCoolingOtherModel => (true, OTHER_MODEL),
        };
        if cooling {
            let lease = pool.probe(id).expect("the key is in the pool");
            lease.report_for(Some(model), &limited);
        }
    }
    let cooling = pool
        .snapshots()
        .iter()
        .filter(|s| matches!(s.status, KeyStatus::CoolingDown(_)))
        .count();
    let expected = match layout {
        Degraded::Interleaved90 | Degraded::Contiguous90 => n / 10 * 9,
        Degraded::AllCoolingOtherModel => n,
    };
    assert_eq!(cooling, expected, "keys cooling down");
    pool
}

/// The operation measured everywhere: choose a key for `MODEL`, report a success.
#[inline]
fn pick_report(pool: &KeyPool) {
    let lease = pool
        .pick(black_box(Some(MODEL)), None)
        .expect("a usable key");
    lease.report_for(Some(MODEL), &Outcome::Success);
}

/// `THREADS` threads, each with its own clone of `pool`, each doing `iters` pick+report after
/// a common start. Returns the wall time of the slowest thread: criterion divides it by `iters`,
/// so its "time" is the wall time per pick+report *per thread* (latency under contention), and
/// with `Throughput::Elements(THREADS)` its "thrpt" is the aggregate pick+report/s of all threads.
fn concurrent(pool: &KeyPool, iters: u64) -> Duration {
    on_threads(vec![pool.clone(); THREADS], iters, pick_report)
}

/// Runs `op` `iters` times on one thread per pool (all threads start together); returns the
/// wall time of the slowest thread.
fn on_threads(pools: Vec<KeyPool>, iters: u64, op: fn(&KeyPool)) -> Duration {
    let start = Arc::new(Barrier::new(pools.len()));
    let handles: Vec<_> = pools
        .into_iter()
        .map(|pool| {
            let start = Arc::clone(&start);
            thread::spawn(move || {
                start.wait();
                let t0 = Instant::now();
                for _ in 0..iters {
                    op(&pool);
                }
                t0.elapsed()
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("benchmark thread panicked"))
        .max()
        .unwrap_or_default()
}

/// (a) + (b): a healthy pool of 10,000 keys, one thread and two threads, per strategy.
fn healthy(c: &mut Criterion) {
    let keys = parsed_keys(KEYS);
    let pools: Vec<_> = STRATEGIES
        .iter()
        .map(|&(s, name)| (name, pool_of(&keys, s)))
        .collect();

    let mut group = c.benchmark_group(format!("pick_report/{KEYS}_keys/1_thread"));
    group.throughput(Throughput::Elements(1));
    for (name, pool) in &pools {
        group.bench_function(*name, |b| b.iter(|| pick_report(pool)));
    }
    group.finish();

    let mut group = c.benchmark_group(format!("pick_report/{KEYS}_keys/{THREADS}_threads"));
    group.throughput(Throughput::Elements(THREADS as u64));
    for (name, pool) in &pools {
        group.bench_function(*name, |b| b.iter_custom(|iters| concurrent(pool, iters)));
    }
    group.finish();

    // Control for (b): the same two threads, but each on a pool of its own (nothing shared),
    // so the difference from the group above is the cost of sharing one pool.
    let own: Vec<_> = STRATEGIES
        .iter()
        .map(|&(s, name)| {
            (
                name,
                (0..THREADS).map(|_| pool_of(&keys, s)).collect::<Vec<_>>(),
            )
        })
        .collect();
    let mut group = c.benchmark_group(format!(
        "pick_report/{KEYS}_keys/{THREADS}_threads_own_pool"
    ));
    group.throughput(Throughput::Elements(THREADS as u64));
    for (name, pools) in &own {
        group.bench_function(*name, |b| {
            b.iter_custom(|iters| on_threads(pools.clone(), iters, pick_report))
        });
    }
    group.finish();
}

/// (c): pools where most keys are cooling down, so a pick has to skip them.
fn degraded(c: &mut Criterion) {
    let keys = parsed_keys(KEYS);
    for (layout, layout_name) in Degraded::ALL {
        let pools: Vec<_> = STRATEGIES
            .iter()
            .map(|&(s, name)| (name, degraded_pool(&keys, s, layout)))
            .collect();

        let mut group = c.benchmark_group(format!("pick_report_degraded/{layout_name}"));
        group.throughput(Throughput::Elements(1));
        for (name, pool) in &pools {
            group.bench_function(BenchmarkId::new("1_thread", name), |b| {
                b.iter(|| pick_report(pool))
            });
        }
        group.throughput(Throughput::Elements(THREADS as u64));
        for (name, pool) in &pools {
            group.bench_function(BenchmarkId::new(format!("{THREADS}_threads"), name), |b| {
                b.iter_custom(|iters| concurrent(pool, iters))
            });
        }
        group.finish();
    }
}

/// Diagnostics for (b): the pool-wide shared state every pick touches, without the rest of a
/// pick. `len` is the keys snapshot each `pick` takes (an `RwLock` read plus an `Arc<Keys>`
/// clone and drop); `clone_drop` is the `KeyPool` clone each `KeyLease` holds (an `Arc` count
/// increment and decrement). Both are shared cache lines that the two threads contend on.
fn shared_state(c: &mut Criterion) {
    let keys = parsed_keys(KEYS);
    let pool = pool_of(&keys, Strategy::RoundRobin);
    let mut group = c.benchmark_group("shared_state");
    group.throughput(Throughput::Elements(1));
    group.bench_function("1_thread/len", |b| b.iter(|| black_box(pool.len())));
    group.bench_function("1_thread/clone_drop", |b| {
        b.iter(|| drop(black_box(pool.clone())))
    });
    group.throughput(Throughput::Elements(THREADS as u64));
    group.bench_function(format!("{THREADS}_threads/len"), |b| {
        b.iter_custom(|iters| {
            on_threads(vec![pool.clone(); THREADS], iters, |p| {
                black_box(p.len());
            })
        })
    });
    group.bench_function(format!("{THREADS}_threads/clone_drop"), |b| {
        b.iter_custom(|iters| {
            on_threads(vec![pool.clone(); THREADS], iters, |p| {
                drop(black_box(p.clone()))
            })
        })
    });
    group.finish();
}

/// Resident set size of this process, from `/proc/self/status` (Linux only).
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// (d): bytes per key, as the growth of the process's RSS while parsing `n` keys and adding
/// them to an empty pool (the key strings exist before the first reading, so they are not
/// counted; the `AddReport` is dropped before the second). The crate forbids `unsafe`, so a
/// counting `#[global_allocator]` is not possible here; RSS includes allocator overhead and
/// any freed-but-kept temporaries, so this is an upper bound on what the pool retains.
/// Independent of criterion: returns `None` where `/proc` is unavailable.
fn memory_per_key(n: usize) -> Option<f64> {
    let strings = gemini_keys(n);
    let before = rss_bytes()?;
    let pool = KeyPool::new(Strategy::RoundRobin);
    let report = pool.add(
        strings
            .iter()
            .map(|k| ApiKey::new(k).expect("generated keys are valid")),
    );
    assert_eq!(report.added.len(), n, "generated keys are distinct");
    drop(report);
    let after = rss_bytes()?;
    black_box(&pool);
    drop(strings);
    Some(after.saturating_sub(before) as f64 / n as f64)
}

/// `true` for `cargo bench` (not `cargo test`, `--test` or `--list`).
fn benchmarking() -> bool {
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    has("--bench") && !has("--test") && !has("--list")
}

/// Criterion entry for (d). It runs first, before the timing benchmarks have allocated and
/// freed anything, so that freed memory is not reused and hidden. Under `cargo test` it uses
/// 10,000 keys to stay fast (the test profile is not optimized).
fn memory(_: &mut Criterion) {
    let n = if benchmarking() { MEMORY_KEYS } else { KEYS };
    match memory_per_key(n) {
        Some(bytes) => println!(
            "memory per key ({n} keys, RSS growth): {bytes:.0} bytes ({:.2} KiB)",
            bytes / 1024.0
        ),
        None => println!("memory per key: /proc/self/status unavailable, not measured"),
    }
}

/// The generated group function is `pub` and undocumented; a private module keeps the
/// workspace's `missing_docs` lint off it.
mod group {
    criterion::criterion_group!(
        benches,
        super::memory,
        super::healthy,
        super::degraded,
        super::shared_state
    );
}
criterion_main!(group::benches);
