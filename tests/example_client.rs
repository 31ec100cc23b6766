//! `examples/client.rs` itself, end to end: its reqwest-middleware client (compiled here from the
//! example's own file) against the mock Gemini over loopback, with a pool whose first keys are
//! rate limited and invalid. The call must still be answered by the good key, in one request
//! of the program's, with one usage record that lists every attempt.

#[path = "../examples/client.rs"]
#[allow(dead_code)]
mod client;

use std::time::Duration;

use gemini_balance::keys::{KeyPool, KeyStatus, Strategy};
use gemini_balance::store::MemoryStore;
use support::{replies, test_key, Fault, MockGemini};

#[tokio::test]
async fn the_example_client_moves_past_a_rate_limited_and_an_invalid_key() {
    let mock = MockGemini::start().await;
    mock.set_fault(
        &test_key(1),
        Fault::RateLimited {
            retry_delay: "30s".to_owned(),
            per_day: false,
        },
    );
    mock.set_fault(&test_key(2), Fault::InvalidKey);
    // In order, so the two bad keys are met first.
    let pool = KeyPool::builder()
        .keys([test_key(1), test_key(2), test_key(3)])
        .strategy(Strategy::RoundRobin)
        .build()
        .unwrap();
    let store = MemoryStore::new();
    let http = support::client_builder().build().unwrap();
    let client = client::client(http, pool.clone(), store.clone());

    let answer = client::ask(&client, &mock.base_url(), "gemini-2.0-flash", "hello")
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.text.as_deref(),
        Ok(replies::answer_text("hello").as_str())
    );
    assert_eq!(answer.attempts, "3");

    let snapshots = pool.snapshots();
    assert!(
        matches!(snapshots[1].status, KeyStatus::Disabled { .. }),
        "{:?}",
        snapshots[1]
    );
    assert_eq!(mock.requests(&test_key(3)), 1);

    let mut records = store.records();
    for _ in 0..100 {
        if !records.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        records = store.records();
    }
    assert_eq!(records.len(), 1, "{records:?}");
    let record = &records[0];
    assert!(record.success);
    assert_eq!(record.attempt_log.len(), 3);
    assert_eq!(record.key.as_ref(), Some(&snapshots[2].id));
    assert!(record.tokens.total > 0);

    // A second question goes straight to the good key: the bad ones are cooling or disabled.
    let again = client::ask(&client, &mock.base_url(), "gemini-2.0-flash", "again")
        .await
        .unwrap();
    assert_eq!(again.attempts, "1");
}
