//! `GET /metrics` of the proxy binary after known traffic through the loopback mock Gemini:
//! the exact counts of requests, attempts, retries, per-key attempts and tokens, histogram
//! counts that match the requests, keys by state, the store's counters; who is let in
//! (METRICS_TOKEN, METRICS_ALLOWED_IPS, off by default); no key or token in the scrape.

mod common;

use std::time::Duration;

use common::{Proxy, TOKEN};
use serde_json::json;
use support::{prompt_body, test_keys, Fault, MockGemini};

const FLASH: &str = "gemini-2.0-flash";
const METRICS_TOKEN: &str = "sk-metrics-scrape-token-0123456789";

fn env_file(mock: &MockGemini, keys: &[String], metrics: &str) -> String {
    format!(
        "API_KEYS={}\nALLOWED_TOKENS=[\"{TOKEN}\"]\nBASE_URL={}/v1beta\n{metrics}",
        serde_json::to_string(keys).unwrap(),
        mock.base_url()
    )
}

/// The value of the sample `series` (name and labels as written) in `text`.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

/// The key's id as the series carry it: the first 8 bytes of its SHA-256, in hex.
fn key_id(key: &str) -> String {
    gemini_balance::keys::ApiKey::new(key).unwrap().id().hex()
}

async fn scrape(proxy: &Proxy, token: Option<&str>) -> (u16, String, String) {
    let client = support::client_builder().build().unwrap();
    let mut req = client.get(format!("{}/metrics", proxy.url));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let content_type = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, content_type, res.text().await.unwrap())
}

#[tokio::test]
async fn the_scrape_counts_known_traffic_exactly() {
    let mock = MockGemini::start().await;
    let keys = test_keys(3);
    mock.set_fault(&keys[0], Fault::rate_limited("37s"));
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(
        dir.path(),
        &env_file(
            &mock,
            &keys,
            &format!("METRICS_TOKEN={METRICS_TOKEN}\nMETRICS_ALLOWED_IPS=[\"127.0.0.1\"]\n"),
        ),
    )
    .await;
    let client = support::client_builder().build().unwrap();
    // Three native calls: round robin over three keys sends one of them to the key that
    // answers 429 (it then cools down for the model), whose request moves to another key.
    for _ in 0..3 {
        let res = client
            .post(format!(
                "{}/v1beta/models/{FLASH}:generateContent",
                proxy.url
            ))
            .header("x-goog-api-key", TOKEN)
            .header("content-type", "application/json")
            .body(prompt_body("hello"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        res.text().await.unwrap();
    }
    // One OpenAI chat, one native stream.
    let res = client
        .post(format!("{}/v1/chat/completions", proxy.url))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(
            json!({"model": FLASH, "messages": [{"role": "user", "content": "hello"}]}).to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.text().await.unwrap();
    let res = client
        .post(format!(
            "{}/v1beta/models/{FLASH}:streamGenerateContent?alt=sse",
            proxy.url
        ))
        .header("x-goog-api-key", TOKEN)
        .header("content-type", "application/json")
        .body(prompt_body("hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("usageMetadata"));

    // The store writes in the background: scraped again until it has all five records.
    let mut text = String::new();
    for _ in 0..200 {
        let (status, content_type, body) = scrape(&proxy, Some(METRICS_TOKEN)).await;
        assert_eq!(status, 200, "{body}");
        assert!(content_type.starts_with("application/openmetrics-text"));
        text = body;
        if value(&text, "gemini_balance_store_written_total") == Some(5.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let v = |series: &str| value(&text, series);
    assert_eq!(v("gemini_balance_store_written_total"), Some(5.0), "{text}");
    assert_eq!(v("gemini_balance_store_dropped_total"), Some(0.0));
    assert_eq!(v("gemini_balance_store_queue_depth"), Some(0.0));

    let requests = |operation: &str, flavor: &str| {
        v(&format!(
            r#"gemini_balance_requests_total{{operation="{operation}",flavor="{flavor}",model="{FLASH}",status="200"}}"#
        ))
    };
    assert_eq!(requests("generateContent", "gemini"), Some(3.0), "{text}");
    assert_eq!(requests("chat/completions", "openai"), Some(1.0), "{text}");
    assert_eq!(
        requests("streamGenerateContent", "gemini"),
        Some(1.0),
        "{text}"
    );
    // No other request series: every request answered 200.
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("gemini_balance_requests_total{"))
            .count(),
        3,
        "{text}"
    );

    // Six attempts: five answered, one 429 retried on another key.
    assert_eq!(
        v(r#"gemini_balance_upstream_attempts_total{class="ok"}"#),
        Some(5.0)
    );
    assert_eq!(
        v(r#"gemini_balance_upstream_attempts_total{class="rate_limited"}"#),
        Some(1.0)
    );
    assert_eq!(v("gemini_balance_retries_total"), Some(1.0));
    for key in &keys {
        assert_eq!(
            v(&format!(
                r#"gemini_balance_key_requests_total{{key="{}"}}"#,
                key_id(key)
            )),
            Some(mock.requests(key) as f64),
            "{text}"
        );
    }
    assert_eq!(
        v(&format!(
            r#"gemini_balance_key_failures_total{{key="{}",class="rate_limited"}}"#,
            key_id(&keys[0])
        )),
        Some(1.0)
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("gemini_balance_key_failures_total{"))
            .count(),
        1
    );

    // The mock counts a prompt's words (1) and answers 6 candidate tokens, for each of five.
    let tokens = |kind: &str| {
        v(&format!(
            r#"gemini_balance_tokens_total{{kind="{kind}",model="{FLASH}"}}"#
        ))
    };
    assert_eq!(tokens("prompt"), Some(5.0), "{text}");
    assert_eq!(tokens("candidates"), Some(30.0));
    assert_eq!(tokens("total"), Some(35.0));

    // One observation per request; the overhead of non-streamed ones only; the first byte of
    // the stream only.
    let count = |histogram: &str, flavor: &str| {
        v(&format!(
            r#"gemini_balance_{histogram}_count{{flavor="{flavor}"}}"#
        ))
    };
    assert_eq!(count("request_duration_seconds", "gemini"), Some(4.0));
    assert_eq!(count("request_duration_seconds", "openai"), Some(1.0));
    assert_eq!(count("upstream_duration_seconds", "gemini"), Some(4.0));
    assert_eq!(count("upstream_duration_seconds", "openai"), Some(1.0));
    assert_eq!(count("overhead_seconds", "gemini"), Some(3.0));
    assert_eq!(count("overhead_seconds", "openai"), Some(1.0));
    assert_eq!(count("stream_first_byte_seconds", "gemini"), Some(1.0));
    assert_eq!(count("stream_first_byte_seconds", "openai"), Some(0.0));
    assert_eq!(
        v(r#"gemini_balance_request_duration_seconds_bucket{le="+Inf",flavor="gemini"}"#).or_else(
            || v(r#"gemini_balance_request_duration_seconds_bucket{flavor="gemini",le="+Inf"}"#)
        ),
        Some(4.0),
        "{text}"
    );

    // The 429's key cools down for the model; the others serve.
    assert_eq!(v(r#"gemini_balance_keys{state="active"}"#), Some(2.0));
    assert_eq!(v(r#"gemini_balance_keys{state="cooling"}"#), Some(1.0));
    assert_eq!(v(r#"gemini_balance_keys{state="disabled"}"#), Some(0.0));
    assert_eq!(
        v(&format!(
            r#"gemini_balance_key_cooldowns{{model="{FLASH}"}}"#
        )),
        Some(1.0)
    );
    assert_eq!(v("gemini_balance_open_streams"), Some(0.0));
    assert!(v("gemini_balance_open_connections").is_some_and(|n| n >= 1.0));

    // No secret in the scrape: neither the keys (nor their fingerprints' ellipsis) nor a token.
    for secret in keys
        .iter()
        .map(String::as_str)
        .chain([TOKEN, METRICS_TOKEN])
    {
        assert!(!text.contains(secret), "{secret} in the scrape");
    }
    assert!(!text.contains('…'));
    assert!(text.ends_with("# EOF\n"));
}

#[tokio::test]
async fn the_scrape_needs_the_token_and_an_allowed_address() {
    let mock = MockGemini::start().await;
    let keys = test_keys(1);
    // Token and addresses: both must pass.
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(
        dir.path(),
        &env_file(
            &mock,
            &keys,
            &format!("METRICS_TOKEN={METRICS_TOKEN}\nMETRICS_ALLOWED_IPS=[\"127.0.0.0/8\"]\n"),
        ),
    )
    .await;
    let (status, _, body) = scrape(&proxy, None).await;
    assert_eq!(status, 401, "{body}");
    let (status, _, _) = scrape(&proxy, Some("sk-not-the-metrics-token")).await;
    assert_eq!(status, 401);
    // The client token is no metrics token.
    let (status, _, _) = scrape(&proxy, Some(TOKEN)).await;
    assert_eq!(status, 401);
    let (status, _, body) = scrape(&proxy, Some(METRICS_TOKEN)).await;
    assert_eq!(status, 200);
    assert!(
        body.contains("# TYPE gemini_balance_open_connections gauge"),
        "{body}"
    );
    drop(proxy);

    // An address outside METRICS_ALLOWED_IPS is refused, whatever it sends.
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(
        dir.path(),
        &env_file(
            &mock,
            &keys,
            "METRICS_ALLOWED_IPS=[\"10.0.0.0/8\", \"::1\"]\n",
        ),
    )
    .await;
    let (status, _, body) = scrape(&proxy, None).await;
    assert_eq!(status, 403, "{body}");
    drop(proxy);

    // Neither set: no /metrics at all.
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &env_file(&mock, &keys, "")).await;
    let (status, _, _) = scrape(&proxy, Some(METRICS_TOKEN)).await;
    assert_eq!(status, 404);
}
