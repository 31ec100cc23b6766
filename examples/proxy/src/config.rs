//! Settings from `.env` and the environment, with the Python server's names and formats.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

use gemini_balance::store::TimeZone;

use crate::settings::{Adjusted, Settings};

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

/// The proxy's settings from the environment, checked. Secrets are never printed by `Debug`.
pub struct Config {
    pub host: IpAddr,
    pub port: u16,
    /// TIMEZONE: the calendar of the statistics' month and of the midnight log purge.
    pub time_zone: TimeZone,
    /// Variables that are set but not supported yet (named in one startup warning).
    pub unsupported: Vec<String>,
    /// Values used differently from how they were given, e.g. clamped into range (named in
    /// one startup warning).
    pub adjusted: Vec<Adjusted>,
    /// Every setting, typed.
    pub settings: Settings,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("time_zone", &self.time_zone)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Reads the settings from a variable map (the process environment after `.env`).
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Config, ConfigError> {
        let (settings, findings) = Settings::from_vars(vars).map_err(|e| ConfigError {
            variable: crate::settings::find(&e.name).map_or("setting", |d| d.name),
            expected: e.expected,
        })?;
        let base_url = settings.text("BASE_URL").trim_end_matches('/').to_owned();
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(ConfigError {
                variable: "BASE_URL",
                expected: "an http:// or https:// URL".to_owned(),
            });
        }
        let host = settings.text("HOST").parse().map_err(|_| ConfigError {
            variable: "HOST",
            expected: "an IP address such as 0.0.0.0 or 127.0.0.1".to_owned(),
        })?;
        let time_zone = TimeZone::named(settings.text("TIMEZONE")).map_err(|e| ConfigError {
            variable: "TIMEZONE",
            expected: format!("an IANA time zone name such as Asia/Shanghai or UTC ({e})"),
        })?;
        Ok(Config {
            host,
            port: u16::try_from(settings.int("PORT")).unwrap_or(8000),
            time_zone,
            unsupported: findings.unsupported,
            adjusted: findings.adjusted,
            settings,
        })
    }
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
        use crate::settings::parse_list;
        assert_eq!(parse_list(r#"["a", "b"]"#).unwrap(), ["a", "b"]);
        assert_eq!(parse_list("a, b,,c").unwrap(), ["a", "b", "c"]);
        assert_eq!(parse_list("[]").unwrap(), Vec::<String>::new());
        assert!(parse_list("[1,2]").is_err());
        assert!(parse_list("[\"a\"").is_err());
    }

    #[test]
    fn invalid_values_name_the_variable() {
        let err = Config::from_vars(&vars(&[("MAX_RETRIES", "three")])).unwrap_err();
        assert_eq!(err.variable, "MAX_RETRIES");
        let err = Config::from_vars(&vars(&[("PORT", "99999")])).unwrap_err();
        assert_eq!(err.variable, "PORT");
        let err = Config::from_vars(&vars(&[("BASE_URL", "localhost:1")])).unwrap_err();
        assert_eq!(err.variable, "BASE_URL");
        let err = Config::from_vars(&vars(&[("TIMEZONE", "Asia/Atlantis")])).unwrap_err();
        assert_eq!(err.variable, "TIMEZONE");
        assert!(err.to_string().contains("Asia/Atlantis"), "{err}");
    }

    /// Gemini-Balance's own `.env.example` (verbatim: tests/fixtures/python.env.example) is read
    /// as the Python server reads it, at each log level its comment lists.
    #[test]
    fn the_python_projects_env_example_is_read_as_it_means() {
        use serde_json::json;
        let example = include_str!("../tests/fixtures/python.env.example");
        // "# 日志级别 (debug, info, warning, error, critical)，默认为 info"
        assert!(example.contains("(debug, info, warning, error, critical)"));
        for (level, used) in [
            ("info", "info"),
            ("debug", "debug"),
            ("warning", "warn"),
            ("error", "error"),
            ("critical", "error"),
            ("WARNING", "warn"),
            ("CRITICAL", "error"),
        ] {
            let text = example.replace("LOG_LEVEL=info", &format!("LOG_LEVEL={level}"));
            let (vars, skipped) = crate::dotenv::merge(HashMap::new(), &text);
            assert!(skipped.is_empty(), "{skipped:?}");
            let c = Config::from_vars(&vars).unwrap_or_else(|e| panic!("LOG_LEVEL={level}: {e}"));
            assert_eq!(c.settings.text("LOG_LEVEL"), used, "LOG_LEVEL={level}");
            assert!(c.adjusted.is_empty(), "{:?}", c.adjusted);
        }

        let (vars, _) = crate::dotenv::merge(HashMap::new(), example);
        let c = Config::from_vars(&vars).unwrap();
        let s = &c.settings;
        assert_eq!(s.list("API_KEYS"), ["AIzaSyxxxxxxxxxxxxxxxxxxx"; 2]);
        assert_eq!(s.list("ALLOWED_TOKENS"), ["sk-123456"]);
        assert_eq!(s.text("AUTH_TOKEN"), "sk-123456");
        assert_eq!(s.text("TEST_MODEL"), "gemini-2.5-flash-lite");
        assert_eq!(
            s.list("THINKING_MODELS"),
            ["gemini-2.5-flash", "gemini-2.5-pro"]
        );
        assert_eq!(
            s.value("THINKING_BUDGET_MAP"),
            &json!({"gemini-2.5-flash": -1})
        );
        assert_eq!(
            s.list("IMAGE_MODELS"),
            ["gemini-2.0-flash-exp", "gemini-2.5-flash-image-preview"]
        );
        assert_eq!(s.list("FILTERED_MODELS").len(), 5);
        assert_eq!(s.list("URL_CONTEXT_MODELS").len(), 5);
        assert!(!s.bool("URL_CONTEXT_ENABLED"));
        assert!(!s.bool("TOOLS_CODE_EXECUTION_ENABLED"));
        assert!(s.bool("SHOW_THINKING_PROCESS"));
        assert_eq!(
            s.text("BASE_URL"),
            "https://generativelanguage.googleapis.com/v1beta"
        );
        assert_eq!(s.int("MAX_FAILURES"), 10);
        assert_eq!(s.int("MAX_RETRIES"), 3);
        assert_eq!(s.float("CHECK_INTERVAL_HOURS"), 1.0);
        assert_eq!(c.time_zone.name(), "Asia/Shanghai");
        assert_eq!(s.int("TIME_OUT"), 300);
        assert!(s.list("PROXIES").is_empty());
        assert!(s.bool("PROXIES_USE_CONSISTENCY_HASH_BY_API_KEY"));
        assert!(!s.bool("STREAM_OPTIMIZER_ENABLED"));
        assert_eq!(s.float("STREAM_MIN_DELAY"), 0.016);
        assert_eq!(s.float("STREAM_MAX_DELAY"), 0.024);
        assert_eq!(s.int("STREAM_SHORT_TEXT_THRESHOLD"), 10);
        assert_eq!(s.int("STREAM_LONG_TEXT_THRESHOLD"), 50);
        assert_eq!(s.int("STREAM_CHUNK_SIZE"), 5);
        assert_eq!(s.text("LOG_LEVEL"), "info");
        assert!(!s.bool("ERROR_LOG_RECORD_REQUEST_BODY"));
        assert!(s.bool("AUTO_DELETE_ERROR_LOGS_ENABLED"));
        assert_eq!(s.int("AUTO_DELETE_ERROR_LOGS_DAYS"), 7);
        assert!(!s.bool("AUTO_DELETE_REQUEST_LOGS_ENABLED"));
        assert_eq!(s.int("AUTO_DELETE_REQUEST_LOGS_DAYS"), 30);
        assert!(s.bool("FAKE_STREAM_ENABLED"), "FAKE_STREAM_ENABLED=True");
        assert_eq!(s.int("FAKE_STREAM_EMPTY_DATA_INTERVAL_SECONDS"), 5);
        let safety = s.value("SAFETY_SETTINGS").as_array().unwrap();
        assert_eq!(safety.len(), 5);
        assert_eq!(
            safety[4],
            json!({"category": "HARM_CATEGORY_CIVIC_INTEGRITY", "threshold": "BLOCK_NONE"})
        );
        assert_eq!(
            c.settings.source("API_KEYS"),
            crate::settings::Source::Environment
        );
        // What it sets that this version does not act on, named in the startup warning (the
        // settings it leaves at their defaults, and the empty ones, are not).
        assert_eq!(
            c.unsupported,
            [
                "CLOUDFLARE_IMGBED_AUTH_CODE",
                "CLOUDFLARE_IMGBED_URL",
                "OSS_ACCESS_KEY",
                "OSS_ACCESS_KEY_SECRET",
                "OSS_BUCKET_NAME",
                "OSS_ENDPOINT",
                "OSS_ENDPOINT_INNER",
                "OSS_REGION",
                "PAID_KEY",
                "PICGO_API_KEY",
                "PICGO_API_URL",
                "SMMS_SECRET_TOKEN",
                "VERTEX_API_KEYS",
            ]
        );
    }

    #[test]
    fn defaults_and_unsupported() {
        let c = Config::from_vars(&vars(&[("PAID_KEY", "x")])).unwrap();
        assert_eq!(c.port, 8000);
        assert_eq!(c.settings.int("MAX_RETRIES"), 3);
        assert_eq!(c.unsupported, ["PAID_KEY"]);
        assert!(c.settings.text("BASE_URL").ends_with("/v1beta"));
        assert_eq!(c.time_zone.name(), "Asia/Shanghai", "as in Gemini-Balance");
        let c = Config::from_vars(&vars(&[("TIMEZONE", "europe/berlin")])).unwrap();
        assert_eq!(c.time_zone.name(), "Europe/Berlin");
    }
}
