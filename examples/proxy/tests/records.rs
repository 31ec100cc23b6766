//! The request log records what the client got, not what the upstream said: an OpenAI stream
//! whose upstream died, an answer that broke off (a 502 to the client), a pseudo stream whose
//! answer failed after its 200.

mod common;

use common::{Proxy, TOKEN};
use gemini_balance::store::logs::{RequestEntry, RequestQuery};
use gemini_balance::store::SqliteStore;
use serde_json::json;
use support::{prompt_body, test_key, Fault, MockGemini};

fn env_file(mock: &MockGemini, extra: &str) -> String {
    format!(
        "API_KEYS=[\"{}\"]\nALLOWED_TOKENS=[\"{TOKEN}\"]\nBASE_URL={}/v1beta\nMAX_RETRIES=1\n{extra}",
        test_key(1),
        mock.base_url()
    )
}

/// Every row of the request log, oldest first, once the proxy has stopped.
fn rows(dir: &std::path::Path) -> Vec<RequestEntry> {
    let store = SqliteStore::open(dir.join("data/default_db.db")).unwrap();
    let mut rows = store.request_log(&RequestQuery::default()).unwrap().entries;
    store.shutdown().unwrap();
    rows.reverse();
    rows
}

fn client() -> reqwest::Client {
    support::client_builder().build().unwrap()
}

#[tokio::test]
async fn a_stream_whose_upstream_died_is_not_a_success() {
    let mock = MockGemini::start().await;
    mock.set_fault(&test_key(1), Fault::BreaksOff);
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &env_file(&mock, "")).await;

    // OpenAI: the converted stream ends with an error event after its 200.
    let res = client()
        .post(format!("{}/v1/chat/completions", proxy.url))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(
            json!({"model": "gemini-2.0-flash", "stream": true,
                   "messages": [{"role": "user", "content": "die halfway"}]})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    let status = res.status();
    let text = res.text().await.unwrap();
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"error\""), "{text}");

    // Gemini: the stream passes through, and is cut as the upstream's was.
    let res = client()
        .post(format!(
            "{}/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
            proxy.url
        ))
        .header("x-goog-api-key", TOKEN)
        .body(prompt_body("die halfway too"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.bytes().await.is_err(), "the client sees the stream cut");

    proxy.stop();
    let rows = rows(dir.path());
    assert_eq!(rows.len(), 2, "{rows:#?}");
    let (openai, gemini) = (&rows[0], &rows[1]);
    assert_eq!(openai.status, 200);
    assert!(!openai.success, "{openai:#?}");
    assert_eq!(openai.completion, "error_event");
    assert_eq!(gemini.status, 200);
    assert!(!gemini.success, "{gemini:#?}");
    assert_eq!(gemini.completion, "body_error");
}

#[tokio::test]
async fn an_answer_that_broke_off_is_recorded_as_the_502_the_client_got() {
    let mock = MockGemini::start().await;
    mock.set_fault(&test_key(1), Fault::BreaksOff);
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &env_file(&mock, "")).await;
    for (path, body) in [
        (
            "/v1beta/models/gemini-2.0-flash:generateContent",
            prompt_body("cut"),
        ),
        (
            "/v1/chat/completions",
            json!({"model": "gemini-2.0-flash",
                   "messages": [{"role": "user", "content": "cut"}]})
            .to_string(),
        ),
    ] {
        let res = client()
            .post(format!("{}{path}", proxy.url))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 502, "{path}");
    }
    proxy.stop();
    let rows = rows(dir.path());
    assert_eq!(rows.len(), 2, "{rows:#?}");
    for row in &rows {
        assert_eq!(row.status, 502, "{row:#?}");
        assert!(!row.success, "{row:#?}");
    }
}

#[tokio::test]
async fn a_pseudo_stream_whose_answer_failed_is_not_a_success() {
    let mock = MockGemini::start().await;
    mock.set_fault(&test_key(1), Fault::ServerError);
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &env_file(&mock, "FAKE_STREAM_ENABLED=true\n")).await;
    let res = client()
        .post(format!(
            "{}/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
            proxy.url
        ))
        .header("x-goog-api-key", TOKEN)
        .body(prompt_body("fake it"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    assert!(text.contains("\"error\""), "{text}");

    // And one that succeeds: its tokens are the replayed answer's, its key the one that served.
    mock.clear_faults();
    let res = client()
        .post(format!(
            "{}/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
            proxy.url
        ))
        .header("x-goog-api-key", TOKEN)
        .body(prompt_body("fake it well"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    assert!(text.contains("echo: fake it well"), "{text}");

    proxy.stop();
    let rows = rows(dir.path());
    assert_eq!(rows.len(), 2, "{rows:#?}");
    let (failed, served) = (&rows[0], &rows[1]);
    assert_eq!(failed.status, 200);
    assert!(!failed.success, "{failed:#?}");
    assert_eq!(failed.completion, "error_event");
    assert!(failed.streamed);
    assert!(served.success, "{served:#?}");
    assert_eq!(served.completion, "complete");
    assert!(served.tokens.total > 0, "{served:#?}");
    assert_eq!(served.key_mask.as_deref(), Some("AIza…0001"), "{served:#?}");
}
