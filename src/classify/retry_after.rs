//! Parsing the waits an upstream asks for: the `Retry-After` header and Gemini's `RetryInfo.retryDelay`.

use std::time::{Duration, SystemTime};

use http::HeaderMap;

/// Longest wait we accept from an upstream; longer values are capped to this.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// Parses a `Retry-After` header: delta-seconds (`"120"`, also `"1.5"`) or an HTTP-date.
///
/// The result is capped at `max`. A date in the past gives `Duration::ZERO`. Anything that is
/// neither a number nor a date, or a negative number, gives `None`.
pub(crate) fn parse_retry_after(
    headers: &HeaderMap,
    max: Duration,
    now: SystemTime,
) -> Option<Duration> {
    let value = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    parse_retry_after_value(value, max, now)
}

/// [`parse_retry_after`] for a bare header value.
pub(crate) fn parse_retry_after_value(
    value: &str,
    max: Duration,
    now: SystemTime,
) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if value.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let secs: f64 = value.parse().ok()?;
        return seconds(secs, max);
    }
    let date = httpdate::parse_http_date(value).ok()?;
    let wait = date.duration_since(now).unwrap_or(Duration::ZERO);
    Some(wait.min(max))
}

/// Parses a protobuf `Duration` in its JSON form, as Gemini sends in `RetryInfo.retryDelay`:
/// `"37s"`, `"1.5s"`, `"0.250s"`. Capped at `max`.
pub(crate) fn parse_retry_delay(value: &str, max: Duration) -> Option<Duration> {
    let number = value.trim().strip_suffix('s')?;
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    seconds(number.parse().ok()?, max)
}

fn seconds(secs: f64, max: Duration) -> Option<Duration> {
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    if secs >= max.as_secs_f64() {
        return Some(max);
    }
    Some(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_table() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let max = Duration::from_secs(600);
        let in_90s = httpdate::fmt_http_date(now + Duration::from_secs(90));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(90));
        let far = httpdate::fmt_http_date(now + Duration::from_secs(90_000));
        let cases: &[(&str, Option<Duration>)] = &[
            ("0", Some(Duration::ZERO)),
            ("37", Some(Duration::from_secs(37))),
            (" 5 ", Some(Duration::from_secs(5))),
            ("1.5", Some(Duration::from_millis(1500))),
            ("600", Some(max)),
            ("99999999999999999999", Some(max)),
            (&in_90s, Some(Duration::from_secs(90))),
            (&past, Some(Duration::ZERO)),
            (&far, Some(max)),
            ("", None),
            ("-1", None),
            ("soon", None),
            ("1e3", None),
            ("Mon, 32 Foo 2024", None),
        ];
        for (input, expected) in cases {
            assert_eq!(
                parse_retry_after_value(input, max, now),
                *expected,
                "Retry-After: {input:?}"
            );
        }
    }

    #[test]
    fn retry_after_reads_the_header() {
        let mut headers = HeaderMap::new();
        let now = SystemTime::now();
        assert_eq!(parse_retry_after(&headers, MAX_RETRY_AFTER, now), None);
        headers.insert(http::header::RETRY_AFTER, "12".parse().unwrap());
        assert_eq!(
            parse_retry_after(&headers, MAX_RETRY_AFTER, now),
            Some(Duration::from_secs(12))
        );
    }

    #[test]
    fn retry_delay_table() {
        let max = Duration::from_secs(3600);
        let cases: &[(&str, Option<Duration>)] = &[
            ("37s", Some(Duration::from_secs(37))),
            ("1.5s", Some(Duration::from_millis(1500))),
            ("0.250s", Some(Duration::from_millis(250))),
            ("0s", Some(Duration::ZERO)),
            ("86400s", Some(max)),
            ("37", None),
            ("s", None),
            ("-3s", None),
            ("1m", None),
            ("", None),
        ];
        for (input, expected) in cases {
            assert_eq!(
                parse_retry_delay(input, max),
                *expected,
                "retryDelay {input:?}"
            );
        }
    }
}
