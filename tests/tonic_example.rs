//! `examples/tonic.rs` itself, end to end: its client stack (`Usage`, `Retry` given tonic's body
//! constructor, `KeyRotation` around a `Channel`, no request mapping) against its stand-in
//! Gemini server over loopback.

#[path = "../examples/tonic.rs"]
#[allow(dead_code)]
mod tonic_example;

use gemini_balance::keys::{KeyId, KeyStatus};

#[tokio::test]
async fn the_tonic_example_rotates_past_the_exhausted_key() {
    let demo = tonic_example::run().await.expect("the example runs");
    assert_eq!(
        demo.answers,
        ["you said: Hello", "you said: Hello again"],
        "both calls are served"
    );

    // The first key answered RESOURCE_EXHAUSTED and cools down for the model; the second served.
    let first = demo
        .pool
        .snapshot(&KeyId::of(tonic_example::KEYS[0]))
        .unwrap();
    assert!(
        matches!(first.status, KeyStatus::CoolingDown(_)),
        "{:?}",
        first.status
    );
    let second = demo
        .pool
        .snapshot(&KeyId::of(tonic_example::KEYS[1]))
        .unwrap();
    assert_eq!(second.status, KeyStatus::Active);
    assert_eq!(second.requests, 2);

    // One client record per call (not per attempt), the retried one with both attempts.
    let records = demo.client_usage.records();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].attempts, 2);
    let classes: Vec<_> = records[0].attempt_log.iter().map(|a| a.class).collect();
    assert_eq!(classes, [Some("rate_limited"), None]);
    assert_eq!(records[1].attempts, 1);
    assert!(records.iter().all(|r| r.grpc_status == Some(0)));

    // The server saw three calls: the refused one and the two served.
    let server: Vec<_> = demo
        .server_usage
        .records()
        .iter()
        .map(|r| r.grpc_status)
        .collect();
    assert_eq!(server, [Some(8), Some(0), Some(0)]);
}
