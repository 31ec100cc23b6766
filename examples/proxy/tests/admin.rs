//! The admin JSON API end to end: the proxy binary against the loopback mock Gemini, driven
//! over HTTP with AUTH_TOKEN; restarts check that changes are kept, and the database and
//! every answer are checked for secrets.

mod common;

use std::path::Path;
use std::time::Duration;

use gemini_balance::store::SqliteStore;
use serde_json::{json, Value};
use support::{prompt_body, test_key, test_keys, Fault, MockGemini};

const TOKEN: &str = "sk-client-token-0001";
const ADMIN: &str = "sk-admin-token-0002";

/// The running proxy and a client for it.
struct Proxy {
    proxy: common::Proxy,
    url: String,
    client: reqwest::Client,
}

impl Proxy {
    async fn start(dir: &Path, env_file: &str) -> Proxy {
        let proxy = common::Proxy::start(dir, env_file).await;
        let url = proxy.url.clone();
        let client = support::client_builder().build().unwrap();
        Proxy { proxy, url, client }
    }

    fn stop(self) {
        self.proxy.stop();
    }

    /// An admin call with AUTH_TOKEN; returns status and JSON.
    async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .client
            .request(method.parse().unwrap(), format!("{}/api{path}", self.url))
            .header("authorization", format!("Bearer {ADMIN}"));
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        assert_no_secret(&text);
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn generate(&self, model: &str) -> u16 {
        self.client
            .post(format!(
                "{}/v1beta/models/{model}:generateContent",
                self.url
            ))
            .header("x-goog-api-key", TOKEN)
            .header("content-type", "application/json")
            .body(prompt_body("hello"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

/// No key of the test and no token appears in `text`.
fn assert_no_secret(text: &str) {
    for n in 1..=9 {
        assert!(!text.contains(&test_key(n)), "a key leaked: {text}");
    }
    assert!(
        !text.contains(TOKEN) && !text.contains(ADMIN),
        "a token leaked: {text}"
    );
}

fn env_file(mock: &MockGemini) -> String {
    format!(
        "API_KEYS={}\nALLOWED_TOKENS=[\"{TOKEN}\"]\nAUTH_TOKEN={ADMIN}\nTEST_MODEL=gemini-2.0-flash\nBASE_URL={}/v1beta\nMAX_RETRIES=3\n",
        serde_json::to_string(&test_keys(3)).unwrap(),
        mock.base_url()
    )
}

fn id_of(list: &Value, mask_suffix: &str) -> String {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["mask"].as_str().unwrap().ends_with(mask_suffix))
        .unwrap_or_else(|| panic!("no key …{mask_suffix} in {list}"))["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn admin_api_needs_auth_token_and_answers_in_json() {
    let mock = MockGemini::start().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &env_file(&mock)).await;
    let url = format!("{}/api/keys", proxy.url);
    for req in [
        proxy.client.get(&url),
        proxy.client.get(&url).bearer_auth(TOKEN), // a client token is not the admin token
        proxy.client.get(format!("{url}?key={ADMIN}")), // not in the URL
        proxy.client.get(&url).bearer_auth("sk-admin-token-0003"),
    ] {
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 401);
        let body: Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
        assert_eq!(body["error"]["code"], 401);
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("AUTH_TOKEN"));
    }
    let res = proxy
        .client
        .get(&url)
        .header("x-goog-api-key", ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // Bad input: a clear 400 in the API's format, and the server keeps serving.
    let (status, body) = proxy.admin("GET", "/keys?per_page=0", None).await;
    assert_eq!(status, 400);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("per_page"));
    let (status, body) = proxy.admin("GET", "/keys?status=sleepy", None).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = proxy
        .admin("POST", "/keys/verify", Some(json!({"ids": ["xyz"]})))
        .await;
    assert_eq!(status, 400);
    let (status, _) = proxy
        .admin("POST", "/keys", Some(json!({"nonsense": 1})))
        .await;
    assert_eq!(status, 400);
    let (status, _) = proxy.admin("GET", "/stats/keys?window=1y", None).await;
    assert_eq!(status, 400);
    let (status, body) = proxy.admin("GET", "/nowhere", None).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], 404);
    assert_eq!(proxy.generate("gemini-2.0-flash").await, 200);
    proxy.stop();
}

#[tokio::test]
async fn keys_are_listed_added_deleted_verified_and_kept_across_a_restart() {
    let mock = MockGemini::start().await;
    mock.set_fault(&test_key(1), Fault::InvalidKey);
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &env_file(&mock)).await;
    for _ in 0..4 {
        assert_eq!(proxy.generate("gemini-2.0-flash").await, 200);
    }

    // The list: status, reason, per-key stats; filters and search. The store writes in the
    // background: wait until the five attempts (one retried away from key 1) are visible.
    let attempts = |list: &Value| -> u64 {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["stats_24h"]["requests"].as_u64().unwrap())
            .sum()
    };
    let mut list = Value::Null;
    for _ in 0..100 {
        let (status, l) = proxy.admin("GET", "/keys", None).await;
        assert_eq!(status, 200, "{l}");
        list = l;
        if attempts(&list) == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(attempts(&list), 5, "{list}");
    assert_eq!(list["total"], 3);
    assert_eq!(list["counts"]["disabled"], 1);
    assert_eq!(list["counts"]["active"], 2);
    let bad = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["status"] == "disabled")
        .unwrap();
    assert!(bad["mask"].as_str().unwrap().ends_with("0001"));
    assert!(bad["disabled_reason"]
        .as_str()
        .unwrap()
        .contains("rejected"));
    assert_eq!(bad["last_error"]["class"], "key_rejected");
    assert_eq!(bad["stats_24h"]["failures"], 1);
    assert_eq!(bad["stats_24h"]["success_rate"], 0.0);
    let (_, disabled) = proxy.admin("GET", "/keys?status=disabled", None).await;
    assert_eq!(disabled["total"], 1);
    let (_, found) = proxy
        .admin("GET", &format!("/keys?search={}", test_key(2)), None)
        .await;
    assert_eq!(found["total"], 1);
    assert!(found["items"][0]["mask"]
        .as_str()
        .unwrap()
        .ends_with("0002"));
    let (_, paged) = proxy.admin("GET", "/keys?per_page=2&page=2", None).await;
    assert_eq!(
        (
            paged["pages"].as_u64(),
            paged["items"].as_array().unwrap().len()
        ),
        (Some(2), 1)
    );

    // Add by pasting text: one new, one already there, one malformed.
    let pasted = format!(
        "here are my keys:\n{}\n\"{}\", AIzaTooShort\n",
        test_key(4),
        test_key(2)
    );
    let (status, added) = proxy
        .admin("POST", "/keys", Some(json!({"text": pasted})))
        .await;
    assert_eq!(status, 200, "{added}");
    assert_eq!(added["added"].as_array().unwrap().len(), 1);
    assert_eq!(added["duplicates"].as_array().unwrap().len(), 1);
    assert_eq!(added["rejected"].as_array().unwrap().len(), 1);
    assert!(added["rejected"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("AIza"));
    // The new key serves at once.
    for _ in 0..6 {
        assert_eq!(proxy.generate("gemini-2.0-flash").await, 200);
    }
    assert!(mock.requests(&test_key(4)) > 0, "the added key is used");

    // Verify: the healed key comes back; a key that turned bad is taken out.
    mock.clear_faults();
    mock.set_fault(&test_key(3), Fault::InvalidKey);
    let (_, list) = proxy.admin("GET", "/keys", None).await;
    let (id1, id3) = (id_of(&list, "0001"), id_of(&list, "0003"));
    let (status, verified) = proxy
        .admin("POST", "/keys/verify", Some(json!({"ids": [id1, id3]})))
        .await;
    assert_eq!(status, 200, "{verified}");
    let results = verified["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(
        (results[0]["id"].as_str(), results[0]["ok"].as_bool()),
        (Some(id1.as_str()), Some(true))
    );
    assert_eq!(results[1]["ok"], false);
    assert_eq!(results[1]["status"], 400);
    assert_eq!(results[1]["class"], "key_rejected");
    assert!(results[1]["message"]
        .as_str()
        .unwrap()
        .contains("API key not valid"));
    let (_, list) = proxy.admin("GET", "/keys", None).await;
    let status_of = |suffix: &str| {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["mask"].as_str().unwrap().ends_with(suffix))
            .unwrap()["status"]
            .clone()
    };
    assert_eq!(status_of("0001"), "active");
    assert_eq!(status_of("0003"), "disabled");
    // Reset brings it back by hand.
    let (status, reset) = proxy
        .admin("POST", &format!("/keys/{id3}/reset"), None)
        .await;
    assert_eq!((status, reset["reset"].as_u64()), (200, Some(1)));
    let (_, all) = proxy
        .admin("POST", "/keys/reset", Some(json!({"all": true})))
        .await;
    assert_eq!(all["reset"], 4);

    // Delete: one by id, then a batch with an unknown id.
    let (status, _) = proxy.admin("DELETE", &format!("/keys/{id3}"), None).await;
    assert_eq!(status, 200);
    let (status, _) = proxy.admin("DELETE", &format!("/keys/{id3}"), None).await;
    assert_eq!(status, 404);
    let (status, deleted) = proxy
        .admin(
            "POST",
            "/keys/delete",
            Some(json!({"ids": [id1, "00000000000000ff"]})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(deleted["deleted"], 1);
    assert_eq!(deleted["not_found"], json!(["00000000000000ff"]));
    let before = mock.requests(&test_key(1));
    for _ in 0..4 {
        assert_eq!(proxy.generate("gemini-2.0-flash").await, 200);
    }
    assert_eq!(
        mock.requests(&test_key(1)),
        before,
        "a deleted key is not used"
    );
    proxy.stop();

    // After a restart the pool is what the admin made it: keys 2 and 4.
    let proxy = Proxy::start(dir.path(), &env_file(&mock)).await;
    let (_, list) = proxy.admin("GET", "/keys", None).await;
    let mut masks: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            let mask = k["mask"].as_str().unwrap();
            mask[mask.len() - 4..].to_owned()
        })
        .collect();
    masks.sort();
    assert_eq!(masks, ["0002", "0004"]);
    proxy.stop();

    // The keys are in the secrets file (owner-only), never in the database.
    let secrets = std::fs::read_to_string(dir.path().join("data/default_db.secrets.json"))
        .or_else(|_| {
            let entry = std::fs::read_dir(dir.path().join("data"))
                .unwrap()
                .flatten()
                .find(|e| e.file_name().to_string_lossy().ends_with(".secrets.json"))
                .unwrap();
            std::fs::read_to_string(entry.path())
        })
        .unwrap();
    assert!(secrets.contains(&test_key(4)));
    for entry in std::fs::read_dir(dir.path().join("data"))
        .unwrap()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.contains(".db") {
            let bytes = std::fs::read(entry.path()).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            assert!(!text.contains("AIzaSyMock"), "a key is in {name}");
            assert!(!text.contains(TOKEN), "a token is in {name}");
        }
    }
}

#[tokio::test]
async fn config_changes_are_checked_applied_live_and_kept() {
    let mock = MockGemini::start().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &env_file(&mock)).await;

    let (status, config) = proxy.admin("GET", "/config", None).await;
    assert_eq!(status, 200);
    let setting = |config: &Value, name: &str| {
        config["settings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no {name}"))
            .clone()
    };
    let keys = setting(&config, "API_KEYS");
    assert_eq!(keys["secret"], true);
    assert_eq!(keys["value"][0], "AIza…0001");
    assert_eq!(setting(&config, "MAX_RETRIES")["source"], "environment");

    // One invalid value: nothing is applied, and every bad one is named.
    let (status, refused) = proxy
        .admin(
            "PUT",
            "/config",
            Some(
                json!({"FILTERED_MODELS": ["gemini-2.0-flash"], "MAX_RETRIES": "lots", "PORT": 1}),
            ),
        )
        .await;
    assert_eq!(status, 400);
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("MAX_RETRIES") && message.contains("PORT"),
        "{message}"
    );
    assert_eq!(refused["error"]["details"].as_array().unwrap().len(), 2);
    assert_eq!(
        proxy.generate("gemini-2.0-flash").await,
        200,
        "nothing was applied"
    );

    // A valid change applies at once.
    let (status, changed) = proxy
        .admin(
            "PUT",
            "/config",
            Some(json!({"FILTERED_MODELS": ["gemini-2.0-flash"], "MAX_RETRIES": 2})),
        )
        .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(setting(&changed, "MAX_RETRIES")["source"], "database");
    assert_eq!(setting(&changed, "MAX_RETRIES")["value"], 2);
    assert_eq!(
        proxy.generate("gemini-2.0-flash").await,
        400,
        "filtered now"
    );
    let before = mock.total();
    mock.set_fault(&test_key(1), Fault::ServerError);
    mock.set_fault(&test_key(2), Fault::ServerError);
    mock.set_fault(&test_key(3), Fault::ServerError);
    assert_eq!(proxy.generate("gemini-2.5-flash").await, 500);
    assert_eq!(mock.total() - before, 2, "MAX_RETRIES=2 is applied");
    mock.clear_faults();

    // Client tokens change live too (and are secrets: kept outside the database).
    let (status, _) = proxy
        .admin(
            "PUT",
            "/config",
            Some(json!({"ALLOWED_TOKENS": ["sk-client-token-0009"]})),
        )
        .await;
    assert_eq!(status, 200);
    let res = proxy
        .client
        .post(format!(
            "{}/v1beta/models/gemini-2.5-flash:generateContent",
            proxy.url
        ))
        .header("x-goog-api-key", TOKEN)
        .body(prompt_body("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401, "the old client token is refused now");
    proxy.stop();

    // Kept across a restart; the environment no longer wins for them.
    let proxy = Proxy::start(dir.path(), &env_file(&mock)).await;
    let (_, config) = proxy.admin("GET", "/config", None).await;
    assert_eq!(setting(&config, "MAX_RETRIES")["value"], 2);
    assert_eq!(setting(&config, "MAX_RETRIES")["source"], "database");
    assert_eq!(setting(&config, "ALLOWED_TOKENS")["source"], "secrets_file");
    assert_eq!(
        proxy.generate("gemini-2.0-flash").await,
        401,
        "old token still refused"
    );

    // Forgetting a change brings the environment's value back.
    let (status, _) = proxy.admin("DELETE", "/config/ALLOWED_TOKENS", None).await;
    assert_eq!(status, 200);
    let (status, config) = proxy.admin("DELETE", "/config/FILTERED_MODELS", None).await;
    assert_eq!(status, 200);
    assert_eq!(setting(&config, "FILTERED_MODELS")["source"], "default");
    assert_eq!(proxy.generate("gemini-2.0-flash").await, 200);
    proxy.stop();
}

#[tokio::test]
async fn stats_logs_and_models() {
    let mock = MockGemini::start().await;
    mock.set_fault(&test_key(1), Fault::rate_limited("20s"));
    let dir = tempfile::tempdir().unwrap();
    let env = format!("{}SEARCH_MODELS=[\"gemini-2.5-flash\"]\n", env_file(&mock));
    let proxy = Proxy::start(dir.path(), &env).await;
    for _ in 0..3 {
        assert_eq!(proxy.generate("gemini-2.5-flash").await, 200);
    }
    // The store writes in the background: wait until it has committed the three records.
    // `store` is taken before the windows are read, so once it counts them written, every
    // window of that same answer has them.
    let mut summary = Value::Null;
    for _ in 0..200 {
        let (_, s) = proxy.admin("GET", "/stats/summary", None).await;
        if s["store"]["written"].as_u64() >= Some(3) {
            summary = s;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(summary["store"]["written"], 3, "{summary}");
    // The database's size and the space beside it; no budget until DATABASE_MAX_SIZE_MB.
    let disk = &summary["disk"];
    assert!(disk["database_bytes"].as_u64() > Some(0), "{summary}");
    assert!(disk["free_bytes"].as_u64() > Some(0), "{summary}");
    assert_eq!(disk["max_bytes"], Value::Null, "{summary}");
    assert_eq!(
        summary["shared"],
        Value::Null,
        "one instance on SQLite: {summary}"
    );
    let (status, _) = proxy
        .admin(
            "PUT",
            "/config",
            Some(serde_json::json!({ "DATABASE_MAX_SIZE_MB": 64 })),
        )
        .await;
    assert_eq!(status, 200);
    let (_, s) = proxy.admin("GET", "/stats/summary", None).await;
    assert_eq!(s["disk"]["max_bytes"], 64 * 1024 * 1024, "{s}");
    for window in ["1h", "24h", "month"] {
        assert_eq!(
            summary["windows"][window]["calls"], 3,
            "{window}: {summary}"
        );
    }
    assert_eq!(summary["windows"]["month"]["successes"], 3);
    assert!(
        summary["windows"]["24h"]["tokens"]["total"]
            .as_u64()
            .unwrap()
            > 0
    );

    let (_, models) = proxy.admin("GET", "/stats/models?window=1h", None).await;
    assert_eq!(models["rows"][0]["id"], "gemini-2.5-flash");
    assert_eq!(models["rows"][0]["calls"], 3);
    let (_, series) = proxy
        .admin("GET", "/stats/series?granularity=minute", None)
        .await;
    let points = series["points"].as_array().unwrap();
    assert_eq!(points.len(), 60);
    assert_eq!(
        points
            .iter()
            .map(|p| p["calls"].as_u64().unwrap())
            .sum::<u64>(),
        3
    );
    let (status, _) = proxy
        .admin("GET", "/stats/series?granularity=week", None)
        .await;
    assert_eq!(status, 400);
    let (_, attention) = proxy.admin("GET", "/stats/attention", None).await;
    assert!(
        attention["rows"][0]["mask"]
            .as_str()
            .unwrap()
            .ends_with("0001"),
        "{attention}"
    );
    assert!(attention["rows"][0]["count"].as_u64().unwrap() >= 1);
    let (_, clients) = proxy.admin("GET", "/stats/clients", None).await;
    assert_eq!(clients["rows"][0]["calls"], 3);

    // The error log has the 429 with the key's fingerprint; detail; delete.
    let (_, errors) = proxy.admin("GET", "/logs/errors?status=429", None).await;
    assert!(errors["total"].as_u64().unwrap() >= 1, "{errors}");
    let entry = &errors["items"][0];
    assert!(entry["key_mask"].as_str().unwrap().ends_with("0001"));
    let id = entry["id"].as_i64().unwrap();
    let (status, detail) = proxy
        .admin("GET", &format!("/logs/errors/{id}"), None)
        .await;
    assert_eq!((status, detail["id"].as_i64()), (200, Some(id)));
    let (_, requests) = proxy.admin("GET", "/logs/requests?limit=10", None).await;
    let items = requests["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    // Round robin gives key 1 one of the three requests: that one was retried.
    let retried = items
        .iter()
        .find(|r| r["attempts"].as_u64() == Some(2))
        .unwrap_or_else(|| panic!("no retried request in {requests}"));
    let rid = retried["request_id"].as_str().unwrap();
    let (status, attempts) = proxy
        .admin("GET", &format!("/logs/requests/{rid}"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(attempts["attempts"][0]["status"], 429);
    assert_eq!(attempts["attempts"][1]["status"], 200);
    let (status, deleted) = proxy
        .admin("DELETE", "/logs/errors", Some(json!({"ids": [id]})))
        .await;
    assert_eq!((status, deleted["deleted"].as_u64()), (200, Some(1)));
    let (status, _) = proxy
        .admin("GET", &format!("/logs/errors/{id}"), None)
        .await;
    assert_eq!(status, 404);
    let (_, deleted) = proxy
        .admin(
            "DELETE",
            "/logs/requests",
            Some(json!({"before_ms": u64::MAX / 2})),
        )
        .await;
    assert!(
        deleted["deleted"].as_u64().unwrap() >= 3,
        "requests and their attempts"
    );
    let (_, requests) = proxy.admin("GET", "/logs/requests", None).await;
    assert_eq!(requests["items"], json!([]));

    // The model list with the derived models.
    let (status, models) = proxy.admin("GET", "/models", None).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = models["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"models/gemini-2.5-flash"), "{names:?}");
    assert!(
        names.contains(&"models/gemini-2.5-flash-search"),
        "{names:?}"
    );
    proxy.stop();
}

/// Waits until the store has written `n` records (`/api/stats/summary`'s `store.written`).
async fn written(proxy: &Proxy, n: u64) {
    for _ in 0..200 {
        let (_, s) = proxy.admin("GET", "/stats/summary", None).await;
        if s["store"]["written"].as_u64() >= Some(n) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the store did not write {n} records");
}

#[tokio::test]
async fn usage_of_one_key_per_model() {
    let mock = MockGemini::start().await;
    let dir = tempfile::tempdir().unwrap();
    // One key serves everything; key 2 exists but is never used.
    let env = format!(
        "API_KEYS={}\nALLOWED_TOKENS=[\"{TOKEN}\"]\nAUTH_TOKEN={ADMIN}\nBASE_URL={}/v1beta\n",
        serde_json::to_string(&[test_key(1)]).unwrap(),
        mock.base_url()
    );
    let proxy = Proxy::start(dir.path(), &env).await;
    for model in ["gemini-2.5-flash", "gemini-2.0-flash", "gemini-2.5-flash"] {
        assert_eq!(proxy.generate(model).await, 200);
    }
    written(&proxy, 3).await;
    let id = gemini_balance::keys::KeyId::of(&test_key(1)).hex();
    let (status, usage) = proxy
        .admin("GET", &format!("/stats/keys/{id}/models"), None)
        .await;
    assert_eq!(status, 200, "{usage}");
    assert_eq!(usage["id"], id);
    assert_eq!(usage["window"], "24h");
    assert!(usage["mask"].as_str().unwrap().ends_with("0001"), "{usage}");
    let rows: Vec<(&str, u64, u64)> = usage["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap(),
                r["calls"].as_u64().unwrap(),
                r["attempts"].as_u64().unwrap(),
            )
        })
        .collect();
    // Most calls first, as Gemini-Balance's "key usage details" orders them.
    assert_eq!(
        rows,
        [("gemini-2.5-flash", 2, 2), ("gemini-2.0-flash", 1, 1)],
        "{usage}"
    );
    assert!(usage["rows"][0]["tokens"]["total"].as_u64().unwrap() > 0);

    // The key leaves the pool: its history is still answered, with its mask from the database.
    let (status, _) = proxy.admin("DELETE", &format!("/keys/{id}"), None).await;
    assert_eq!(status, 200);
    let (_, usage) = proxy
        .admin("GET", &format!("/stats/keys/{id}/models?window=1h"), None)
        .await;
    assert_eq!(usage["rows"].as_array().unwrap().len(), 2, "{usage}");
    assert!(usage["mask"].as_str().unwrap().ends_with("0001"), "{usage}");

    // A key never seen has no rows; bad input is a 400 naming it; a key is not an id.
    let never = gemini_balance::keys::KeyId::of(&test_key(2)).hex();
    let (status, usage) = proxy
        .admin("GET", &format!("/stats/keys/{never}/models"), None)
        .await;
    assert_eq!(
        (status, &usage["rows"], &usage["mask"]),
        (200, &json!([]), &Value::Null)
    );
    for (path, says) in [
        ("/stats/keys/xyz/models", "key id"),
        (&format!("/stats/keys/{}/models", test_key(1))[..], "key id"),
        (&format!("/stats/keys/{id}/models?window=1y")[..], "window"),
    ] {
        let (status, body) = proxy.admin("GET", path, None).await;
        assert_eq!(status, 400, "{path}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{path}: {message}");
    }
    proxy.stop();
}

#[tokio::test]
async fn the_log_names_stored_settings_and_holds_no_secret() {
    let mock = MockGemini::start().await;
    // The upstream's message for a suspended key quotes the key.
    mock.set_fault(&test_key(1), Fault::Suspended);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("proxy.log");
    let env = format!("{}LOG_LEVEL=debug\n", env_file(&mock));
    let proxy = common::Proxy::start_logging(dir.path(), &env, Some(&log)).await;
    let running = Proxy {
        url: proxy.url.clone(),
        proxy,
        client: support::client_builder().build().unwrap(),
    };
    for _ in 0..4 {
        assert_eq!(running.generate("gemini-2.0-flash").await, 200);
    }
    let res = running
        .client
        .post(format!("{}/v1/chat/completions", running.url))
        .bearer_auth("sk-wrong-token-123456")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let (status, _) = running
        .admin(
            "PUT",
            "/config",
            Some(json!({"MAX_RETRIES": 2, "ALLOWED_TOKENS": [TOKEN, "sk-another-token-9999"]})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = running
        .admin("POST", "/keys/verify", Some(json!({"all": true})))
        .await;
    assert_eq!(status, 200);
    running.stop();

    let proxy = common::Proxy::start_logging(dir.path(), &env, Some(&log)).await;
    proxy.stop();

    let text = std::fs::read_to_string(&log).unwrap();
    assert_no_secret(&text);
    assert!(!text.contains("sk-another-token-9999") && !text.contains("sk-wrong-token-123456"));
    // One line per request, with the key's fingerprint.
    let requests: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("gemini-2.0-flash") && l.contains("status=200"))
        .collect();
    assert_eq!(requests.len(), 4, "{text}");
    assert!(requests
        .iter()
        .all(|l| l.contains("AIza…") && l.contains("latency_ms")));
    // The second start says which settings the admin API changed.
    let stored = text
        .lines()
        .find(|l| l.contains("override the environment"))
        .unwrap_or_else(|| panic!("no line about stored settings in {text}"));
    assert!(
        stored.contains("MAX_RETRIES") && stored.contains("ALLOWED_TOKENS"),
        "{stored}"
    );
}

#[tokio::test]
async fn config_values_are_type_checked_and_nothing_changes_when_one_is_wrong() {
    let mock = MockGemini::start().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &env_file(&mock)).await;
    let (_, before) = proxy.admin("GET", "/config", None).await;

    // The examples of issue 14, alone and beside a valid change: each is a 400 naming the field.
    for (body, name) in [
        (json!({"API_KEYS": {"a": 1}}), "API_KEYS"),
        (json!({"ALLOWED_TOKENS": 42}), "ALLOWED_TOKENS"),
        (json!({"AUTH_TOKEN": ""}), "AUTH_TOKEN"),
        (json!({"MAX_RETRIES": 2, "AUTH_TOKEN": ""}), "AUTH_TOKEN"),
    ] {
        let (status, refused) = proxy.admin("PUT", "/config", Some(body.clone())).await;
        assert_eq!(status, 400, "{body}: {refused}");
        assert_eq!(refused["error"]["details"][0]["setting"], name, "{refused}");
        assert_eq!(refused["error"]["details"].as_array().unwrap().len(), 1);
        assert!(refused["error"]["message"].as_str().unwrap().contains(name));
    }
    // Every wrong field is named in one answer, the valid ones are not applied either.
    let (status, refused) = proxy
        .admin(
            "PUT",
            "/config",
            Some(json!({
                "API_KEYS": ["AIza not a key"],
                "ALLOWED_TOKENS": [TOKEN, 7],
                "MAX_RETRIES": "2",
                "FAKE_STREAM_ENABLED": "yes",
                "CUSTOM_HEADERS": {"x-relay": 1},
                "THINKING_BUDGET_MAP": {"gemini-2.5-flash": "lots"},
                "TRUSTED_PROXIES": ["the load balancer"],
                "PROXIES": ["ftp://user:relay-password@relay:21"],
                "SEARCH_MODELS": ["gemini-2.0-flash"],
                "FILTERED_MODELS": ["gemini-2.0-flash"],
            })),
        )
        .await;
    assert_eq!(status, 400);
    let mut named: Vec<&str> = refused["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["setting"].as_str().unwrap())
        .collect();
    named.sort_unstable();
    assert_eq!(
        named,
        [
            "ALLOWED_TOKENS",
            "API_KEYS",
            "CUSTOM_HEADERS",
            "FAKE_STREAM_ENABLED",
            "MAX_RETRIES",
            "PROXIES",
            "THINKING_BUDGET_MAP",
            "TRUSTED_PROXIES"
        ],
        "{refused}"
    );
    // Each says "NAME: expected WHAT" once, and never the value of a secret.
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(
            "PROXIES: expected a proxy URL starting with http://, https://, socks5://, socks5h:// (entry #1 is not one)"
        ),
        "{message}"
    );
    assert!(!message.contains("expected expected"), "{message}");
    assert!(!message.contains("relay-password"), "{message}");
    for detail in refused["error"]["details"].as_array().unwrap() {
        let expected = detail["expected"].as_str().unwrap();
        assert!(!expected.starts_with("expected"), "{detail}");
    }
    let (_, after) = proxy.admin("GET", "/config", None).await;
    assert_eq!(after, before, "nothing was applied");
    assert_eq!(
        proxy.generate("gemini-2.0-flash").await,
        200,
        "same tokens, keys and filter"
    );
    let (status, _) = proxy.admin("GET", "/keys", None).await;
    assert_eq!(status, 200, "the admin is not locked out");
    proxy.stop();
    // …nor kept.
    assert!(!dir.path().join("data/default_db.secrets.json").exists());
    let store = SqliteStore::open(dir.path().join("data/default_db.db")).unwrap();
    assert!(store.settings().unwrap().is_empty());
    store.shutdown().unwrap();
}

/// Every byte of the database files (database, WAL, shared memory).
fn database_bytes(db: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        if let Ok(mut b) = std::fs::read(format!("{}{suffix}", db.display())) {
            bytes.append(&mut b);
        }
    }
    bytes
}

fn holds(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[cfg(unix)]
#[tokio::test]
async fn custom_headers_are_a_secret_and_old_files_are_made_private() {
    const OLD: &str = "relay-credential-5f2b9c";
    const NEW: &str = "relay-credential-7d41e0";
    let mock = MockGemini::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let db = data.join("default_db.db");
    // What an older version left: CUSTOM_HEADERS in the settings table, files open to others.
    let old = SqliteStore::open(&db).unwrap();
    old.set_setting(
        "CUSTOM_HEADERS",
        &json!({"x-relay-auth": format!("Bearer {OLD}")}).to_string(),
    )
    .unwrap();
    old.set_setting("MAX_RETRIES", "2").unwrap();
    old.shutdown().unwrap();
    set_mode(&data, 0o755);
    set_mode(&db, 0o644);

    let log = dir.path().join("proxy.log");
    let env = format!("{}LOG_LEVEL=info\n", env_file(&mock));
    let proxy = common::Proxy::start_logging(dir.path(), &env, Some(&log)).await;
    let proxy = Proxy {
        url: proxy.url.clone(),
        proxy,
        client: support::client_builder().build().unwrap(),
    };
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&db), 0o600);
    let setting = |config: &Value, name: &str| {
        config["settings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap()
            .clone()
    };
    // Moved to the secrets file, still applied, shown masked (the header's name, not its value).
    let (_, config) = proxy.admin("GET", "/config", None).await;
    let headers = setting(&config, "CUSTOM_HEADERS");
    assert_eq!(headers["value"], json!({"x-relay-auth": "Bear…2b9c"}));
    assert_eq!(headers["secret"], true);
    assert_eq!(headers["source"], "secrets_file");
    assert_eq!(setting(&config, "MAX_RETRIES")["source"], "database");
    assert!(!config.to_string().contains(OLD));
    assert_eq!(proxy.generate("gemini-2.0-flash").await, 200);
    let seen = mock.last_request().unwrap();
    assert_eq!(seen.headers["x-relay-auth"], format!("Bearer {OLD}"));

    // A change through the API goes to the secrets file as well, and its answer is masked.
    let (status, changed) = proxy
        .admin(
            "PUT",
            "/config",
            Some(json!({"CUSTOM_HEADERS": {"x-relay-auth": format!("Bearer {NEW}")}})),
        )
        .await;
    assert_eq!(status, 200, "{changed}");
    assert!(!changed.to_string().contains(NEW));
    assert_eq!(proxy.generate("gemini-2.0-flash").await, 200);
    let seen = mock.last_request().unwrap();
    assert_eq!(seen.headers["x-relay-auth"], format!("Bearer {NEW}"));
    proxy.stop();

    let bytes = database_bytes(&db);
    assert!(!holds(&bytes, OLD), "the old row's bytes are gone");
    assert!(!holds(&bytes, NEW));
    assert!(!holds(&bytes, "relay-credential"));
    let secrets = data.join("default_db.secrets.json");
    assert!(std::fs::read_to_string(&secrets).unwrap().contains(NEW));
    assert_eq!(mode(&secrets), 0o600);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("relay-credential"), "{text}");
    assert!(
        text.contains("moved secret settings out of the database")
            && text.contains("CUSTOM_HEADERS"),
        "{text}"
    );
    assert_eq!(
        text.matches("made a data file private").count(),
        2,
        "data/ and the database: {text}"
    );

    // Kept across a restart, from the secrets file.
    let proxy = Proxy::start(dir.path(), &env_file(&mock)).await;
    let (_, config) = proxy.admin("GET", "/config", None).await;
    assert_eq!(
        setting(&config, "CUSTOM_HEADERS")["value"]["x-relay-auth"],
        "Bear…41e0"
    );
    proxy.stop();
}

#[cfg(unix)]
#[tokio::test]
async fn data_files_are_private_whatever_the_umask() {
    let mock = MockGemini::start().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = common::Proxy::start_with(dir.path(), &env_file(&mock), None, Some("022")).await;
    let data = dir.path().join("data");
    assert_eq!(mode(&data), 0o700);
    // Open in WAL mode: the -wal and -shm files exist while the proxy runs.
    for file in ["default_db.db", "default_db.db-wal", "default_db.db-shm"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
    let running = Proxy {
        url: proxy.url.clone(),
        proxy,
        client: support::client_builder().build().unwrap(),
    };
    let (status, _) = running
        .admin(
            "PUT",
            "/config",
            Some(json!({"ALLOWED_TOKENS": [TOKEN, "sk-client-token-0003"]})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(mode(&data.join("default_db.secrets.json")), 0o600);
    running.stop();
}
