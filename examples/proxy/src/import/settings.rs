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
//! Running the import again must not undo what was changed here since (in the admin, or in
//! `.env`). The store remembers a fingerprint of each Python value imported
//! (`ImportedSettings`, per source database); a later run brings a value over only if it
//! changed in the Python server since. If the value here changed too, ours is kept and the
//! setting is named as a conflict; if only ours changed, ours is kept.
//!
//! Not imported, and reported: values this proxy refuses (named, never shown when secret),
//! settings it reads at start only (set them in `.env`), the Python server's own database
//! settings, and Python settings this proxy does not have. Values are shown with secrets
//! masked and URLs without their `user:password@`.

use std::borrow::Cow;
use std::collections::BTreeMap;

use gemini_balance::store::sqlite::ImportedSettings;
use serde_json::Value;

use crate::settings::{self, Settings, Support};

/// Whether `name` is a field of the Python server's `Settings` class (`app/config/config.py`):
/// rows with other names are ignored by it (its `.env` import writes any variable to
/// `t_settings`). Read from the settings table, so the two cannot drift apart.
pub fn is_python_setting(name: &str) -> bool {
    settings::DEFS.iter().any(|d| d.python && d.name == name)
        || settings::UNUSED_VARS
            .iter()
            .any(|u| u.python && u.name == name)
}

/// Whether `name` is a secret of the Python server that this proxy does not have (an image
/// host's credential): never shown, and redacted from imported logs.
fn is_python_only_secret(name: &str) -> bool {
    settings::UNUSED_VARS
        .iter()
        .any(|u| u.secret && u.name == name)
}

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
    /// Changed here (admin API, `.env`) since the last import, and not in the Python server:
    /// ours is kept.
    pub kept_here: Vec<&'static str>,
    /// Changed both here and in the Python server since the last import: ours is kept.
    pub conflicts: Vec<&'static str>,
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
    /// The Python values looked at, as (name, text) to remember once the changes are kept
    /// (`SqliteStore::remember_imported_settings`): what a later run compares with.
    pub remember: Vec<(String, String)>,
}

impl Plan {
    /// `true` when some value the Python server used is not in effect here after the import,
    /// and no one chose so here.
    pub fn is_incomplete(&self) -> bool {
        !self.refused.is_empty() || !self.startup_only.is_empty()
    }

    /// The report's lines for the settings whose value here is kept over the Python server's
    /// (names only: a value may be a secret).
    pub fn kept_lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if !self.kept_here.is_empty() {
            lines.push(format!(
                "  changed here since the last import: kept: {}",
                self.kept_here.join(", ")
            ));
        }
        if !self.conflicts.is_empty() {
            lines.push(format!(
                "  changed here and in the Python server since the last import: kept as changed \
                 here (the Python server's value is not brought over; set it here if it is \
                 the one you want): {}",
                self.conflicts.join(", ")
            ));
        }
        lines
    }
}

/// The changes that make `rows` (the Python server's `t_settings`) effective here, given the
/// settings of the environment (`base`), what is kept already: `kept_db` (the store's
/// settings table) and `kept_secrets` (the secrets file), name → text, and what was imported
/// from this database before (`last`).
pub fn plan(
    rows: &[(String, String)],
    base: &Settings,
    kept_db: &BTreeMap<String, String>,
    kept_secrets: &BTreeMap<String, String>,
    last: &ImportedSettings,
) -> Plan {
    let mut plan = Plan {
        rows: rows.len(),
        ..Plan::default()
    };
    for (name, raw) in rows {
        if !is_python_setting(name) {
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
                let text = settings::to_text(&wanted);
                let hint = match (secret, without_credentials(&text)) {
                    (true, _) => format!("set {}=… in .env", def.name),
                    (false, Cow::Borrowed(_)) => format!("set {}={text} in .env", def.name),
                    (false, Cow::Owned(_)) => format!(
                        "set {} in .env to the Python server's value (its credentials are not \
                         shown)",
                        def.name
                    ),
                };
                plan.startup_only.push(Left {
                    name: def.name.to_owned(),
                    why: format!(
                        "read at start only: the Python server has {}; {hint}",
                        shown(secret, &wanted),
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
        let python_text = canonical(&wanted);
        match (
            last.is_last(def.name, &python_text),
            last.is_last(def.name, &canonical(now)),
        ) {
            // The Python server's value is the one imported last time: whatever is here now
            // was chosen here.
            (Some(true), _) => {
                if same(now, &wanted) {
                    plan.unchanged += 1;
                } else {
                    plan.kept_here.push(def.name);
                }
                continue;
            }
            // Both changed since, to different values: ours stays, named. Python's value is
            // remembered, so the conflict is reported once.
            (Some(false), Some(false)) if !same(now, &wanted) => {
                plan.conflicts.push(def.name);
                plan.remember.push((def.name.to_owned(), python_text));
                continue;
            }
            // Imported for the first time, or changed in the Python server only.
            _ => plan.remember.push((def.name.to_owned(), python_text)),
        }
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

/// A value's text for its fingerprint: as `same` compares values (numbers by value, objects
/// whatever their order), so that equal values have one text.
fn canonical(value: &Value) -> String {
    fn norm(value: &Value) -> Value {
        match value {
            Value::Number(n) => match n.as_f64() {
                // Whole numbers as integers (exact below 2^53).
                Some(x) if x.fract() == 0.0 && x.abs() < 9.0e15 => Value::from(x as i64),
                _ => value.clone(),
            },
            Value::Array(items) => Value::Array(items.iter().map(norm).collect()),
            Value::Object(map) => {
                let sorted: BTreeMap<&String, Value> =
                    map.iter().map(|(k, v)| (k, norm(v))).collect();
                Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
            }
            _ => value.clone(),
        }
    }
    norm(value).to_string()
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

/// A value as the report shows it: text form, secrets masked, URLs without their
/// `user:password@`, long ones cut.
fn shown(secret: bool, value: &Value) -> String {
    let text = if secret {
        settings::to_text(&settings::mask_value(value))
    } else {
        without_credentials(&settings::to_text(value)).into_owned()
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

/// `text` with the `user:password@` of every URL in it replaced by `…@`
/// (`https://…@relay.example/v1beta`).
fn without_credentials(text: &str) -> Cow<'_, str> {
    let mut out = String::new();
    let mut copied = 0;
    let mut from = 0;
    while let Some(at) = text[from..].find("://") {
        let authority = from + at + 3;
        let end = text[authority..]
            .find(|c: char| "/?#\"'\\,]}<>".contains(c) || c.is_whitespace())
            .map_or(text.len(), |n| authority + n);
        if let Some(user) = text[authority..end].rfind('@') {
            out.push_str(&text[copied..authority]);
            out.push('…');
            copied = authority + user;
        }
        from = end;
    }
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

/// Every secret the rows hold (entries of lists, values of objects), to redact from logs.
pub fn secrets_of(rows: &[(String, String)]) -> Vec<String> {
    let mut out = Vec::new();
    for (name, raw) in rows {
        let secret =
            settings::find(name).is_some_and(|d| d.kind.is_secret()) || is_python_only_secret(name);
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
        let plan = plan(
            &rows,
            &base,
            &kept_db,
            &BTreeMap::new(),
            &ImportedSettings::empty("python:test"),
        );
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

    /// What a store remembers after an import of `rows` from "python:test".
    fn remembered(dir: &std::path::Path, values: &[(String, String)]) -> ImportedSettings {
        let store = gemini_balance::store::SqliteStore::open(dir.join("proxy.db")).unwrap();
        store
            .remember_imported_settings("python:test", values.to_vec())
            .unwrap();
        let last = store.imported_settings("python:test").unwrap();
        store.shutdown().unwrap();
        last
    }

    #[test]
    fn a_second_import_brings_over_only_what_changed_in_the_python_server() {
        let dir = tempfile::tempdir().unwrap();
        let base = base(&[("API_KEYS", r#"["AIzaSyEnv000000000000000000000000000001"]"#)]);
        let keys = r#"["AIzaSyEnv000000000000000000000000000001", "AIzaSyUi0000000000000000000000000000002"]"#;
        let first = rows(&[
            ("MAX_RETRIES", "5"),
            ("MAX_FAILURES", "3"),
            ("TIME_OUT", "300"),
            ("TEST_MODEL", "gemini-2.5-flash-lite"),
            ("API_KEYS", keys),
        ]);
        let empty = ImportedSettings::empty("python:test");
        let plan1 = plan(&first, &base, &BTreeMap::new(), &BTreeMap::new(), &empty);
        let names: Vec<_> = plan1.changes.iter().map(|c| c.name).collect();
        assert_eq!(names, ["MAX_RETRIES", "API_KEYS"]);
        assert_eq!(plan1.remember.len(), 5, "{:?}", plan1.remember);
        let last = remembered(dir.path(), &plan1.remember);

        // Changed here since: MAX_RETRIES and TIME_OUT in the admin, a key added; TEST_MODEL
        // in .env.
        let base = Settings::from_vars(
            &[
                (
                    "API_KEYS".to_owned(),
                    r#"["AIzaSyEnv000000000000000000000000000001"]"#.to_owned(),
                ),
                ("TEST_MODEL".to_owned(), "gemini-2.0-flash".to_owned()),
            ]
            .into(),
        )
        .unwrap()
        .0;
        let kept_db: BTreeMap<String, String> = [
            ("MAX_RETRIES".to_owned(), "7".to_owned()),
            ("TIME_OUT".to_owned(), "60".to_owned()),
        ]
        .into();
        let ours_keys = r#"["AIzaSyEnv000000000000000000000000000001","AIzaSyUi0000000000000000000000000000002","AIzaSyOurs00000000000000000000000000003"]"#;
        let kept_secrets: BTreeMap<String, String> =
            [("API_KEYS".to_owned(), ours_keys.to_owned())].into();

        // The Python server unchanged: nothing changes, the changes here are named.
        let plan2 = plan(&first, &base, &kept_db, &kept_secrets, &last);
        assert!(plan2.changes.is_empty(), "{:?}", plan2.changes);
        assert_eq!(
            plan2.kept_here,
            ["MAX_RETRIES", "TIME_OUT", "TEST_MODEL", "API_KEYS"]
        );
        assert!(plan2.conflicts.is_empty() && plan2.remember.is_empty());
        assert_eq!(plan2.unchanged, 1);
        assert!(plan2.kept_lines()[0].contains("kept: MAX_RETRIES, TIME_OUT"));

        // The Python server changed since: MAX_RETRIES (changed here too: a conflict, ours
        // kept), MAX_FAILURES (here unchanged: brought over); TIME_OUT changed to ours.
        let second = rows(&[
            ("MAX_RETRIES", "6"),
            ("MAX_FAILURES", "9"),
            ("TIME_OUT", "60"),
            ("TEST_MODEL", "gemini-2.5-flash-lite"),
            ("API_KEYS", keys),
        ]);
        let plan3 = plan(&second, &base, &kept_db, &kept_secrets, &last);
        let changes: Vec<_> = plan3
            .changes
            .iter()
            .map(|c| (c.name, c.keep.as_deref()))
            .collect();
        assert_eq!(changes, [("MAX_FAILURES", Some("9"))]);
        assert_eq!(plan3.conflicts, ["MAX_RETRIES"]);
        assert_eq!(plan3.kept_here, ["TEST_MODEL", "API_KEYS"]);
        assert_eq!(plan3.unchanged, 1, "TIME_OUT: the same on both sides");
        let lines = plan3.kept_lines().join("\n");
        assert!(
            lines.contains("Python server since the last import"),
            "{lines}"
        );
        assert!(!lines.contains("AIza"), "{lines}");
        let remembered_names: Vec<_> = plan3.remember.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            remembered_names,
            ["MAX_RETRIES", "MAX_FAILURES", "TIME_OUT"]
        );

        // Remembered: the conflict is not reported again.
        let mut all = plan1.remember.clone();
        all.extend(plan3.remember.iter().cloned());
        let last = remembered(dir.path(), &all);
        let mut kept_db = kept_db;
        kept_db.insert("MAX_FAILURES".to_owned(), "9".to_owned());
        let plan4 = plan(&second, &base, &kept_db, &kept_secrets, &last);
        assert!(plan4.changes.is_empty() && plan4.conflicts.is_empty());
        assert_eq!(plan4.kept_here, ["MAX_RETRIES", "TEST_MODEL", "API_KEYS"]);
    }

    #[test]
    fn values_equal_as_values_have_one_fingerprint_text() {
        assert_eq!(
            canonical(&json!({"b": -1.0, "a": [1.0, "x"]})),
            canonical(&json!({"a": [1, "x"], "b": -1}))
        );
        assert_ne!(canonical(&json!(0.5)), canonical(&json!(1)));
    }

    #[test]
    fn urls_are_shown_without_their_credentials() {
        let base = base(&[]);
        let rows = rows(&[
            ("BASE_URL", "https://user:pw-base-77@relay.example/v1beta"),
            (
                "VERTEX_EXPRESS_BASE_URL",
                "https://vx:pw-vertex-77@vertex.example/v1beta1",
            ),
        ]);
        let plan = plan(
            &rows,
            &base,
            &BTreeMap::new(),
            &BTreeMap::new(),
            &ImportedSettings::empty("python:test"),
        );
        let why = &plan.startup_only[0].why;
        assert!(
            !why.contains("pw-base-77") && !why.contains("user:"),
            "{why}"
        );
        assert!(why.contains("https://…@relay.example/v1beta"), "{why}");
        assert!(why.contains("its credentials are not shown"), "{why}");
        let change = &plan.changes[0];
        assert_eq!(change.new, "https://…@vertex.example/v1beta1");
        // What is kept is the value itself.
        assert_eq!(
            change.keep.as_deref(),
            Some("https://vx:pw-vertex-77@vertex.example/v1beta1")
        );
        for (text, shown) in [
            ("http://a.example/x?u=b@c", "http://a.example/x?u=b@c"),
            (
                r#"["socks5://u:p@h:1","http://h2"]"#,
                r#"["socks5://…@h:1","http://h2"]"#,
            ),
            ("no url, a@b", "no url, a@b"),
            ("x://@h", "x://…@h"),
        ] {
            assert_eq!(without_credentials(text), shown);
        }
    }

    /// The fields of the Python server's `Settings` class (`app/config/config.py`, v2.2.x;
    /// `docs/reference`'s section 9), in its order.
    const PYTHON_CONFIG_FIELDS: [&str; 73] = [
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

    #[test]
    fn the_python_settings_are_the_fields_of_its_settings_class() {
        let mut derived: Vec<&str> = settings::DEFS
            .iter()
            .map(|d| d.name)
            .chain(settings::UNUSED_VARS.iter().map(|u| u.name))
            .filter(|name| is_python_setting(name))
            .collect();
        derived.sort_unstable();
        derived.dedup();
        let mut fields = PYTHON_CONFIG_FIELDS.to_vec();
        fields.sort_unstable();
        assert_eq!(derived, fields);
        for name in [
            "PORT",
            "CORS_ENABLED",
            "ENABLE_TTS",
            "SQLITE_QUEUE_CAPACITY",
        ] {
            assert!(!is_python_setting(name), "{name}");
        }
        let secrets: Vec<&str> = fields
            .iter()
            .copied()
            .filter(|n| is_python_only_secret(n))
            .collect();
        assert_eq!(
            secrets,
            [
                "CLOUDFLARE_IMGBED_AUTH_CODE",
                "OSS_ACCESS_KEY",
                "OSS_ACCESS_KEY_SECRET",
                "PICGO_API_KEY",
                "SMMS_SECRET_TOKEN"
            ]
        );
    }
}
