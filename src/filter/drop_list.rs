//! Fields removed because the target does not accept them: per model, per route, or both.

use std::sync::Arc;

use super::schema::Shape;

/// One drop rule: these fields are removed from requests of these shapes for these models.
///
/// A path names a field by its keys from the top of the body, joined by `.`; arrays on the way
/// are walked through, so `tools.googleSearch` removes `googleSearch` from every tool. A key
/// matches in `camelCase` or `snake_case` (Gemini accepts both). Model patterns are exact names
/// or prefixes ending in `*`; without any, the rule applies to every model, and without any
/// shape, to every route.
///
/// ```
/// use gemini_balance::filter::{DropRule, Shape};
///
/// // gemini-2.0 models reject thinkingConfig; an OpenAI client library sends `user`.
/// let no_thinking = DropRule::new(["generationConfig.thinkingConfig"]).model("gemini-2.0-*");
/// let no_user = DropRule::new(["user"]).shape(Shape::ChatCompletions);
/// # let _ = (no_thinking, no_user);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropRule {
    paths: Vec<Vec<Key>>,
    models: Vec<ModelPattern>,
    shapes: Vec<Shape>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Key {
    pub(crate) name: Arc<str>,
    /// The other spelling (`snake_case` ↔ `camelCase`), when it differs.
    pub(crate) other: Option<Arc<str>>,
}

impl Key {
    fn new(name: &str) -> Key {
        let other = if name.contains('_') {
            to_camel(name)
        } else {
            to_snake(name)
        };
        Key {
            name: name.into(),
            other: (other != name).then(|| other.into()),
        }
    }

    pub(crate) fn matches(&self, key: &str) -> bool {
        *self.name == *key || self.other.as_deref() == Some(key)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ModelPattern {
    Exact(String),
    Prefix(String),
}

impl ModelPattern {
    fn matches(&self, model: &str) -> bool {
        let model = model.strip_prefix("models/").unwrap_or(model);
        match self {
            ModelPattern::Exact(name) => model == name,
            ModelPattern::Prefix(prefix) => model.starts_with(prefix.as_str()),
        }
    }
}

impl DropRule {
    /// Removes the fields at `paths` (such as `"frequency_penalty"`,
    /// `"generationConfig.thinkingConfig"`) on every route and model, until narrowed with
    /// [`model`](Self::model) or [`shape`](Self::shape). Empty paths are ignored.
    pub fn new<I, P>(paths: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: AsRef<str>,
    {
        let paths = paths
            .into_iter()
            .filter_map(|p| {
                let keys: Vec<Key> = p
                    .as_ref()
                    .split('.')
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .map(Key::new)
                    .collect();
                (!keys.is_empty()).then_some(keys)
            })
            .collect();
        DropRule {
            paths,
            models: Vec::new(),
            shapes: Vec::new(),
        }
    }

    /// Applies the rule to this model: an exact name, or a prefix ending in `*`
    /// (`"gemini-2.0-*"`). May be called several times.
    pub fn model(mut self, pattern: &str) -> Self {
        let pattern = pattern.trim();
        let pattern = pattern.strip_prefix("models/").unwrap_or(pattern);
        self.models.push(match pattern.strip_suffix('*') {
            Some(prefix) => ModelPattern::Prefix(prefix.to_owned()),
            None => ModelPattern::Exact(pattern.to_owned()),
        });
        self
    }

    /// Applies the rule to requests of this shape. May be called several times.
    pub fn shape(mut self, shape: Shape) -> Self {
        self.shapes.push(shape);
        self
    }

    fn applies(&self, shape: Shape, model: Option<&str>) -> bool {
        let shape_ok = self.shapes.is_empty() || self.shapes.contains(&shape);
        let model_ok = self.models.is_empty()
            || model.is_some_and(|m| self.models.iter().any(|p| p.matches(m)));
        shape_ok && model_ok
    }
}

/// Every configured [`DropRule`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DropList {
    rules: Vec<DropRule>,
}

impl DropList {
    /// No rules: nothing is removed for being unwanted (nulls still are).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a rule.
    pub fn rule(mut self, rule: DropRule) -> Self {
        self.rules.push(rule);
        self
    }

    /// `true` without any rule.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The paths to remove for a request.
    pub(crate) fn paths_for<'a>(
        &'a self,
        shape: Shape,
        model: Option<&'a str>,
    ) -> impl Iterator<Item = &'a [Key]> + 'a {
        self.rules
            .iter()
            .filter(move |r| r.applies(shape, model))
            .flat_map(|r| r.paths.iter().map(Vec::as_slice))
    }
}

fn to_snake(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn to_camel(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = !out.is_empty();
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_both_spellings() {
        let k = Key::new("thinkingConfig");
        assert!(k.matches("thinkingConfig") && k.matches("thinking_config"));
        let k = Key::new("frequency_penalty");
        assert!(k.matches("frequency_penalty") && k.matches("frequencyPenalty"));
        let k = Key::new("seed");
        assert!(k.matches("seed") && k.other.is_none());
    }

    #[test]
    fn rules_narrow_by_model_and_shape() {
        let rule = DropRule::new(["a"])
            .model("gemini-2.0-*")
            .model("models/gemma-3")
            .shape(Shape::GenerateContent);
        assert!(rule.applies(Shape::GenerateContent, Some("gemini-2.0-flash")));
        assert!(rule.applies(Shape::GenerateContent, Some("models/gemma-3")));
        assert!(!rule.applies(Shape::GenerateContent, Some("gemma-3-27b")));
        assert!(!rule.applies(Shape::GenerateContent, Some("gemini-2.5-pro")));
        assert!(!rule.applies(Shape::GenerateContent, None));
        assert!(!rule.applies(Shape::ChatCompletions, Some("gemini-2.0-flash")));
        assert!(DropRule::new(["a"]).applies(Shape::Embeddings, None));
    }
}
