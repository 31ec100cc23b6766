//! [`UsageMiddleware`]: one usage record per call of a `ClientWithMiddleware`.

use std::sync::Arc;

use http::Extensions;
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next, Result};

use super::{request_info, with_url};
use crate::store::UsageSink;
use crate::usage::{ClientId, Head, Pending, Unanswered};

/// The [`UsageLayer`](crate::usage::UsageLayer) for a `ClientWithMiddleware`: one
/// [`RequestRecord`](crate::usage::RequestRecord) per call, with every attempt logged by a
/// [`KeyRotationMiddleware`](super::KeyRotationMiddleware) below and the tokens the answer
/// reported, handed to the same [`UsageSink`] when the body has been read to its end (or
/// dropped: the record then says the caller went away).
///
/// The response body is passed through as it arrives (an SSE stream stays a stream); token
/// counts are read from Gemini / OpenAI JSON and SSE answers only. A call dropped before its
/// answer came (the caller gave up, a timeout fired) is recorded too, as `client_gone`. Flavour
/// and model come from the request's [`RequestInfo`](crate::ext::RequestInfo) extension (worked
/// out once, from the path and the [`ModelName`](crate::ext::ModelName) and
/// [`ApiFlavor`](crate::api_error::ApiFlavor) extensions, and kept for the middleware below).
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
        let info = request_info(&req, extensions);
        let pending = Pending::start(
            self.sink.clone(),
            Head {
                flavor: info.flavor,
                path: req.url().path(),
                model: info.model_name(),
                client: extensions.get::<ClientId>().cloned(),
                streamed: info.pseudo_streamed,
                bodiless: req.method() == reqwest::Method::HEAD,
                handoff: None,
            },
            self.record_request_body,
        );
        pending.insert_slots(extensions);
        // Dropped before the answer (the caller gave up on the call, or a timeout above fired),
        // the record is written as `client_gone`, as the tower `UsageLayer` does.
        let mut unanswered = Unanswered::new(pending);
        let result = next.run(req, extensions).await;
        let Some(pending) = unanswered.take() else {
            return result;
        };
        match result {
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
