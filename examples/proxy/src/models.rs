//! Model names on the Gemini-native routes: suffixes, filtered models, default safety settings,
//! and the model lists.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Response, StatusCode};
use bytes::Bytes;
use gemini_balance::api_error::{error_response, ApiFlavor};
use gemini_balance::ext::model_from_path;
use gemini_balance::openai::{
    default_safety_settings, openai_model_list, splice_default_safety_settings, ModelRules,
};
use http_body_util::BodyExt;
use serde_json::Value;

use crate::settings::Settings;

/// Largest request body reshaped here (the retry layer's limit).
const MAX_BODY: usize = gemini_balance::retry::DEFAULT_MAX_BODY_BYTES;
/// Largest model list read.
const MAX_LIST: usize = 8 * 1024 * 1024;

/// What the settings say about model names.
pub struct ModelPolicy {
    rules: ModelRules,
    safety: Option<Value>,
    /// `safety` as JSON text, spliced into bodies without parsing them.
    safety_json: String,
}

/// Which API's shape a model list is given in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListShape {
    Gemini,
    OpenAi,
}

impl ModelPolicy {
    pub fn from_settings(settings: &Settings) -> Self {
        let safety = crate::safety::configured(settings);
        ModelPolicy {
            rules: crate::pipeline::model_rules(settings),
            safety_json: safety.as_ref().map(Value::to_string).unwrap_or_default(),
            safety,
        }
    }
}

/// Resolves the model of a Gemini request path; refuses filtered models (before any key is
/// used); for POST requests to a suffix model (`-search`, ...) rewrites the path to the real
/// model and reshapes the body (suffix tools and configs, default safety settings). Returns the
/// model for the log line. The default safety settings of plain models are added by
/// [`crate::safety`], inside the Gemini stack.
pub async fn prepare(
    policy: &ModelPolicy,
    parts: &mut Parts,
    body: reqwest::Body,
) -> Result<(Option<String>, reqwest::Body), Response<Body>> {
    let Some(requested) = model_from_path(parts.uri.path()).map(str::to_owned) else {
        return Ok((None, body));
    };
    let model = policy.rules.resolve(&requested);
    if policy.rules.is_filtered(&model) {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            &format!("the model {requested} is not available on this server (FILTERED_MODELS)"),
        ));
    }
    if parts.method != http::Method::POST {
        return Ok((Some(requested), body));
    }
    // Plain models only need the default safety settings, which the Gemini stack adds after
    // the parameter filter (crate::safety) to the bodies the filter reads: those labelled JSON
    // or not labelled. A suffix model's body, or one labelled otherwise (`curl -d` sends
    // `application/x-www-form-urlencoded`), is reshaped here.
    let plain = model.upstream == model.requested;
    let is_generate = parts.uri.path().contains("enerateContent");
    if plain
        && (!is_generate
            || policy.safety.is_none()
            || gemini_balance::filter::reads_body(&parts.headers))
    {
        return Ok((Some(requested), body));
    }
    let bytes = match http_body_util::Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return Err(refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the request body is larger than {MAX_BODY} bytes"),
            ))
        }
    };
    let spliced = plain
        .then(|| splice_default_safety_settings(&bytes, &policy.safety_json))
        .flatten();
    let bytes = match spliced {
        Some(spliced) => Bytes::from(spliced),
        None => reshape_parsed(policy, &model, is_generate, bytes),
    };
    if !plain {
        let from = format!("/models/{requested}");
        let to = format!("/models/{}", model.upstream);
        let pq = parts
            .uri
            .path_and_query()
            .map_or(String::new(), |pq| pq.as_str().replacen(&from, &to, 1));
        if let Ok(uri) = pq.parse() {
            parts.uri = uri;
        }
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::TRANSFER_ENCODING);
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    Ok((Some(requested), reqwest::Body::from(bytes)))
}

/// The upstream's model list without the filtered models, with the derived `-search`, `-image`
/// and `-non-thinking` models, in the client's API's shape. Failures pass through unchanged.
pub async fn rewrite_list(
    policy: &ModelPolicy,
    shape: ListShape,
    response: Response<Body>,
) -> Response<Body> {
    if !response.status().is_success() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(collected) = http_body_util::Limited::new(body, MAX_LIST).collect().await else {
        return refuse(
            StatusCode::BAD_GATEWAY,
            "the upstream model list could not be read",
        );
    };
    let Ok(list) = serde_json::from_slice::<Value>(&collected.to_bytes()) else {
        return refuse(
            StatusCode::BAD_GATEWAY,
            "the upstream model list is not JSON",
        );
    };
    let expanded = policy.rules.expand_model_list(&list);
    let value = match shape {
        ListShape::Gemini => expanded,
        ListShape::OpenAi => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            openai_model_list(&expanded, now)
        }
    };
    let bytes = Bytes::from(value.to_string());
    parts.headers.remove(header::TRANSFER_ENCODING);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    Response::from_parts(parts, Body::from(bytes))
}

/// Parses the body to give it the suffix's tools and configs and the default safety settings.
fn reshape_parsed(
    policy: &ModelPolicy,
    model: &gemini_balance::openai::ResolvedModel,
    is_generate: bool,
    bytes: Bytes,
) -> Bytes {
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(mut json) => {
            ModelRules::shape_gemini_request(model, &mut json);
            if let (Some(safety), true) = (&policy.safety, is_generate) {
                default_safety_settings(&mut json, safety);
            }
            Bytes::from(json.to_string())
        }
        // Not JSON: the parameter filter answers it in the API's format.
        Err(_) => bytes,
    }
}

fn refuse(status: StatusCode, message: &str) -> Response<Body> {
    error_response(ApiFlavor::Gemini, status, message).map(Body::from)
}
