//! Splitting one event's text into pieces: each piece carries only its text; everything else
//! (usage, tool calls, finish reasons, other parts) goes once, on the last piece.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value};

use super::params::OptimizerParams;
use crate::sse::{data_event, LineEnding, SseEvent};

/// One event to write, and how long to wait after it before the next piece of the same text.
pub(crate) type Piece = (Bytes, Duration);

/// The pieces replacing the event `block`, or `None` to pass it on as it is (not a JSON data
/// event, not one candidate/choice, no text, or nothing to split).
pub(crate) fn rechunk(block: &[u8], params: &OptimizerParams) -> Option<Vec<Piece>> {
    let event = SseEvent::parse(block)?;
    if event.event.as_deref().is_some_and(|e| e != "message")
        || event.id.is_some()
        || event.retry.is_some()
        || event.is_done()
    {
        return None;
    }
    let Ok(Value::Object(chunk)) = serde_json::from_str::<Value>(&event.data) else {
        return None;
    };
    let ending = LineEnding::of_block(block);
    if chunk.contains_key("candidates") {
        gemini(chunk, params, ending)
    } else if chunk.contains_key("choices") {
        openai(chunk, params, ending)
    } else {
        None
    }
}

fn copy_keys(from: &Map<String, Value>, keys: &[&str]) -> Map<String, Value> {
    keys.iter()
        .filter_map(|k| from.get(*k).map(|v| ((*k).to_owned(), v.clone())))
        .collect()
}

fn event(value: &Value, ending: LineEnding) -> Option<Bytes> {
    serde_json::to_string(value)
        .ok()
        .map(|text| data_event(&text, ending))
}

/// A Gemini `GenerateContentResponse` with one candidate: each text part is split; the pieces
/// carry `{"text": piece}` (plus `"thought": true` for thoughts); the last piece is the original
/// chunk with the text already sent taken out.
fn gemini(
    mut chunk: Map<String, Value>,
    params: &OptimizerParams,
    ending: LineEnding,
) -> Option<Vec<Piece>> {
    let candidates = chunk.get("candidates")?.as_array()?;
    let [candidate] = candidates.as_slice() else {
        return None;
    };
    let candidate = candidate.as_object()?;
    let content = candidate.get("content")?.as_object()?;
    let parts = content.get("parts")?.as_array()?;

    // (part position, piece, thought, delay)
    let mut plan: Vec<(usize, String, bool, Duration)> = Vec::new();
    for (position, part) in parts.iter().enumerate() {
        let Some(part) = part.as_object() else {
            continue;
        };
        let Some(text) = part.get("text").and_then(Value::as_str) else {
            continue;
        };
        let thought = part.get("thought") == Some(&Value::Bool(true));
        let (pieces, delay) = params.split(text);
        plan.extend(
            pieces
                .into_iter()
                .map(|p| (position, p.to_owned(), thought, delay)),
        );
    }
    if plan.len() < 2 {
        return None;
    }
    let (last_position, last_piece, _, _) = plan.pop()?;

    let top = copy_keys(&chunk, &["responseId", "modelVersion", "createTime"]);
    let candidate_head = copy_keys(candidate, &["index"]);
    let role = content.get("role").cloned();
    let mut out = Vec::with_capacity(plan.len() + 1);
    for (_, piece, thought, delay) in plan {
        let mut part = Map::new();
        part.insert("text".into(), Value::String(piece));
        if thought {
            part.insert("thought".into(), Value::Bool(true));
        }
        let mut piece_content = Map::new();
        if let Some(role) = &role {
            piece_content.insert("role".into(), role.clone());
        }
        piece_content.insert("parts".into(), Value::Array(vec![Value::Object(part)]));
        let mut piece_candidate = candidate_head.clone();
        piece_candidate.insert("content".into(), Value::Object(piece_content));
        let mut piece_chunk = top.clone();
        piece_chunk.insert(
            "candidates".into(),
            Value::Array(vec![Value::Object(piece_candidate)]),
        );
        out.push((event(&Value::Object(piece_chunk), ending)?, delay));
    }

    // The last piece: the original chunk, its text parts emptied of what was sent.
    let parts = chunk
        .get_mut("candidates")?
        .get_mut(0)?
        .get_mut("content")?
        .get_mut("parts")?
        .as_array_mut()?;
    let mut kept = Vec::with_capacity(parts.len());
    for (position, part) in std::mem::take(parts).into_iter().enumerate() {
        let Value::Object(mut part) = part else {
            kept.push(part);
            continue;
        };
        if !part.get("text").is_some_and(Value::is_string) {
            kept.push(Value::Object(part));
        } else if position == last_position {
            part.insert("text".into(), Value::String(last_piece.clone()));
            kept.push(Value::Object(part));
        } else if part.keys().any(|k| k != "text" && k != "thought") {
            // A thought signature or other metadata rides on the part: keep it, without text.
            part.insert("text".into(), Value::String(String::new()));
            kept.push(Value::Object(part));
        }
    }
    *parts = kept;
    out.push((event(&Value::Object(chunk), ending)?, Duration::ZERO));
    Some(out)
}

/// An OpenAI `chat.completion.chunk` with one choice: `reasoning_content` then `content` are
/// split; the pieces carry only that text (the first also the `role`); the last piece is the
/// original chunk (usage, tool calls, finish reason) with the text already sent taken out.
fn openai(
    mut chunk: Map<String, Value>,
    params: &OptimizerParams,
    ending: LineEnding,
) -> Option<Vec<Piece>> {
    const TEXT_FIELDS: [&str; 2] = ["reasoning_content", "content"];
    let choices = chunk.get("choices")?.as_array()?;
    let [choice] = choices.as_slice() else {
        return None;
    };
    let choice = choice.as_object()?;
    let delta = choice.get("delta")?.as_object()?;

    let mut plan: Vec<(&'static str, String, Duration)> = Vec::new();
    for field in TEXT_FIELDS {
        if let Some(text) = delta.get(field).and_then(Value::as_str) {
            let (pieces, delay) = params.split(text);
            plan.extend(pieces.into_iter().map(|p| (field, p.to_owned(), delay)));
        }
    }
    if plan.len() < 2 {
        return None;
    }
    let (last_field, last_piece, _) = plan.pop()?;

    let top = copy_keys(
        &chunk,
        &["id", "object", "created", "model", "system_fingerprint"],
    );
    let index = choice.get("index").cloned().unwrap_or(Value::from(0));
    let mut role = delta.get("role").cloned();
    let mut out = Vec::with_capacity(plan.len() + 1);
    for (field, piece, delay) in plan {
        let mut piece_delta = Map::new();
        if let Some(role) = role.take() {
            piece_delta.insert("role".into(), role);
        }
        piece_delta.insert(field.into(), Value::String(piece));
        let mut piece_choice = Map::new();
        piece_choice.insert("index".into(), index.clone());
        piece_choice.insert("delta".into(), Value::Object(piece_delta));
        piece_choice.insert("finish_reason".into(), Value::Null);
        let mut piece_chunk = top.clone();
        piece_chunk.insert(
            "choices".into(),
            Value::Array(vec![Value::Object(piece_choice)]),
        );
        out.push((event(&Value::Object(piece_chunk), ending)?, delay));
    }

    let delta = chunk
        .get_mut("choices")?
        .get_mut(0)?
        .get_mut("delta")?
        .as_object_mut()?;
    delta.remove("role");
    for field in TEXT_FIELDS {
        if field == last_field {
            delta.insert(field.into(), Value::String(last_piece.clone()));
        } else if delta.get(field).is_some_and(Value::is_string) {
            delta.remove(field);
        }
    }
    out.push((event(&Value::Object(chunk), ending)?, Duration::ZERO));
    Some(out)
}
