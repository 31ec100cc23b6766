//! The layer stacks the proxy serves with: one for Gemini's own API, one for OpenAI's.
//!
//! ```text
//! (every stack starts with Quota: a client over its quota is refused before anything else)
//! Gemini:  ModelRules → Usage → [Metrics] → WholeAnswer → StreamOptimizer → PseudoStream → SearchLinks → ParamFilter → ForwardHeaders → Retry → KeyRotation → Decode → upstream
//! OpenAI:  Usage → [Metrics] → WholeAnswer → StreamOptimizer → PseudoStream → ParamFilter → OpenAi → ForwardHeaders → Retry → KeyRotation → Decode → upstream
//! /openai: ModelRules(blocked models only) → Usage → [Metrics] → WholeAnswer → StreamOptimizer → PseudoStream → ParamFilter → ForwardHeaders → Retry → KeyRotation(Bearer) → Decode → upstream's OpenAI endpoint
//! ```
//!
//! `ModelRules` (the library's `ModelRulesLayer`) is outermost: a blocked model is refused
//! with no key used and no usage record, and the layers below see the real model of a suffix
//! model (`-search`, ...) and its request's defaults. The OpenAI conversion applies the same
//! rules itself (it is given the same options).
//!
//! Every stack is built by one helper ([`stack`] over [`to_upstream`]); only the route's own
//! layers differ. The stream optimizer is outside the pseudo stream, as the library's docs
//! place it, so that a faked stream (FAKE_STREAM_ENABLED) is smoothed like a real one.
//!
//! `Usage` is outermost (below the model rules) so that a request's record is what the client got: the `200` and error
//! event of a pseudo stream, the `502` of an answer that broke off (`WholeAnswer`), the tokens of
//! the events the client read.
//!
//! `Metrics` (the library's `MetricsLayer`, only while `/metrics` is on: METRICS_TOKEN or
//! METRICS_ALLOWED_IPS) sits just below `Usage`: it reads the attempt log `Usage` puts on the
//! request and sees the answer the client gets; its tokens come from the usage records
//! (`MetricsSink` in front of the store).
//!
//! `ForwardHeaders` keeps only the request headers the Gemini API reads (the library's
//! `HeaderAllowlist::gemini()`), once a request has its final shape and before anything of
//! ours is added: below it the key layer sets the pool key, `Decode` asks for gzip, and the
//! upstream service adds `CUSTOM_HEADERS` and the proxy's `User-Agent`. It sits in every stack,
//! so the direct route and the PROXIES routes send the same headers. `Decode` asks the
//! upstream for gzip and decodes whatever compressed answer comes back, so every layer above
//! reads (and the client gets) plain bytes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::store::SharedStore;
use axum::body::Body;
use axum::http::{Request, Response};
use gemini_balance::client::{ForwardHeaders, ForwardHeadersLayer};
use gemini_balance::decode::{Decode, DecodeLayer};
use gemini_balance::filter::ParamFilterLayer;
use gemini_balance::keys::{KeyPlacement, KeyPool, KeyRotation, KeyRotationLayer};
use gemini_balance::metrics::{MetricsLayer, MetricsRegistry, MetricsSink};
use gemini_balance::openai::{ChatOptions, ModelRules, OpenAiLayer, SearchLinksLayer};
use gemini_balance::quota::{QuotaLayer, Quotas};
use gemini_balance::retry::{Retry, RetryLayer};
use gemini_balance::rules::ModelRulesLayer;
use gemini_balance::store::Tee;
use gemini_balance::stream::optimizer::{OptimizerParams, StreamOptimizerLayer};
use gemini_balance::stream::pseudo::PseudoStreamLayer;
use gemini_balance::usage::UsageLayer;
use gemini_balance::BoxError;
use tower::util::{BoxCloneSyncService, Either};
use tower::{Service, ServiceBuilder};

use crate::settings::Settings;
use gemini_balance::whole_answer::WholeAnswerLayer;

/// A stack as the handler sees it. The error keeps its cause's `source()` chain (see
/// [`crate::upstream`]), which the handler classifies as 504 or 502.
pub type Stack = BoxCloneSyncService<Request<reqwest::Body>, Response<Body>, BoxError>;

/// What the stacks share.
pub struct Parts {
    pub pool: KeyPool,
    pub store: SharedStore,
    /// Client quotas: checked outermost, charged from the usage records.
    pub quotas: Quotas,
    pub upstream: crate::upstream::Upstream,
    /// The Prometheus series, when `/metrics` is on: each stack is measured below `Usage`.
    pub metrics: Option<MetricsRegistry>,
    /// Fetches the `image_url` images of OpenAI chat requests.
    pub images: Arc<dyn gemini_balance::openai::ImageFetcher>,
}

/// The stacks the proxy serves with.
pub struct Stacks {
    /// Gemini's own API.
    pub gemini: Stack,
    /// OpenAI's API, converted to Gemini's.
    pub openai: Stack,
    /// OpenAI's API passed to Gemini's own OpenAI-compatible endpoint (`/openai/v1/...`).
    pub passthrough: Stack,
}

/// The stacks, built from the settings.
pub fn build(settings: &Settings, parts: &Parts) -> Stacks {
    let gemini = ServiceBuilder::new()
        .map_response(|res: Response<_>| res.map(Body::new))
        // Below the pseudo stream, which asks for a whole answer: links go into it, then are
        // replayed; a real stream gets them event by event, then the optimizer splits them.
        .layer(SearchLinksLayer::new())
        .layer(ParamFilterLayer::new())
        .service(to_upstream(settings, parts, KeyPlacement::GoogApiKeyHeader));
    let openai = ServiceBuilder::new()
        .map_response(|res: Response<_>| res.map(Body::new))
        .layer(ParamFilterLayer::new())
        // BASE_URL carries the API version; the OpenAI layer sends `/models/...` below it.
        .layer(
            OpenAiLayer::new(chat_options(settings))
                .gemini_prefix("")
                .image_fetcher(parts.images.clone()),
        )
        .service(to_upstream(settings, parts, KeyPlacement::GoogApiKeyHeader));
    let passthrough = ServiceBuilder::new()
        .map_response(|res: Response<_>| res.map(Body::new))
        .layer(ParamFilterLayer::new())
        .service(to_upstream(settings, parts, KeyPlacement::BearerToken));
    let rules = ModelRulesLayer::new(chat_options(settings));
    Stacks {
        gemini: stack(settings, parts, Some(rules), gemini),
        // The conversion applies the model rules itself.
        openai: stack(settings, parts, None, openai),
        passthrough: stack(
            settings,
            parts,
            Some(ModelRulesLayer::blocking(model_rules(settings))),
            passthrough,
        ),
    }
}

/// What every stack ends with, nearest the upstream (see the module docs).
type ToUpstream = ForwardHeaders<Retry<KeyRotation<Decode<crate::upstream::Upstream>>>>;

/// The layers every stack ends with, the pool's key placed as `placement`.
fn to_upstream(settings: &Settings, parts: &Parts, placement: KeyPlacement) -> ToUpstream {
    ServiceBuilder::new()
        .layer(ForwardHeadersLayer::default())
        .layer(retry(settings))
        .layer(KeyRotationLayer::new(parts.pool.clone()).placement(placement))
        .layer(DecodeLayer::new())
        .service(parts.upstream.clone())
}

/// One stack: the model rules (when given), then the layers every stack starts with, then
/// `route`, the route's own layers over [`to_upstream`].
fn stack<S>(settings: &Settings, parts: &Parts, rules: Option<ModelRulesLayer>, route: S) -> Stack
where
    S: Service<Request<reqwest::Body>, Response = Response<Body>, Error = BoxError>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let answered = ServiceBuilder::new()
        .map_response(|res: Response<_>| res.map(Body::new))
        .layer(WholeAnswerLayer::new())
        .map_response(|res: Response<_>| res.map(Body::new))
        // Outside the pseudo stream, so that a faked stream is smoothed too.
        .layer(optimizer(settings))
        .layer(pseudo_stream(settings))
        .service(route);
    // Just below `Usage`, whose attempt log it reads: it sees what the client gets.
    let measured = match &parts.metrics {
        Some(metrics) => Either::Left(
            ServiceBuilder::new()
                .map_response(|res: Response<_>| res.map(Body::new))
                .layer(MetricsLayer::new(metrics.clone()))
                .service(answered),
        ),
        None => Either::Right(answered),
    };
    let served = ServiceBuilder::new()
        .map_response(|res: Response<_>| res.map(Body::new))
        .layer(usage(settings, parts))
        .service(measured);
    // The quota is outermost: a refused request uses no key, no model rule, no record.
    let quota = QuotaLayer::new(parts.quotas.clone());
    match rules {
        Some(rules) => BoxCloneSyncService::new(
            ServiceBuilder::new()
                .map_response(|res: Response<_>| res.map(Body::new))
                .layer(quota)
                .map_response(|res: Response<_>| res.map(Body::new))
                .layer(rules)
                .service(served),
        ),
        None => BoxCloneSyncService::new(
            ServiceBuilder::new()
                .map_response(|res: Response<_>| res.map(Body::new))
                .layer(quota)
                .service(served),
        ),
    }
}

fn pseudo_stream(settings: &Settings) -> PseudoStreamLayer {
    PseudoStreamLayer::new()
        .enabled(settings.bool("FAKE_STREAM_ENABLED"))
        .keep_alive_interval(Duration::from_secs(
            settings
                .int("FAKE_STREAM_EMPTY_DATA_INTERVAL_SECONDS")
                .unsigned_abs(),
        ))
}

fn optimizer(settings: &Settings) -> StreamOptimizerLayer {
    let secs = |name: &str| Duration::from_secs_f64(settings.float(name).max(0.0));
    let count = |name: &str| usize::try_from(settings.int(name)).unwrap_or(0);
    let mut params = OptimizerParams::default();
    params.enabled = settings.bool("STREAM_OPTIMIZER_ENABLED");
    params.min_delay = secs("STREAM_MIN_DELAY");
    params.max_delay = secs("STREAM_MAX_DELAY");
    params.short_text_threshold = count("STREAM_SHORT_TEXT_THRESHOLD");
    params.long_text_threshold = count("STREAM_LONG_TEXT_THRESHOLD");
    params.chunk_size = count("STREAM_CHUNK_SIZE").max(1);
    StreamOptimizerLayer::new(params)
}

fn usage(settings: &Settings, parts: &Parts) -> UsageLayer {
    // Each record also charges its tokens to its client's quota.
    let sink: Arc<dyn gemini_balance::store::UsageSink> =
        Arc::new(Tee(parts.store.clone(), parts.quotas.charger()));
    let layer = match &parts.metrics {
        // Tokens are counted on the records' way to the store.
        Some(metrics) => UsageLayer::new(MetricsSink::new(metrics.clone(), sink)),
        None => UsageLayer::shared(sink),
    };
    layer.record_request_body(settings.bool("ERROR_LOG_RECORD_REQUEST_BODY"))
}

fn retry(settings: &Settings) -> RetryLayer {
    RetryLayer::new().max_attempts(u32::try_from(settings.int("MAX_RETRIES")).unwrap_or(3))
}

/// What requests get by default, on the OpenAI route (the conversion's options) and the native
/// ones (the model rules layer), from the settings.
pub fn chat_options(settings: &Settings) -> ChatOptions {
    let budgets: HashMap<String, i64> = settings
        .value("THINKING_BUDGET_MAP")
        .as_object()
        .map(|map| {
            map.iter()
                .filter_map(|(model, budget)| Some((model.clone(), budget.as_i64()?)))
                .collect()
        })
        .unwrap_or_default();
    ChatOptions {
        rules: model_rules(settings),
        show_thinking: settings.bool("SHOW_THINKING_PROCESS"),
        thinking_budgets: budgets,
        safety_settings: Some(settings.value("SAFETY_SETTINGS").clone())
            .filter(|v| v.as_array().is_some_and(|a| !a.is_empty())),
        code_execution: settings.bool("TOOLS_CODE_EXECUTION_ENABLED"),
        url_context_models: if settings.bool("URL_CONTEXT_ENABLED") {
            settings.list("URL_CONTEXT_MODELS")
        } else {
            Vec::new()
        },
        show_search_link: settings.bool("SHOW_SEARCH_LINK"),
    }
}

/// The model suffix rules from the settings.
fn model_rules(settings: &Settings) -> ModelRules {
    ModelRules {
        search_models: settings.list("SEARCH_MODELS"),
        image_models: settings.list("IMAGE_MODELS"),
        thinking_models: settings.list("THINKING_MODELS"),
        filtered_models: settings.list("FILTERED_MODELS"),
    }
}
