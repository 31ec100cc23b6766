//! Times as the database keeps them: integer milliseconds since the Unix epoch (UTC).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds in a minute.
pub(crate) const MINUTE_MS: i64 = 60_000;
/// Milliseconds in an hour.
pub(crate) const HOUR_MS: i64 = 3_600_000;
/// Milliseconds in a day.
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

/// The start (UTC milliseconds) of the calendar month holding `ms`, in a zone
/// `utc_offset_minutes` east of UTC.
pub(crate) fn month_start(ms: i64, utc_offset_minutes: i32) -> i64 {
    let offset = i64::from(utc_offset_minutes) * MINUTE_MS;
    let local = ms + offset;
    let days = local.div_euclid(DAY_MS);
    let (year, month, _) = civil_from_days(days);
    days_from_civil(year, month, 1) * DAY_MS - offset
}

/// (year, month 1–12, day 1–31) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Days since 1970-01-01 of a civil date.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_and_months() {
        // 2024-03-15T12:34:56.789Z
        let t = 1_710_506_096_789;
        assert_eq!(minute_of(t), 1_710_506_040_000);
        assert_eq!(hour_of(t), 1_710_504_000_000);
        // 2024-03-01T00:00:00Z
        assert_eq!(month_start(t, 0), 1_709_251_200_000);
        // In UTC+8 it is still March; the month began at 2024-02-29T16:00Z.
        assert_eq!(month_start(t, 480), 1_709_251_200_000 - 8 * HOUR_MS);
        // 2024-03-01T03:00Z is still February in UTC-5.
        let early_march = 1_709_251_200_000 + 3 * HOUR_MS;
        // 2024-02-01T05:00Z
        assert_eq!(month_start(early_march, -300), 1_706_763_600_000);
        // January wraps to the previous year's days correctly.
        // 2023-01-10T00:00Z → 2023-01-01T00:00Z
        assert_eq!(month_start(1_673_308_800_000, 0), 1_672_531_200_000);
        assert_eq!(ms_of(time_of(t)), t);
        assert_eq!(ms_of(time_of(-5)), -5);
    }
}
