//! The proxy binary on a networked store (`DATABASE_TYPE=postgres` and `mysql`), against the
//! loopback mock Gemini: requests appear in the admin statistics, and a proxy started afresh
//! (another directory: nothing local) on the same database starts from the key state kept
//! there. The servers come from `GEMINI_BALANCE_TEST_POSTGRES_URL` and
//! `GEMINI_BALANCE_TEST_MYSQL_URL` (skipped with a notice when unset, failing under CI).
#![cfg(all(feature = "postgres", feature = "mysql"))]

mod common;
#[path = "../../../tests/sql_servers/mod.rs"]
mod sql_servers;

use std::time::Duration;

use common::{Proxy, TOKEN};
use serde_json::Value;
use sql_servers::{Server, TestDb};
use support::{prompt_body, test_keys, Fault, MockGemini};

const FLASH: &str = "gemini-2.0-flash";
const ADMIN: &str = "sk-admin-token-scale-out-0001";
const DB_PASSWORD: &str = "";

/// The `.env` of a proxy on `db`.
fn env_file(mock: &MockGemini, keys: &[String], db: &TestDb) -> String {
    env_file_at(mock, keys, db, &db.url())
}

/// The `.env` of a proxy on `db`, reached at `url` (the database's, or a relay's).
fn env_file_at(mock: &MockGemini, keys: &[String], db: &TestDb, url: &str) -> String {
    let mut env = format!(
        "API_KEYS={}\nALLOWED_TOKENS=[\"{TOKEN}\"]\nAUTH_TOKEN={ADMIN}\nBASE_URL={}/v1beta\n\
         MAX_RETRIES=3\nLOG_LEVEL=info\n",
        serde_json::to_string(keys).unwrap(),
        mock.base_url()
    );
    match db.server {
        Server::Postgres => env.push_str(&format!(
            "DATABASE_TYPE=postgres\nPOSTGRES_URL={url}\nPOSTGRES_SCHEMA={}\n",
            db.name
        )),
        Server::MySql => {
            // mysql://user[:password]@host:port, as the Python server's MYSQL_* settings.
            let rest = url.trim_start_matches("mysql://");
            let (credentials, address) = rest.split_once('@').unwrap();
            let (user, password) = credentials
                .split_once(':')
                .unwrap_or((credentials, DB_PASSWORD));
            let address = address.split('/').next().unwrap();
            let (host, port) = address.split_once(':').unwrap_or((address, "3306"));
            env.push_str(&format!(
                "DATABASE_TYPE=mysql\nMYSQL_HOST={host}\nMYSQL_PORT={port}\nMYSQL_USER={user}\n\
                 MYSQL_PASSWORD={password}\nMYSQL_DATABASE={}\n",
                db.name
            ));
        }
    }
    env
}

async fn ask(proxy: &Proxy) -> u16 {
    support::client_builder()
        .build()
        .unwrap()
        .post(format!(
            "{}/v1beta/models/{FLASH}:generateContent",
            proxy.url
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

async fn admin_get(proxy: &Proxy, path: &str) -> Value {
    let text = support::client_builder()
        .build()
        .unwrap()
        .get(format!("{}/api{path}", proxy.url))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The calls of the last hour once the store has written `calls` records (it writes in the
/// background), or what it has after 10 s.
async fn calls_in_stats(proxy: &Proxy, calls: u64) -> u64 {
    let mut seen = 0;
    for _ in 0..200 {
        let summary = admin_get(proxy, "/stats/summary").await;
        seen = summary["windows"]["1h"]["calls"].as_u64().unwrap_or(0);
        if seen >= calls {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    seen
}

async fn key_status(proxy: &Proxy, mask: &str) -> String {
    let keys = admin_get(proxy, "/keys").await;
    keys["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["mask"] == mask)
        .map(|k| k["status"].as_str().unwrap_or_default().to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn usage_and_key_state_live_in_the_shared_database() {
    for server in Server::ALL {
        let Some(db) = TestDb::new(server, "proxy") else {
            continue;
        };
        let name = server.name();
        let mock = MockGemini::start().await;
        let keys = test_keys(2);
        mock.set_fault(&keys[0], Fault::InvalidKey);
        let env = env_file(&mock, &keys, &db);
        let bad_mask = format!("{}…{}", &keys[0][..4], &keys[0][keys[0].len() - 4..]);

        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("proxy.log");
        let proxy = Proxy::start_capturing(dir.path(), &env, &log).await;
        for _ in 0..4 {
            assert_eq!(ask(&proxy).await, 200, "{name}");
        }
        assert_eq!(
            mock.requests(&keys[0]),
            1,
            "{name}: rejected once, then left out"
        );
        assert_eq!(calls_in_stats(&proxy, 4).await, 4, "{name}");
        assert_eq!(key_status(&proxy, &bad_mask).await, "disabled", "{name}");
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(
            !text.contains(&keys[0]) && !text.contains(&keys[1]),
            "{name}: {text}"
        );
        proxy.stop();
        // Nothing of the store under data/ (the secrets file stays per instance).
        assert!(!dir.path().join("data/default_db.db").exists(), "{name}");

        // Another instance, from another directory: the key state and usage are the
        // database's.
        let other = tempfile::tempdir().unwrap();
        let proxy = Proxy::start(other.path(), &env).await;
        assert_eq!(key_status(&proxy, &bad_mask).await, "disabled", "{name}");
        for _ in 0..2 {
            assert_eq!(ask(&proxy).await, 200, "{name}");
        }
        assert_eq!(
            mock.requests(&keys[0]),
            1,
            "{name}: still left out after a restart"
        );
        assert_eq!(calls_in_stats(&proxy, 6).await, 6, "{name}");
        let errors = admin_get(&proxy, "/logs/errors").await;
        assert_eq!(errors["total"], 1, "{name}: {errors}");
        proxy.stop();
        assert_eq!(db.count("SELECT COUNT(*) FROM request_log"), 6, "{name}");
    }
}

/// The database goes away while the proxy serves: every request is answered, and once the
/// database is back the records queued meanwhile are written (none dropped or lost).
#[tokio::test]
async fn requests_are_served_while_the_database_is_away() {
    for server in Server::ALL {
        let Some(db) = TestDb::new(server, "proxy_away") else {
            continue;
        };
        let name = server.name();
        let mock = MockGemini::start().await;
        let keys = test_keys(1);
        let relay = db.relay();
        let env = env_file_at(&mock, &keys, &db, &relay.url(&db.url()));
        let dir = tempfile::tempdir().unwrap();
        let proxy = Proxy::start(dir.path(), &env).await;
        for _ in 0..2 {
            assert_eq!(ask(&proxy).await, 200, "{name}");
        }
        assert_eq!(calls_in_stats(&proxy, 2).await, 2, "{name}");

        relay.cut();
        for _ in 0..10 {
            assert_eq!(
                ask(&proxy).await,
                200,
                "{name}: served while the database is away"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        relay.restore();
        assert_eq!(calls_in_stats(&proxy, 12).await, 12, "{name}");
        let summary = admin_get(&proxy, "/stats/summary").await;
        let store = &summary["store"];
        assert_eq!(
            (
                store["written"].as_u64(),
                store["dropped"].as_u64(),
                store["lost"].as_u64()
            ),
            (Some(12), Some(0), Some(0)),
            "{name}: {summary}"
        );
        proxy.stop();
        assert_eq!(db.count("SELECT COUNT(*) FROM request_log"), 12, "{name}");
    }
}

/// A database that cannot be reached stops startup, naming it without its password.
#[test]
fn an_unreachable_database_stops_startup_naming_it() {
    let port = common::free_port();
    let env = format!(
        "API_KEYS=[\"{}\"]\nALLOWED_TOKENS=[\"{TOKEN}\"]\n\
         DATABASE_TYPE=postgres\nPOSTGRES_URL=postgres://gemini:pw-secret-db-77@127.0.0.1:{port}/gemini\n",
        test_keys(1)[0]
    );
    let stderr = common::startup_error(&env);
    assert!(
        stderr.contains(&format!("postgres://gemini@127.0.0.1:{port}/gemini")),
        "{stderr}"
    );
    assert!(!stderr.contains("pw-secret-db-77"), "{stderr}");
}
