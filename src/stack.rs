//! [`GeminiStack`]: the crate's layers stacked in the order they are designed for, each one
//! optional.
//!
//! The layers work alone, and a `ServiceBuilder` accepts them in any order; most orders compile
//! and misbehave (see "What breaks when two layers are swapped" in `docs/architecture.md`).
//! `GeminiStack` takes each layer by its slot and applies them outermost first:
//!
//! ```text
//! StreamOptimizer → PseudoStream → Usage → ParamFilter → OpenAi → ForwardHeaders → Retry → KeyRotation → Decode → your service
//! ```
//!
//! A slot left empty is [`Identity`]: it adds nothing, not even a type. The stack's service is
//! the layers' own, nested (`.retry(..).keys(..)` around `S` is `Retry<KeyRotation<S>>`), so it
//! is as cheap and as `Clone + Send + Sync` as the layers written out by hand.
//!
//! [`NormalizeUrlLayer`](crate::normalize_url::NormalizeUrlLayer) has no slot: it must run before
//! routing, so it wraps the whole router (`NormalizeUrlLayer::new().layer(router)`), not the
//! routes.
//!
//! # Example: server side, around your axum routes
//!
//! ```
//! use axum::{routing::post, Router};
//! use gemini_balance::keys::KeyPool;
//! use gemini_balance::retry::RetryLayer;
//! use gemini_balance::stack::GeminiStack;
//! use gemini_balance::stream::pseudo::PseudoStreamLayer;
//! use gemini_balance::{filter::ParamFilterLayer, store::MemoryStore, usage::UsageLayer};
//!
//! # fn build() -> Result<Router, Box<dyn std::error::Error>> {
//! let pool = KeyPool::builder()
//!     .keys(["AIzaSyA1234567890abcdefghijklmnopqrstuv"])
//!     .build()?;
//! let store = MemoryStore::new();
//! let app = Router::new()
//!     .route(
//!         "/v1beta/models/{action}",
//!         // On the `POST` handler only: a request for another path or method (a scanner's
//!         // `GET /wp-login.php`) gets axum's 404 / 405 without taking a key or writing a
//!         // usage record.
//!         post(|| async { "your handler sees the pool's key" }).route_layer(
//!             GeminiStack::new()
//!                 .pseudo_stream(PseudoStreamLayer::new())
//!                 .usage(UsageLayer::new(store.clone()))
//!                 .filter(ParamFilterLayer::new())
//!                 .retry(RetryLayer::new())
//!                 .keys(pool),
//!         ),
//!     );
//! # Ok(app)
//! # }
//! ```
//!
//! # Example: client side, around an HTTP client
//!
//! ```
//! # #[cfg(feature = "reqwest")]
//! # fn build() -> Result<(), Box<dyn std::error::Error>> {
//! use gemini_balance::client::ReqwestService;
//! use gemini_balance::{decode::DecodeLayer, keys::KeyPool, retry::RetryLayer};
//! use gemini_balance::stack::GeminiStack;
//! use tower::Layer;
//!
//! let pool = KeyPool::builder()
//!     .keys(["AIzaSyA1234567890abcdefghijklmnopqrstuv"])
//!     .build()?;
//! let gemini = GeminiStack::new()
//!     .retry(RetryLayer::new())
//!     .keys(pool)
//!     // Google's front ends may compress answers: decoded before any layer reads them.
//!     .decode(DecodeLayer::new())
//!     .layer(ReqwestService::new(reqwest::Client::new())
//!         .base_url("https://generativelanguage.googleapis.com")?);
//! # drop(gemini);
//! # Ok(())
//! # }
//! ```
//!
//! # Misordered stacks
//!
//! A stack built by hand in the wrong order is reported: a layer that belongs above
//! [`Retry`](crate::retry::Retry) or [`KeyRotation`](crate::keys::KeyRotation) and finds the mark
//! they leave on a request (an [`AttemptContext`](crate::ext::AttemptContext), an injected
//! [`KeyId`](crate::keys::KeyId)) logs a `WARN` on the target `gemini_balance::order`, once per
//! process and mistake: `RetryLayer is inside KeyRotationLayer`, `UsageLayer is inside
//! RetryLayer`, and so on.

use tower_layer::{Identity, Layer};

use crate::client::ForwardHeadersLayer;
use crate::decode::DecodeLayer;
use crate::filter::ParamFilterLayer;
use crate::keys::{KeyPool, KeyRotationLayer};
#[cfg(feature = "openai")]
use crate::openai::OpenAiLayer;
use crate::retry::RetryLayer;
use crate::stream::optimizer::StreamOptimizerLayer;
use crate::stream::pseudo::PseudoStreamLayer;
use crate::usage::UsageLayer;

/// The crate's layers in their designed order, each slot optional; see the
/// [module docs](self). A [`Layer`] itself: hand it to `Router::route_layer`,
/// `ServiceBuilder::layer` or call [`Layer::layer`] on your service.
///
/// The type parameters are the slots, outermost first; an empty slot is [`Identity`].
#[derive(Debug, Clone)]
pub struct GeminiStack<
    Optimizer = Identity,
    Pseudo = Identity,
    Usage = Identity,
    Filter = Identity,
    OpenAi = Identity,
    Headers = Identity,
    Retry = Identity,
    Keys = Identity,
    Decode = Identity,
> {
    optimizer: Optimizer,
    pseudo_stream: Pseudo,
    usage: Usage,
    filter: Filter,
    openai: OpenAi,
    forward_headers: Headers,
    retry: Retry,
    keys: Keys,
    decode: Decode,
}

impl Default for GeminiStack {
    fn default() -> Self {
        Self::new()
    }
}

impl GeminiStack {
    /// An empty stack: every slot [`Identity`].
    pub fn new() -> Self {
        GeminiStack {
            optimizer: Identity::new(),
            pseudo_stream: Identity::new(),
            usage: Identity::new(),
            filter: Identity::new(),
            openai: Identity::new(),
            forward_headers: Identity::new(),
            retry: Identity::new(),
            keys: Identity::new(),
            decode: Identity::new(),
        }
    }
}

impl<O, P, U, F, A, H, R, K, D> GeminiStack<O, P, U, F, A, H, R, K, D> {
    /// Outermost: re-chunks long text deltas of event streams, the pseudo stream's replay
    /// included.
    pub fn optimizer(
        self,
        layer: StreamOptimizerLayer,
    ) -> GeminiStack<StreamOptimizerLayer, P, U, F, A, H, R, K, D> {
        GeminiStack {
            optimizer: layer,
            pseudo_stream: self.pseudo_stream,
            usage: self.usage,
            filter: self.filter,
            openai: self.openai,
            forward_headers: self.forward_headers,
            retry: self.retry,
            keys: self.keys,
            decode: self.decode,
        }
    }

    /// Above `Retry` and the key layer, so that retries and key changes happen while
    /// keep-alives flow, and its early `200` never hides a failure from the retry loop.
    pub fn pseudo_stream(
        self,
        layer: PseudoStreamLayer,
    ) -> GeminiStack<O, PseudoStreamLayer, U, F, A, H, R, K, D> {
        GeminiStack {
            optimizer: self.optimizer,
            pseudo_stream: layer,
            usage: self.usage,
            filter: self.filter,
            openai: self.openai,
            forward_headers: self.forward_headers,
            retry: self.retry,
            keys: self.keys,
            decode: self.decode,
        }
    }

    /// Above `Retry`: one record per request, with every attempt in it.
    pub fn usage(self, layer: UsageLayer) -> GeminiStack<O, P, UsageLayer, F, A, H, R, K, D> {
        GeminiStack {
            optimizer: self.optimizer,
            pseudo_stream: self.pseudo_stream,
            usage: layer,
            filter: self.filter,
            openai: self.openai,
            forward_headers: self.forward_headers,
            retry: self.retry,
            keys: self.keys,
            decode: self.decode,
        }
    }

    /// Above `Retry`: a request it refuses costs no attempt and no key.
    pub fn filter(
        self,
        layer: ParamFilterLayer,
    ) -> GeminiStack<O, P, U, ParamFilterLayer, A, H, R, K, D> {
        GeminiStack {
            optimizer: self.optimizer,
            pseudo_stream: self.pseudo_stream,
            usage: self.usage,
            filter: layer,
            openai: self.openai,
            forward_headers: self.forward_headers,
            retry: self.retry,
            keys: self.keys,
            decode: self.decode,
        }
    }

    /// Below the filter (which checks the OpenAI body) and above `Retry` (each attempt replays
    /// the converted Gemini request), as the bundled proxy has it.
    #[cfg(feature = "openai")]
    #[cfg_attr(docsrs, doc(cfg(feature = "openai")))]
    pub fn openai(self, layer: OpenAiLayer) -> GeminiStack<O, P, U, F, OpenAiLayer, H, R, K, D> {
        GeminiStack {
            optimizer: self.optimizer,
            pseudo_stream: self.pseudo_stream,
            usage: self.usage,
            filter: self.filter,
            openai: layer,
            forward_headers: self.forward_headers,
            retry: self.retry,
            keys: self.keys,
            decode: self.decode,
        }
    }

    /// For gateways: once the request has its final shape, and above the key layer, whose
    /// pool key it would otherwise remove.
    pub fn forward_headers(
        self,
        layer: ForwardHeadersLayer,
    ) -> GeminiStack<O, P, U, F, A, ForwardHeadersLayer, R, K, D> {
        GeminiStack {
            optimizer: self.optimizer,
            pseudo_stream: self.pseudo_stream,
            usage: self.usage,
            filter: self.filter,
            openai: self.openai,
            forward_headers: layer,
            retry: self.retry,
            keys: self.keys,
            decode: self.decode,
        }
    }

    /// Above the key layer, so that each attempt gets its own key.
    pub fn retry<M>(
        self,
        layer: RetryLayer<M>,
    ) -> GeminiStack<O, P, U, F, A, H, RetryLayer<M>, K, D> {
        GeminiStack {
            optimizer: self.optimizer,
            pseudo_stream: self.pseudo_stream,
            usage: self.usage,
            filter: self.filter,
            openai: self.openai,
            forward_headers: self.forward_headers,
            retry: layer,
            keys: self.keys,
            decode: self.decode,
        }
    }

    /// The key layer, configured (placement, classifier).
    pub fn key_rotation(
        self,
        layer: KeyRotationLayer,
    ) -> GeminiStack<O, P, U, F, A, H, R, KeyRotationLayer, D> {
        GeminiStack {
            optimizer: self.optimizer,
            pseudo_stream: self.pseudo_stream,
            usage: self.usage,
            filter: self.filter,
            openai: self.openai,
            forward_headers: self.forward_headers,
            retry: self.retry,
            keys: layer,
            decode: self.decode,
        }
    }

    /// The key layer with its defaults: `KeyRotationLayer::new(pool)`.
    pub fn keys(self, pool: KeyPool) -> GeminiStack<O, P, U, F, A, H, R, KeyRotationLayer, D> {
        self.key_rotation(KeyRotationLayer::new(pool))
    }

    /// Innermost, client side: every layer above reads answers, so they are decoded first.
    pub fn decode(self, layer: DecodeLayer) -> GeminiStack<O, P, U, F, A, H, R, K, DecodeLayer> {
        GeminiStack {
            optimizer: self.optimizer,
            pseudo_stream: self.pseudo_stream,
            usage: self.usage,
            filter: self.filter,
            openai: self.openai,
            forward_headers: self.forward_headers,
            retry: self.retry,
            keys: self.keys,
            decode: layer,
        }
    }
}

impl<S, O, P, U, F, A, H, R, K, D> Layer<S> for GeminiStack<O, P, U, F, A, H, R, K, D>
where
    D: Layer<S>,
    K: Layer<D::Service>,
    R: Layer<K::Service>,
    H: Layer<R::Service>,
    A: Layer<H::Service>,
    F: Layer<A::Service>,
    U: Layer<F::Service>,
    P: Layer<U::Service>,
    O: Layer<P::Service>,
{
    type Service = O::Service;

    fn layer(&self, inner: S) -> Self::Service {
        let service = self.decode.layer(inner);
        let service = self.keys.layer(service);
        let service = self.retry.layer(service);
        let service = self.forward_headers.layer(service);
        let service = self.openai.layer(service);
        let service = self.filter.layer(service);
        let service = self.usage.layer(service);
        let service = self.pseudo_stream.layer(service);
        self.optimizer.layer(service)
    }
}

/// How often one request's body is read whole and parsed as JSON on its way through the whole
/// stack (the model rules above it, as the bundled proxy has them).
#[cfg(all(test, feature = "openai"))]
mod body_once {
    use super::*;
    use crate::buffer::counts;
    use crate::filter::ParamFilterLayer;
    use crate::openai::ChatOptions;
    use crate::rules::ModelRulesLayer;
    use crate::store::MemoryStore;
    use bytes::Bytes;
    use http::{header, Request, Response, StatusCode};
    use http_body_util::{BodyExt, Full};
    use tower::ServiceExt;

    const KEY: &str = "AIzaSyA1234567890abcdefghijklmnopqrstuv";
    const ANSWER: &str = r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"hello there"}]},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":1,"candidatesTokenCount":2,"totalTokenCount":3}}"#;

    /// What the upstream was sent: path, body, and whether `Content-Length` matched the body.
    type Sent = std::sync::Arc<std::sync::Mutex<Vec<(String, Bytes, bool)>>>;

    /// Gemini, answering every call; what it was sent is kept.
    async fn upstream(
        sent: Sent,
        req: Request<Full<Bytes>>,
    ) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
        let (parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let length_ok = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .is_none_or(|v| v.to_str().ok() == Some(body.len().to_string().as_str()));
        sent.lock()
            .unwrap()
            .push((parts.uri.path().to_owned(), body, length_ok));
        let mut res = Response::new(Full::new(Bytes::from_static(ANSWER.as_bytes())));
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        Ok(res)
    }

    /// The request's answer (status, body), how often its body was read whole and parsed, and
    /// the one request the upstream got (path, body).
    async fn counted(
        options: ChatOptions,
        req: Request<Full<Bytes>>,
    ) -> (
        StatusCode,
        Bytes,
        (usize, usize),
        (String, serde_json::Value),
    ) {
        let sent = Sent::default();
        let upstream = {
            let sent = sent.clone();
            tower::service_fn(move |req| upstream(sent.clone(), req))
        };
        let pool = KeyPool::builder().keys([KEY]).build().unwrap();
        let stack = GeminiStack::new()
            .pseudo_stream(PseudoStreamLayer::new())
            .usage(UsageLayer::new(MemoryStore::new()))
            .filter(ParamFilterLayer::new())
            .openai(OpenAiLayer::new(options.clone()))
            .retry(RetryLayer::new())
            .keys(pool);
        let service = ModelRulesLayer::new(options).layer(stack.layer(upstream));
        counts::take();
        let res = service.oneshot(req).await.unwrap();
        let status = res.status();
        let body = res.into_body().collect().await.map(|c| c.to_bytes());
        let body = body.unwrap_or_default();
        let counts = counts::take();
        let mut sent = sent.lock().unwrap().clone();
        assert_eq!(sent.len(), 1, "one upstream call");
        let (path, bytes, length_ok) = sent.remove(0);
        assert!(length_ok, "Content-Length differs from the body sent");
        let json = serde_json::from_slice(&bytes).expect("a JSON body upstream");
        (status, body, counts, (path, json))
    }

    fn post(path: &str, body: &'static str) -> Request<Full<Bytes>> {
        Request::post(path)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap()
    }

    fn safety() -> ChatOptions {
        ChatOptions {
            safety_settings: Some(serde_json::json!([
                {"category": "HARM_CATEGORY_HARASSMENT", "threshold": "OFF"}
            ])),
            ..ChatOptions::default()
        }
    }

    const GEMINI: &str = r#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}"#;

    #[tokio::test]
    async fn native_body_read_once_parsed_once() {
        // Safety settings only: spliced in without a parse; the filter's scan is the one parse.
        let (status, body, counts, (path, sent)) = counted(
            safety(),
            post("/v1beta/models/gemini-2.5-flash:generateContent", GEMINI),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.windows(5).any(|w| w == b"hello"));
        assert_eq!(counts, (1, 1), "(reads, parses)");
        assert_eq!(path, "/v1beta/models/gemini-2.5-flash:generateContent");
        assert_eq!(sent["safetySettings"][0]["threshold"], "OFF", "{sent}");
        assert_eq!(sent["contents"][0]["parts"][0]["text"], "hi");
        // Built-in tools: the rules layer parses the body, and the filter reuses its parse.
        let tools = ChatOptions {
            code_execution: true,
            ..safety()
        };
        let (status, _, counts, (_, sent)) = counted(
            tools,
            post("/v1beta/models/gemini-2.5-flash:generateContent", GEMINI),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(counts, (1, 1), "(reads, parses)");
        assert!(
            sent["tools"].to_string().contains("codeExecution"),
            "{sent}"
        );
        assert_eq!(sent["safetySettings"][0]["threshold"], "OFF", "{sent}");
        // A pseudo stream of Gemini's: the same.
        let (status, body, counts, (path, sent)) = counted(
            safety(),
            post(
                "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
                GEMINI,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.starts_with(b"data: "), "{body:?}");
        assert_eq!(counts, (1, 1), "(reads, parses)");
        assert_eq!(path, "/v1beta/models/gemini-2.5-flash:generateContent");
        assert_eq!(sent["safetySettings"][0]["threshold"], "OFF", "{sent}");
    }

    #[tokio::test]
    async fn openai_body_read_once() {
        // A pseudo stream: its parse of the body is reused by the filter and the conversion.
        let (status, body, counts, (path, sent)) = counted(
            ChatOptions::default(),
            post(
                "/v1/chat/completions",
                r#"{"model":"gemini-2.5-flash","messages":[{"role":"user","content":"hi"}],"stream":true}"#,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.ends_with(b"data: [DONE]\n\n"), "{body:?}");
        assert_eq!(counts, (1, 1), "(reads, parses)");
        assert_eq!(path, "/v1beta/models/gemini-2.5-flash:generateContent");
        assert_eq!(sent["contents"][0]["parts"][0]["text"], "hi", "{sent}");
        // No `stream`: the filter's scan, then the conversion's parse.
        let (status, body, counts, (_, sent)) = counted(
            ChatOptions::default(),
            post(
                "/v1/chat/completions",
                r#"{"model":"gemini-2.5-flash","messages":[{"role":"user","content":"hi"}]}"#,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.windows(5).any(|w| w == b"hello"));
        assert_eq!(counts, (1, 2), "(reads, parses)");
        assert_eq!(sent["contents"][0]["parts"][0]["text"], "hi", "{sent}");
    }
}
