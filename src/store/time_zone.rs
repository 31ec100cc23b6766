//! [`TimeZone`]: where a store's calendar days and months begin.
//!
//! Usage is kept in UTC; only two things depend on a calendar: the statistics' "this month"
//! (from the 1st, 00:00 local time) and the daily log purge (at 00:00 local time, when
//! [`Retention::logs_at_midnight`](super::Retention::logs_at_midnight) asks for it).
//! Zones are IANA names, read from the system's time zone database
//! (`/usr/share/zoneinfo`), with a copy compiled in for machines that have none; daylight
//! saving time is followed, so a month that starts in summer time starts at its local midnight.
//!
//! # Example
//!
//! ```
//! use std::time::{Duration, UNIX_EPOCH};
//! use gemini_balance::store::TimeZone;
//!
//! let shanghai = TimeZone::named("Asia/Shanghai")?;
//! // 2024-03-01T00:30+08:00 is already March in Shanghai (but still February in UTC) …
//! let t = UNIX_EPOCH + Duration::from_secs(1_709_224_200);
//! // … whose month began at 2024-03-01T00:00+08:00 = 2024-02-29T16:00Z.
//! assert_eq!(shanghai.month_start(t), UNIX_EPOCH + Duration::from_secs(1_709_222_400));
//! assert_eq!(TimeZone::utc().month_start(t), UNIX_EPOCH + Duration::from_secs(1_706_745_600));
//!
//! assert!(TimeZone::named("Mars/Olympus_Mons").is_err());
//! # Ok::<(), gemini_balance::store::UnknownTimeZone>(())
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use jiff::tz::{TimeZone as Zone, TimeZoneDatabase};
use jiff::{Timestamp, ZonedDateTime};

/// A time zone for calendar months and local midnights. Cloning is cheap.
#[derive(Clone)]
pub struct TimeZone {
    zone: Zone,
    name: Arc<str>,
}

impl fmt::Debug for TimeZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TimeZone").field(&self.name).finish()
    }
}

impl fmt::Display for TimeZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl PartialEq for TimeZone {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for TimeZone {}

impl Default for TimeZone {
    /// UTC.
    fn default() -> Self {
        TimeZone::utc()
    }
}

/// A time zone name that is not in the time zone database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownTimeZone {
    name: String,
}

impl fmt::Display for UnknownTimeZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown time zone {:?}: expected an IANA name such as Asia/Shanghai, Europe/Berlin or UTC",
            self.name
        )
    }
}

impl std::error::Error for UnknownTimeZone {}

impl TimeZone {
    /// Coordinated Universal Time.
    pub fn utc() -> TimeZone {
        TimeZone {
            zone: Zone::UTC,
            name: "UTC".into(),
        }
    }

    /// The zone of an IANA name (`Asia/Shanghai`, `America/New_York`, `UTC`; case-insensitive),
    /// from the system's database, else from the bundled copy.
    pub fn named(name: &str) -> Result<TimeZone, UnknownTimeZone> {
        let name = name.trim();
        let zone = jiff::tz::db()
            .get(name)
            .or_else(|_| TimeZoneDatabase::bundled().get(name))
            .map_err(|_| UnknownTimeZone {
                name: name.to_owned(),
            })?;
        let name = zone.iana_name().unwrap_or(name).into();
        Ok(TimeZone { zone, name })
    }

    /// A zone `minutes` east of UTC all year (no daylight saving time), named like `+08:00`.
    /// `None` beyond ±25 hours.
    pub fn fixed(minutes: i32) -> Option<TimeZone> {
        let offset = jiff::tz::Offset::from_seconds(minutes.checked_mul(60)?).ok()?;
        let sign = if minutes < 0 { '-' } else { '+' };
        let abs = minutes.unsigned_abs();
        Some(TimeZone {
            zone: Zone::fixed(offset),
            name: format!("{sign}{:02}:{:02}", abs / 60, abs % 60).into(),
        })
    }

    /// The name: the IANA name, `UTC`, or `±hh:mm` for a fixed offset.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// When the calendar month holding `at` began (the 1st, 00:00 local time; on the rare day
    /// without a midnight, the first instant of the day).
    pub fn month_start(&self, at: SystemTime) -> SystemTime {
        let month = self
            .zoned(at)
            .and_then(|z| z.first_of_month()?.start_of_day());
        self.instant(month, at)
    }

    /// The first local midnight after `at`.
    pub fn next_midnight(&self, at: SystemTime) -> SystemTime {
        let next = self.zoned(at).and_then(|z| z.tomorrow()?.start_of_day());
        self.instant(next, at + Duration::from_secs(86_400))
    }

    /// The instant a wall-clock time in this zone stands for: `local` is a date and time
    /// without a zone (`2025-05-09 14:30:00`, with `T` or a space, seconds and fractions
    /// optional), as systems that keep naive local times write them (Gemini-Balance's logs).
    /// A time that happens twice (when the clocks go back) is the earlier; one that never
    /// happens (skipped when they go forward) is read as if the clocks had not moved yet.
    /// `None` when `local` is not such a time.
    ///
    /// ```
    /// use std::time::{Duration, UNIX_EPOCH};
    /// use gemini_balance::store::TimeZone;
    ///
    /// let shanghai = TimeZone::named("Asia/Shanghai")?;
    /// // 08:00 in Shanghai is 00:00 UTC.
    /// let at = shanghai.instant_of_local("2025-01-15 08:00:00.250000").unwrap();
    /// assert_eq!(at, UNIX_EPOCH + Duration::from_millis(1_736_899_200_250));
    /// assert!(shanghai.instant_of_local("yesterday").is_none());
    /// # Ok::<(), gemini_balance::store::UnknownTimeZone>(())
    /// ```
    pub fn instant_of_local(&self, local: &str) -> Option<SystemTime> {
        let civil: jiff::civil::DateTime = local.trim().parse().ok()?;
        let zoned = self
            .zone
            .to_ambiguous_zoned_datetime(civil)
            .compatible()
            .ok()?;
        SystemTime::try_from(zoned.timestamp()).ok()
    }

    fn zoned(&self, at: SystemTime) -> Result<ZonedDateTime, jiff::Error> {
        Ok(Timestamp::try_from(at)?.to_zoned_datetime(self.zone.clone()))
    }

    /// The instant of a computed local time; `fallback` when it is out of range.
    fn instant(
        &self,
        zoned: Result<ZonedDateTime, jiff::Error>,
        fallback: SystemTime,
    ) -> SystemTime {
        zoned
            .ok()
            .and_then(|z| SystemTime::try_from(z.timestamp()).ok())
            .unwrap_or(fallback)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The instant of an RFC 3339 timestamp.
    fn at(text: &str) -> SystemTime {
        let ts: Timestamp = text.parse().unwrap();
        SystemTime::try_from(ts).unwrap()
    }

    #[test]
    fn months_begin_at_local_midnight_in_shanghai() {
        let tz = TimeZone::named("Asia/Shanghai").unwrap();
        assert_eq!(tz.name(), "Asia/Shanghai");
        // Late on the last day of February in UTC is already March in Shanghai.
        assert_eq!(
            tz.month_start(at("2024-02-29T16:00:00Z")),
            at("2024-02-29T16:00:00Z")
        );
        assert_eq!(
            tz.month_start(at("2024-02-29T15:59:59Z")),
            at("2024-01-31T16:00:00Z")
        );
        // New year.
        assert_eq!(
            tz.month_start(at("2025-01-15T03:00:00Z")),
            at("2024-12-31T16:00:00Z")
        );
        assert_eq!(
            tz.next_midnight(at("2024-03-10T15:59:00Z")),
            at("2024-03-10T16:00:00Z")
        );
        assert_eq!(
            tz.next_midnight(at("2024-03-10T16:00:00Z")),
            at("2024-03-11T16:00:00Z")
        );
    }

    #[test]
    fn months_and_midnights_follow_daylight_saving_time() {
        let tz = TimeZone::named("america/new_york").unwrap();
        assert_eq!(tz.name(), "America/New_York");
        // March 2024 began in winter time (UTC-5); April in summer time (UTC-4).
        assert_eq!(
            tz.month_start(at("2024-03-20T12:00:00Z")),
            at("2024-03-01T05:00:00Z")
        );
        assert_eq!(
            tz.month_start(at("2024-04-01T03:59:59Z")),
            at("2024-03-01T05:00:00Z")
        );
        assert_eq!(
            tz.month_start(at("2024-04-01T04:00:00Z")),
            at("2024-04-01T04:00:00Z")
        );
        // November began in summer time, though the clocks went back on the 3rd.
        assert_eq!(
            tz.month_start(at("2024-11-20T12:00:00Z")),
            at("2024-11-01T04:00:00Z")
        );
        // The day the clocks go forward has 23 hours: the next midnight is still local 00:00.
        assert_eq!(
            tz.next_midnight(at("2024-03-10T05:00:00Z")),
            at("2024-03-11T04:00:00Z")
        );
    }

    #[test]
    fn fixed_offsets_and_unknown_names() {
        let tz = TimeZone::fixed(-300).unwrap();
        assert_eq!(tz.name(), "-05:00");
        assert_eq!(
            tz.month_start(at("2024-03-01T03:00:00Z")),
            at("2024-02-01T05:00:00Z")
        );
        assert_eq!(TimeZone::fixed(480).unwrap().name(), "+08:00");
        assert!(TimeZone::fixed(26 * 60).is_none());
        let err = TimeZone::named("Asia/Atlantis").unwrap_err();
        assert!(err.to_string().contains("Asia/Atlantis"));
        assert_eq!(TimeZone::named("UTC").unwrap(), TimeZone::utc());
    }

    #[test]
    fn local_times_read_in_the_zone() {
        let tz = TimeZone::named("Asia/Shanghai").unwrap();
        for (local, utc) in [
            ("2025-05-09 14:30:00", "2025-05-09T06:30:00Z"),
            ("2025-05-09T14:30:00.123456", "2025-05-09T06:30:00.123456Z"),
            ("2025-05-09 14:30", "2025-05-09T06:30:00Z"),
            ("2025-01-01 00:00:00", "2024-12-31T16:00:00Z"),
        ] {
            assert_eq!(tz.instant_of_local(local), Some(at(utc)), "{local}");
        }
        for bad in [
            "",
            "2025-13-01 00:00:00",
            "14:30",
            "2025-05-09 14:30:00+02:00x",
        ] {
            assert_eq!(tz.instant_of_local(bad), None, "{bad}");
        }
        let ny = TimeZone::named("America/New_York").unwrap();
        // 01:30 happened twice on 2024-11-03: the first one, in summer time (UTC-4).
        assert_eq!(
            ny.instant_of_local("2024-11-03 01:30:00"),
            Some(at("2024-11-03T05:30:00Z"))
        );
        // 02:30 never happened on 2024-03-10: read as winter time (UTC-5).
        assert_eq!(
            ny.instant_of_local("2024-03-10 02:30:00"),
            Some(at("2024-03-10T07:30:00Z"))
        );
    }

    #[test]
    fn the_bundled_database_has_the_zones() {
        // What a machine without /usr/share/zoneinfo gets.
        for name in ["Asia/Shanghai", "America/New_York", "Europe/Berlin", "UTC"] {
            assert!(TimeZoneDatabase::bundled().get(name).is_ok(), "{name}");
        }
    }
}
