//! The walk over a JSON body: drop-list removals, null removal, coercions, type and presence
//! checks, every violation collected.

use bytes::Bytes;
use serde_json::{Map, Number, Value};

use super::drop_list::{DropList, Key};
use super::first_pass::first_pass;
use super::schema::{Obj, Req, Shape, Ty};

/// At most this many violations are listed; the rest are counted.
pub(crate) const MAX_LISTED: usize = 50;

/// Why a field was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ViolationKind {
    /// A required field is missing (or was `null`).
    Missing,
    /// The field has the wrong JSON type, and no lossless coercion applies.
    WrongType,
    /// The value is of the right type but not acceptable (an empty required list, none of a
    /// set of alternatives present).
    Invalid,
}

/// One offending field of a refused request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The field's path as the client spelled it: `generationConfig.temperature`,
    /// `contents[0].parts[1].text`, `messages`; empty for the body itself.
    pub field: String,
    /// What is wrong, as a predicate: `is required`, `must be a number, not a boolean`.
    pub problem: String,
    /// The kind of problem.
    pub kind: ViolationKind,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "the request body {}", self.problem)
        } else {
            write!(f, "`{}` {}", self.field, self.problem)
        }
    }
}

/// What the filter made of a body.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Filtered {
    /// Nothing to change: forward the body exactly as it came.
    Unchanged,
    /// Forward this body instead (nulls or unwanted fields removed, values coerced).
    Rewritten(Bytes),
    /// Refuse the request; the violations (at most 50 listed, then `more`), field by field in
    /// the order the shape lists them.
    Invalid {
        /// The offending fields.
        violations: Vec<Violation>,
        /// How many more were found but not listed.
        more: usize,
    },
    /// Not JSON: forward it as it came (the upstream will say what it thinks).
    NotJson,
}

/// Filters one request body of a known `shape`, for a `model` (used by the drop list).
///
/// This is what [`ParamFilter`](super::ParamFilter) runs on each request it guards.
///
/// ```
/// use gemini_balance::filter::{filter_body, DropList, Filtered, Shape};
///
/// let body = br#"{"model":"gemini-2.0-flash","messages":[{"role":"user","content":"hi"}],
///                 "temperature":"0.7","stop":"END","seed":null}"#;
/// let Filtered::Rewritten(out) = filter_body(body, Shape::ChatCompletions, None, &DropList::new()) else {
///     panic!("expected a rewrite");
/// };
/// let out: serde_json::Value = serde_json::from_slice(&out).unwrap();
/// assert_eq!(out["temperature"], 0.7);
/// assert_eq!(out["stop"], serde_json::json!(["END"]));
/// assert!(out.get("seed").is_none());
/// ```
pub fn filter_body(body: &[u8], shape: Shape, model: Option<&str>, drops: &DropList) -> Filtered {
    if let Some(clean) = first_pass(body, shape) {
        let model = model.or(clean.model.as_deref());
        if drops.paths_for(shape, model).next().is_none() {
            return Filtered::Unchanged;
        }
    }
    let Ok(mut value) = serde_json::from_slice::<Value>(body) else {
        return Filtered::NotJson;
    };
    let body_model = body_model(&value, shape).map(str::to_owned);
    let model = model.or(body_model.as_deref());
    match filter_value(&mut value, shape, model, drops) {
        Checked::Unchanged => Filtered::Unchanged,
        Checked::Changed => match serde_json::to_vec(&value) {
            Ok(bytes) => Filtered::Rewritten(Bytes::from(bytes)),
            // Serializing a parsed value cannot fail; forward the original if it ever did.
            Err(_) => Filtered::Unchanged,
        },
        Checked::Invalid { violations, more } => Filtered::Invalid { violations, more },
    }
}

/// The `model` field of an OpenAI body.
pub(crate) fn body_model(value: &Value, shape: Shape) -> Option<&str> {
    if shape.is_openai() {
        value.get("model").and_then(Value::as_str)
    } else {
        None
    }
}

pub(crate) enum Checked {
    Unchanged,
    Changed,
    Invalid {
        violations: Vec<Violation>,
        more: usize,
    },
}

/// Filters a parsed body in place.
pub(crate) fn filter_value(
    value: &mut Value,
    shape: Shape,
    model: Option<&str>,
    drops: &DropList,
) -> Checked {
    let mut walker = Walker::default();
    for path in drops.paths_for(shape, model) {
        walker.changed |= drop_path(value, path);
    }
    match value {
        Value::Object(map) => walker.object(map, shape.schema()),
        other => walker.wrong("a JSON object", other),
    }
    if !walker.violations.is_empty() || walker.more > 0 {
        return Checked::Invalid {
            violations: walker.violations,
            more: walker.more,
        };
    }
    if walker.changed {
        Checked::Changed
    } else {
        Checked::Unchanged
    }
}

/// Removes the field at `keys` (walking through arrays); `true` if anything was removed.
fn drop_path(value: &mut Value, keys: &[Key]) -> bool {
    let Some((first, rest)) = keys.split_first() else {
        return false;
    };
    match value {
        Value::Object(map) => {
            if rest.is_empty() {
                let before = map.len();
                map.retain(|k, _| !first.matches(k));
                map.len() != before
            } else {
                let mut changed = false;
                for (k, v) in map.iter_mut() {
                    if first.matches(k) {
                        changed |= drop_path(v, rest);
                    }
                }
                changed
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |changed, item| drop_path(item, keys) | changed),
        _ => false,
    }
}

#[derive(Default)]
struct Walker {
    path: String,
    violations: Vec<Violation>,
    more: usize,
    changed: bool,
}

impl Walker {
    fn push_key(&mut self, key: &str) -> usize {
        let mark = self.path.len();
        if !self.path.is_empty() {
            self.path.push('.');
        }
        self.path.push_str(key);
        mark
    }

    fn push_index(&mut self, index: usize) -> usize {
        use std::fmt::Write;
        let mark = self.path.len();
        let _ = write!(self.path, "[{index}]");
        mark
    }

    fn violation(&mut self, field: String, problem: String, kind: ViolationKind) {
        if self.violations.len() < MAX_LISTED {
            self.violations.push(Violation {
                field,
                problem,
                kind,
            });
        } else {
            self.more += 1;
        }
    }

    fn here(&mut self, problem: String, kind: ViolationKind) {
        let field = self.path.clone();
        self.violation(field, problem, kind);
    }

    fn wrong(&mut self, expected: &str, got: &Value) {
        self.here(
            format!("must be {expected}, not {}", describe(got)),
            ViolationKind::WrongType,
        );
    }

    fn object(&mut self, map: &mut Map<String, Value>, schema: &Obj) {
        let before = map.len();
        map.retain(|_, v| !v.is_null());
        self.changed |= map.len() != before;

        for field in schema.fields {
            let key = if map.contains_key(field.name) {
                Some(field.name)
            } else {
                field.alias.filter(|alias| map.contains_key(*alias))
            };
            match key {
                Some(key) => {
                    let mark = self.push_key(key);
                    if let Some(value) = map.get_mut(key) {
                        self.value(value, field.ty, field.req);
                    }
                    self.path.truncate(mark);
                }
                None if field.req != Req::Optional => {
                    let mark = self.push_key(field.name);
                    self.here("is required".to_owned(), ViolationKind::Missing);
                    self.path.truncate(mark);
                }
                None => {}
            }
        }

        if !schema.any_of.is_empty() {
            let present = schema.fields.iter().any(|f| {
                schema.any_of.contains(&f.name)
                    && (map.contains_key(f.name) || f.alias.is_some_and(|a| map.contains_key(a)))
            });
            if !present {
                let names: Vec<String> = schema.any_of.iter().map(|n| format!("`{n}`")).collect();
                self.here(
                    format!("needs one of {}", names.join(" or ")),
                    ViolationKind::Missing,
                );
            }
        }
    }

    fn value(&mut self, value: &mut Value, ty: Ty, req: Req) {
        match ty {
            Ty::Opaque => {}
            Ty::Str => {
                if !value.is_string() {
                    self.wrong("a string", value);
                }
            }
            Ty::Bool => {
                if !value.is_boolean() {
                    self.wrong("a boolean", value);
                }
            }
            Ty::Num => match value {
                Value::Number(_) => {}
                Value::String(s) => match parse_number(s) {
                    Some(n) => {
                        *value = Value::Number(n);
                        self.changed = true;
                    }
                    None => self.here(
                        "must be a number, not a string that is not one".to_owned(),
                        ViolationKind::WrongType,
                    ),
                },
                other => self.wrong("a number", other),
            },
            Ty::Int => match value {
                Value::Number(n) if n.is_i64() || n.is_u64() => {}
                Value::Number(n) => match n.as_f64().and_then(whole) {
                    Some(i) => {
                        *value = Value::from(i);
                        self.changed = true;
                    }
                    None => {
                        let shown = n.to_string();
                        self.here(
                            format!("must be an integer, not {shown}"),
                            ViolationKind::WrongType,
                        );
                    }
                },
                Value::String(s) => match parse_integer(s) {
                    Some(i) => {
                        *value = Value::from(i);
                        self.changed = true;
                    }
                    None => self.here(
                        "must be an integer, not a string that is not one".to_owned(),
                        ViolationKind::WrongType,
                    ),
                },
                other => self.wrong("an integer", other),
            },
            Ty::StrList => match value {
                Value::String(s) => {
                    let s = std::mem::take(s);
                    *value = Value::Array(vec![Value::String(s)]);
                    self.changed = true;
                }
                Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        if !item.is_string() {
                            let mark = self.push_index(i);
                            self.wrong("a string", item);
                            self.path.truncate(mark);
                        }
                    }
                }
                other => self.wrong("a string or an array of strings", other),
            },
            Ty::Obj(schema) => match value {
                Value::Object(map) => self.object(map, schema),
                other => self.wrong("an object", other),
            },
            Ty::Arr(item) => match value {
                Value::Array(items) => self.array(items, item, req),
                other => self.wrong("an array", other),
            },
            Ty::StrOrArr(item) => match value {
                Value::String(_) => {}
                Value::Array(items) => self.array(items, item, req),
                other => self.wrong("a string or an array", other),
            },
            Ty::StrOrObj(schema) => match value {
                Value::String(_) => {}
                Value::Object(map) => self.object(map, schema),
                other => self.wrong("a string or an object", other),
            },
        }
    }

    fn array(&mut self, items: &mut Vec<Value>, item: &Ty, req: Req) {
        for (i, value) in items.iter_mut().enumerate() {
            let mark = self.push_index(i);
            self.value(value, *item, Req::Optional);
            self.path.truncate(mark);
        }
        if let Ty::Obj(schema) = item {
            if schema.drop_if_empty {
                let before = items.len();
                items.retain(|v| !matches!(v, Value::Object(m) if m.is_empty()));
                self.changed |= items.len() != before;
            }
        }
        if req == Req::NonEmpty && items.is_empty() {
            self.here("must not be empty".to_owned(), ViolationKind::Invalid);
        }
    }
}

fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("a boolean ({b})"),
        Value::Number(n) => format!("a number ({n})"),
        Value::String(_) => "a string".to_owned(),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

/// Largest integer an `f64` holds exactly.
const EXACT_F64: f64 = 9_007_199_254_740_992.0;

fn whole(f: f64) -> Option<i64> {
    (f.is_finite() && f.fract() == 0.0 && f.abs() <= EXACT_F64).then_some(f as i64)
}

fn parse_number(s: &str) -> Option<Number> {
    let s = s.trim();
    if let Ok(i) = s.parse::<i64>() {
        return Some(Number::from(i));
    }
    let f: f64 = s.parse().ok()?;
    // `inf`, `NaN` and friends parse as f64 but are not JSON numbers.
    Number::from_f64(f).filter(|_| f.is_finite())
}

fn parse_integer(s: &str) -> Option<i64> {
    let s = s.trim();
    s.parse::<i64>()
        .ok()
        .or_else(|| s.parse::<f64>().ok().and_then(whole))
}
