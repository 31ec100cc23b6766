//! A small W3C WebDriver client over HTTP (reqwest + JSON), enough to drive headless Chromium
//! through `chromedriver`: no Selenium, no node, no extra crates.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The key WebDriver puts element references under.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// The flags the browser tests run Chromium with.
pub const CHROMIUM_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--force-color-profile=srgb",
    "--lang=en-US",
];

/// Where a program is on PATH, if it is.
pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

/// Chromium and chromedriver on PATH. The browser tests that call this are `#[ignore]`d (the
/// README's `cargo test` lists them as ignored); run with `-- --ignored`, they fail here, naming
/// what to install, rather than pass untested.
pub fn chromium() -> (PathBuf, PathBuf) {
    let browser = which("chromium").or_else(|| which("chromium-browser"));
    let driver = which("chromedriver");
    match (browser, driver) {
        (Some(b), Some(d)) => (b, d),
        _ => panic!(
            "chromium and chromedriver must be on PATH for the browser tests (Debian: apt-get \
             install chromium chromium-driver; bash .ci/run installs them)"
        ),
    }
}

/// A running chromedriver, killed on drop.
pub struct ChromeDriver {
    child: Child,
    pub url: String,
}

impl ChromeDriver {
    pub async fn start(chromedriver: &Path, port: u16) -> ChromeDriver {
        let mut child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let url = format!("http://127.0.0.1:{port}");
        let http = http_client();
        for _ in 0..400 {
            if let Ok(res) = http.get(format!("{url}/status")).send().await {
                if let Ok(v) =
                    serde_json::from_slice::<Value>(&res.bytes().await.unwrap_or_default())
                {
                    if v["value"]["ready"] == true {
                        return ChromeDriver { child, url };
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("chromedriver did not become ready");
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// One browser session.
pub struct Browser {
    http: reqwest::Client,
    base: String,
}

/// A reference to an element of the current page.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Browser {
    /// Opens Chromium (`binary`) with [`CHROMIUM_ARGS`].
    pub async fn open(driver: &ChromeDriver, binary: &Path) -> Browser {
        let http = http_client();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "goog:chromeOptions": {
                "binary": binary.to_string_lossy(),
                "args": CHROMIUM_ARGS,
            }
        }}});
        let res = read_json(
            with_json(http.post(format!("{}/session", driver.url)), &caps)
                .send()
                .await
                .unwrap(),
        )
        .await;
        let id = res["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {res}"))
            .to_owned();
        let browser = Browser {
            http,
            base: format!("{}/session/{id}", driver.url),
        };
        browser
            .cmd(
                "POST",
                "/timeouts",
                json!({"implicit": 0, "pageLoad": 30000, "script": 30000}),
            )
            .await;
        browser
    }

    async fn cmd(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => with_json(self.http.post(url), &body),
        };
        let res = read_json(req.send().await.unwrap()).await;
        if let Some(error) = res["value"]["error"].as_str() {
            panic!(
                "WebDriver {method} {path}: {error}: {}",
                res["value"]["message"]
            );
        }
        res["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.cmd("POST", "/url", json!({ "url": url })).await;
    }

    pub async fn url(&self) -> String {
        self.cmd("GET", "/url", Value::Null)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub async fn set_size(&self, width: u32, height: u32) {
        self.cmd(
            "POST",
            "/window/rect",
            json!({"width": width, "height": height}),
        )
        .await;
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its result.
    pub async fn js(&self, script: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            json!({"script": script, "args": args}),
        )
        .await
    }

    /// Waits until the JavaScript expression `condition` is truthy; panics after 20 s, naming
    /// `what` (a page that never gets there is a failure, not a slow machine).
    pub async fn wait_for(&self, condition: &str, what: &str) -> Value {
        let script = format!("return ({condition});");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v = self.js(&script, json!([])).await;
            if !(v.is_null() || v == false || v == 0 || v == "") {
                return v;
            }
            if Instant::now() > deadline {
                let text = self
                    .js(
                        "return document.body ? document.body.innerText : ''",
                        json!([]),
                    )
                    .await;
                panic!("waited in vain for {what} ({condition}); the page says:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The first element matching `css`, waiting for it to appear.
    pub async fn find(&self, css: &str) -> Element {
        let quoted = serde_json::to_string(css).unwrap();
        self.wait_for(
            &format!("document.querySelector({quoted})"),
            &format!("an element {css}"),
        )
        .await;
        let v = self
            .cmd(
                "POST",
                "/element",
                json!({"using": "css selector", "value": css}),
            )
            .await;
        Element(
            v[ELEMENT]
                .as_str()
                .unwrap_or_else(|| panic!("no element {css}: {v}"))
                .to_owned(),
        )
    }

    /// Clicks the first element matching `css` the way a user would (scrolled into view).
    pub async fn click(&self, css: &str) {
        let el = self.find(css).await;
        self.cmd("POST", &format!("/element/{}/click", el.0), json!({}))
            .await;
    }

    /// Types `text` into the first element matching `css`.
    pub async fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css).await;
        self.cmd(
            "POST",
            &format!("/element/{}/value", el.0),
            json!({ "text": text }),
        )
        .await;
    }

    /// Empties the input matching `css`.
    pub async fn clear(&self, css: &str) {
        let el = self.find(css).await;
        self.cmd("POST", &format!("/element/{}/clear", el.0), json!({}))
            .await;
    }

    /// The visible text of the first element matching `css`.
    pub async fn text(&self, css: &str) -> String {
        let el = self.find(css).await;
        self.cmd("GET", &format!("/element/{}/text", el.0), Value::Null)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// How many elements match `css` now.
    pub async fn count(&self, css: &str) -> u64 {
        let quoted = serde_json::to_string(css).unwrap();
        self.js(
            &format!("return document.querySelectorAll({quoted}).length"),
            json!([]),
        )
        .await
        .as_u64()
        .unwrap_or(0)
    }

    /// Saves a PNG of the whole page (up to 2400 px tall) at `width` CSS pixels: the viewport
    /// is made as tall as the page (through chromedriver's CDP bridge), so fixed and sticky
    /// elements sit where a reader expects them.
    pub async fn screenshot(&self, path: &Path, width: u32) {
        self.set_size(width, 900).await;
        self.js("window.scrollTo(0, 0)", json!([])).await;
        let height = self
            .js(
                "return Math.ceil(document.documentElement.scrollHeight)",
                json!([]),
            )
            .await
            .as_u64()
            .unwrap_or(900)
            .clamp(300, 2400);
        self.cdp(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        )
        .await;
        let shot = self
            .cdp("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        self.cdp("Emulation.clearDeviceMetricsOverride", json!({}))
            .await;
        let bytes = base64_decode(shot["data"].as_str().unwrap());
        assert!(bytes.starts_with(b"\x89PNG"), "a PNG screenshot");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, bytes).unwrap();
    }

    /// A Chrome DevTools Protocol command, through chromedriver.
    async fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.cmd(
            "POST",
            "/goog/cdp/execute",
            json!({"cmd": cmd, "params": params}),
        )
        .await
    }

    pub async fn close(self) {
        let _ = self.http.delete(&self.base).send().await;
    }
}

/// `req` with `body` as its JSON body.
pub fn with_json(req: reqwest::RequestBuilder, body: &Value) -> reqwest::RequestBuilder {
    req.header("content-type", "application/json")
        .body(body.to_string())
}

/// A response's body as JSON (`null` if it is not JSON).
pub async fn read_json(res: reqwest::Response) -> Value {
    let bytes = res.bytes().await.unwrap_or_default();
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

/// Standard base64 (what WebDriver screenshots are in).
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let clean: Vec<u8> = text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= value(*c) << (18 - 6 * i);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..chunk.len().saturating_sub(1)]);
    }
    out
}

#[test]
fn decodes_base64() {
    assert_eq!(base64_decode("aGVsbG8="), b"hello");
    assert_eq!(base64_decode("aGVsbG8h"), b"hello!");
    assert_eq!(base64_decode("aGk="), b"hi");
}
