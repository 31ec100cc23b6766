//! Model names with Gemini-Balance's suffixes: `-search`, `-image`, `-non-thinking`.
//!
//! `X-search` asks for model `X` with the Google Search tool, `X-image` for `X` answering with
//! images, `X-non-thinking` for `X` with thinking turned off. Suffixes combine
//! (`X-search-non-thinking`); all of them are stripped before the name goes upstream (✎ the Python
//! server kept `-search` on `X-search-non-thinking`). `-search` and `-image` only count for the
//! models configured for them (`SEARCH_MODELS`, `IMAGE_MODELS`), so a real model whose name ends
//! in `-image` still works.

use serde_json::{json, Value};

/// Which models get which derived variants, and which are hidden.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelRules {
    /// Models that get a `-search` variant (`SEARCH_MODELS`).
    pub search_models: Vec<String>,
    /// Models that get an `-image` variant (`IMAGE_MODELS`).
    pub image_models: Vec<String>,
    /// Models that get a `-non-thinking` variant (`THINKING_MODELS`); they count as models
    /// that think ([`ChatOptions::thinks`](super::ChatOptions::thinks)).
    pub thinking_models: Vec<String>,
    /// Models hidden from lists and refused (`FILTERED_MODELS`).
    pub filtered_models: Vec<String>,
}

/// A requested model name, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedModel {
    /// What the client asked for, suffixes included.
    pub requested: String,
    /// The model to call upstream.
    pub upstream: String,
    /// Add the Google Search tool.
    pub search: bool,
    /// Ask for text and image output.
    pub image: bool,
    /// Turn thinking off.
    pub non_thinking: bool,
}

impl ModelRules {
    /// Resolves a requested name (a leading `models/` is accepted).
    ///
    /// ```
    /// use gemini_balance::openai::ModelRules;
    ///
    /// let rules = ModelRules { search_models: vec!["gemini-2.5-flash".into()], ..Default::default() };
    /// let m = rules.resolve("gemini-2.5-flash-search-non-thinking");
    /// assert_eq!(m.upstream, "gemini-2.5-flash");
    /// assert!(m.search && m.non_thinking && !m.image);
    /// // Not configured for search: the name is taken as it is.
    /// assert_eq!(rules.resolve("gemini-2.0-flash-search").upstream, "gemini-2.0-flash-search");
    /// ```
    pub fn resolve(&self, requested: &str) -> ResolvedModel {
        let requested = requested.trim().trim_start_matches("models/");
        // Peel every known suffix off the end, then keep the longest peeling that the
        // configuration allows (`-search`/`-image` only on configured models).
        let mut chain: Vec<(&str, &str)> = Vec::new();
        let mut name = requested;
        'peel: while chain.len() < 3 {
            for suffix in ["-non-thinking", "-search", "-image"] {
                if let Some(base) = name.strip_suffix(suffix) {
                    if !base.is_empty() && chain.iter().all(|(s, _)| *s != suffix) {
                        chain.push((suffix, base));
                        name = base;
                        continue 'peel;
                    }
                }
            }
            break;
        }
        for taken in (0..=chain.len()).rev() {
            let upstream = if taken == 0 {
                requested
            } else {
                chain[taken - 1].1
            };
            let has = |suffix: &str| chain[..taken].iter().any(|(s, _)| *s == suffix);
            let (search, image, non_thinking) =
                (has("-search"), has("-image"), has("-non-thinking"));
            let allowed = (!search || self.search_models.iter().any(|m| m == upstream))
                && (!image || self.image_models.iter().any(|m| m == upstream));
            if allowed {
                return ResolvedModel {
                    requested: requested.to_owned(),
                    upstream: upstream.to_owned(),
                    search,
                    image,
                    non_thinking,
                };
            }
        }
        ResolvedModel {
            requested: requested.to_owned(),
            upstream: requested.to_owned(),
            search: false,
            image: false,
            non_thinking: false,
        }
    }

    /// `true` when the model (requested or upstream name) is in `FILTERED_MODELS`.
    pub fn is_filtered(&self, model: &ResolvedModel) -> bool {
        self.filtered_models
            .iter()
            .any(|f| f == &model.requested || f == &model.upstream)
    }

    /// The upstream's model list (Gemini's `{"models": [...]}`) without the filtered models and
    /// with the derived variants added right after their base.
    pub fn expand_model_list(&self, list: &Value) -> Value {
        let models = list
            .get("models")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut out = Vec::with_capacity(models.len());
        for model in models {
            let id = model
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .trim_start_matches("models/")
                .to_owned();
            if self.filtered_models.contains(&id) {
                continue;
            }
            out.push(model.clone());
            for (list, suffix, label) in [
                (&self.search_models, "-search", " For Search"),
                (&self.image_models, "-image", " For Image"),
                (&self.thinking_models, "-non-thinking", " Non Thinking"),
            ] {
                if list.contains(&id) {
                    let mut derived = model.clone();
                    derived["name"] = json!(format!("models/{id}{suffix}"));
                    let display = model
                        .get("displayName")
                        .and_then(Value::as_str)
                        .unwrap_or(&id)
                        .to_owned();
                    derived["displayName"] = json!(format!("{display}{label}"));
                    derived["description"] = json!(format!("{display}{label}"));
                    out.push(derived);
                }
            }
        }
        let mut result = list.clone();
        if let Value::Object(map) = &mut result {
            map.insert("models".to_owned(), Value::Array(out));
        }
        result
    }
}

/// Puts `safety` in a Gemini request body that has no safety settings of its own.
pub(crate) fn default_safety_settings(body: &mut Value, safety: &Value) {
    if let Value::Object(map) = body {
        if !map.contains_key("safetySettings") && !map.contains_key("safety_settings") {
            map.insert("safetySettings".to_owned(), safety.clone());
        }
    }
}

/// [`default_safety_settings`] without parsing the body, for the common case: when the body
/// bytes do not mention `safetySettings` (or `safety_settings`) anywhere, `safety_json` is
/// spliced in before the closing brace of the top-level object. `None` when the body mentions
/// them (parse it and use [`default_safety_settings`]) or is not a JSON object's text.
pub(crate) fn splice_default_safety_settings(body: &[u8], safety_json: &str) -> Option<Vec<u8>> {
    // One pass over the body (this runs for every generateContent request).
    let mentions = body.iter().enumerate().any(|(i, &b)| {
        b == b's'
            && (body[i..].starts_with(b"safetySettings")
                || body[i..].starts_with(b"safety_settings"))
    });
    if mentions {
        return None;
    }
    let open = body.iter().position(|b| !b.is_ascii_whitespace())?;
    let close = body.iter().rposition(|b| !b.is_ascii_whitespace())?;
    if open >= close || body[open] != b'{' || body[close] != b'}' {
        return None;
    }
    let empty = body[open + 1..close].iter().all(u8::is_ascii_whitespace);
    let mut out = Vec::with_capacity(body.len() + safety_json.len() + 20);
    out.extend_from_slice(&body[..close]);
    if !empty {
        out.push(b',');
    }
    out.extend_from_slice(b"\"safetySettings\":");
    out.extend_from_slice(safety_json.as_bytes());
    out.extend_from_slice(&body[close..]);
    Some(out)
}

/// A Gemini model list as OpenAI's `GET /v1/models` answer.
pub fn openai_model_list(gemini_list: &Value, created: u64) -> Value {
    let data: Vec<Value> = gemini_list
        .get("models")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| m.get("name").and_then(Value::as_str))
        .map(|name| {
            json!({
                "id": name.trim_start_matches("models/"),
                "object": "model",
                "created": created,
                "owned_by": "google",
            })
        })
        .collect();
    json!({ "object": "list", "data": data })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safety_settings_spliced_like_parsed() {
        let safety = json!([{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "OFF"}]);
        let text = safety.to_string();
        for body in [
            r#"{"contents":[{"parts":[{"text":"hi }"}]}]}"#,
            "  {\n \"contents\": [] } \n",
            "{}",
            "{ }",
        ] {
            let spliced = splice_default_safety_settings(body.as_bytes(), &text).unwrap();
            let spliced: Value = serde_json::from_slice(&spliced).unwrap();
            let mut parsed: Value = serde_json::from_str(body).unwrap();
            default_safety_settings(&mut parsed, &safety);
            assert_eq!(spliced, parsed, "{body}");
        }
        for body in [
            r#"{"safetySettings": []}"#,
            r#"{"safety_settings": []}"#,
            r#"{"contents": [{"parts": [{"text": "what are safetySettings?"}]}]}"#,
            "[1, 2]",
            "",
            "nonsense",
        ] {
            assert!(
                splice_default_safety_settings(body.as_bytes(), &text).is_none(),
                "{body}"
            );
        }
    }

    fn rules() -> ModelRules {
        ModelRules {
            search_models: vec!["gemini-2.5-flash".into()],
            image_models: vec!["gemini-2.0-flash-exp".into()],
            thinking_models: vec!["gemini-2.5-pro".into()],
            filtered_models: vec!["gemini-1.0-pro".into()],
        }
    }

    #[test]
    fn suffixes_in_any_order() {
        let r = rules();
        let cases = [
            ("gemini-2.5-flash", "gemini-2.5-flash", false, false, false),
            (
                "models/gemini-2.5-flash-search",
                "gemini-2.5-flash",
                true,
                false,
                false,
            ),
            (
                "gemini-2.5-flash-search-non-thinking",
                "gemini-2.5-flash",
                true,
                false,
                true,
            ),
            (
                "gemini-2.5-flash-non-thinking-search",
                "gemini-2.5-flash",
                true,
                false,
                true,
            ),
            (
                "gemini-2.0-flash-exp-image",
                "gemini-2.0-flash-exp",
                false,
                true,
                false,
            ),
            (
                "gemini-2.5-flash-image",
                "gemini-2.5-flash-image",
                false,
                false,
                false,
            ),
            (
                "gemini-2.5-pro-non-thinking",
                "gemini-2.5-pro",
                false,
                false,
                true,
            ),
            (
                "x-non-thinking-non-thinking",
                "x-non-thinking",
                false,
                false,
                true,
            ),
        ];
        for (input, upstream, search, image, non_thinking) in cases {
            let m = r.resolve(input);
            assert_eq!(
                (m.upstream.as_str(), m.search, m.image, m.non_thinking),
                (upstream, search, image, non_thinking),
                "{input}"
            );
        }
        assert!(r.is_filtered(&r.resolve("gemini-1.0-pro")));
        assert!(!r.is_filtered(&r.resolve("gemini-2.5-pro")));
    }

    #[test]
    fn default_safety_settings_only_when_none() {
        let safety = json!([{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "OFF"}]);
        let mut body = json!({});
        default_safety_settings(&mut body, &safety);
        assert_eq!(body["safetySettings"], safety);
        let mut own = json!({"safety_settings": []});
        default_safety_settings(&mut own, &safety);
        assert!(
            own.get("safetySettings").is_none(),
            "the client's own settings win"
        );
    }

    #[test]
    fn model_list_is_filtered_and_expanded() {
        let list = json!({"models": [
            {"name": "models/gemini-1.0-pro", "displayName": "Old"},
            {"name": "models/gemini-2.5-flash", "displayName": "Flash"},
            {"name": "models/gemini-2.5-pro", "displayName": "Pro"},
        ]});
        let out = rules().expand_model_list(&list);
        let names: Vec<&str> = out["models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "models/gemini-2.5-flash",
                "models/gemini-2.5-flash-search",
                "models/gemini-2.5-pro",
                "models/gemini-2.5-pro-non-thinking"
            ]
        );
        assert_eq!(out["models"][1]["displayName"], "Flash For Search");
        let openai = openai_model_list(&out, 7);
        assert_eq!(openai["data"][3]["id"], "gemini-2.5-pro-non-thinking");
        assert_eq!(openai["object"], "list");
    }

    #[test]
    fn splices_safety_settings_into_a_body_without_them() {
        let body = br#"{"contents": []}"#;
        let out = splice_default_safety_settings(body, r#"[{"category":"X","threshold":"OFF"}]"#)
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(json["safetySettings"][0]["threshold"], "OFF");
        assert!(splice_default_safety_settings(br#"{"safetySettings": []}"#, "[]").is_none());
    }
}
