//! The Python server's `t_settings`, brought over as the changes that make this proxy's
//! effective configuration the Python server's.
//!
//! The Python server writes every setting back to `t_settings` at start (72 rows), and a row
//! overrides the environment (`sync_initial_settings`). Pinning all 72 here would freeze values
//! the user may later change in `.env`. So a row is imported only where its value, read as
//! this proxy reads settings (`settings::parse`, then the admin API's checks), differs from what
//! `.env` and the environment give; a change kept before for a setting whose row now matches
//! the environment is forgotten. Kept like an admin change (`state::keep`): secrets in the
//! secrets file, the rest in the store's settings table.
//!
//! Not imported, and reported: values this proxy refuses (named, never shown when secret),
//! settings it reads at start only (set them in `.env`), the Python server's own database
//! settings, and Python settings this proxy does not have.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::settings::{self, Settings, Support};

/// Every field of the Python server's `Settings` class (`app/config/config.py`): rows with
/// other names are ignored by it (its `.env` import writes any variable to `t_settings`).
pub const PYTHON_SETTINGS: &[&str] = &[
    "DATABASE_TYPE",
    "SQLITE_DATABASE",
    "MYSQL_HOST",
    "MYSQL_PORT",
    "MYSQL_USER",
    "MYSQL_PASSWORD",
    "MYSQL_DATABASE",
    "MYSQL_SOCKET",
    "API_KEYS",
    "ALLOWED_TOKENS",
    "BASE_URL",
    "AUTH_TOKEN",
    "MAX_FAILURES",
    "TEST_MODEL",
    "TIME_OUT",
    "MAX_RETRIES",
    "PROXIES",
    "PROXIES_USE_CONSISTENCY_HASH_BY_API_KEY",
    "VERTEX_API_KEYS",
    "VERTEX_EXPRESS_BASE_URL",
    "URL_NORMALIZATION_ENABLED",
    "CUSTOM_HEADERS",
    "SEARCH_MODELS",
    "IMAGE_MODELS",
    "FILTERED_MODELS",
    "TOOLS_CODE_EXECUTION_ENABLED",
    "URL_CONTEXT_ENABLED",
    "URL_CONTEXT_MODELS",
    "SHOW_SEARCH_LINK",
    "SHOW_THINKING_PROCESS",
    "THINKING_MODELS",
    "THINKING_BUDGET_MAP",
    "TTS_MODEL",
    "TTS_VOICE_NAME",
    "TTS_SPEED",
    "PAID_KEY",
    "CREATE_IMAGE_MODEL",
    "UPLOAD_PROVIDER",
    "SMMS_SECRET_TOKEN",
    "PICGO_API_KEY",
    "PICGO_API_URL",
    "CLOUDFLARE_IMGBED_URL",
    "CLOUDFLARE_IMGBED_AUTH_CODE",
    "CLOUDFLARE_IMGBED_UPLOAD_FOLDER",
    "OSS_ENDPOINT",
    "OSS_ENDPOINT_INNER",
    "OSS_ACCESS_KEY",
    "OSS_ACCESS_KEY_SECRET",
    "OSS_BUCKET_NAME",
    "OSS_REGION",
    "STREAM_OPTIMIZER_ENABLED",
    "STREAM_MIN_DELAY",
    "STREAM_MAX_DELAY",
    "STREAM_SHORT_TEXT_THRESHOLD",
    "STREAM_LONG_TEXT_THRESHOLD",
    "STREAM_CHUNK_SIZE",
    "FAKE_STREAM_ENABLED",
    "FAKE_STREAM_EMPTY_DATA_INTERVAL_SECONDS",
    "CHECK_INTERVAL_HOURS",
    "TIMEZONE",
    "GITHUB_REPO_OWNER",
    "GITHUB_REPO_NAME",
    "LOG_LEVEL",
    "ERROR_LOG_RECORD_REQUEST_BODY",
    "AUTO_DELETE_ERROR_LOGS_ENABLED",
    "AUTO_DELETE_ERROR_LOGS_DAYS",
    "AUTO_DELETE_REQUEST_LOGS_ENABLED",
    "AUTO_DELETE_REQUEST_LOGS_DAYS",
    "SAFETY_SETTINGS",
    "FILES_CLEANUP_ENABLED",
    "FILES_CLEANUP_INTERVAL_HOURS",
    "FILES_USER_ISOLATION_ENABLED",
    "ADMIN_SESSION_EXPIRE",
];

/// Python settings that are secrets and that this proxy does not have (image hosts'
/// credentials): never shown, and redacted from imported logs.
pub const PYTHON_ONLY_SECRETS: &[&str] = &[
    "SMMS_SECRET_TOKEN",
    "PICGO_API_KEY",
    "CLOUDFLARE_IMGBED_AUTH_CODE",
    "OSS_ACCESS_KEY",
    "OSS_ACCESS_KEY_SECRET",
];

/// The Python server's own database settings: they describe where it kept its data.
fn is_storage(name: &str) -> bool {
    name == "DATABASE_TYPE" || name == "SQLITE_DATABASE" || name.starts_with("MYSQL_")
}

/// One change to make.
#[derive(Debug)]
pub struct Change {
    pub name: &'static str,
    pub secret: bool,
    /// The effective value now, as shown (secrets masked).
    pub old: String,
    /// The value after the import, as shown.
    pub new: String,
    /// The text to keep; `None` forgets the kept change (the environment's value applies).
    pub keep: Option<String>,
}

/// A setting not brought over, and why (never with a secret's value).
#[derive(Debug)]
pub struct Left {
    pub name: String,
    pub why: String,
}

/// What the import does with `t_settings`.
#[derive(Debug, Default)]
pub struct Plan {
    pub rows: usize,
    pub changes: Vec<Change>,
    /// Rows already in effect here (from the environment, or imported before).
    pub unchanged: usize,
    /// Values this proxy refuses.
    pub refused: Vec<Left>,
    /// Differing values of settings read at start only: for `.env`.
    pub startup_only: Vec<Left>,
    pub storage: Vec<String>,
    /// Python settings this proxy does not have.
    pub unknown: Vec<String>,
    /// Rows that are not Python settings (the Python server ignores them too).
    pub not_python: Vec<String>,
    /// Imported, but not acted on by this version.
    pub not_acted_on: Vec<&'static str>,
}

impl Plan {
    /// `true` when some value the Python server used is not in effect here after the import.
    pub fn is_incomplete(&self) -> bool {
        !self.refused.is_empty() || !self.startup_only.is_empty()
    }
}

/// The changes that make `rows` (the Python server's `t_settings`) effective here, given the
/// settings of the environment (`base`) and what is kept already: `kept_db` (the store's
/// settings table) and `kept_secrets` (the secrets file), name → text.
pub fn plan(
    rows: &[(String, String)],
    base: &Settings,
    kept_db: &BTreeMap<String, String>,
    kept_secrets: &BTreeMap<String, String>,
) -> Plan {
    let mut plan = Plan {
        rows: rows.len(),
        ..Plan::default()
    };
    for (name, raw) in rows {
        if !PYTHON_SETTINGS.contains(&name.as_str()) {
            plan.not_python.push(name.clone());
            continue;
        }
        if is_storage(name) {
            plan.storage.push(name.clone());
            continue;
        }
        let Some(def) = settings::find(name) else {
            plan.unknown.push(name.clone());
            continue;
        };
        let secret = def.kind.is_secret();
        let wanted = match settings::parse(def, raw).and_then(|v| settings::check(def, &v)) {
            Ok(value) => value,
            Err(e) => {
                plan.refused.push(Left {
                    name: def.name.to_owned(),
                    why: format!("refused: expected {}", e.expected),
                });
                continue;
            }
        };
        let from_env = base.value(def.name);
        let differs = !same(&wanted, from_env);
        if !def.live {
            if differs {
                plan.startup_only.push(Left {
                    name: def.name.to_owned(),
                    why: format!(
                        "read at start only: the Python server has {}; set {}={} in .env",
                        shown(secret, &wanted),
                        def.name,
                        if secret {
                            "…".to_owned()
                        } else {
                            settings::to_text(&wanted)
                        }
                    ),
                });
            } else {
                plan.unchanged += 1;
            }
            continue;
        }
        let kept_raw = if secret { kept_secrets } else { kept_db }.get(def.name);
        let kept = kept_raw.and_then(|raw| settings::parse(def, raw).ok());
        let now = kept.as_ref().unwrap_or(from_env);
        let change = |keep: Option<String>| Change {
            name: def.name,
            secret,
            old: shown(secret, now),
            new: shown(secret, &wanted),
            keep,
        };
        if differs {
            if def.support != Support::Yes {
                plan.not_acted_on.push(def.name);
            }
            if kept.as_ref().is_some_and(|k| same(k, &wanted)) {
                plan.unchanged += 1;
            } else {
                plan.changes.push(change(Some(settings::to_text(&wanted))));
            }
        } else if kept_raw.is_some() {
            plan.changes.push(change(None));
        } else {
            plan.unchanged += 1;
        }
    }
    plan
}

/// Equal as values: numbers by value (`-1` and `-1.0`, as Python writes a float), lists and
/// objects entry by entry.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// A value as the report shows it: text form, secrets masked, long ones cut.
fn shown(secret: bool, value: &Value) -> String {
    let text = if secret {
        settings::to_text(&settings::mask_value(value))
    } else {
        settings::to_text(value)
    };
    let text = if text.is_empty() {
        "\"\"".to_owned()
    } else {
        text
    };
    match text.char_indices().nth(160) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// Every secret the rows hold (entries of lists, values of objects), to redact from logs.
pub fn secrets_of(rows: &[(String, String)]) -> Vec<String> {
    let mut out = Vec::new();
    for (name, raw) in rows {
        let secret = settings::find(name).is_some_and(|d| d.kind.is_secret())
            || PYTHON_ONLY_SECRETS.contains(&name.as_str());
        if secret {
            out.extend(secret_parts(raw));
        }
    }
    out
}

/// The secrets in one secret value's text: list entries, object values, or the text itself.
pub fn secret_parts(raw: &str) -> Vec<String> {
    let raw = raw.trim();
    let parts = match serde_json::from_str::<Value>(raw) {
        Ok(Value::Array(items)) => items.iter().map(settings::to_text).collect(),
        Ok(Value::Object(map)) => map.values().map(settings::to_text).collect(),
        _ if raw.contains(',') => settings::parse_list(raw).unwrap_or_default(),
        _ => vec![raw.to_owned()],
    };
    parts
        .into_iter()
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::json;

    use super::*;

    fn base(pairs: &[(&str, &str)]) -> Settings {
        let vars: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::from_vars(&vars).unwrap().0
    }

    fn rows(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn only_what_differs_from_the_environment_is_kept() {
        let base = base(&[("ALLOWED_TOKENS", r#"["sk-env-token-0001"]"#)]);
        let rows = rows(&[
            // Python's formats, equal to what the environment gives.
            ("MAX_RETRIES", "3"),
            ("CHECK_INTERVAL_HOURS", "1"),
            ("ALLOWED_TOKENS", r#"["sk-env-token-0001"]"#),
            ("AUTH_TOKEN", "sk-env-token-0001"),
            ("LOG_LEVEL", "INFO"),
            ("SHOW_THINKING_PROCESS", "true"),
            // Changed in the Python UI.
            ("MAX_FAILURES", "7"),
            ("THINKING_BUDGET_MAP", r#"{"gemini-2.5-flash": -1.0}"#),
            ("FAKE_STREAM_ENABLED", "true"),
            ("PAID_KEY", "AIzaSyPaid000000000000000000000000000000"),
            // Not imported.
            ("DATABASE_TYPE", "sqlite"),
            ("MYSQL_PASSWORD", "secret-db-password"),
            ("GITHUB_REPO_OWNER", "snailyp"),
            ("PORT", "9000"),
            ("TIMEZONE", "Europe/Berlin"),
            ("PROXIES", r#"["ftp://user:pw-secret@relay:21"]"#),
        ]);
        let mut kept_db = BTreeMap::new();
        // Imported before: nothing to do; kept although the environment now agrees: forgotten.
        kept_db.insert("FAKE_STREAM_ENABLED".to_owned(), "true".to_owned());
        kept_db.insert("TIME_OUT".to_owned(), "30".to_owned());
        kept_db.insert("MAX_RETRIES".to_owned(), "5".to_owned());
        let plan = plan(&rows, &base, &kept_db, &BTreeMap::new());
        let changes: Vec<_> = plan
            .changes
            .iter()
            .map(|c| (c.name, c.keep.as_deref()))
            .collect();
        assert_eq!(
            changes,
            [
                ("MAX_RETRIES", None),
                ("MAX_FAILURES", Some("7")),
                ("THINKING_BUDGET_MAP", Some(r#"{"gemini-2.5-flash":-1}"#)),
                ("PAID_KEY", Some("AIzaSyPaid000000000000000000000000000000")),
            ]
        );
        let paid = &plan.changes[3];
        assert!(paid.secret && paid.new == "AIza…0000", "{paid:?}");
        assert_eq!(plan.not_acted_on, ["PAID_KEY"]);
        assert_eq!(plan.unchanged, 6);
        assert_eq!(plan.storage, ["DATABASE_TYPE", "MYSQL_PASSWORD"]);
        assert_eq!(plan.unknown, ["GITHUB_REPO_OWNER"]);
        assert_eq!(plan.not_python, ["PORT"]);
        assert_eq!(plan.startup_only[0].name, "TIMEZONE");
        assert!(plan.startup_only[0].why.contains("TIMEZONE=Europe/Berlin"));
        assert_eq!(plan.refused[0].name, "PROXIES");
        assert!(
            !plan.refused[0].why.contains("pw-secret"),
            "{:?}",
            plan.refused
        );
        assert!(plan.is_incomplete());
    }

    #[test]
    fn numbers_compare_by_value() {
        assert!(same(&json!({"m": -1}), &json!({"m": -1.0})));
        assert!(same(&json!([1.0, "a"]), &json!([1, "a"])));
        assert!(!same(&json!({"m": 1}), &json!({"m": 1, "n": 2})));
        assert!(!same(&json!(["a"]), &json!(["a", "b"])));
    }

    #[test]
    fn secrets_are_found_in_every_form() {
        let rows = rows(&[
            ("API_KEYS", r#"["k1", "k2"]"#),
            ("ALLOWED_TOKENS", "t1, t2"),
            ("CUSTOM_HEADERS", r#"{"x-auth": "Bearer h1"}"#),
            ("AUTH_TOKEN", "admin"),
            ("OSS_ACCESS_KEY_SECRET", "oss"),
            ("TEST_MODEL", "gemini-x"),
            ("PAID_KEY", ""),
        ]);
        assert_eq!(
            secrets_of(&rows),
            ["k1", "k2", "t1", "t2", "Bearer h1", "admin", "oss"]
        );
    }
}
