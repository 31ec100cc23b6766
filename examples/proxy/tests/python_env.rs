//! A Gemini-Balance `.env` starts the proxy: the Python project's own `.env.example`
//! (tests/fixtures/python.env.example, verbatim) with the log levels its Python logger knows,
//! the startup warning naming what this version does not use and what it had to adjust, and
//! LOG_LEVEL changed live in Gemini-Balance's spellings.

mod common;

use common::{Proxy, TOKEN};
use serde_json::{json, Value};
use support::{prompt_body, test_keys, MockGemini};

/// Gemini-Balance's `.env.example`, as its repository has it.
const EXAMPLE: &str = include_str!("fixtures/python.env.example");

/// Its AUTH_TOKEN.
const ADMIN: &str = "sk-123456";

/// The example, then lines that point it at the mock (later lines win, as in python-dotenv).
/// The example's MySQL (`DATABASE_TYPE=mysql`, host `gemini-balance-mysql`) is not there: the
/// store is switched to SQLite (`mysql` would be the store itself, see docs/scale-out.md), as a
/// user without that MySQL would.
fn env_file(mock: &MockGemini, extra: &str) -> String {
    format!(
        "{EXAMPLE}\n# the test's own lines\nDATABASE_TYPE=sqlite\nIMPORT_PYTHON_DATABASE=false\nBASE_URL={}/v1beta\nAPI_KEYS={}\nALLOWED_TOKENS=[\"{TOKEN}\"]\n{extra}",
        mock.base_url(),
        serde_json::to_string(&test_keys(2)).unwrap(),
    )
}

async fn generate(proxy: &Proxy) {
    let res = support::client_builder()
        .build()
        .unwrap()
        .post(format!(
            "{}/v1beta/models/gemini-2.0-flash:generateContent",
            proxy.url
        ))
        .header("x-goog-api-key", TOKEN)
        .header("content-type", "application/json")
        .body(prompt_body("hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let answer: Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    assert_eq!(
        answer["candidates"][0]["content"]["parts"][0]["text"],
        "echo: hello"
    );
}

async fn set_log_level(proxy: &Proxy, level: &str) -> (u16, Value) {
    let res = support::client_builder()
        .build()
        .unwrap()
        .put(format!("{}/api/config", proxy.url))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(json!({ "LOG_LEVEL": level }).to_string())
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (
        status,
        serde_json::from_slice(&res.bytes().await.unwrap()).unwrap(),
    )
}

fn log_level_shown(config: &Value) -> &Value {
    let settings = config["settings"].as_array().unwrap();
    &settings.iter().find(|s| s["name"] == "LOG_LEVEL").unwrap()["value"]
}

#[tokio::test]
async fn the_python_env_example_starts_the_proxy_at_warning_and_critical() {
    let extra =
        "LOG_LEVEL={level}\nGITHUB_REPO_OWNER=someone-else\nGITHUB_REPO_NAME=gemini-balance-fork\n\
                 ENABLE_TTS=true\nMAX_RETRIES=500\nCHECK_INTERVAL_HOURS=-1\n";
    for level in ["WARNING", "CRITICAL"] {
        let mock = MockGemini::start().await;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("proxy.log");
        let env = env_file(&mock, &extra.replace("{level}", level));
        // Started means `/health` answered 200.
        let proxy = Proxy::start_logging(dir.path(), &env, Some(&log)).await;
        generate(&proxy).await;
        proxy.stop();

        let text = std::fs::read_to_string(&log).unwrap();
        // Where it listens is said at every level (as uvicorn's "Uvicorn running on" line
        // is for Gemini-Balance); nothing else at INFO: no request line.
        assert!(
            text.lines()
                .any(|l| l.contains("INFO") && l.contains("gemini-balance-proxy listening")),
            "LOG_LEVEL={level}: {text}"
        );
        assert!(
            !text
                .lines()
                .any(|l| l.contains("INFO") && !l.contains("gemini-balance-proxy listening")),
            "LOG_LEVEL={level}: {text}"
        );
        // The example's secrets are never in the log.
        for secret in ["change_me", "sk-123456", "XXXXXXXXXX", "LTAI5t", "yXxxxx"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        if level == "CRITICAL" {
            // Gemini-Balance's CRITICAL is tracing's error: the warnings are not shown either.
            assert!(!text.contains("WARN"), "LOG_LEVEL={level}: {text}");
            continue;
        }
        let line = |says: &str| {
            text.lines()
                .find(|l| l.contains("WARN") && l.contains(says))
                .unwrap_or_else(|| panic!("no warning that says {says:?} in {text}"))
        };
        let unsupported = line("not supported");
        for name in [
            "GITHUB_REPO_OWNER",
            "GITHUB_REPO_NAME",
            "ENABLE_TTS",
            "PAID_KEY",
            "VERTEX_API_KEYS",
        ] {
            assert!(unsupported.contains(name), "{name}: {unsupported}");
        }
        let adjusted = line("adjusted");
        assert!(
            adjusted.contains("MAX_RETRIES=500 (using 100)")
                && adjusted.contains("CHECK_INTERVAL_HOURS=-1 (using 0.0)"),
            "{adjusted}"
        );
    }
}

#[tokio::test]
async fn log_level_changes_live_in_gemini_balance_spellings() {
    let mock = MockGemini::start().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("proxy.log");
    // INFO, as Gemini-Balance's own default is spelled.
    let proxy =
        Proxy::start_logging(dir.path(), &env_file(&mock, "LOG_LEVEL=INFO\n"), Some(&log)).await;
    generate(&proxy).await; // logged

    let (status, config) = set_log_level(&proxy, "WARNING").await;
    assert_eq!(status, 200, "{config}");
    assert_eq!(log_level_shown(&config), "warn");
    generate(&proxy).await; // not logged

    let (status, error) = set_log_level(&proxy, "loud").await;
    assert_eq!(status, 400);
    assert_eq!(error["error"]["details"][0]["setting"], "LOG_LEVEL");
    let (status, config) = set_log_level(&proxy, "CRITICAL").await;
    assert_eq!(status, 200, "{config}");
    assert_eq!(log_level_shown(&config), "error");
    generate(&proxy).await; // not logged

    let (status, config) = set_log_level(&proxy, "Info").await;
    assert_eq!(status, 200, "{config}");
    assert_eq!(log_level_shown(&config), "info");
    generate(&proxy).await; // logged
    proxy.stop();

    let text = std::fs::read_to_string(&log).unwrap();
    let requests = text
        .lines()
        .filter(|l| l.contains("gemini-2.0-flash") && l.contains("status=200"))
        .count();
    assert_eq!(requests, 2, "{text}");
}
