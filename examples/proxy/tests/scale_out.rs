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
         MAX_RETRIES=3\nLOG_LEVEL=info\nAUTH_FAILURE_BURST=0\n",
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
    ask_with(proxy, TOKEN).await
}

/// A `generateContent` through `proxy` with the client token `token`; its status.
async fn ask_with(proxy: &Proxy, token: &str) -> u16 {
    support::client_builder()
        .build()
        .unwrap()
        .post(format!(
            "{}/v1beta/models/{FLASH}:generateContent",
            proxy.url
        ))
        .header("x-goog-api-key", token)
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

/// A sealing key that is not 64 hex digits stops startup, named but not shown.
#[test]
fn a_sealing_key_that_is_not_64_hex_digits_stops_startup() {
    let env = format!(
        "API_KEYS=[\"{}\"]\nALLOWED_TOKENS=[\"{TOKEN}\"]\nSHARED_KEYS_SEALING_KEY=not-hex-secret-0123\n",
        test_keys(1)[0]
    );
    let stderr = common::startup_error(&env);
    assert!(stderr.contains("SHARED_KEYS_SEALING_KEY"), "{stderr}");
    assert!(stderr.contains("64 hex digits"), "{stderr}");
    assert!(!stderr.contains("not-hex-secret-0123"), "{stderr}");
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

/// The sealing key every instance of the three-instance test shares.
const SEALING_KEY: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f000112233445566778899aabbccddeeff";

/// How long a change made on one instance may take to reach the others in these tests: a guard
/// well above the feeds' bound (PostgreSQL: a notification; MySQL: a 200 ms poll), so that a
/// loaded machine does not fail the test.
const PROPAGATION: Duration = Duration::from_secs(10);

async fn health(proxy: &Proxy) -> Value {
    let text = support::client_builder()
        .build()
        .unwrap()
        .get(format!("{}/health", proxy.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Polls `/health` of `proxy` until `what` (a count under `keys`) is `expected`; panics after
/// [`PROPAGATION`].
async fn until_health(proxy: &Proxy, what: &str, expected: u64, context: &str) {
    let started = std::time::Instant::now();
    loop {
        let seen = health(proxy).await;
        if seen["keys"][what].as_u64() == Some(expected) {
            return;
        }
        assert!(
            started.elapsed() < PROPAGATION,
            "{context}: {what} is not {expected} on {}: {seen}",
            proxy.url
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn admin_send(proxy: &Proxy, method: reqwest::Method, path: &str, body: Value) -> Value {
    let res = support::client_builder()
        .build()
        .unwrap()
        .request(method, format!("{}/api{path}", proxy.url))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = res.status();
    let text = res.text().await.unwrap();
    assert!(status.is_success(), "{path}: {status} {text}");
    serde_json::from_str(&text).unwrap()
}

/// The value and source of a setting as `proxy` runs with it.
async fn setting(proxy: &Proxy, name: &str) -> (Value, String) {
    let config = admin_get(proxy, "/config").await;
    let entry = config["settings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap()
        .clone();
    (
        entry["value"].clone(),
        entry["source"].as_str().unwrap().to_owned(),
    )
}

async fn until_setting(proxy: &Proxy, name: &str, expected: (Value, &str), context: &str) {
    let started = std::time::Instant::now();
    loop {
        let (value, source) = setting(proxy, name).await;
        if value == expected.0 && source == expected.1 {
            return;
        }
        assert!(
            started.elapsed() < PROPAGATION,
            "{context}: {name} is {value} ({source}) on {}",
            proxy.url
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A second client token, added to ALLOWED_TOKENS through the admin API of one instance.
const SECOND_TOKEN: &str = "sk-second-client-token-shared-0002";

/// Asks `proxy` with `token` until it answers `status`; panics after [`PROPAGATION`]. Returns
/// how many requests were answered (200: recorded as usage) on the way.
async fn until_token(proxy: &Proxy, token: &str, status: u16, context: &str) -> u64 {
    let started = std::time::Instant::now();
    let mut answered = 0;
    loop {
        let got = ask_with(proxy, token).await;
        answered += u64::from(got == 200);
        if got == status {
            return answered;
        }
        assert!(
            started.elapsed() < PROPAGATION,
            "{context}: {} answers {got} with the second token, not {status}",
            proxy.url
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the file at `path` contains `text`; panics after [`PROPAGATION`].
async fn until_file_contains(path: &std::path::Path, text: &str, context: &str) {
    let started = std::time::Instant::now();
    while !std::fs::read_to_string(path)
        .unwrap_or_default()
        .contains(text)
    {
        assert!(
            started.elapsed() < PROPAGATION,
            "{context}: not kept in {}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn mask(key: &str) -> String {
    format!("{}…{}", &key[..4], &key[key.len() - 4..])
}

/// Three proxy binaries on one database (PostgreSQL, then MariaDB) act as one proxy: a key
/// rejected through A is left out by B and C; a per-model cooldown from A holds on B; a key
/// added through B's admin API serves on C and is kept in C's `API_KEYS`; a fourth instance
/// started then begins from all of that; the key's removal on C reaches the others; a live setting changed (and forgotten) on A is in effect on C; usage through all
/// three appears once each in A's statistics; and while the database is away every request is
/// answered and what was queued is written once it is back, nothing dropped.
#[tokio::test]
async fn three_instances_on_one_database_act_as_one_proxy() {
    for server in Server::ALL {
        let Some(db) = TestDb::new(server, "three") else {
            continue;
        };
        let name = server.name();
        let mock = MockGemini::start().await;
        let keys = test_keys(5);
        let (listed, added) = (&keys[..4], &keys[4]);
        mock.set_fault(&keys[0], Fault::InvalidKey);
        mock.set_fault(&keys[1], Fault::rate_limited_for(FLASH, "600s"));
        let relay = db.relay();
        let env = format!(
            "{}SHARED_KEYS_SEALING_KEY={SEALING_KEY}\n",
            env_file_at(&mock, listed, &db, &relay.url(&db.url()))
        );
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let log = dirs[0].path().join("a.log");
        let a = Proxy::start_capturing(dirs[0].path(), &env, &log).await;
        let b = Proxy::start(dirs[1].path(), &env).await;
        let c = Proxy::start(dirs[2].path(), &env).await;
        let mut sent = 0;

        // A key rejected through A (400 API_KEY_INVALID) is left out by B and C.
        while mock.requests(&keys[0]) == 0 {
            assert_eq!(ask(&a).await, 200, "{name}");
            sent += 1;
            assert!(sent < 10, "{name}: A never tried the first key");
        }
        until_health(&b, "disabled", 1, name).await;
        until_health(&c, "disabled", 1, name).await;
        // A per-model cooldown (429 for FLASH) met through A holds on B.
        while mock.requests(&keys[1]) == 0 {
            assert_eq!(ask(&a).await, 200, "{name}");
            sent += 1;
            assert!(sent < 20, "{name}: A never tried the second key");
        }
        until_health(&b, "cooling_for_some_models", 1, name).await;
        until_health(&c, "cooling_for_some_models", 1, name).await;
        for proxy in [&b, &c, &b, &c, &b, &c, &b, &c] {
            assert_eq!(ask(proxy).await, 200, "{name}");
            sent += 1;
        }
        assert_eq!(
            (mock.requests(&keys[0]), mock.requests(&keys[1])),
            (1, 1),
            "{name}: the rejected key and the cooling one are left out by B and C"
        );

        // A key added through B's admin API serves on C, and C keeps it in its API_KEYS.
        admin_send(
            &b,
            reqwest::Method::POST,
            "/keys",
            serde_json::json!({ "keys": [added] }),
        )
        .await;
        until_health(&c, "total", 5, name).await;
        for _ in 0..6 {
            assert_eq!(ask(&c).await, 200, "{name}");
            sent += 1;
        }
        assert!(
            mock.requests(added) > 0,
            "{name}: the added key serves on C"
        );
        // Kept in C's API_KEYS (its secrets file) by a task that follows the pool.
        let secrets = dirs[2].path().join("data/default_db.secrets.json");
        let started = std::time::Instant::now();
        while !std::fs::read_to_string(&secrets)
            .unwrap_or_default()
            .contains(added.as_str())
        {
            assert!(
                started.elapsed() < PROPAGATION,
                "{name}: not kept in C's API_KEYS"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // An instance started now (nothing local) starts from the shared state before it
        // serves: the rejected key, the cooldown, the key added on B (opened with the sealing
        // key), and keeps that key in its API_KEYS.
        let fresh = tempfile::tempdir().unwrap();
        let d = Proxy::start(fresh.path(), &env).await;
        let keys_of_d = &health(&d).await["keys"];
        assert_eq!(
            (
                keys_of_d["total"].as_u64(),
                keys_of_d["disabled"].as_u64(),
                keys_of_d["cooling_for_some_models"].as_u64()
            ),
            (Some(5), Some(1), Some(1)),
            "{name}: {keys_of_d}"
        );
        let secrets_of_d = fresh.path().join("data/default_db.secrets.json");
        let started = std::time::Instant::now();
        while !std::fs::read_to_string(&secrets_of_d)
            .unwrap_or_default()
            .contains(added.as_str())
        {
            assert!(
                started.elapsed() < PROPAGATION,
                "{name}: not kept in D's API_KEYS"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // Removed on C: gone on A, B and D.
        let id = admin_get(&c, "/keys").await["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["mask"] == mask(added))
            .map(|k| k["id"].as_str().unwrap().to_owned())
            .unwrap();
        admin_send(
            &c,
            reqwest::Method::POST,
            "/keys/delete",
            serde_json::json!({ "ids": [id] }),
        )
        .await;
        until_health(&a, "total", 4, name).await;
        until_health(&b, "total", 4, name).await;
        until_health(&d, "total", 4, name).await;
        d.stop();

        // A live setting changed on A is in effect on C; forgotten on A, C reverts too.
        admin_send(
            &a,
            reqwest::Method::PUT,
            "/config",
            serde_json::json!({ "MAX_RETRIES": 5 }),
        )
        .await;
        until_setting(&c, "MAX_RETRIES", (Value::from(5), "database"), name).await;
        admin_send(
            &a,
            reqwest::Method::DELETE,
            "/config/MAX_RETRIES",
            Value::Null,
        )
        .await;
        until_setting(&c, "MAX_RETRIES", (Value::from(3), "environment"), name).await;

        // A secret live setting changed on A (a client token added to ALLOWED_TOKENS) is in
        // effect on C and on an instance started afterwards, kept in their secrets files, and
        // never in clear in the database; forgotten on A, C refuses the token again.
        admin_send(
            &a,
            reqwest::Method::PUT,
            "/config",
            serde_json::json!({ "ALLOWED_TOKENS": [TOKEN, SECOND_TOKEN] }),
        )
        .await;
        sent += until_token(&c, SECOND_TOKEN, 200, name).await;
        let secrets_of_c = dirs[2].path().join("data/default_db.secrets.json");
        until_file_contains(&secrets_of_c, SECOND_TOKEN, name).await;
        let fresh = tempfile::tempdir().unwrap();
        let e = Proxy::start(fresh.path(), &env).await;
        assert_eq!(
            ask_with(&e, SECOND_TOKEN).await,
            200,
            "{name}: an instance started after the change has it"
        );
        e.stop();
        sent += 1;
        // Written by E, not by A, B or C.
        let written_by_e = 1;
        assert_eq!(
            db.count(&format!(
                "SELECT COUNT(*) FROM settings WHERE value LIKE '%{SECOND_TOKEN}%'"
            )),
            0,
            "{name}: the token in clear in the database"
        );
        admin_send(
            &a,
            reqwest::Method::DELETE,
            "/config/ALLOWED_TOKENS",
            Value::Null,
        )
        .await;
        sent += until_token(&c, SECOND_TOKEN, 401, name).await;
        assert_eq!(ask(&c).await, 200, "{name}: the .env token still serves");
        sent += 1;

        // The database goes away: every request through every instance is answered.
        relay.cut();
        for proxy in [&a, &b, &c, &a, &b, &c, &a, &b, &c] {
            assert_eq!(
                ask(proxy).await,
                200,
                "{name}: served while the database is away"
            );
            sent += 1;
        }
        // A few seconds away in all.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        relay.restore();

        // Usage through all three, once each, in A's statistics; every record written.
        assert_eq!(calls_in_stats(&a, sent).await, sent, "{name}");
        let mut written = 0;
        for proxy in [&a, &b, &c] {
            let summary = admin_get(proxy, "/stats/summary").await;
            let store = &summary["store"];
            assert_eq!(
                (store["dropped"].as_u64(), store["lost"].as_u64()),
                (Some(0), Some(0)),
                "{name}: {summary}"
            );
            written += store["written"].as_u64().unwrap();
            // Each applied changes made through the others (the key added on B, removed on C).
            assert!(
                summary["shared"]["applied"].as_u64().unwrap() > 0,
                "{name}: {summary}"
            );
        }
        assert_eq!(written + written_by_e, sent, "{name}");
        for proxy in [a, b, c] {
            proxy.stop();
        }
        assert_eq!(
            db.count("SELECT COUNT(*) FROM request_log"),
            sent as i64,
            "{name}"
        );
        let text = std::fs::read_to_string(&log).unwrap();
        for key in &keys {
            assert!(!text.contains(key.as_str()), "{name}: a key in A's log");
        }
        assert!(
            !text.contains(SEALING_KEY),
            "{name}: the sealing key in A's log"
        );
        assert!(
            !text.contains(SECOND_TOKEN) && !text.contains(TOKEN),
            "{name}: a client token in A's log"
        );
    }
}
