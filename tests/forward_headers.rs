//! `ForwardHeadersLayer` in a gateway's stack, over loopback against the mock Gemini:
//!
//! ```text
//! ForwardHeaders ─▶ Retry ─▶ KeyRotation ─▶ Decode ─▶ ReqwestService ─▶ mock Gemini
//! ```
//!
//! What the mock receives is only what the allowlist keeps, plus what the layers below add
//! (the pool key, `Accept-Encoding`) and what the HTTP client adds (`Host`, its default headers).
#![cfg(feature = "reqwest")]

use bytes::Bytes;
use gemini_balance::client::{ForwardHeadersLayer, HeaderAllowlist, ReqwestService};
use gemini_balance::decode::DecodeLayer;
use gemini_balance::keys::{KeyPool, KeyRotationLayer};
use gemini_balance::retry::RetryLayer;
use http::{HeaderName, HeaderValue};
use support::{prompt_body, test_key, test_keys, MockGemini};
use tower::{ServiceBuilder, ServiceExt};

/// What a browser, a reverse proxy and an SDK put on a request together.
const SENT: &[(&str, &str)] = &[
    ("content-type", "application/json"),
    ("accept", "application/json"),
    (
        "x-goog-api-client",
        "google-genai-sdk/1.20.0 gl-python/3.12.3",
    ),
    ("x-server-timeout", "60"),
    ("x-goog-api-key", "sk-client-token"),
    ("authorization", "Bearer sk-client-token"),
    ("cookie", "gb_admin_session=0123456789abcdef"),
    ("proxy-authorization", "Basic dXNlcjpodW50ZXIy"),
    ("x-csrf-token", "csrf-0123"),
    ("x-forwarded-for", "203.0.113.7"),
    ("x-real-ip", "203.0.113.7"),
    ("forwarded", "for=203.0.113.7;proto=https"),
    ("user-agent", "Mozilla/5.0 (X11; Linux x86_64)"),
    ("accept-encoding", "br"),
    ("x-goog-user-project", "someone-elses-project"),
    ("x-http-method-override", "DELETE"),
    ("x-tenant", "blue"),
    ("x-evil", "1"),
];

#[tokio::test]
async fn only_the_allowlist_and_what_the_layers_add_reach_the_upstream() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mock = MockGemini::start().await;
    let pool = KeyPool::builder().keys(test_keys(1)).build().unwrap();
    let client = support::client_builder().build().unwrap();
    let gateway = ServiceBuilder::new()
        .layer(ForwardHeadersLayer::new(
            HeaderAllowlist::gemini().allow(HeaderName::from_static("x-tenant")),
        ))
        .layer(RetryLayer::new())
        .layer(KeyRotationLayer::new(pool))
        .layer(DecodeLayer::new())
        .service(
            ReqwestService::new(client)
                .base_url(&mock.base_url())
                .unwrap(),
        );

    let mut req = http::Request::post("/v1beta/models/gemini-2.0-flash:generateContent")
        .body(reqwest::Body::from(Bytes::from(prompt_body("hello"))))
        .unwrap();
    for (name, value) in SENT {
        req.headers_mut().append(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    let res = gateway.oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);

    let seen = mock.last_request().unwrap().headers;
    let mut names: Vec<&str> = seen.keys().map(HeaderName::as_str).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "accept",
            "accept-encoding",
            "content-length",
            "content-type",
            "host",
            "x-goog-api-client",
            "x-goog-api-key",
            "x-server-timeout",
            "x-tenant",
        ],
        "{seen:?}"
    );
    assert_eq!(seen["x-goog-api-key"], test_key(1).as_str());
    assert_eq!(seen["accept-encoding"], "gzip");
    assert_eq!(
        seen["x-goog-api-client"],
        "google-genai-sdk/1.20.0 gl-python/3.12.3"
    );
    assert!(!mock.saw_credential("sk-client-token"));
}
