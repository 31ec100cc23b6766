//! Each attempt runs in a `DEBUG` span named `attempt` that names the key by its fingerprint
//! and id (never the secret), so a user's tracing subscriber can tell which key an upstream
//! call, its logs and its timing belong to.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use gemini_balance::keys::{KeyId, KeyPool, KeyRotationLayer};
use gemini_balance::retry::RetryLayer;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tower::{service_fn, ServiceBuilder, ServiceExt};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

const BAD: &str = "AIzaSyA1234567890abcdefghijklmnopqrstuv";
const GOOD: &str = "AIzaSyB1234567890abcdefghijklmnopqrstuv";
const PATH: &str = "/v1beta/models/gemini-2.0-flash:generateContent";
const KEY_INVALID: &str = r#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com"}]}}"#;

type Fields = BTreeMap<String, String>;

/// The `attempt` spans created on this thread, their fields, and which span was current when
/// the upstream was called.
#[derive(Clone, Default)]
struct Spans {
    created: Arc<Mutex<Vec<Fields>>>,
    current: Arc<Mutex<Vec<u64>>>,
}

struct Collect<'a>(&'a mut Fields);

impl Visit for Collect<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl Subscriber for Spans {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.target().starts_with("gemini_balance")
    }
    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let mut fields = Fields::new();
        fields.insert("name".into(), attrs.metadata().name().into());
        fields.insert("level".into(), attrs.metadata().level().to_string());
        attrs.record(&mut Collect(&mut fields));
        let mut created = self.created.lock().unwrap();
        created.push(fields);
        Id::from_u64(created.len() as u64)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, _: &Event<'_>) {}
    fn enter(&self, id: &Id) {
        self.current.lock().unwrap().push(id.into_u64());
    }
    fn exit(&self, _: &Id) {
        self.current.lock().unwrap().pop();
    }
}

#[tokio::test]
async fn each_attempt_has_a_span_naming_its_key() {
    let spans = Spans::default();
    let _guard = tracing::subscriber::set_default(spans.clone());
    // The span current while the upstream is called, per call.
    let seen_in: Arc<Mutex<Vec<Option<u64>>>> = Arc::default();
    let upstream = {
        let spans = spans.clone();
        let seen_in = seen_in.clone();
        service_fn(move |req: Request<Full<Bytes>>| {
            seen_in
                .lock()
                .unwrap()
                .push(spans.current.lock().unwrap().last().copied());
            let bad = req
                .headers()
                .get("x-goog-api-key")
                .is_some_and(|k| k.as_bytes() == BAD.as_bytes());
            async move {
                let (status, body) = if bad {
                    (StatusCode::BAD_REQUEST, KEY_INVALID)
                } else {
                    (StatusCode::OK, r#"{"candidates":[]}"#)
                };
                let mut res = Response::new(Full::new(Bytes::from(body)));
                *res.status_mut() = status;
                res.headers_mut()
                    .insert("content-type", "application/json".parse().unwrap());
                Ok::<_, Infallible>(res)
            }
        })
    };
    let pool = KeyPool::builder().keys([BAD, GOOD]).build().unwrap();
    let service = ServiceBuilder::new()
        .layer(RetryLayer::new())
        .layer(KeyRotationLayer::new(pool))
        .service(upstream);
    let req = Request::post(PATH)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let res = service.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    let created = spans.created.lock().unwrap().clone();
    let attempts: Vec<&Fields> = created.iter().filter(|f| f["name"] == "attempt").collect();
    assert_eq!(attempts.len(), 2, "{created:?}");
    for (n, (fields, key)) in attempts.iter().zip([BAD, GOOD]).enumerate() {
        let id = KeyId::of(key);
        assert_eq!(fields["level"], "DEBUG");
        assert_eq!(fields["number"], (n + 1).to_string(), "{fields:?}");
        assert_eq!(fields["key"], id.mask(), "{fields:?}");
        assert_eq!(fields["key_id"], id.hex(), "{fields:?}");
        assert_eq!(fields["model"], "gemini-2.0-flash", "{fields:?}");
        assert!(
            fields.values().all(|v| !v.contains(key)),
            "no secret in a span: {fields:?}"
        );
    }
    // The upstream ran inside its attempt's span.
    let ids: Vec<Option<u64>> = created
        .iter()
        .enumerate()
        .filter(|(_, f)| f["name"] == "attempt")
        .map(|(i, _)| Some(i as u64 + 1))
        .collect();
    assert_eq!(*seen_in.lock().unwrap(), ids);
}

/// The reqwest-middleware key rotation opens the same span per attempt (the one key core).
#[cfg(feature = "middleware")]
#[tokio::test]
async fn each_middleware_attempt_has_the_same_span() {
    use gemini_balance::client::{KeyRotationMiddleware, RetryMiddleware};

    let spans = Spans::default();
    let _guard = tracing::subscriber::set_default(spans.clone());
    let mock = support::MockGemini::start().await;
    let keys = support::test_keys(2);
    mock.set_fault(&keys[0], support::Fault::InvalidKey);
    let pool = KeyPool::builder().keys(&keys).build().unwrap();
    let client = reqwest_middleware::ClientBuilder::new(support::client_builder().build().unwrap())
        .with(RetryMiddleware::new())
        .with(KeyRotationMiddleware::new(pool))
        .build();
    let res = client
        .post(format!("{}{PATH}", mock.base_url()))
        .header("content-type", "application/json")
        .body(support::prompt_body("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    let created = spans.created.lock().unwrap().clone();
    let attempts: Vec<&Fields> = created.iter().filter(|f| f["name"] == "attempt").collect();
    assert_eq!(attempts.len(), 2, "{created:?}");
    for (n, (fields, key)) in attempts.iter().zip(&keys).enumerate() {
        let id = KeyId::of(key);
        assert_eq!(fields["level"], "DEBUG");
        assert_eq!(fields["number"], (n + 1).to_string(), "{fields:?}");
        assert_eq!(fields["key"], id.mask(), "{fields:?}");
        assert_eq!(fields["key_id"], id.hex(), "{fields:?}");
        assert!(
            !fields.values().any(|v| v.contains(key.as_str())),
            "{fields:?}"
        );
    }
}
