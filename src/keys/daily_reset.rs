//! When Gemini's per-day quotas reset: midnight in America/Los_Angeles.
//!
//! The zone's rules come from jiff's time zone database (the system's, else the copy compiled
//! in), not from hard-coded US daylight-saving dates, so a change in the rules reaches us with
//! the tzdb.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use jiff::tz::{TimeZone, TimeZoneDatabase};
use jiff::Timestamp;

/// The zone whose midnight resets Gemini's daily quotas.
const QUOTA_ZONE: &str = "America/Los_Angeles";

/// The Pacific zone, looked up once (when the first pool is built: the lookup reads the
/// system's tzdb, which is not for the request path): from the system's tzdb, else from the bundled copy (which
/// always holds it), else, should both fail, a fixed UTC−8 (Pacific standard time).
pub(super) fn pacific() -> &'static TimeZone {
    static ZONE: OnceLock<TimeZone> = OnceLock::new();
    ZONE.get_or_init(|| {
        jiff::tz::db()
            .get(QUOTA_ZONE)
            .or_else(|_| TimeZoneDatabase::bundled().get(QUOTA_ZONE))
            .unwrap_or_else(|_| TimeZone::fixed(jiff::tz::offset(-8)))
    })
}

/// The next midnight in America/Los_Angeles after `now` (Pacific time, daylight saving
/// included).
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
    Timestamp::try_from(now)
        .and_then(|t| {
            t.to_zoned_datetime(pacific().clone())
                .tomorrow()?
                .start_of_day()
        })
        .ok()
        .and_then(|midnight| SystemTime::try_from(midnight.timestamp()).ok())
        // Only for instants beyond jiff's range (years ±9999): a day from now.
        .unwrap_or(now + Duration::from_secs(86_400))
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

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
            // Exactly midnight PDT, 2025-07-02 07:00:00Z → the next one, 2025-07-03 07:00Z.
            (1_751_439_600, 1_751_526_000),
            // Day of the spring switch: 2025-03-09 12:00Z (05:00 PDT) → 2025-03-10 07:00Z.
            (1_741_521_600, 1_741_590_000),
            // Day before the spring switch: 2025-03-08 20:00Z (12:00 PST) → 2025-03-09 08:00Z.
            (1_741_464_000, 1_741_507_200),
            // Day of the autumn switch: 2025-11-02 20:00Z (12:00 PST) → 2025-11-03 08:00Z.
            (1_762_113_600, 1_762_156_800),
            // Before the 2007 rules (DST from the first Sunday of April): 2006-04-01 12:00Z
            // (04:00 PST) → 2006-04-02 08:00Z; the clocks moved at 02:00 that day.
            (1_143_892_800, 1_143_964_800),
        ];
        for (now, reset) in cases {
            assert_eq!(next_daily_reset(at(now)), at(reset), "now = {now}");
        }
    }

    #[test]
    fn out_of_range_instants_get_a_day() {
        let far = UNIX_EPOCH + Duration::from_secs(400_000 * 365 * 86_400);
        assert_eq!(next_daily_reset(far), far + Duration::from_secs(86_400));
    }
}
