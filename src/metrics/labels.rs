//! The label sets of the series, and the bounded set of model names they may carry.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::sync::{Arc, OnceLock, RwLock};

use prometheus_client::metrics::counter::Counter;

use prometheus_client::encoding::{
    EncodeLabel, EncodeLabelSet, EncodeLabelValue, LabelSetEncoder, LabelValueEncoder,
};

/// The model label of a request whose model is unknown.
pub(crate) const NO_MODEL: &str = "none";
/// The model label once the cap of distinct models is reached.
pub(crate) const OTHER_MODEL: &str = "other";
/// Longest model label kept (longer names are cut).
const MAX_MODEL_LABEL: usize = 96;

/// `requests_total`: what was asked and what the client got.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub(crate) struct RequestLabels {
    pub(crate) operation: &'static str,
    pub(crate) flavor: &'static str,
    pub(crate) model: Arc<str>,
    /// The status the client got; 0 when no response came (`status="none"`).
    pub(crate) status: u16,
}

impl EncodeLabelSet for RequestLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> fmt::Result {
        ("operation", self.operation).encode(encoder.encode_label())?;
        ("flavor", self.flavor).encode(encoder.encode_label())?;
        ("model", &*self.model).encode(encoder.encode_label())?;
        if self.status == 0 {
            ("status", "none").encode(encoder.encode_label())
        } else {
            ("status", self.status).encode(encoder.encode_label())
        }
    }
}

/// One label of a static value (`flavor`, `class`, `state`, ...).
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub(crate) struct Static {
    pub(crate) name: &'static str,
    pub(crate) value: &'static str,
}

impl EncodeLabelSet for Static {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> fmt::Result {
        (self.name, self.value).encode(encoder.encode_label())
    }
}

/// A key's id: the 16 hex digits of its digest ([`KeyId::hex`](crate::keys::KeyId::hex)),
/// never the key nor its fingerprint.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub(crate) struct KeyHex(pub(crate) u64);

impl EncodeLabelValue for KeyHex {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        write!(encoder, "{:016x}", self.0)
    }
}

/// `key_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub(crate) struct KeyLabels {
    pub(crate) key: KeyHex,
}

impl EncodeLabelSet for KeyLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> fmt::Result {
        ("key", self.key).encode(encoder.encode_label())
    }
}

/// `key_failures_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub(crate) struct KeyClassLabels {
    pub(crate) key: KeyHex,
    pub(crate) class: &'static str,
}

impl EncodeLabelSet for KeyClassLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> fmt::Result {
        ("key", self.key).encode(encoder.encode_label())?;
        ("class", self.class).encode(encoder.encode_label())
    }
}

/// A label of a bounded model name and a static one (`tokens_total`'s kind, ...).
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub(crate) struct ModelLabels {
    pub(crate) name: &'static str,
    pub(crate) value: &'static str,
    pub(crate) model: Arc<str>,
}

impl EncodeLabelSet for ModelLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> fmt::Result {
        (self.name, self.value).encode(encoder.encode_label())?;
        ("model", &*self.model).encode(encoder.encode_label())
    }
}

/// One model's label, and its token counters once it has reported tokens (resolved once, so
/// that counting a record's tokens is no map look-up).
#[derive(Debug)]
pub(crate) struct ModelEntry {
    pub(crate) name: Arc<str>,
    pub(crate) tokens: OnceLock<[Counter; 6]>,
}

impl ModelEntry {
    fn new(name: &str) -> Arc<ModelEntry> {
        Arc::new(ModelEntry {
            name: name.into(),
            tokens: OnceLock::new(),
        })
    }
}

/// The model names the series may carry: the first `max` distinct ones seen, the rest
/// `other`, so that a client inventing model names cannot grow the scrape without bound.
/// A name is cleaned once (characters outside `[A-Za-z0-9._:/@+*-]` become `_`, long names
/// are cut) and shared by every series that carries it.
#[derive(Debug)]
pub(crate) struct ModelNames {
    max: usize,
    seen: RwLock<HashMap<Box<str>, Arc<ModelEntry>>>,
    none: Arc<ModelEntry>,
    other: Arc<ModelEntry>,
}

impl ModelNames {
    pub(crate) fn new(max: usize) -> Self {
        ModelNames {
            max,
            seen: RwLock::default(),
            none: ModelEntry::new(NO_MODEL),
            other: ModelEntry::new(OTHER_MODEL),
        }
    }

    /// The label of `model`.
    pub(crate) fn label(&self, model: Option<&str>) -> Arc<str> {
        self.entry(model).name.clone()
    }

    /// The entry of `model`: its label and token counters.
    pub(crate) fn entry(&self, model: Option<&str>) -> Arc<ModelEntry> {
        let Some(model) = model.filter(|m| !m.is_empty()) else {
            return self.none.clone();
        };
        if let Some(name) = self
            .seen
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(model)
        {
            return name.clone();
        }
        let mut seen = self.seen.write().unwrap_or_else(|e| e.into_inner());
        if let Some(name) = seen.get(model) {
            return name.clone();
        }
        if seen.len() >= self.max {
            return self.other.clone();
        }
        let entry = ModelEntry::new(&clean(model));
        seen.insert(model.into(), entry.clone());
        entry
    }
}

/// A model name as a label value: no quote, backslash or line break can reach the exposition.
pub(crate) fn clean(model: &str) -> String {
    model
        .chars()
        .take(MAX_MODEL_LABEL)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._:/@+*-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_past_the_cap_are_other_and_names_are_cleaned() {
        let names = ModelNames::new(2);
        assert_eq!(&*names.label(None), "none");
        assert_eq!(&*names.label(Some("")), "none");
        assert_eq!(&*names.label(Some("gemini-2.5-flash")), "gemini-2.5-flash");
        assert_eq!(&*names.label(Some("a\"b\nc\\")), "a_b_c_");
        assert_eq!(&*names.label(Some("third")), "other");
        // Known names stay known after the cap.
        assert_eq!(&*names.label(Some("gemini-2.5-flash")), "gemini-2.5-flash");
        assert_eq!(clean(&"x".repeat(500)).len(), MAX_MODEL_LABEL);
    }
}
