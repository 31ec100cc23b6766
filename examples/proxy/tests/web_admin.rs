//! The web admin end to end: the proxy binary against the loopback mock Gemini, its login and
//! session handling over plain HTTP, then every page driven in headless Chromium (Debian's
//! `chromium` + `chromedriver`, which `.ci/run` installs) the way an admin uses it.
//!
//! Screenshots of each page go to `target/tmp/web-ui/`; with `UPDATE_UI_SCREENSHOTS=1` they
//! also replace the ones in `docs/ui/`.

#[path = "../../../tests/support/mod.rs"]
mod support;
mod webdriver;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use support::{prompt_body, test_key, Fault, MockGemini};
use webdriver::{read_json, which, with_json, Browser, ChromeDriver};

const TOKEN: &str = "sk-client-token-1";
const ADMIN: &str = "admin-token-for-the-web-admin";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Proxy {
    child: Child,
    url: String,
}

impl Proxy {
    async fn start(dir: &Path, env_file: &str) -> Proxy {
        std::fs::write(dir.join(".env"), env_file).unwrap();
        let port = free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_gemini-balance-proxy"))
            .current_dir(dir)
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let client = support::client_builder().build().unwrap();
        for _ in 0..400 {
            if let Ok(res) = client.get(format!("{url}/health")).send().await {
                if res.status() == 200 {
                    return Proxy { child, url };
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("the proxy did not start");
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn env_file(mock: &MockGemini, keys: &[String], extra: &str) -> String {
    format!(
        "API_KEYS={}\nALLOWED_TOKENS=[\"{TOKEN}\"]\nAUTH_TOKEN={ADMIN}\nBASE_URL={}/v1beta\n\
         MAX_RETRIES=3\nMAX_FAILURES=1\nCHECK_INTERVAL_HOURS=0\n{extra}",
        serde_json::to_string(keys).unwrap(),
        mock.base_url()
    )
}

/// A client that does not follow redirects, so the test sees them.
fn http() -> reqwest::Client {
    support::client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn set_cookie(res: &reqwest::Response) -> String {
    res.headers()
        .get("set-cookie")
        .expect("a Set-Cookie header")
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn login_gives_a_session_cookie_not_the_token_and_logout_ends_it() {
    let mock = MockGemini::start().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &env_file(&mock, &[test_key(1)], "")).await;
    let client = http();
    let url = &proxy.url;

    // Pages need a session: without one, off to the login page (and back afterwards).
    let res = client.get(format!("{url}/keys")).send().await.unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/login?next=/keys");
    let res = client.get(format!("{url}/")).send().await.unwrap();
    assert_eq!(res.headers()["location"], "/login");
    let res = client.get(format!("{url}/login")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let csp = res.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
    assert_eq!(res.headers()["x-frame-options"], "DENY");
    assert!(res.text().await.unwrap().contains("id=\"login-form\""));

    // Wrong tokens, a client token that is not AUTH_TOKEN, and form posts are refused.
    for token in ["nope", TOKEN] {
        let res = with_json(
            client.post(format!("{url}/login")),
            &json!({ "token": token }),
        )
        .send()
        .await
        .unwrap();
        assert_eq!(res.status(), 401);
        assert!(res.headers().get("set-cookie").is_none());
    }
    let res = client
        .post(format!("{url}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={ADMIN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 415);
    assert!(res.headers().get("set-cookie").is_none());

    // AUTH_TOKEN opens a session: the cookie holds a random id, never the token.
    let res = with_json(
        client.post(format!("{url}/login")),
        &json!({ "token": ADMIN }),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let cookie = set_cookie(&res);
    assert!(!cookie.contains(ADMIN));
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=3600"] {
        assert!(cookie.contains(flag), "{flag} in {cookie}");
    }
    let session = cookie.split(';').next().unwrap().to_owned();
    let (name, id) = session.split_once('=').unwrap();
    assert_eq!(name, "gb_admin_session");
    assert_eq!(id.len(), 64);
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()));

    // A second login is another session.
    let other = with_json(
        client.post(format!("{url}/login")),
        &json!({ "token": ADMIN }),
    )
    .send()
    .await
    .unwrap();
    assert_ne!(set_cookie(&other).split(';').next().unwrap(), session);

    // With the session, every page is served with its CSRF token in it.
    let mut csrf = String::new();
    for page in ["keys", "models", "dashboard", "logs", "config"] {
        let res = client
            .get(format!("{url}/{page}"))
            .header("cookie", &session)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "/{page}");
        assert_eq!(res.headers()["cache-control"], "no-store");
        let html = res.text().await.unwrap();
        assert!(html.contains(&format!("src=\"/static/{page}.js\"")));
        let meta = html.split("name=\"csrf-token\" content=\"").nth(1).unwrap();
        csrf = meta[..64].to_owned();
    }
    assert!(csrf.chars().all(|c| c.is_ascii_hexdigit()) && csrf != id);
    let res = client
        .get(format!("{url}/login"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["location"], "/keys");

    // Every asset is in the binary.
    for (file, kind) in [
        ("app.css", "text/css"),
        ("common.js", "text/javascript"),
        ("keys.js", "text/javascript"),
        ("favicon.svg", "image/svg+xml"),
    ] {
        let res = client
            .get(format!("{url}/static/{file}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{file}");
        assert!(res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with(kind));
        assert!(!res.bytes().await.unwrap().is_empty());
    }
    let res = client
        .get(format!("{url}/static/..%2Fmain.rs"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);

    // Logging out needs the CSRF token (a cross-site page cannot log the admin out)…
    let res = client
        .post(format!("{url}/logout"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let res = client
        .post(format!("{url}/logout"))
        .header("cookie", &session)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(set_cookie(&res).contains("Max-Age=0"));
    // …and ends the session on the server: the old cookie no longer opens anything.
    let res = client
        .get(format!("{url}/keys"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
}
