//! Client quotas end to end: the proxy binary against the loopback mock Gemini. Limits set
//! through the admin API refuse requests on the Gemini and OpenAI routes with a `429` in the
//! route's format and a `Retry-After`, before any key is used; token budgets count the tokens
//! of earlier answers; names show on the usage and log pages' data; limits, names and the
//! month's use survive a restart (SQLite), and instances on one PostgreSQL database share them.

mod common;
#[cfg(all(feature = "postgres", feature = "mysql"))]
#[path = "../../../tests/sql_servers/mod.rs"]
mod sql_servers;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use support::{prompt_body, test_key, test_keys, MockGemini};

const TOKEN: &str = "sk-quota-client-0001";
const TOKEN2: &str = "sk-quota-client-0002";
const ADMIN: &str = "sk-quota-admin-0003";
/// Tokens of one answer of the mock to the prompt "hello" (1 prompt + 6 answer tokens).
const ANSWER_TOKENS: u64 = 7;

struct Proxy {
    proxy: common::Proxy,
    client: reqwest::Client,
}

impl Proxy {
    async fn start(dir: &Path, env_file: &str) -> Proxy {
        let proxy = common::Proxy::start(dir, env_file).await;
        let client = support::client_builder().build().unwrap();
        Proxy { proxy, client }
    }

    fn url(&self) -> &str {
        &self.proxy.url
    }

    async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .client
            .request(method.parse().unwrap(), format!("{}/api{path}", self.url()))
            .bearer_auth(ADMIN);
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        for secret in [TOKEN, TOKEN2, ADMIN] {
            assert!(!text.contains(secret), "a token leaked: {text}");
        }
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// `:generateContent` with `token`: status, `Retry-After`, JSON body.
    async fn gemini(&self, token: &str) -> (u16, Option<u64>, Value) {
        let res = self
            .client
            .post(format!(
                "{}/v1beta/models/gemini-2.0-flash:generateContent",
                self.url()
            ))
            .header("x-goog-api-key", token)
            .header("content-type", "application/json")
            .body(prompt_body("hello"))
            .send()
            .await
            .unwrap();
        answer(res).await
    }

    /// OpenAI chat with `token`.
    async fn openai(&self, token: &str) -> (u16, Option<u64>, Value) {
        let res = self
            .client
            .post(format!("{}/v1/chat/completions", self.url()))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(
                json!({
                    "model": "gemini-2.0-flash",
                    "messages": [{"role": "user", "content": "hello"}],
                })
                .to_string(),
            )
            .send()
            .await
            .unwrap();
        answer(res).await
    }

    /// The `GET /api/quotas` row of `token`'s client.
    async fn quota_of(&self, token: &str) -> Value {
        let (status, list) = self.admin("GET", "/quotas", None).await;
        assert_eq!(status, 200, "{list}");
        let mask = mask(token);
        list["clients"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["mask"] == mask)
            .unwrap_or_else(|| panic!("no client {mask} in {list}"))
            .clone()
    }

    /// Polls `GET /api/quotas` until `token`'s `used[field]` is `expected` (use is counted
    /// when an answer's record is written, just after the client read it; other instances'
    /// use arrives with the next exchange).
    async fn until_used(&self, token: &str, field: &str, expected: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let row = self.quota_of(token).await;
            if row["used"][field] == expected {
                return row;
            }
            assert!(
                Instant::now() < deadline,
                "{field} never reached {expected}: {row}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn answer(res: reqwest::Response) -> (u16, Option<u64>, Value) {
    let status = res.status().as_u16();
    let retry_after = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
    let body = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap_or(Value::Null);
    (status, retry_after, body)
}

/// The fingerprint the proxy shows for a token.
fn mask(token: &str) -> String {
    format!("{}…{}", &token[..4], &token[token.len() - 4..])
}

fn env_file(mock: &MockGemini) -> String {
    format!(
        "API_KEYS={}\nALLOWED_TOKENS=[\"{TOKEN}\",\"{TOKEN2}\"]\nAUTH_TOKEN={ADMIN}\nBASE_URL={}/v1beta\nMAX_RETRIES=3\n",
        serde_json::to_string(&test_keys(2)).unwrap(),
        mock.base_url()
    )
}

/// Waits for the next minute when less than 15 s of this one are left, so that a test's
/// requests of "one minute" fall in one (the windows are calendar minutes).
async fn early_in_a_minute() {
    let second = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 60;
    if second >= 45 {
        tokio::time::sleep(Duration::from_secs(61 - second)).await;
    }
}

#[tokio::test]
async fn requests_per_minute_refuse_on_both_apis_before_any_key_is_used() {
    let mock = MockGemini::start().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &env_file(&mock)).await;

    // Both allowed tokens are listed by id and fingerprint, with no limit yet.
    let (status, list) = proxy.admin("GET", "/quotas", None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(
        list["default"],
        json!({"requests_per_minute": null, "tokens_per_minute": null, "tokens_per_day": null, "tokens_per_month": null})
    );
    let masks: Vec<&str> = list["clients"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["mask"].as_str())
        .collect();
    assert!(
        masks.contains(&mask(TOKEN).as_str()) && masks.contains(&mask(TOKEN2).as_str()),
        "{list}"
    );

    // Bad edits are refused, naming what is wrong.
    for (path, body, says) in [
        (
            "/quotas/default",
            json!({"requests_per_minute": -1}),
            "limits",
        ),
        (
            "/quotas/default",
            json!({"requests_per_hour": 5}),
            "requests_per_hour",
        ),
        (
            "/quotas/clients/not-an-id",
            json!({"name": "x"}),
            "client id",
        ),
    ] {
        let (status, body) = proxy.admin("PUT", path, Some(body)).await;
        assert_eq!(status, 400, "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(says),
            "{body}"
        );
    }
    let id = proxy.quota_of(TOKEN).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = proxy
        .admin(
            "PUT",
            &format!("/quotas/clients/{id}"),
            Some(json!({"name": test_key(1)})),
        )
        .await;
    assert_eq!(status, 400, "a key as a name: {body}");
    assert!(!body.to_string().contains(&test_key(1)));
    // Nor a client token (a pasted one would be kept and shown on every page).
    let (status, body) = proxy
        .admin(
            "PUT",
            &format!("/quotas/clients/{id}"),
            Some(json!({"name": format!("team {TOKEN}")})),
        )
        .await;
    assert_eq!(status, 400, "a token as a name: {body}");
    assert!(!body.to_string().contains(TOKEN));

    let (status, body) = proxy
        .admin(
            "PUT",
            "/quotas/default",
            Some(json!({"requests_per_minute": 2})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["default"]["requests_per_minute"], 2);

    early_in_a_minute().await;
    assert_eq!(proxy.gemini(TOKEN).await.0, 200);
    assert_eq!(proxy.openai(TOKEN).await.0, 200);
    let upstream_before = mock.total();
    // The third request of the minute: refused on either API, in its format.
    let (status, retry_after, body) = proxy.gemini(TOKEN).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["status"], "RESOURCE_EXHAUSTED", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2 requests per minute"),
        "{body}"
    );
    let retry_after = retry_after.expect("Retry-After");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let (status, retry_after, body) = proxy.openai(TOKEN).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("requests per minute"),
        "{body}"
    );
    assert!((1..=60).contains(&retry_after.expect("Retry-After")));
    assert_eq!(
        mock.total(),
        upstream_before,
        "a refused request used no key"
    );
    // Another client has its own count.
    assert_eq!(proxy.gemini(TOKEN2).await.0, 200);

    // The client's own limits replace the default: no limit at all here.
    let (status, row) = proxy
        .admin(
            "PUT",
            &format!("/quotas/clients/{id}"),
            Some(json!({"limits": {}, "name": "Team A"})),
        )
        .await;
    assert_eq!(status, 200, "{row}");
    assert_eq!(row["name"], "Team A");
    assert_eq!(proxy.gemini(TOKEN).await.0, 200);
    let row = proxy.quota_of(TOKEN).await;
    assert_eq!(row["used"]["requests_minute"], 3, "{row}");
    assert_eq!(row["effective"]["requests_per_minute"], Value::Null);
    // Cleared: the default applies again.
    let (status, _) = proxy
        .admin("DELETE", &format!("/quotas/clients/{id}"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(proxy.gemini(TOKEN).await.0, 429);
    assert_eq!(proxy.quota_of(TOKEN).await["name"], Value::Null);
}

#[tokio::test]
async fn a_token_budget_refuses_after_the_answers_that_used_it_and_survives_a_restart() {
    let mock = MockGemini::start().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &env_file(&mock)).await;
    let id = proxy.quota_of(TOKEN2).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, row) = proxy
        .admin(
            "PUT",
            &format!("/quotas/clients/{id}"),
            Some(json!({"name": "Team B", "limits": {"tokens_per_month": 10}})),
        )
        .await;
    assert_eq!(status, 200, "{row}");
    assert_eq!(row["effective"]["tokens_per_month"], 10);

    // 7 tokens, then 14: the budget is spent by the second answer (charged after it).
    assert_eq!(proxy.gemini(TOKEN2).await.0, 200);
    proxy
        .until_used(TOKEN2, "tokens_month", ANSWER_TOKENS)
        .await;
    assert_eq!(proxy.openai(TOKEN2).await.0, 200);
    proxy
        .until_used(TOKEN2, "tokens_month", 2 * ANSWER_TOKENS)
        .await;
    let (status, retry_after, body) = proxy.gemini(TOKEN2).await;
    assert_eq!(status, 429, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("10 tokens per month"),
        "{body}"
    );
    // Until the first of next month (UTC): at least a second, at most 31 days.
    let retry_after = retry_after.expect("Retry-After");
    assert!((1..=31 * 86_400).contains(&retry_after), "{retry_after}");
    let (status, _, body) = proxy.openai(TOKEN2).await;
    assert_eq!(status, 429);
    assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");
    // The other client has no budget.
    assert_eq!(proxy.gemini(TOKEN).await.0, 200);

    // The name shows where the client's fingerprint does: usage per client, request logs.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, stats) = proxy.admin("GET", "/stats/clients?window=24h", None).await;
        let (_, logs) = proxy.admin("GET", "/logs/requests", None).await;
        let named_row = stats["rows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == id.as_str() && r["name"] == "Team B");
        let named_log = logs["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["client_id"] == id.as_str() && r["client_name"] == "Team B");
        if named_row && named_log {
            break;
        }
        assert!(Instant::now() < deadline, "no name in {stats} / {logs}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A restart on the same database: the limit, the name and the month's use are kept.
    proxy.proxy.stop();
    let proxy = Proxy::start(dir.path(), &env_file(&mock)).await;
    let row = proxy.quota_of(TOKEN2).await;
    assert_eq!(row["name"], "Team B", "{row}");
    assert_eq!(row["limits"]["tokens_per_month"], 10, "{row}");
    assert_eq!(row["used"]["tokens_month"], 2 * ANSWER_TOKENS, "{row}");
    assert_eq!(proxy.gemini(TOKEN2).await.0, 429);
    // The database holds ids and names, never a token.
    let db = std::fs::read(dir.path().join("data/default_db.db")).unwrap();
    let db = String::from_utf8_lossy(&db);
    assert!(db.contains(&id));
    for secret in [TOKEN, TOKEN2, ADMIN] {
        assert!(!db.contains(secret), "a token in the database");
    }
}

/// Two instances on one PostgreSQL database: a default set on one acts on the other, and each
/// sees the other's use within QUOTA_SYNC_INTERVAL_SECONDS.
#[cfg(all(feature = "postgres", feature = "mysql"))]
#[tokio::test]
async fn instances_on_one_postgres_database_share_limits_and_use() {
    let Some(db) = sql_servers::TestDb::new(sql_servers::Server::Postgres, "quotas") else {
        return;
    };
    let mock = MockGemini::start().await;
    let env = format!(
        "{}DATABASE_TYPE=postgres\nPOSTGRES_URL={}\nPOSTGRES_SCHEMA={}\nQUOTA_SYNC_INTERVAL_SECONDS=1\n",
        env_file(&mock),
        db.url(),
        db.name
    );
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Proxy::start(dir_a.path(), &env).await;
    let b = Proxy::start(dir_b.path(), &env).await;
    let (status, _) = a
        .admin(
            "PUT",
            "/quotas/default",
            Some(json!({"tokens_per_day": 10})),
        )
        .await;
    assert_eq!(status, 200);
    // The edit reaches b with its next exchange.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, list) = b.admin("GET", "/quotas", None).await;
        if list["default"]["tokens_per_day"] == 10 {
            break;
        }
        assert!(Instant::now() < deadline, "b never saw the default: {list}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // 14 tokens used through a: b refuses once it has them.
    assert_eq!(a.gemini(TOKEN).await.0, 200);
    a.until_used(TOKEN, "tokens_day", ANSWER_TOKENS).await;
    assert_eq!(a.gemini(TOKEN).await.0, 200);
    b.until_used(TOKEN, "tokens_day", 2 * ANSWER_TOKENS).await;
    let (status, retry_after, _) = b.gemini(TOKEN).await;
    assert_eq!(status, 429);
    assert!(retry_after.is_some());
    a.proxy.stop();
    b.proxy.stop();
}
