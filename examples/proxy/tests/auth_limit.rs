//! Failed authentications per client address, end to end: the proxy binary on 127.0.0.1, and
//! clients on other loopback addresses (127.0.0.2, …) playing guessers.

mod common;

use std::net::IpAddr;
use std::path::Path;

use serde_json::{json, Value};
use support::{prompt_body, test_keys, MockGemini};

const TOKEN: &str = "sk-client-token-0001";
const ADMIN: &str = "sk-admin-token-0002";

/// A client whose connections come from `from` (a loopback address).
fn client_from(from: &str) -> reqwest::Client {
    support::client_builder()
        .local_address(from.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

fn env_file(mock: &MockGemini, extra: &str) -> String {
    format!(
        "API_KEYS={}\nALLOWED_TOKENS=[\"{TOKEN}\"]\nAUTH_TOKEN={ADMIN}\nBASE_URL={}/v1beta\n\
         CHECK_INTERVAL_HOURS=0\nLOG_LEVEL=info\n{extra}",
        serde_json::to_string(&test_keys(2)).unwrap(),
        mock.base_url()
    )
}

/// `generateContent` with `token` as `x-goog-api-key`: status, Retry-After, body.
async fn generate(client: &reqwest::Client, url: &str, token: &str) -> (u16, Option<u64>, Value) {
    let res = client
        .post(format!(
            "{url}/v1beta/models/gemini-2.0-flash:generateContent"
        ))
        .header("x-goog-api-key", token)
        .header("content-type", "application/json")
        .body(prompt_body("hi"))
        .send()
        .await
        .unwrap();
    answer(res).await
}

async fn answer(res: reqwest::Response) -> (u16, Option<u64>, Value) {
    let status = res.status().as_u16();
    let retry_after = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    let body = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap_or(Value::Null);
    (status, retry_after, body)
}

async fn admin_keys(client: &reqwest::Client, url: &str, token: &str) -> (u16, Option<u64>, Value) {
    let res = client
        .get(format!("{url}/api/keys"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    answer(res).await
}

async fn login(client: &reqwest::Client, url: &str, token: &str) -> (u16, Option<u64>, Value) {
    let res = client
        .post(format!("{url}/login"))
        .header("content-type", "application/json")
        .body(json!({ "token": token }).to_string())
        .send()
        .await
        .unwrap();
    answer(res).await
}

/// The log lines that mention `address` (as a whole word: 127.0.0.2 is not 127.0.0.20).
fn lines_about<'a>(log: &'a str, address: &str) -> Vec<&'a str> {
    let field = format!("client={address} ");
    log.lines().filter(|l| l.contains(&field)).collect()
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

#[tokio::test]
async fn guessers_get_429_without_a_check_and_valid_clients_elsewhere_are_not_slowed() {
    let mock = MockGemini::start().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("proxy.log");
    let env = env_file(
        &mock,
        "AUTH_FAILURE_BURST=3\nAUTH_FAILURE_REFILL_SECONDS=600\n",
    );
    let proxy = common::Proxy::start_logging(dir.path(), &env, Some(&log)).await;
    let url = proxy.url.clone();
    let valid = client_from("127.0.0.1");

    // Successes never count: many of them, then fewer failures than the burst, all answered 401.
    for _ in 0..10 {
        assert_eq!(generate(&valid, &url, TOKEN).await.0, 200);
    }
    for _ in 0..2 {
        assert_eq!(generate(&valid, &url, "sk-wrong").await.0, 401);
    }
    assert_eq!(generate(&valid, &url, TOKEN).await.0, 200);

    // A guesser on the API routes: three refusals, then 429 with Retry-After, even for the right
    // token (a limit that let a right guess through would say which guess was right).
    let guesser = client_from("127.0.0.2");
    for i in 0..3 {
        let guess = format!("sk-guess-{i:04}");
        let (status, retry_after, _) = generate(&guesser, &url, &guess).await;
        assert_eq!((status, retry_after), (401, None), "guess {i}");
    }
    for token in ["sk-guess-0004", TOKEN] {
        let (status, retry_after, body) = generate(&guesser, &url, token).await;
        assert_eq!(status, 429, "{token}");
        let retry_after = retry_after.expect("a Retry-After");
        assert!((590..=600).contains(&retry_after), "{retry_after}");
        // Gemini's error format on a Gemini route…
        assert_eq!(body["error"]["status"], "RESOURCE_EXHAUSTED", "{body}");
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("too many failed authentications"));
    }
    // …OpenAI's on an OpenAI route…
    let res = guesser
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(r#"{"model":"gemini-2.0-flash","messages":[{"role":"user","content":"hi"}]}"#)
        .send()
        .await
        .unwrap();
    let (status, retry_after, body) = answer(res).await;
    assert_eq!(status, 429);
    assert!(retry_after.is_some());
    assert!(body["error"]["type"].is_string(), "{body}");
    // …and the admin API's and the login's on theirs: the address is refused everywhere.
    let (status, retry_after, body) = admin_keys(&guesser, &url, ADMIN).await;
    assert_eq!((status, retry_after.is_some()), (429, true), "{body}");
    assert_eq!(body["error"]["code"], 429);
    let (status, retry_after, body) = login(&guesser, &url, ADMIN).await;
    assert_eq!((status, retry_after.is_some()), (429, true), "{body}");
    assert_eq!(body["error"]["code"], 429);

    // A valid client from another address is served at once, on every surface.
    assert_eq!(generate(&valid, &url, TOKEN).await.0, 200);
    assert_eq!(admin_keys(&valid, &url, ADMIN).await.0, 200);
    assert_eq!(login(&valid, &url, ADMIN).await.0, 200);

    // Guessing AUTH_TOKEN on the admin API, and at the login, from other addresses.
    let admin_guesser = client_from("127.0.0.3");
    for _ in 0..3 {
        assert_eq!(
            admin_keys(&admin_guesser, &url, "sk-admin-guess").await.0,
            401
        );
    }
    assert_eq!(admin_keys(&admin_guesser, &url, ADMIN).await.0, 429);
    let login_guesser = client_from("127.0.0.4");
    for _ in 0..3 {
        assert_eq!(login(&login_guesser, &url, "admin-guess").await.0, 401);
    }
    let (status, retry_after, _) = login(&login_guesser, &url, ADMIN).await;
    assert_eq!((status, retry_after.is_some()), (429, true));

    // A flood from the guesser: refused, and not one log line per refusal.
    for i in 0..40 {
        let guess = format!("sk-flood-{i:04}");
        assert_eq!(generate(&guesser, &url, &guess).await.0, 429);
    }

    // The limit can be turned off live: then the guesser's tokens are checked again.
    let res = valid
        .put(format!("{url}/api/config"))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(json!({"AUTH_FAILURE_BURST": 0}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(generate(&guesser, &url, "sk-guess-after").await.0, 401);
    assert_eq!(generate(&guesser, &url, TOKEN).await.0, 200);
    proxy.stop();

    let text = read_log(&log);
    // One line about each guessing address (the summaries come a minute later), however many
    // refusals; the valid address's two failures are one line too.
    for address in ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.1"] {
        let lines = lines_about(&text, address);
        assert_eq!(lines.len(), 1, "{address}: {lines:#?}");
        assert!(lines[0].contains("authentication refused"), "{}", lines[0]);
    }
    // No credential, right or wrong, in the log.
    for secret in [
        TOKEN,
        ADMIN,
        "sk-guess-",
        "sk-flood-",
        "sk-admin-guess",
        "admin-guess",
        "sk-wrong",
    ] {
        assert!(!text.contains(secret), "{secret} in the log");
    }
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_address_is_the_client() {
    let mock = MockGemini::start().await;
    let dir = tempfile::tempdir().unwrap();
    let env = env_file(
        &mock,
        "AUTH_FAILURE_BURST=2\nAUTH_FAILURE_REFILL_SECONDS=600\nTRUSTED_PROXIES=127.0.0.1\n",
    );
    let proxy = common::Proxy::start(dir.path(), &env).await;
    let url = proxy.url.clone();
    let reverse_proxy = client_from("127.0.0.1");
    let forwarded = |client: &'static str, token: &'static str| {
        reverse_proxy
            .post(format!(
                "{url}/v1beta/models/gemini-2.0-flash:generateContent"
            ))
            .header("x-goog-api-key", token)
            .header("x-forwarded-for", format!("203.0.113.9, {client}"))
            .body(prompt_body("hi"))
            .send()
    };
    // A guesser behind the reverse proxy is limited by its own address…
    for _ in 0..2 {
        assert_eq!(
            forwarded("198.51.100.7", "sk-guess")
                .await
                .unwrap()
                .status(),
            401
        );
    }
    assert_eq!(
        forwarded("198.51.100.7", TOKEN).await.unwrap().status(),
        429
    );
    // …and the others behind the same reverse proxy are not.
    assert_eq!(
        forwarded("198.51.100.8", TOKEN).await.unwrap().status(),
        200
    );
    // IPv6 clients are counted by /64: another address of the same /64 is the same client.
    for _ in 0..2 {
        let status = forwarded("2001:db8:1:2::10", "sk-guess")
            .await
            .unwrap()
            .status();
        assert_eq!(status, 401);
    }
    assert_eq!(
        forwarded("2001:db8:1:2::99", TOKEN).await.unwrap().status(),
        429
    );
    assert_eq!(
        forwarded("2001:db8:1:3::10", TOKEN).await.unwrap().status(),
        200
    );

    // From anyone else X-Forwarded-For is the client's own word, and ignored: 127.0.0.2 cannot
    // get itself counted as someone else, nor escape its own count by naming someone else.
    let direct = client_from("127.0.0.2");
    let spoofed = |token: &'static str, claimed: &'static str| {
        direct
            .post(format!(
                "{url}/v1beta/models/gemini-2.0-flash:generateContent"
            ))
            .header("x-goog-api-key", token)
            .header("x-forwarded-for", claimed)
            .body(prompt_body("hi"))
            .send()
    };
    assert_eq!(spoofed(TOKEN, "198.51.100.7").await.unwrap().status(), 200);
    for i in 0..2 {
        let claimed = ["198.51.100.20", "198.51.100.21"][i];
        assert_eq!(spoofed("sk-guess", claimed).await.unwrap().status(), 401);
    }
    assert_eq!(spoofed(TOKEN, "198.51.100.22").await.unwrap().status(), 429);
    proxy.stop();
}
