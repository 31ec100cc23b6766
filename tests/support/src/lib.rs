//! A loopback mock of the Gemini API, shared by the integration tests of `gemini-balance` and
//! of its proxy: the dev-dependency `gemini-balance-test-support`, whose library is `support`
//! (one crate built once, not a module compiled into every test binary).
//!
//! [`MockGemini::start`] serves an axum app on `127.0.0.1:0` that answers like Gemini, errors
//! included: it takes the key from `x-goog-api-key`, `?key=` or `Authorization: Bearer`, serves
//! `generateContent`, `streamGenerateContent` (SSE), `countTokens`, `embedContent`,
//! `batchEmbedContents` and the model list under `/v1beta` and `/v1` (calling a declared
//! function when a request offers tools; the list paged as Gemini pages it: 50 by default,
//! `pageSize` up to 1000, `nextPageToken`), the OpenAI-compatible endpoint's model list
//! (`openai/models`), and fails per key as told by a [`Fault`]. It counts
//! requests per key and status, remembers every credential it saw and recent requests (head and
//! body).
//!
//! ```ignore
//! let mock = MockGemini::start().await;
//! mock.set_fault(&test_key(1), Fault::InvalidKey);
//! // ... point the stack under test at mock.base_url() ...
//! assert_eq!(mock.requests(&test_key(1)), 1);
//! ```
//!
//! Answers are compressed as Google's front ends compress them (`compress.rs`: gzip whenever
//! the request accepts it; a relay that forces an encoding on request).
//!
//! Files: `fault.rs` (what a key does wrong), `errors.rs` (Gemini's error bodies), `replies.rs`
//! (successful bodies and the model catalogue), `route.rs` (what a path asks for), `record.rs`
//! (counters), `sse.rs` (the streaming body), `server.rs` (the app and its handle).

pub mod compress;
pub mod errors;
mod fault;
pub mod python;
mod record;
pub mod replies;
mod route;
mod server;
mod sse;

pub use self::compress::{Compression, Encoding};
pub use self::fault::Fault;
pub use self::record::{KeyCounts, RecordedRequest};
pub use self::route::{Action, Route};
pub use self::server::MockGemini;
pub use self::sse::StreamGate;

/// A made-up key in Gemini's format (`AIza` + 35 URL-safe characters) whose last four
/// characters are `n`, so fingerprints (`AIza…0001`) tell test keys apart.
pub fn test_key(n: u32) -> String {
    let key = format!("AIzaSyMock_abcdefghijklmnopqrstuvwx{n:04}");
    debug_assert_eq!(key.len(), 39);
    key
}

/// `count` test keys: `test_key(1)` to `test_key(count)`.
pub fn test_keys(count: u32) -> Vec<String> {
    (1..=count).map(test_key).collect()
}

/// Every order of `items` (the key orders of the key-failover tests).
pub fn permutations<T: Clone>(items: &[T]) -> Vec<Vec<T>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut all = Vec::new();
    for i in 0..items.len() {
        let mut rest = items.to_vec();
        let first = rest.remove(i);
        for mut tail in permutations(&rest) {
            tail.insert(0, first.clone());
            all.push(tail);
        }
    }
    all
}

/// A minimal `generateContent` request body asking `prompt`.
pub fn prompt_body(prompt: &str) -> String {
    serde_json::json!({ "contents": [{ "role": "user", "parts": [{ "text": prompt }] }] })
        .to_string()
}

/// A reqwest client builder for tests (no system proxy). Installs ring as rustls' crypto provider
/// first: the workspace's proxy enables reqwest's TLS without a default provider, and cargo
/// unifies features across the workspace.
pub fn client_builder() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().no_proxy()
}
