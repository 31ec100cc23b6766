//! A program that calls Gemini through a pool of API keys, with reqwest-middleware.
//!
//! Each call gets a key from the pool; a rate-limited key (429) is cooled down for that model
//! and the call moves to another key at once, an invalid key is taken out, a 503 is retried
//! after a backoff (or the `Retry-After` Gemini asked for), and every call leaves one usage
//! record with its attempts and tokens.
//!
//! Run it with your keys (comma-separated) and a prompt:
//!
//! ```sh
//! GEMINI_API_KEYS=AIzaSy...1,AIzaSy...2 \
//!   cargo run --example client --features middleware -- "Why is the sky blue?"
//! ```
//!
//! Optional: `GEMINI_MODEL` (default `gemini-2.0-flash`) and `GEMINI_BASE_URL` (default
//! `https://generativelanguage.googleapis.com`; point it at a gemini-balance proxy or a mock).

use std::time::Duration;

use gemini_balance::client::{KeyRotationMiddleware, RetryMiddleware, UsageMiddleware};
use gemini_balance::keys::KeyPool;
use gemini_balance::retry::{RetryLayer, ATTEMPTS_HEADER};
use gemini_balance::store::MemoryStore;
use reqwest_middleware::ClientWithMiddleware;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let keys = std::env::var("GEMINI_API_KEYS")
        .map_err(|_| "set GEMINI_API_KEYS to a comma-separated list of Gemini API keys")?;
    let model = std::env::var("GEMINI_MODEL").unwrap_or_else(|_| "gemini-2.0-flash".to_owned());
    let base = std::env::var("GEMINI_BASE_URL")
        .unwrap_or_else(|_| "https://generativelanguage.googleapis.com".to_owned());
    let prompt = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "Say hello in five languages.".to_owned());
    // reqwest's TLS is built without a default crypto provider in this workspace.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let pool = KeyPool::builder()
        .keys(keys.split(',').map(str::trim).filter(|k| !k.is_empty()))
        .max_failures(3)
        .build()?;
    let store = MemoryStore::new();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    let client = client(http, pool.clone(), store.clone());

    let answer = ask(&client, &base, &model, &prompt).await?;
    match &answer.text {
        Ok(text) => println!("{text}"),
        // Error bodies are redacted: a key quoted by the upstream never gets this far.
        Err(message) => println!("{}: {message}", answer.status),
    }

    println!(
        "\n--- {} after {} attempt(s)",
        answer.status, answer.attempts
    );
    for record in store.records() {
        println!(
            "usage: model={} key={} tokens prompt={} answer={} total={}",
            record.model.as_deref().unwrap_or("?"),
            record.key.map(|k| k.to_string()).unwrap_or_default(),
            record.tokens.prompt,
            record.tokens.candidates,
            record.tokens.total,
        );
        for attempt in record.attempt_log {
            println!(
                "  attempt: key={} status={:?} class={}",
                attempt.key,
                attempt.status,
                attempt.class.unwrap_or("success")
            );
        }
    }
    for key in pool.snapshots() {
        println!(
            "key {} {:?} requests={} failures={}",
            key.id, key.status, key.requests, key.failures
        );
    }
    Ok(())
}

/// The client: outermost first, as the tower layers: usage, retry, key rotation.
pub fn client(http: reqwest::Client, pool: KeyPool, store: MemoryStore) -> ClientWithMiddleware {
    reqwest_middleware::ClientBuilder::new(http)
        .with(UsageMiddleware::new(store))
        .with(RetryMiddleware::from(RetryLayer::new().max_attempts(3)))
        .with(KeyRotationMiddleware::new(pool))
        .build()
}

/// What one call came back with.
#[derive(Debug)]
pub struct Answer {
    /// The HTTP status the program got.
    pub status: reqwest::StatusCode,
    /// How many upstream attempts it took (the `x-gemini-balance-attempts` header).
    pub attempts: String,
    /// The answer's text, or the error's message.
    pub text: Result<String, String>,
}

/// Asks `model` one question through `client`.
pub async fn ask(
    client: &ClientWithMiddleware,
    base: &str,
    model: &str,
    prompt: &str,
) -> Result<Answer, Error> {
    let body =
        serde_json::json!({ "contents": [{ "role": "user", "parts": [{ "text": prompt }] }] });
    let res = client
        .post(format!("{base}/v1beta/models/{model}:generateContent"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await?;
    let status = res.status();
    let attempts = res
        .headers()
        .get(ATTEMPTS_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("?")
        .to_owned();
    let answer: serde_json::Value = serde_json::from_slice(&res.bytes().await?)?;
    let text = if status.is_success() {
        Ok(answer["candidates"][0]["content"]["parts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|part| part["text"].as_str())
            .collect::<String>())
    } else {
        Err(answer["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned())
    };
    Ok(Answer {
        status,
        attempts,
        text,
    })
}
