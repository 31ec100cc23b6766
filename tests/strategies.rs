//! How each selection strategy spreads requests over the keys.

use std::collections::HashMap;

use gemini_balance::classify::Outcome;
use gemini_balance::ext::AttemptContext;
use gemini_balance::keys::{ApiKey, KeyId, KeyPool, Strategy};

fn key(i: usize) -> String {
    format!("AIzaSy{i:033}")
}

fn pool(strategy: Strategy, n: usize) -> KeyPool {
    KeyPool::builder()
        .strategy(strategy)
        .keys((0..n).map(key))
        .build()
        .expect("pool")
}

fn id(i: usize) -> KeyId {
    ApiKey::new(&key(i)).expect("key").id().clone()
}

fn pick_counts(pool: &KeyPool, picks: usize) -> HashMap<KeyId, usize> {
    let mut counts = HashMap::new();
    for _ in 0..picks {
        let lease = pool.pick(Some("m"), None).expect("a key");
        *counts.entry(lease.id().clone()).or_default() += 1;
        lease.report(&Outcome::Success);
    }
    counts
}

#[test]
fn round_robin_takes_keys_in_order() {
    let pool = pool(Strategy::RoundRobin, 3);
    let order: Vec<KeyId> = (0..6)
        .map(|_| pool.pick(None, None).expect("key").id().clone())
        .collect();
    assert_eq!(order, [id(0), id(1), id(2), id(0), id(1), id(2)]);
}

#[test]
fn round_robin_skips_unusable_keys_without_repeating() {
    let pool = pool(Strategy::RoundRobin, 4);
    assert!(pool.disable(&id(1)));
    let order: Vec<KeyId> = (0..6)
        .map(|_| pool.pick(None, None).expect("key").id().clone())
        .collect();
    assert_eq!(order, [id(0), id(2), id(3), id(0), id(2), id(3)]);
}

#[test]
fn weighted_follows_the_weights() {
    let pool = KeyPool::builder()
        .strategy(Strategy::Weighted)
        .weighted_key(key(0), 1)
        .weighted_key(key(1), 2)
        .weighted_key(key(2), 7)
        .build()
        .expect("pool");
    let counts = pick_counts(&pool, 20_000);
    for (i, share) in [(0, 0.1), (1, 0.2), (2, 0.7)] {
        let got = counts[&id(i)] as f64 / 20_000.0;
        assert!((got - share).abs() < 0.03, "key {i}: {got} vs {share}");
    }
}

#[test]
fn random_reaches_every_key_evenly() {
    let pool = pool(Strategy::Random, 5);
    let counts = pick_counts(&pool, 10_000);
    assert_eq!(counts.len(), 5);
    for (k, n) in counts {
        assert!((1_600..=2_400).contains(&n), "{k:?}: {n}");
    }
}

#[test]
fn least_in_flight_avoids_the_busy_key() {
    let pool = pool(Strategy::LeastInFlight, 2);
    let busy = pool.pick(None, None).expect("key");
    for _ in 0..20 {
        let lease = pool.pick(None, None).expect("key");
        assert_ne!(lease.id(), busy.id());
    }
    drop(busy);
    // With nothing in flight both keys are used.
    let counts = pick_counts(&pool, 200);
    assert_eq!(counts.len(), 2);
}

#[test]
fn attempt_context_prefers_and_avoids() {
    let pool = pool(Strategy::RoundRobin, 3);
    let prefer = AttemptContext {
        number: 2,
        prefer: Some(id(2)),
        avoid: vec![],
    };
    for _ in 0..3 {
        assert_eq!(pool.pick(None, Some(&prefer)).expect("key").id(), &id(2));
    }
    let avoid = AttemptContext {
        number: 2,
        prefer: None,
        avoid: vec![id(0), id(1)],
    };
    for _ in 0..3 {
        assert_eq!(pool.pick(None, Some(&avoid)).expect("key").id(), &id(2));
    }
    // When every usable key was tried, an avoided one is still better than no answer.
    let single = self::pool(Strategy::RoundRobin, 1);
    let all = AttemptContext {
        number: 3,
        prefer: None,
        avoid: vec![id(0)],
    };
    assert_eq!(single.pick(None, Some(&all)).expect("key").id(), &id(0));
}

#[test]
fn duplicates_are_reported_and_removed_keys_are_gone() {
    let pool = pool(Strategy::RoundRobin, 2);
    let report = pool.add([
        ApiKey::new(&key(1)).expect("key"),
        ApiKey::new(&key(2)).expect("key"),
        ApiKey::new(&key(2)).expect("key"),
    ]);
    assert_eq!(report.added, [id(2)]);
    assert_eq!(report.duplicates, [id(1), id(2)]);
    assert_eq!(pool.remove(&[id(0), id(9)]), [id(0)]);
    assert_eq!(pool.ids(), [id(1), id(2)]);
}

#[test]
fn totals_are_counted() {
    let pool = pool(Strategy::RoundRobin, 1);
    for i in 0..5 {
        let lease = pool.pick(Some("m"), None).expect("key");
        if i % 2 == 0 {
            lease.report_for(Some("m"), &Outcome::Success);
        } else {
            lease.report_for(
                Some("m"),
                &Outcome::Failure(gemini_balance::classify::FailureClass::ClientError {
                    status: http::StatusCode::BAD_REQUEST,
                }),
            );
        }
    }
    let snap = &pool.snapshots()[0];
    assert_eq!((snap.requests, snap.successes, snap.failures), (5, 3, 2));
    assert_eq!(snap.consecutive_failures, 0, "client errors never count");
    assert_eq!(snap.in_flight, 0);
    assert!(snap.last_used.is_some());
    assert_eq!(
        snap.last_error.as_ref().map(|e| e.class.name()),
        Some("client_error")
    );
}
