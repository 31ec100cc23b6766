//! A key's state as a database row, for every SQL store: [`KeyRow::of`] a snapshot when saving,
//! [`KeyRow::into_snapshot`] when loading.
//!
//! Reading never fails on a bad row: an id that is not 16 hex digits skips the row, an unknown
//! status or class is read as "active" or "no last error", a malformed cooldown list as no
//! cooldown; each with a warning. Error details pass through
//! [`redact_keys`](crate::redact::redact_keys) before they are stored, and NUL characters
//! (which PostgreSQL's text refuses) become U+FFFD.

use serde::{Deserialize, Serialize};

use super::logs::without_nul;
use super::time::{ms_of, time_of};
use crate::classify::FailureClass;
use crate::keys::{DisabledReason, KeyId, KeySnapshot, KeyStatus, LastError, ModelCooldown};
use crate::redact::redact_keys;

/// One cooldown as kept in the `cooldowns` JSON column.
#[derive(Debug, Serialize, Deserialize)]
struct StoredCooldown {
    model: String,
    until_ms: i64,
}

/// The columns of a `key_state` row (`updated_ms` aside), in table order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyRow {
    pub key_id: String,
    pub key_mask: String,
    pub status: String,
    pub disabled_kind: Option<String>,
    pub disabled_status: Option<i64>,
    pub disabled_detail: Option<String>,
    pub disabled_count: Option<i64>,
    pub consecutive_failures: i64,
    pub cooldowns: String,
    pub requests: i64,
    pub successes: i64,
    pub failures: i64,
    pub weight: i64,
    pub last_used_ms: Option<i64>,
    pub last_error_class: Option<String>,
    pub last_error_status: Option<i64>,
    pub last_error_detail: Option<String>,
    pub last_error_ms: Option<i64>,
}

fn count(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl KeyRow {
    /// The row of a snapshot.
    pub(crate) fn of(state: &KeySnapshot) -> KeyRow {
        let (status, cooldowns) = match &state.status {
            KeyStatus::Active => ("active", Vec::new()),
            KeyStatus::CoolingDown(models) => ("cooling_down", models.clone()),
            KeyStatus::Disabled(_) => ("disabled", Vec::new()),
        };
        let (kind, d_status, d_detail, d_count) = match &state.status {
            KeyStatus::Disabled(DisabledReason::Rejected { status, reason }) => (
                Some("rejected"),
                Some(i64::from(*status)),
                Some(without_nul(redact_keys(reason)).into_owned()),
                None,
            ),
            KeyStatus::Disabled(DisabledReason::TooManyFailures { count }) => (
                Some("too_many_failures"),
                None,
                None,
                Some(i64::from(*count)),
            ),
            KeyStatus::Disabled(DisabledReason::Manual) => (Some("manual"), None, None, None),
            _ => (None, None, None, None),
        };
        let cooldowns: Vec<StoredCooldown> = cooldowns
            .iter()
            .map(|c| StoredCooldown {
                model: c.model.clone(),
                until_ms: ms_of(c.until),
            })
            .collect();
        let last_error = state.last_error.as_ref();
        KeyRow {
            key_id: state.id.hex(),
            key_mask: state.id.mask().to_owned(),
            status: status.to_owned(),
            disabled_kind: kind.map(str::to_owned),
            disabled_status: d_status,
            disabled_detail: d_detail,
            disabled_count: d_count,
            consecutive_failures: i64::from(state.consecutive_failures),
            cooldowns: serde_json::to_string(&cooldowns).unwrap_or_else(|_| "[]".to_owned()),
            requests: i64::try_from(state.requests).unwrap_or(i64::MAX),
            successes: i64::try_from(state.successes).unwrap_or(i64::MAX),
            failures: i64::try_from(state.failures).unwrap_or(i64::MAX),
            weight: i64::from(state.weight),
            last_used_ms: state.last_used.map(ms_of),
            last_error_class: last_error.map(|e| e.class.name().to_owned()),
            last_error_status: last_error
                .and_then(|e| e.class.status())
                .map(|s| i64::from(s.as_u16())),
            last_error_detail: last_error
                .map(|e| without_nul(redact_keys(e.class.detail())).into_owned()),
            last_error_ms: last_error.map(|e| ms_of(e.at)),
        }
    }

    /// The snapshot a row holds; `None` (with a warning) when its key id is unreadable.
    pub(crate) fn into_snapshot(self) -> Option<KeySnapshot> {
        let mask = if self.key_mask.is_empty() {
            "…".to_owned()
        } else {
            self.key_mask
        };
        let Some(id) = KeyId::from_hex(&self.key_id, &mask) else {
            tracing::warn!(key_id = %self.key_id, "skipping a key_state row whose key id is not 16 hex digits");
            return None;
        };
        let mut state = KeySnapshot::new(id);
        state.status = match self.status.as_str() {
            "active" => KeyStatus::Active,
            "cooling_down" => match serde_json::from_str::<Vec<StoredCooldown>>(&self.cooldowns) {
                Ok(list) => KeyStatus::CoolingDown(
                    list.into_iter()
                        .map(|c| ModelCooldown {
                            model: c.model,
                            until: time_of(c.until_ms),
                        })
                        .collect(),
                ),
                Err(e) => {
                    tracing::warn!(key = %state.id, error = %e, "ignoring a malformed cooldown list");
                    KeyStatus::Active
                }
            },
            "disabled" => KeyStatus::Disabled(match self.disabled_kind.as_deref() {
                Some("rejected") => DisabledReason::Rejected {
                    status: self
                        .disabled_status
                        .and_then(|s| u16::try_from(s).ok())
                        .unwrap_or(0),
                    reason: self.disabled_detail.unwrap_or_default(),
                },
                Some("too_many_failures") => DisabledReason::TooManyFailures {
                    count: self
                        .disabled_count
                        .and_then(|c| u32::try_from(c).ok())
                        .unwrap_or(0),
                },
                Some("manual") => DisabledReason::Manual,
                other => {
                    tracing::warn!(key = %state.id, kind = ?other, "unknown disabled reason; reading it as manual");
                    DisabledReason::Manual
                }
            }),
            other => {
                tracing::warn!(key = %state.id, status = other, "unknown key status; reading it as active");
                KeyStatus::Active
            }
        };
        state.consecutive_failures =
            u32::try_from(count(self.consecutive_failures)).unwrap_or(u32::MAX);
        state.requests = count(self.requests);
        state.successes = count(self.successes);
        state.failures = count(self.failures);
        state.weight = u32::try_from(count(self.weight)).unwrap_or(1).max(1);
        state.last_used = self.last_used_ms.map(time_of);
        if let (Some(class), Some(at)) = (self.last_error_class, self.last_error_ms) {
            let status = self.last_error_status.and_then(|s| u16::try_from(s).ok());
            let detail = self.last_error_detail.unwrap_or_default();
            match FailureClass::from_stored(&class, status, &detail) {
                Some(class) => {
                    state.last_error = Some(LastError {
                        class,
                        at: time_of(at),
                    })
                }
                None => {
                    tracing::warn!(key = %state.id, class, "unknown failure class; dropping the last error")
                }
            }
        }
        Some(state)
    }
}
