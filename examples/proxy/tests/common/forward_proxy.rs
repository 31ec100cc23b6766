//! A loopback HTTP forward proxy for the `PROXIES` tests.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Router;

/// A loopback HTTP forward proxy: takes absolute-form requests (`POST http://host/path`),
/// forwards them, and counts what passed through per upstream key.
pub struct ForwardProxy {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    seen: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl ForwardProxy {
    /// Starts the proxy on a free loopback port.
    pub async fn start() -> ForwardProxy {
        let seen = Arc::new(Mutex::new(BTreeMap::new()));
        let app = Router::new().fallback(forward).with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        ForwardProxy { url, seen }
    }

    /// Requests forwarded per key.
    pub fn seen(&self) -> BTreeMap<String, u64> {
        self.seen.lock().unwrap().clone()
    }

    /// Requests forwarded.
    pub fn total(&self) -> u64 {
        self.seen().values().sum()
    }
}

async fn forward(State(seen): State<Arc<Mutex<BTreeMap<String, u64>>>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    // A forward proxy is asked in absolute form; anything else is not for it.
    if parts.uri.scheme().is_none() {
        return Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .body(Body::from("absolute-form request expected"))
            .unwrap();
    }
    let key = parts
        .headers
        .get("x-goog-api-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    *seen.lock().unwrap().entry(key).or_default() += 1;
    let body = to_bytes(body, usize::MAX).await.unwrap();
    let mut headers = parts.headers.clone();
    for hop in ["host", "connection", "proxy-connection", "keep-alive"] {
        headers.remove(hop);
    }
    let client = support::client_builder().build().unwrap();
    let upstream = client
        .request(parts.method, parts.uri.to_string())
        .headers(headers)
        .body(body)
        .send()
        .await
        .unwrap();
    let mut res = Response::builder().status(upstream.status());
    for (name, value) in upstream.headers() {
        if name != "transfer-encoding" && name != "connection" {
            res = res.header(name, value);
        }
    }
    res.body(Body::from(upstream.bytes().await.unwrap()))
        .unwrap()
}
