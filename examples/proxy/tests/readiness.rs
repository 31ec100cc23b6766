//! `/health` (liveness, Gemini-Balance's `{"status":"healthy"}`) and `/health/ready`
//! (readiness: the store takes writes and a key serves), against the binary: ready, then not
//! when every key is disabled, then not while another connection holds the database's write
//! lock, and ready again once it lets go; on PostgreSQL and MySQL, not while the database is
//! away. Neither answer needs a token or names a key.

mod common;
#[cfg(all(feature = "postgres", feature = "mysql"))]
#[path = "../../../tests/sql_servers/mod.rs"]
mod sql_servers;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::{prompt_body, test_key, Fault, MockGemini};

use common::Proxy;

const TOKEN: &str = "sk-ready-client-5a2c7e";

async fn get(client: &reqwest::Client, url: String) -> (u16, Value, String) {
    let res = client.get(url).send().await.unwrap();
    let status = res.status().as_u16();
    let text = String::from_utf8(res.bytes().await.unwrap().to_vec()).unwrap();
    (status, serde_json::from_str(&text).unwrap(), text)
}

/// Probes `/health/ready` until it answers `status` (the probe reuses a result for a second;
/// the deadline is a guard, not a measurement).
async fn ready_until(client: &reqwest::Client, proxy: &Proxy, status: u16) -> (Value, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (seen, body, text) = get(client, format!("{}/health/ready", proxy.url)).await;
        if seen == status {
            return (body, text);
        }
        assert!(
            Instant::now() < deadline,
            "/health/ready stayed {seen}: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_without_a_usable_key_or_a_writable_store() {
    let mock = MockGemini::start().await;
    let key = test_key(1);
    let dir = tempfile::tempdir().unwrap();
    let env = format!(
        "API_KEYS=[\"{key}\"]\nALLOWED_TOKENS=[\"{TOKEN}\"]\nBASE_URL={}/v1beta\n",
        mock.base_url()
    );
    let proxy = Proxy::start(dir.path(), &env).await;
    let client = support::client_builder().build().unwrap();

    let (status, health, _) = get(&client, format!("{}/health", proxy.url)).await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "healthy");
    let (ready, _) = ready_until(&client, &proxy, 200).await;
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["checks"]["store"]["ok"], true);
    assert_eq!(ready["checks"]["keys"]["usable"], 1);

    // Another connection takes the database's write lock: the store takes no write.
    let db = rusqlite::Connection::open(dir.path().join("data/default_db.db")).unwrap();
    db.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let (ready, _) = ready_until(&client, &proxy, 503).await;
    assert_eq!(ready["status"], "not_ready");
    assert_eq!(ready["checks"]["store"]["ok"], false, "{ready}");
    assert!(ready["checks"]["store"]["error"].is_string(), "{ready}");
    assert_eq!(ready["checks"]["keys"]["ok"], true, "{ready}");
    // The liveness probe does not care.
    let (status, _, _) = get(&client, format!("{}/health", proxy.url)).await;
    assert_eq!(status, 200);
    db.execute_batch("ROLLBACK").unwrap();
    ready_until(&client, &proxy, 200).await;

    // The upstream says the only key is invalid: it is disabled, and nothing can be served.
    mock.set_fault(&key, Fault::InvalidKey);
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
    assert!(!res.status().is_success());
    let (ready, text) = ready_until(&client, &proxy, 503).await;
    assert_eq!(ready["checks"]["store"]["ok"], true, "{ready}");
    assert_eq!(ready["checks"]["keys"]["ok"], false, "{ready}");
    assert_eq!(ready["checks"]["keys"]["usable"], 0, "{ready}");
    assert_eq!(ready["checks"]["keys"]["total"], 1, "{ready}");
    assert!(!text.contains(&key), "{text}");
    let (status, health, _) = get(&client, format!("{}/health", proxy.url)).await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["keys"]["disabled"], 1);
    proxy.stop();
}

/// On PostgreSQL and MySQL: the database goes away (a relay in front of it cuts every
/// connection and refuses new ones), and the readiness probe says so until it is back.
#[cfg(all(feature = "postgres", feature = "mysql"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_while_the_networked_database_is_away() {
    use sql_servers::{Server, TestDb};

    for server in Server::ALL {
        let Some(db) = TestDb::new(server, "readiness") else {
            continue;
        };
        let name = server.name();
        let mock = MockGemini::start().await;
        let relay = db.relay();
        let url = relay.url(&db.url());
        let mut env = format!(
            "API_KEYS=[\"{}\"]\nALLOWED_TOKENS=[\"{TOKEN}\"]\nBASE_URL={}/v1beta\n",
            test_key(1),
            mock.base_url()
        );
        match server {
            Server::Postgres => env.push_str(&format!(
                "DATABASE_TYPE=postgres\nPOSTGRES_URL={url}\nPOSTGRES_SCHEMA={}\n",
                db.name
            )),
            Server::MySql => {
                // mysql://user[:password]@host:port/db, as the Python server's MYSQL_* settings.
                let rest = url.trim_start_matches("mysql://");
                let (credentials, address) = rest.split_once('@').unwrap();
                let (user, password) = credentials.split_once(':').unwrap_or((credentials, ""));
                let address = address.split('/').next().unwrap();
                let (host, port) = address.split_once(':').unwrap_or((address, "3306"));
                env.push_str(&format!(
                    "DATABASE_TYPE=mysql\nMYSQL_HOST={host}\nMYSQL_PORT={port}\nMYSQL_USER={user}\n\
                     MYSQL_PASSWORD={password}\nMYSQL_DATABASE={}\n",
                    db.name
                ));
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let proxy = Proxy::start(dir.path(), &env).await;
        let client = support::client_builder().build().unwrap();
        let (ready, _) = ready_until(&client, &proxy, 200).await;
        assert_eq!(ready["checks"]["store"]["ok"], true, "{name}: {ready}");

        relay.cut();
        let (ready, text) = ready_until(&client, &proxy, 503).await;
        assert_eq!(ready["checks"]["store"]["ok"], false, "{name}: {ready}");
        assert_eq!(ready["checks"]["keys"]["ok"], true, "{name}: {ready}");
        assert!(
            !text.contains(&db.name),
            "{name}: names the database: {text}"
        );
        let (status, _, _) = get(&client, format!("{}/health", proxy.url)).await;
        assert_eq!(status, 200, "{name}");

        relay.restore();
        ready_until(&client, &proxy, 200).await;
        proxy.stop();
    }
}
