//! Settings from `.env` and the environment, with the Python server's names and formats.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

/// A setting that could not be used; names the variable and what was expected.
#[derive(Debug)]
pub struct ConfigError {
    pub variable: &'static str,
    pub expected: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: expected {}", self.variable, self.expected)
    }
}

impl std::error::Error for ConfigError {}

/// The proxy's settings. Secrets (keys, tokens) are never printed by `Debug`.
pub struct Config {
    pub api_keys: Vec<String>,
    pub allowed_tokens: Vec<String>,
    pub auth_token: Option<String>,
    pub base_url: String,
    pub max_failures: u32,
    pub max_retries: u32,
    pub time_out: Duration,
    pub host: IpAddr,
    pub port: u16,
    pub log_level: String,
    /// Variables that are set but not supported yet (named in one startup warning).
    pub unsupported: Vec<String>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("api_keys", &self.api_keys.len())
            .field("allowed_tokens", &self.allowed_tokens.len())
            .field("auth_token", &self.auth_token.as_ref().map(|_| "…"))
            .field("base_url", &self.base_url)
            .field("max_failures", &self.max_failures)
            .field("max_retries", &self.max_retries)
            .field("time_out", &self.time_out)
            .field("host", &self.host)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// Variables this version reads.
const SUPPORTED: &[&str] = &[
    "API_KEYS",
    "ALLOWED_TOKENS",
    "AUTH_TOKEN",
    "BASE_URL",
    "MAX_FAILURES",
    "MAX_RETRIES",
    "TIME_OUT",
    "HOST",
    "PORT",
    "LOG_LEVEL",
];

/// Gemini-Balance variables that this version does not act on yet.
const KNOWN_UNSUPPORTED: &[&str] = &[
    "TEST_MODEL",
    "CHECK_INTERVAL_HOURS",
    "CUSTOM_HEADERS",
    "PROXIES",
    "PROXIES_USE_CONSISTENCY_HASH_BY_API_KEY",
    "SEARCH_MODELS",
    "IMAGE_MODELS",
    "THINKING_MODELS",
    "THINKING_BUDGET_MAP",
    "FILTERED_MODELS",
    "SAFETY_SETTINGS",
    "SHOW_THINKING_PROCESS",
    "SHOW_SEARCH_LINK",
    "TOOLS_CODE_EXECUTION_ENABLED",
    "URL_CONTEXT_ENABLED",
    "URL_CONTEXT_MODELS",
    "FAKE_STREAM_ENABLED",
    "FAKE_STREAM_EMPTY_DATA_INTERVAL_SECONDS",
    "STREAM_OPTIMIZER_ENABLED",
    "DATABASE_TYPE",
    "SQLITE_DATABASE",
    "MYSQL_HOST",
    "MYSQL_PORT",
    "MYSQL_USER",
    "MYSQL_PASSWORD",
    "MYSQL_DATABASE",
    "MYSQL_SOCKET",
    "AUTO_DELETE_ERROR_LOGS_ENABLED",
    "AUTO_DELETE_ERROR_LOGS_DAYS",
    "AUTO_DELETE_REQUEST_LOGS_ENABLED",
    "AUTO_DELETE_REQUEST_LOGS_DAYS",
    "ERROR_LOG_RECORD_REQUEST_BODY",
    "TIMEZONE",
    "ADMIN_SESSION_EXPIRE",
    "VERTEX_API_KEYS",
    "VERTEX_EXPRESS_BASE_URL",
    "PAID_KEY",
    "CREATE_IMAGE_MODEL",
    "UPLOAD_PROVIDER",
    "TTS_MODEL",
    "TTS_VOICE_NAME",
    "TTS_SPEED",
];

impl Config {
    /// Reads the settings from a variable map (the process environment after `.env`).
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Config, ConfigError> {
        let get = |name: &str| vars.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
        let api_keys = match get("API_KEYS") {
            Some(v) => parse_list("API_KEYS", v)?,
            None => Vec::new(),
        };
        let allowed_tokens = match get("ALLOWED_TOKENS") {
            Some(v) => parse_list("ALLOWED_TOKENS", v)?,
            None => Vec::new(),
        };
        let base_url = get("BASE_URL")
            .unwrap_or("https://generativelanguage.googleapis.com/v1beta")
            .trim_end_matches('/')
            .to_owned();
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(ConfigError {
                variable: "BASE_URL",
                expected: "an http:// or https:// URL".to_owned(),
            });
        }
        let mut unsupported: Vec<String> = KNOWN_UNSUPPORTED
            .iter()
            .filter(|name| get(name).is_some())
            .map(|name| (*name).to_owned())
            .collect();
        unsupported.sort();
        Ok(Config {
            api_keys,
            allowed_tokens,
            auth_token: get("AUTH_TOKEN").map(str::to_owned),
            base_url,
            max_failures: parse_number("MAX_FAILURES", get("MAX_FAILURES"), 3)?,
            max_retries: parse_number("MAX_RETRIES", get("MAX_RETRIES"), 3)?,
            time_out: Duration::from_secs(parse_number("TIME_OUT", get("TIME_OUT"), 300u64)?),
            host: match get("HOST") {
                Some(v) => v.parse().map_err(|_| ConfigError {
                    variable: "HOST",
                    expected: "an IP address such as 0.0.0.0 or 127.0.0.1".to_owned(),
                })?,
                None => IpAddr::from([0, 0, 0, 0]),
            },
            port: parse_number("PORT", get("PORT"), 8000u16)?,
            log_level: get("LOG_LEVEL").unwrap_or("info").to_ascii_lowercase(),
            unsupported,
        })
    }

    /// Every variable name this version reads (for documentation and tests).
    #[allow(dead_code)]
    pub fn supported() -> &'static [&'static str] {
        SUPPORTED
    }
}

fn parse_number<T: std::str::FromStr>(
    variable: &'static str,
    value: Option<&str>,
    default: T,
) -> Result<T, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| ConfigError {
            variable,
            expected: format!("a non-negative whole number, got {v:?}"),
        }),
    }
}

/// A list in the Python server's format (`["a","b"]`), or a comma-separated list (`a,b`).
pub fn parse_list(variable: &'static str, value: &str) -> Result<Vec<String>, ConfigError> {
    let value = value.trim();
    if value.starts_with('[') {
        let items: Vec<serde_json::Value> =
            serde_json::from_str(value).map_err(|e| ConfigError {
                variable,
                expected: format!("a JSON list of strings such as [\"a\",\"b\"] ({e})"),
            })?;
        return items
            .into_iter()
            .map(|item| match item {
                serde_json::Value::String(s) => Ok(s.trim().to_owned()),
                _ => Err(ConfigError {
                    variable,
                    expected: "a JSON list of strings".to_owned(),
                }),
            })
            .filter(|item| !matches!(item, Ok(s) if s.is_empty()))
            .collect();
    }
    Ok(value
        .split(',')
        .map(|s| s.trim().trim_matches('"').trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn lists_in_both_formats() {
        assert_eq!(parse_list("X", r#"["a", "b"]"#).unwrap(), ["a", "b"]);
        assert_eq!(parse_list("X", "a, b,,c").unwrap(), ["a", "b", "c"]);
        assert_eq!(parse_list("X", "[]").unwrap(), Vec::<String>::new());
        assert!(parse_list("X", "[1,2]").is_err());
        assert!(parse_list("X", "[\"a\"").is_err());
    }

    #[test]
    fn invalid_values_name_the_variable() {
        let err = Config::from_vars(&vars(&[("MAX_RETRIES", "three")])).unwrap_err();
        assert_eq!(err.variable, "MAX_RETRIES");
        let err = Config::from_vars(&vars(&[("PORT", "99999")])).unwrap_err();
        assert_eq!(err.variable, "PORT");
        let err = Config::from_vars(&vars(&[("BASE_URL", "localhost:1")])).unwrap_err();
        assert_eq!(err.variable, "BASE_URL");
    }

    #[test]
    fn defaults_and_unsupported() {
        let c = Config::from_vars(&vars(&[("FAKE_STREAM_ENABLED", "true")])).unwrap();
        assert_eq!(c.port, 8000);
        assert_eq!(c.max_retries, 3);
        assert_eq!(c.unsupported, ["FAKE_STREAM_ENABLED"]);
        assert!(c.base_url.ends_with("/v1beta"));
    }
}
