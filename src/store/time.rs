//! Times as the database keeps them: integer milliseconds since the Unix epoch (UTC).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds in a minute.
pub(crate) const MINUTE_MS: i64 = 60_000;
/// Milliseconds in an hour.
pub(crate) const HOUR_MS: i64 = 3_600_000;
/// Milliseconds in a day.
#[cfg(test)]
pub(crate) const DAY_MS: i64 = 86_400_000;

/// `t` in milliseconds since the epoch (negative before it).
pub(crate) fn ms_of(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// The instant `ms` milliseconds after the epoch.
pub(crate) fn time_of(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

/// Milliseconds of a duration, saturating.
pub(crate) fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The start of the minute holding `ms`.
pub(crate) fn minute_of(ms: i64) -> i64 {
    ms - ms.rem_euclid(MINUTE_MS)
}

/// The start of the hour holding `ms`.
pub(crate) fn hour_of(ms: i64) -> i64 {
    ms - ms.rem_euclid(HOUR_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets() {
        // 2024-03-15T12:34:56.789Z
        let t = 1_710_506_096_789;
        assert_eq!(minute_of(t), 1_710_506_040_000);
        assert_eq!(hour_of(t), 1_710_504_000_000);
        assert_eq!(ms_of(time_of(t)), t);
        assert_eq!(ms_of(time_of(-5)), -5);
    }
}
