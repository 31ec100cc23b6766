//! [`UsageMiddleware`]: one usage record per call of a `ClientWithMiddleware`.

use std::sync::Arc;

use http::Extensions;
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next, Result};

use super::{request_flavor, request_model, with_url};
use crate::store::UsageSink;
use crate::usage::{ClientId, Head, Pending};

/// The [`UsageLayer`](crate::usage::UsageLayer) for a `ClientWithMiddleware`: one
/// [`RequestRecord`](crate::usage::RequestRecord) per call, with every attempt logged by a
/// [`KeyRotationMiddleware`](super::KeyRotationMiddleware) below and the tokens the answer
/// reported, handed to the same [`UsageSink`] when the body has been read to its end (or
/// dropped: the record then says the caller went away).
///
/// The response body is passed through as it arrives (an SSE stream stays a stream); token
/// counts are read from Gemini / OpenAI JSON and SSE answers only.
#[derive(Clone)]
pub struct UsageMiddleware {
    sink: Arc<dyn UsageSink>,
    record_request_body: bool,
}

impl std::fmt::Debug for UsageMiddleware {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageMiddleware")
            .field("record_request_body", &self.record_request_body)
            .finish_non_exhaustive()
    }
}

impl UsageMiddleware {
    /// Records into `sink`.
    pub fn new(sink: impl UsageSink) -> Self {
        Self::shared(Arc::new(sink))
    }

    /// Records into a sink shared with other parts of the program (a tower `UsageLayer`, say).
    pub fn shared(sink: Arc<dyn UsageSink>) -> Self {
        UsageMiddleware {
            sink,
            record_request_body: false,
        }
    }

    /// Keeps the request body of failed calls in their record (off by default); it is taken
    /// by a [`RetryMiddleware`](super::RetryMiddleware) below, from bodies held in memory.
    pub fn record_request_body(mut self, on: bool) -> Self {
        self.record_request_body = on;
        self
    }
}

#[async_trait::async_trait]
impl Middleware for UsageMiddleware {
    async fn handle(
        &self,
        req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> Result<Response> {
        let model = request_model(&req, extensions);
        let pending = Pending::start(
            self.sink.clone(),
            Head {
                flavor: request_flavor(&req, extensions),
                path: req.url().path(),
                model: model.as_deref(),
                client: extensions.get::<ClientId>().cloned(),
                streamed: false,
                bodiless: req.method() == reqwest::Method::HEAD,
                handoff: None,
            },
            self.record_request_body,
        );
        pending.insert_slots(extensions);
        match next.run(req, extensions).await {
            Ok(res) => {
                let url = res.url().clone();
                let tracked = pending.track(http::Response::<reqwest::Body>::from(res));
                let (mut parts, body) = tracked.into_parts();
                with_url(&mut parts, url);
                Ok(Response::from(http::Response::from_parts(
                    parts,
                    reqwest::Body::wrap(body),
                )))
            }
            Err(err) => {
                pending.no_response();
                Err(err)
            }
        }
    }
}
