//! The changes one instance tells the others about, and their wire form.
//!
//! Only what every instance must act on travels: a key disabled (with its reason), cooled for a
//! model until a wall-clock time, reset, added or removed, and the name of a changed setting.
//! Per-instance counters (requests, failures in a row, in flight) stay local.

use serde::{Deserialize, Serialize};

use crate::fingerprint::KeyId;
use crate::keys::DisabledReason;
use crate::redact::redact_keys;

/// Characters of an upstream's rejection reason kept in a row: enough for Google's reasons
/// (`API_KEY_INVALID`, a sentence), bounded whatever an upstream sends.
const MAX_REASON: usize = 256;
/// Characters of a model name kept in a row (model names come from requests).
const MAX_MODEL: usize = 128;

/// At most `max` characters of `text`.
fn bounded(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => text[..end].to_owned(),
        None => text.to_owned(),
    }
}

/// One shared change, stamped with when and where it was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedEvent {
    /// The instance that made the change (random per process start).
    pub origin: u64,
    /// Wall-clock milliseconds since the Unix epoch, raised above any stamp the instance had
    /// already seen for the key (so a change made after seeing another is ordered after it).
    pub at_ms: u64,
    /// What changed.
    pub change: Change,
}

impl SharedEvent {
    /// The order in which conflicting changes win: later stamp, then higher origin.
    pub fn stamp(&self) -> Stamp {
        Stamp {
            at_ms: self.at_ms,
            origin: self.origin,
        }
    }
}

/// Orders conflicting changes of one key: the later one wins everywhere (last writer wins).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp {
    /// Wall-clock milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The instance, to break ties.
    pub origin: u64,
}

/// What changed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// The key no longer serves, for this reason.
    Disabled {
        /// The key.
        key: KeyId,
        /// Why.
        reason: DisabledReason,
    },
    /// The key does not serve `model` (`*`: any model) until `until_ms`.
    Cooled {
        /// The key.
        key: KeyId,
        /// The model.
        model: String,
        /// Wall-clock milliseconds since the Unix epoch.
        until_ms: u64,
    },
    /// The key is active again: enabled, no cooldowns.
    Reset {
        /// The key.
        key: KeyId,
    },
    /// The key was added. `sealed` is the key itself, encrypted for the instances that share
    /// the sealing key ([`KeySealer`](super::KeySealer)); without it the others only learn the id.
    Added {
        /// The key.
        key: KeyId,
        /// The sealed secret, if the adding instance had a sealer.
        sealed: Option<String>,
    },
    /// The key was removed.
    Removed {
        /// The key.
        key: KeyId,
    },
    /// A live setting changed; the others re-read it from where settings are kept.
    Setting {
        /// The setting's name.
        name: String,
    },
}

impl Change {
    /// The key the change is about (`None` for a setting).
    pub fn key(&self) -> Option<&KeyId> {
        match self {
            Change::Disabled { key, .. }
            | Change::Cooled { key, .. }
            | Change::Reset { key }
            | Change::Added { key, .. }
            | Change::Removed { key } => Some(key),
            Change::Setting { .. } => None,
        }
    }
}

/// The JSON row a transport stores.
#[derive(Serialize, Deserialize)]
struct Wire {
    o: String,
    t: u64,
    k: &'static str,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mask: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    until: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sealed: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
}

#[derive(Deserialize)]
struct WireIn {
    o: String,
    t: u64,
    k: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    mask: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    until: Option<u64>,
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    sealed: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

impl SharedEvent {
    /// The event as a line of JSON (ids and masks, never a secret in clear: a key quoted in a
    /// rejection reason is masked). A reason is cut to 256 characters, a model name to 128.
    pub fn to_json(&self) -> String {
        let mut wire = Wire {
            o: format!("{:016x}", self.origin),
            t: self.at_ms,
            k: "",
            id: None,
            mask: None,
            model: None,
            until: None,
            status: None,
            reason: None,
            sealed: None,
            name: None,
        };
        if let Some(key) = self.change.key() {
            wire.id = Some(key.hex());
            wire.mask = Some(key.mask().to_owned());
        }
        match &self.change {
            Change::Disabled { reason, .. } => {
                wire.k = "disabled";
                match reason {
                    DisabledReason::Rejected { status, reason } => {
                        wire.status = Some(*status);
                        // An upstream's words can quote the key.
                        wire.reason = Some(bounded(&redact_keys(reason), MAX_REASON));
                    }
                    DisabledReason::TooManyFailures { count } => {
                        wire.reason = Some(format!("failures:{count}"));
                    }
                    DisabledReason::Manual => wire.reason = Some("manual".into()),
                }
            }
            Change::Cooled {
                model, until_ms, ..
            } => {
                wire.k = "cooled";
                wire.model = Some(bounded(model, MAX_MODEL));
                wire.until = Some(*until_ms);
            }
            Change::Reset { .. } => wire.k = "reset",
            Change::Added { sealed, .. } => {
                wire.k = "added";
                wire.sealed = sealed.clone();
            }
            Change::Removed { .. } => wire.k = "removed",
            Change::Setting { name } => {
                wire.k = "setting";
                wire.name = Some(name.clone());
            }
        }
        // Serializing plain strings and numbers cannot fail.
        serde_json::to_string(&wire).unwrap_or_default()
    }

    /// Reads a line written by [`to_json`](Self::to_json); `None` for anything else (a row
    /// written by a newer version is skipped, not fatal).
    pub fn from_json(text: &str) -> Option<SharedEvent> {
        let wire: WireIn = serde_json::from_str(text).ok()?;
        let origin = u64::from_str_radix(&wire.o, 16).ok()?;
        let key = || -> Option<KeyId> {
            KeyId::from_hex(wire.id.as_deref()?, wire.mask.as_deref().unwrap_or(""))
        };
        let change = match wire.k.as_str() {
            "disabled" => {
                let reason = match (wire.status, wire.reason.as_deref()) {
                    (Some(status), Some(reason)) => DisabledReason::Rejected {
                        status,
                        reason: reason.to_owned(),
                    },
                    (None, Some("manual")) => DisabledReason::Manual,
                    (None, Some(other)) => DisabledReason::TooManyFailures {
                        count: other.strip_prefix("failures:")?.parse().ok()?,
                    },
                    _ => return None,
                };
                Change::Disabled {
                    key: key()?,
                    reason,
                }
            }
            "cooled" => Change::Cooled {
                key: key()?,
                model: wire.model.clone()?,
                until_ms: wire.until?,
            },
            "reset" => Change::Reset { key: key()? },
            "added" => Change::Added {
                key: key()?,
                sealed: wire.sealed.clone(),
            },
            "removed" => Change::Removed { key: key()? },
            "setting" => Change::Setting {
                name: wire.name.clone()?,
            },
            _ => return None,
        };
        Some(SharedEvent {
            origin,
            at_ms: wire.t,
            change,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> KeyId {
        KeyId::of("AIzaSyA1234567890abcdefghijklmnopqrstuv")
    }

    #[test]
    fn every_change_survives_the_wire() {
        let changes = [
            Change::Disabled {
                key: id(),
                reason: DisabledReason::Rejected {
                    status: 400,
                    reason: "API_KEY_INVALID".into(),
                },
            },
            Change::Disabled {
                key: id(),
                reason: DisabledReason::TooManyFailures { count: 3 },
            },
            Change::Disabled {
                key: id(),
                reason: DisabledReason::Manual,
            },
            Change::Cooled {
                key: id(),
                model: "gemini-2.0-flash".into(),
                until_ms: 1_700_000_000_123,
            },
            Change::Reset { key: id() },
            Change::Added {
                key: id(),
                sealed: Some("abc".into()),
            },
            Change::Added {
                key: id(),
                sealed: None,
            },
            Change::Removed { key: id() },
            Change::Setting {
                name: "MAX_FAILURES".into(),
            },
        ];
        for change in changes {
            let event = SharedEvent {
                origin: u64::MAX - 7,
                at_ms: 42,
                change,
            };
            let json = event.to_json();
            assert!(!json.contains("AIzaSyA1234567890"), "{json}");
            let back = SharedEvent::from_json(&json).expect(&json);
            assert_eq!(back, event);
            assert_eq!(
                back.change.key().map(|k| k.mask()),
                event.change.key().map(|k| k.mask())
            );
        }
    }

    #[test]
    fn unknown_rows_are_skipped() {
        assert_eq!(SharedEvent::from_json("{}"), None);
        assert_eq!(
            SharedEvent::from_json(r#"{"o":"1","t":1,"k":"future"}"#),
            None
        );
        assert_eq!(SharedEvent::from_json("not json"), None);
    }

    #[test]
    fn rows_stay_small_and_free_of_keys() {
        let secret = "AIzaSyZ1234567890abcdefghijklmnopqrstuv";
        let event = SharedEvent {
            origin: 1,
            at_ms: 42,
            change: Change::Disabled {
                key: id(),
                reason: DisabledReason::Rejected {
                    status: 403,
                    reason: format!(
                        "Consumer 'api_key:{secret}' suspended. {}",
                        "é".repeat(100_000)
                    ),
                },
            },
        };
        let json = event.to_json();
        assert!(!json.contains(secret), "{json}");
        assert!(json.contains("api_key:AIza…stuv"), "{json}");
        assert!(json.len() < 1024, "{}", json.len());
        assert!(SharedEvent::from_json(&json).is_some());
        let event = SharedEvent {
            origin: 1,
            at_ms: 42,
            change: Change::Cooled {
                key: id(),
                model: "m".repeat(1_000_000),
                until_ms: 43,
            },
        };
        let json = event.to_json();
        assert!(json.len() < 1024, "{}", json.len());
        let Some(SharedEvent {
            change: Change::Cooled { model, .. },
            ..
        }) = SharedEvent::from_json(&json)
        else {
            panic!("{json}")
        };
        assert_eq!(model.len(), 128);
    }
}
