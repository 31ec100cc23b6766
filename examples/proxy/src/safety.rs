//! SAFETY_SETTINGS added to Gemini `generateContent` requests that carry none.
//!
//! A layer of the Gemini stack, after the parameter filter: the filter checks the client's
//! body as sent (a third of the bytes it would check with the settings already in), and the
//! settings, which come from the configuration, are spliced in after it. A body that does not
//! mention `safetySettings` gets them without a parse
//! ([`splice_default_safety_settings`]); one that mentions the word anywhere is parsed and
//! gets them only when it has none of its own.

use std::sync::Arc;
use std::task::{Context, Poll};

use axum::http::{header, HeaderValue, Method, Request};
use bytes::Bytes;
use gemini_balance::openai::{default_safety_settings, splice_default_safety_settings};
use serde_json::Value;
use tower::{Layer, Service};

use crate::settings::Settings;

/// The settings, as a value and as JSON text.
struct Defaults {
    value: Value,
    json: String,
}

/// Adds SAFETY_SETTINGS (see the module docs); does nothing when the setting is empty.
#[derive(Clone)]
pub struct DefaultSafetyLayer {
    defaults: Option<Arc<Defaults>>,
}

impl DefaultSafetyLayer {
    pub fn from_settings(settings: &Settings) -> Self {
        let defaults = configured(settings).map(|value| {
            Arc::new(Defaults {
                json: value.to_string(),
                value,
            })
        });
        DefaultSafetyLayer { defaults }
    }
}

/// SAFETY_SETTINGS when it holds any (a non-empty array); `None` adds nothing. The handler's
/// own splice (suffix models, bodies the filter does not read) reads it here too.
pub fn configured(settings: &Settings) -> Option<serde_json::Value> {
    let value = settings.value("SAFETY_SETTINGS");
    value
        .as_array()
        .is_some_and(|a| !a.is_empty())
        .then(|| value.clone())
}

impl<S> Layer<S> for DefaultSafetyLayer {
    type Service = DefaultSafety<S>;

    fn layer(&self, inner: S) -> DefaultSafety<S> {
        DefaultSafety {
            inner,
            defaults: self.defaults.clone(),
        }
    }
}

/// The service of [`DefaultSafetyLayer`].
#[derive(Clone)]
pub struct DefaultSafety<S> {
    inner: S,
    defaults: Option<Arc<Defaults>>,
}

impl<S> Service<Request<reqwest::Body>> for DefaultSafety<S>
where
    S: Service<Request<reqwest::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<reqwest::Body>) -> S::Future {
        if let Some(defaults) = &self.defaults {
            add_defaults(defaults, &mut req);
        }
        self.inner.call(req)
    }
}

fn add_defaults(defaults: &Defaults, req: &mut Request<reqwest::Body>) {
    if req.method() != Method::POST || !req.uri().path().contains("enerateContent") {
        return;
    }
    // The filter hands on a complete body; a body it left streaming (not JSON) is not ours.
    let Some(body) = req.body().as_bytes() else {
        return;
    };
    let with_defaults = match splice_default_safety_settings(body, &defaults.json) {
        Some(spliced) => Bytes::from(spliced),
        None => match serde_json::from_slice::<Value>(body) {
            Ok(mut json)
                if json.is_object()
                    && json.get("safetySettings").is_none()
                    && json.get("safety_settings").is_none() =>
            {
                default_safety_settings(&mut json, &defaults.value);
                Bytes::from(json.to_string())
            }
            _ => return,
        },
    };
    let headers = req.headers_mut();
    headers.remove(header::TRANSFER_ENCODING);
    headers.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(with_defaults.len()),
    );
    *req.body_mut() = reqwest::Body::from(with_defaults);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Defaults {
        let value =
            serde_json::json!([{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "OFF"}]);
        Defaults {
            json: value.to_string(),
            value,
        }
    }

    fn request(method: Method, path: &str, body: &str) -> Request<reqwest::Body> {
        Request::builder()
            .method(method)
            .uri(path)
            .header(header::CONTENT_LENGTH, body.len())
            .body(reqwest::Body::from(body.to_owned()))
            .unwrap()
    }

    fn body_of(req: &Request<reqwest::Body>) -> Value {
        serde_json::from_slice(req.body().as_bytes().unwrap()).unwrap()
    }

    #[test]
    fn added_when_absent_with_the_length_updated() {
        let mut req = request(
            Method::POST,
            "/models/m:generateContent",
            r#"{"contents":[{"parts":[{"text":"hi"}]}]}"#,
        );
        add_defaults(&defaults(), &mut req);
        let body = body_of(&req);
        assert_eq!(body["safetySettings"][0]["threshold"], "OFF");
        assert_eq!(body["contents"][0]["parts"][0]["text"], "hi");
        let length: usize = req.headers()[header::CONTENT_LENGTH]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(length, req.body().as_bytes().unwrap().len());
    }

    #[test]
    fn the_clients_own_settings_are_kept() {
        let own = r#"{"contents":[],"safetySettings":[{"category":"X","threshold":"BLOCK_NONE"}]}"#;
        let mut req = request(Method::POST, "/models/m:streamGenerateContent", own);
        add_defaults(&defaults(), &mut req);
        assert_eq!(req.body().as_bytes().unwrap(), own.as_bytes());
    }

    #[test]
    fn a_body_that_only_mentions_them_gets_them() {
        let mut req = request(
            Method::POST,
            "/models/m:generateContent",
            r#"{"contents":[{"parts":[{"text":"what are safetySettings?"}]}]}"#,
        );
        add_defaults(&defaults(), &mut req);
        let body = body_of(&req);
        assert_eq!(
            body["safetySettings"][0]["category"],
            "HARM_CATEGORY_HARASSMENT"
        );
        assert_eq!(
            body["contents"][0]["parts"][0]["text"],
            "what are safetySettings?"
        );
    }

    #[test]
    fn other_routes_are_untouched() {
        for (method, path) in [
            (Method::POST, "/models/m:countTokens"),
            (Method::POST, "/models/m:embedContent"),
            (Method::GET, "/models/m"),
        ] {
            let mut req = request(method, path, r#"{"contents":[]}"#);
            add_defaults(&defaults(), &mut req);
            assert_eq!(req.body().as_bytes().unwrap(), br#"{"contents":[]}"#);
        }
    }
}
