//! When Gemini's per-day quotas reset: midnight in America/Los_Angeles.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

const DAY: u64 = 86_400;
const HOUR: u64 = 3_600;

/// The next midnight in America/Los_Angeles after `now` (Pacific time, with US daylight saving:
/// from the second Sunday of March to the first Sunday of November).
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use gemini_balance::keys::next_daily_reset;
///
/// // 2025-01-15 12:00 UTC is 04:00 PST; the reset is at 2025-01-16 08:00 UTC.
/// let now = UNIX_EPOCH + Duration::from_secs(1_736_942_400);
/// assert_eq!(next_daily_reset(now), UNIX_EPOCH + Duration::from_secs(1_737_014_400));
/// ```
pub fn next_daily_reset(now: SystemTime) -> SystemTime {
    let utc = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let offset = pacific_offset(utc);
    let local = utc - offset;
    let next_local_midnight = (local / DAY + 1) * DAY;
    // Midnight is never inside a DST switch (those happen at 02:00), so the offset of the
    // second just before midnight is the offset at midnight.
    let reset_offset = pacific_offset(next_local_midnight + offset - 1);
    UNIX_EPOCH + Duration::from_secs(next_local_midnight + reset_offset)
}

/// Hours behind UTC (in seconds) for a UTC instant: 7 h in daylight time, 8 h otherwise.
fn pacific_offset(utc: u64) -> u64 {
    let (year, _, _) = civil_from_days((utc / DAY) as i64);
    // DST starts at 02:00 PST (10:00 UTC) on the second Sunday of March and ends at 02:00 PDT
    // (09:00 UTC) on the first Sunday of November.
    let start = days_from_civil(year, 3, nth_sunday(year, 3, 2)) as u64 * DAY + 10 * HOUR;
    let end = days_from_civil(year, 11, nth_sunday(year, 11, 1)) as u64 * DAY + 9 * HOUR;
    if utc >= start && utc < end {
        7 * HOUR
    } else {
        8 * HOUR
    }
}

fn nth_sunday(year: i64, month: u32, n: u32) -> u32 {
    let first = days_from_civil(year, month, 1);
    // 1970-01-01 was a Thursday; with Sunday = 0 that is weekday 4.
    let weekday = (first + 4).rem_euclid(7) as u32;
    1 + (7 - weekday) % 7 + 7 * (n - 1)
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn resets_at_pacific_midnight() {
        // (now UTC, expected reset UTC)
        let cases = [
            // Winter: 2025-01-15 12:00Z → 2025-01-16 08:00Z.
            (1_736_942_400, 1_737_014_400),
            // Summer: 2025-07-01 12:00Z (05:00 PDT) → 2025-07-02 07:00Z.
            (1_751_371_200, 1_751_439_600),
            // Just after midnight PDT, 2025-07-02 07:00:01Z → 2025-07-03 07:00Z.
            (1_751_439_601, 1_751_526_000),
            // Day of the spring switch: 2025-03-09 12:00Z (05:00 PDT) → 2025-03-10 07:00Z.
            (1_741_521_600, 1_741_590_000),
            // Day before the spring switch: 2025-03-08 20:00Z (12:00 PST) → 2025-03-09 08:00Z.
            (1_741_464_000, 1_741_507_200),
            // Day of the autumn switch: 2025-11-02 20:00Z (12:00 PST) → 2025-11-03 08:00Z.
            (1_762_113_600, 1_762_156_800),
        ];
        for (now, reset) in cases {
            assert_eq!(next_daily_reset(at(now)), at(reset), "now = {now}");
        }
    }

    #[test]
    fn calendar_round_trip() {
        for days in [-1000, 0, 365, 19_000, 20_000, 60_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(nth_sunday(2025, 3, 2), 9);
        assert_eq!(nth_sunday(2025, 11, 1), 2);
        assert_eq!(nth_sunday(2024, 3, 2), 10);
    }
}
