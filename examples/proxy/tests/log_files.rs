//! The log files (`LOG_DIR`), against the binary: after fault traffic (wrong client and admin
//! tokens, keys the upstream refuses, errors that quote the key) no file holds a secret, in text
//! and in JSON lines; and a disk that refuses every write costs log lines, counted, never a
//! request or the stdout log. Rolling and deletion by time and size are tested in
//! `src/log_files.rs` (with a clock the tests move), the live changes in `live_settings.rs`.

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use support::{prompt_body, test_key, Fault, MockGemini};

use common::Proxy;

const TOKEN: &str = "sk-logfile-client-8c1d2e";
const ADMIN: &str = "sk-logfile-admin-4b7f9a";
const WRONG: &str = "sk-logfile-wrong-token-0c3e5a";

/// Every log file in `dir`, name and text.
fn log_files(dir: &Path) -> Vec<(String, String)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<(String, String)> = entries
        .map(|e| e.unwrap())
        .map(|e| {
            let text = std::fs::read(e.path()).unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                String::from_utf8_lossy(&text).into_owned(),
            )
        })
        .collect();
    files.sort();
    files
}

/// Today's date (UTC), as the daily log file's name has it.
fn today() -> String {
    let days = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

async fn traffic(client: &reqwest::Client, proxy: &Proxy) {
    let native =
        |model: &str, method: &str| format!("{}/v1beta/models/{model}:{method}", proxy.url);
    // Wrong client tokens, in every place a token goes.
    let refused = [
        client
            .post(native("gemini-2.0-flash", "generateContent"))
            .bearer_auth(WRONG),
        client
            .post(native("gemini-2.0-flash", "generateContent"))
            .header("x-goog-api-key", WRONG),
        client.post(format!(
            "{}?key={WRONG}",
            native("gemini-2.0-flash", "generateContent")
        )),
        client
            .post(format!("{}/v1/chat/completions", proxy.url))
            .bearer_auth(WRONG),
        client
            .get(format!("{}/api/config", proxy.url))
            .bearer_auth(WRONG),
    ];
    for req in refused {
        let res = req
            .header("content-type", "application/json")
            .body(prompt_body("hi"))
            .send()
            .await
            .unwrap();
        assert!(res.status().is_client_error(), "{}", res.status());
    }
    // Keys the upstream refuses or whose errors quote them; each request tries them in turn.
    for _ in 0..3 {
        for method in ["generateContent", "streamGenerateContent?alt=sse"] {
            let res = client
                .post(native("gemini-2.0-flash", method))
                .header("x-goog-api-key", TOKEN)
                .header("content-type", "application/json")
                .body(prompt_body("hello"))
                .send()
                .await
                .unwrap();
            let _ = res.bytes().await;
        }
        let res = client
            .post(format!("{}/v1/chat/completions", proxy.url))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(
                json!({"model": "gemini-2.0-flash", "messages": [{"role": "user", "content": "hi"}]})
                    .to_string(),
            )
            .send()
            .await
            .unwrap();
        let _ = res.bytes().await;
    }
    let res = client
        .get(format!("{}/api/config", proxy.url))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_traffic_leaves_no_secret_in_the_log_files() {
    let mock = MockGemini::start().await;
    let keys: Vec<String> = (1..=5).map(test_key).collect();
    mock.set_fault(&keys[0], Fault::InvalidKey);
    mock.set_fault(&keys[1], Fault::Suspended);
    mock.set_fault(&keys[2], Fault::HtmlPageQuotingKey);
    mock.set_fault(&keys[3], Fault::StreamErrorQuotingKey);
    let dir = tempfile::tempdir().unwrap();
    let env = format!(
        "API_KEYS={}\nALLOWED_TOKENS=[\"{TOKEN}\"]\nAUTH_TOKEN={ADMIN}\nBASE_URL={}/v1beta\nLOG_LEVEL=debug\nLOG_DIR=logs\nMAX_FAILURES=100\nAUTH_FAILURE_BURST=0\n",
        serde_json::to_string(&keys).unwrap(),
        mock.base_url()
    );
    let stdout = dir.path().join("stdout.log");
    let proxy = Proxy::start_logging(dir.path(), &env, Some(&stdout)).await;
    let client = support::client_builder().build().unwrap();
    traffic(&client, &proxy).await;
    // The same in JSON lines, switched while running.
    let res = client
        .put(format!("{}/api/config", proxy.url))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(json!({"LOG_FORMAT": "json"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    traffic(&client, &proxy).await;
    proxy.stop();

    let files = log_files(&dir.path().join("logs"));
    assert!(!files.is_empty(), "no log file was written");
    let all: String = files.iter().map(|(_, text)| text.as_str()).collect();
    // The files hold what stdout holds: request lines in text, then in JSON.
    assert!(all.contains("route=/v1beta/models/gemini-2.0-flash:generateContent"));
    let json_lines: Vec<Value> = all
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect();
    assert!(
        json_lines
            .iter()
            .any(|l| l["route"] == "/v1beta/models/gemini-2.0-flash:generateContent"),
        "no JSON request line"
    );
    assert!(all.contains("AIza…"), "key fingerprints are logged");
    // Debug lines too: the most the log says is what is searched.
    assert!(all.contains(" DEBUG ") || all.contains("\"DEBUG\""));
    let stdout = std::fs::read_to_string(&stdout).unwrap();
    let mut secrets: Vec<String> = keys.clone();
    // A key cut short is a leak too.
    secrets.push("Mock_abcdefghijklmnop".to_owned());
    secrets.extend([TOKEN, ADMIN, WRONG].map(str::to_owned));
    for secret in &secrets {
        for (name, text) in files.iter().chain([&("stdout".to_owned(), stdout.clone())]) {
            assert!(!text.contains(secret.as_str()), "{name} holds {secret}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_that_refuses_writes_costs_counted_log_lines_not_requests() {
    let mock = MockGemini::start().await;
    let dir = tempfile::tempdir().unwrap();
    // Today's log file is /dev/full: every write fails with ENOSPC, as on a full disk.
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    std::os::unix::fs::symlink(
        "/dev/full",
        logs.join(format!("gemini-balance-proxy.{}.log", today())),
    )
    .unwrap();
    let env = format!(
        "API_KEYS=[\"{}\"]\nALLOWED_TOKENS=[\"{TOKEN}\"]\nAUTH_TOKEN={ADMIN}\nBASE_URL={}/v1beta\nLOG_LEVEL=info\nLOG_DIR=logs\n",
        test_key(1),
        mock.base_url()
    );
    let stdout = dir.path().join("stdout.log");
    let proxy = Proxy::start_logging(dir.path(), &env, Some(&stdout)).await;
    let client = support::client_builder().build().unwrap();
    for _ in 0..20 {
        let res = client
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
    }
    // The lines that could not be written are counted (the file thread gets them within a
    // moment of the requests).
    let mut health = Value::Null;
    for _ in 0..200 {
        let res = client
            .get(format!("{}/health", proxy.url))
            .send()
            .await
            .unwrap();
        health = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
        if health["log"]["file_dropped_lines"].as_u64().unwrap_or(0) >= 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(health["status"], "healthy");
    assert!(
        health["log"]["file_dropped_lines"].as_u64().unwrap() >= 20,
        "{health}"
    );
    assert_eq!(health["log"]["dropped_lines"], 0, "{health}");
    proxy.stop();
    // stdout has every request line, and says why the files do not.
    let stdout = std::fs::read_to_string(&stdout).unwrap();
    assert_eq!(
        stdout
            .matches("route=/v1beta/models/gemini-2.0-flash:generateContent")
            .count(),
        20
    );
    assert!(
        stdout.contains("lines cannot be written to LOG_DIR"),
        "{stdout}"
    );
}
