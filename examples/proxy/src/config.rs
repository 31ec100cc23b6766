//! Settings from `.env` and the environment, with the Python server's names and formats.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

use gemini_balance::store::TimeZone;

use crate::settings::Settings;

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
    pub log_level: String,
    /// TIMEZONE: the calendar of the statistics' month and of the midnight log purge.
    pub time_zone: TimeZone,
    /// Variables that are set but not supported yet (named in one startup warning).
    pub unsupported: Vec<String>,
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
            log_level: settings.text("LOG_LEVEL").to_owned(),
            time_zone,
            unsupported: findings.unsupported,
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
