//! The model lists: every page fetched for OpenAI's shape, which has no pages, and the Gemini
//! list given in that shape. (The model rules, filtered models hidden and derived models added
//! to lists among them, are the library's `ModelRulesLayer`, in the stacks.)

use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Response, StatusCode};
use bytes::Bytes;
use gemini_balance::api_error::{error_response, ApiFlavor};
use gemini_balance::body::set_body_length;
use gemini_balance::openai::openai_model_list;
use http_body_util::BodyExt;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;

/// Largest model list read.
const MAX_LIST: usize = 8 * 1024 * 1024;
/// The page size asked of the upstream for a model list (Gemini's largest; its default of 50
/// leaves models out).
const PAGE_SIZE: &str = "1000";
/// Pages of a model list fetched at most for OpenAI's shape, which has no paging of its own.
const MAX_PAGES: usize = 10;
/// What is escaped in a query value: everything but RFC 3986's unreserved characters.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Which API's shape a model list is given in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListShape {
    Gemini,
    OpenAi,
}

/// A Gemini model list (the model rules already applied, in the stack) in OpenAI's shape.
/// Failures pass through unchanged.
pub async fn to_openai_list(response: Response<Body>) -> Response<Body> {
    let (head, list) = match read_list(response).await {
        Ok(read) => read,
        Err(answer) => return answer,
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    json_answer(head, &openai_model_list(&list, now))
}

/// The query of a model list request sent upstream, from the client's: `pageSize=1000` unless
/// a Gemini client chose its own page (the google-genai SDK pages on with `pageToken`); OpenAI's
/// shape has no paging, so its client's paging parameters are replaced.
pub fn list_query(shape: ListShape, query: Option<&str>) -> String {
    let pairs = query.into_iter().flat_map(|q| q.split('&'));
    let is = |pair: &str, name: &str| pair.split('=').next() == Some(name);
    let mut kept: Vec<&str> = match shape {
        ListShape::Gemini => pairs.filter(|p| !p.is_empty()).collect(),
        ListShape::OpenAi => pairs
            .filter(|p| !p.is_empty() && !is(p, "pageSize") && !is(p, "pageToken"))
            .collect(),
    };
    let page_size = format!("pageSize={PAGE_SIZE}");
    if !kept.iter().any(|p| is(p, "pageSize")) {
        kept.push(&page_size);
    }
    kept.join("&")
}

/// The whole list behind `first` (the answer to `template`): later pages asked of `stack` while
/// the upstream gives a `nextPageToken` (at most [`MAX_PAGES`] pages), their `models` joined
/// under the first page's head. A failing first page is the answer as it is; a later page that
/// fails, cannot be read or gives a token already followed (a relay that pages in circles) ends
/// the list with the pages read so far, and a warning in the log.
pub async fn all_pages(
    stack: &crate::pipeline::Stack,
    template: &Parts,
    first: Response<Body>,
) -> Response<Body> {
    use tower::ServiceExt;

    let (head, mut list) = match read_list(first).await {
        Ok(read) => read,
        Err(answer) => return answer,
    };
    let mut followed = std::collections::HashSet::new();
    for page in 2..=MAX_PAGES {
        let Some(token) = next_page_token(&list) else {
            break;
        };
        if !followed.insert(token.clone()) {
            tracing::warn!(
                page,
                "the upstream's model list gave a page token again; the pages read so far are answered"
            );
            break;
        }
        let mut parts = template.clone();
        // Page tokens are base64: `+`, `/` and `=` are escaped (a `+` would read as a space).
        let token = utf8_percent_encode(&token, QUERY_VALUE);
        let query = match parts.uri.query().filter(|q| !q.is_empty()) {
            Some(q) => format!("{q}&pageToken={token}"),
            None => format!("pageToken={token}"),
        };
        parts.uri = match format!("{}?{query}", parts.uri.path()).parse() {
            Ok(uri) => uri,
            // Cannot happen once escaped; the pages so far, if it does.
            Err(_) => break,
        };
        let request = axum::http::Request::from_parts(parts, reqwest::Body::from(Bytes::new()));
        let read = match stack.clone().oneshot(request).await {
            Ok(answer) => read_list(answer)
                .await
                .map_err(|answer| answer.status().to_string()),
            Err(e) => Err(gemini_balance::classify::classify_any_error(&e).to_string()),
        };
        let more = match read {
            Ok((_, more)) => more,
            Err(failure) => {
                tracing::warn!(
                    page,
                    %failure,
                    "a later page of the upstream's model list failed; the pages read so far are answered"
                );
                list["nextPageToken"] = Value::Null;
                break;
            }
        };
        let models = more.get("models").and_then(Value::as_array).cloned();
        if let Some(all) = list.get_mut("models").and_then(Value::as_array_mut) {
            all.extend(models.unwrap_or_default());
        }
        list["nextPageToken"] = more.get("nextPageToken").cloned().unwrap_or(Value::Null);
    }
    if next_page_token(&list).is_some_and(|token| !followed.contains(&token)) {
        tracing::warn!(
            pages = MAX_PAGES,
            "the upstream's model list has more pages than are fetched; the rest is left out"
        );
    }
    if let Value::Object(map) = &mut list {
        map.remove("nextPageToken");
    }
    json_answer(head, &list)
}

/// A successful answer's JSON; anything else is the answer to give (the failure as it is, or a
/// 502 for a list that cannot be read).
async fn read_list(
    response: Response<Body>,
) -> Result<(axum::http::response::Parts, Value), Response<Body>> {
    if !response.status().is_success() {
        return Err(response);
    }
    let (parts, body) = response.into_parts();
    let Ok(collected) = http_body_util::Limited::new(body, MAX_LIST).collect().await else {
        return Err(refuse(
            StatusCode::BAD_GATEWAY,
            "the upstream model list could not be read",
        ));
    };
    match serde_json::from_slice::<Value>(&collected.to_bytes()) {
        Ok(list) => Ok((parts, list)),
        Err(_) => Err(refuse(
            StatusCode::BAD_GATEWAY,
            "the upstream model list is not JSON",
        )),
    }
}

fn next_page_token(list: &Value) -> Option<String> {
    list.get("nextPageToken")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
}

/// `value` as the JSON body of an answer with `head`.
fn json_answer(mut head: axum::http::response::Parts, value: &Value) -> Response<Body> {
    let bytes = Bytes::from(value.to_string());
    head.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    set_body_length(&mut head.headers, bytes.len());
    Response::from_parts(head, Body::from(bytes))
}

fn refuse(status: StatusCode, message: &str) -> Response<Body> {
    error_response(ApiFlavor::Gemini, status, message).map(Body::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_asked_for_in_pages_of_a_thousand() {
        let cases = [
            (ListShape::Gemini, None, "pageSize=1000"),
            (ListShape::Gemini, Some("key=t"), "key=t&pageSize=1000"),
            // A Gemini client paging on its own keeps its pages.
            (
                ListShape::Gemini,
                Some("pageSize=10&pageToken=abc"),
                "pageSize=10&pageToken=abc",
            ),
            (
                ListShape::Gemini,
                Some("pageToken=abc"),
                "pageToken=abc&pageSize=1000",
            ),
            // OpenAI's shape has no paging: the whole list, from its start.
            (
                ListShape::OpenAi,
                Some("pageSize=10&pageToken=abc&x=1"),
                "x=1&pageSize=1000",
            ),
            (ListShape::OpenAi, Some(""), "pageSize=1000"),
        ];
        for (shape, query, want) in cases {
            assert_eq!(list_query(shape, query), want, "{shape:?} {query:?}");
        }
    }
}
