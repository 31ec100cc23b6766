//! JSON Schema → the OpenAPI subset Gemini accepts for function parameters and response schemas.
//!
//! Gemini's `Schema` knows `type`, `format`, `title`, `description`, `nullable`, `enum`,
//! `properties`, `required`, `items`, `anyOf`, `propertyOrdering`, `default`, `example`, and the
//! numeric/length/count bounds. Anything else (`$schema`, `$ref`, `additionalProperties`,
//! `exclusiveMinimum`, `if`/`then`, ...) makes it answer 400, so it is removed; a few keywords
//! are translated instead of dropped: `const` → `enum`, `oneOf` → `anyOf`, a type list with
//! `"null"` → `nullable`.

use serde_json::{Map, Value};

const KEPT: &[&str] = &[
    "type",
    "format",
    "title",
    "description",
    "nullable",
    "enum",
    "maxItems",
    "minItems",
    "properties",
    "required",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "example",
    "anyOf",
    "propertyOrdering",
    "default",
    "items",
    "minimum",
    "maximum",
];

/// Cleans a JSON Schema for Gemini (see the module docs).
///
/// ```
/// use serde_json::json;
/// use gemini_balance::openai::clean_schema;
///
/// let schema = json!({
///     "$schema": "http://json-schema.org/draft-07/schema#",
///     "type": "object",
///     "additionalProperties": false,
///     "properties": {
///         "unit": {"type": ["string", "null"], "const": "celsius"},
///         "days": {"type": "integer", "exclusiveMinimum": 0}
///     },
///     "required": ["unit"]
/// });
/// assert_eq!(clean_schema(&schema), json!({
///     "type": "object",
///     "properties": {
///         "unit": {"type": "string", "nullable": true, "enum": ["celsius"]},
///         "days": {"type": "integer"}
///     },
///     "required": ["unit"]
/// }));
/// ```
pub fn clean_schema(schema: &Value) -> Value {
    let Value::Object(map) = schema else {
        return schema.clone();
    };
    let mut out = Map::new();
    for (key, value) in map {
        match key.as_str() {
            "properties" => {
                if let Value::Object(props) = value {
                    let cleaned: Map<String, Value> = props
                        .iter()
                        .map(|(name, prop)| (name.clone(), clean_schema(prop)))
                        .collect();
                    out.insert(key.clone(), Value::Object(cleaned));
                }
            }
            "items" => {
                out.insert(key.clone(), clean_schema(value));
            }
            "anyOf" | "oneOf" => {
                if let Value::Array(options) = value {
                    let options: Vec<Value> = options.iter().map(clean_schema).collect();
                    out.insert("anyOf".to_owned(), Value::Array(options));
                }
            }
            "type" => match value {
                Value::Array(types) => {
                    let non_null: Vec<&Value> = types
                        .iter()
                        .filter(|t| t.as_str() != Some("null"))
                        .collect();
                    if non_null.len() < types.len() {
                        out.insert("nullable".to_owned(), Value::Bool(true));
                    }
                    if let Some(first) = non_null.first() {
                        out.insert(key.clone(), (*first).clone());
                    }
                }
                other => {
                    out.insert(key.clone(), other.clone());
                }
            },
            "const" => {
                out.insert("enum".to_owned(), Value::Array(vec![value.clone()]));
            }
            "enum" => {
                // Gemini wants string enums.
                if let Value::Array(items) = value {
                    let items = items
                        .iter()
                        .filter(|v| !v.is_null())
                        .map(|v| match v {
                            Value::String(_) => v.clone(),
                            other => Value::String(other.to_string()),
                        })
                        .collect();
                    out.insert(key.clone(), Value::Array(items));
                }
            }
            _ if KEPT.contains(&key.as_str()) => {
                out.insert(key.clone(), value.clone());
            }
            _ => {}
        }
    }
    Value::Object(out)
}

/// `true` for a schema that says nothing: an object with no properties (Gemini rejects a
/// `parameters` object with empty `properties`, so such parameters are left out).
pub(crate) fn is_empty_object(schema: &Value) -> bool {
    let is_object = schema.get("type").and_then(Value::as_str) == Some("object");
    let no_properties = schema
        .get("properties")
        .and_then(Value::as_object)
        .is_none_or(|p| p.is_empty());
    is_object && no_properties
}
