//! The windows a quota counts in: the calendar minute, day and month, in UTC.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A fixed window of a quota. Windows are calendar periods in UTC (a minute from `:00`, a day
/// from midnight, a month from its first day), the same on every instance, so that counts
/// shared through a store add up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Window {
    /// The current minute.
    Minute,
    /// The current day (UTC).
    Day,
    /// The current calendar month (UTC).
    Month,
}

impl Window {
    /// Every window, shortest first.
    pub const ALL: [Window; 3] = [Window::Minute, Window::Day, Window::Month];

    /// `minute`, `day` or `month` (what a store's rows say).
    pub fn as_str(self) -> &'static str {
        match self {
            Window::Minute => "minute",
            Window::Day => "day",
            Window::Month => "month",
        }
    }

    /// The window a store's row names.
    pub fn parse(s: &str) -> Option<Window> {
        match s {
            "minute" => Some(Window::Minute),
            "day" => Some(Window::Day),
            "month" => Some(Window::Month),
            _ => None,
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Window::Minute => 0,
            Window::Day => 1,
            Window::Month => 2,
        }
    }

    /// The number of the window `at` falls in: minutes or days since 1970, or months since
    /// year 0 (`year × 12 + month − 1`).
    pub fn bucket(self, at: SystemTime) -> i64 {
        let secs = seconds(at);
        match self {
            Window::Minute => secs.div_euclid(60),
            Window::Day => secs.div_euclid(86_400),
            Window::Month => {
                let (year, month, _) = civil(secs.div_euclid(86_400));
                year * 12 + month - 1
            }
        }
    }

    /// How long from `at` until its window ends (at least one second, as `Retry-After` says
    /// it in whole seconds).
    pub fn remaining(self, at: SystemTime) -> Duration {
        let secs = seconds(at);
        let end = match self {
            Window::Minute => (secs.div_euclid(60) + 1) * 60,
            Window::Day => (secs.div_euclid(86_400) + 1) * 86_400,
            Window::Month => {
                let (year, month, _) = civil(secs.div_euclid(86_400));
                let (year, month) = if month == 12 {
                    (year + 1, 1)
                } else {
                    (year, month + 1)
                };
                days_from_civil(year, month, 1) * 86_400
            }
        };
        let left = at
            .duration_since(UNIX_EPOCH)
            .map(|now| Duration::from_secs(u64::try_from(end).unwrap_or(0)).saturating_sub(now))
            .unwrap_or_default();
        left.max(Duration::from_secs(1))
    }
}

fn seconds(at: SystemTime) -> i64 {
    match at.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// (year, month 1–12, day 1–31) of a day number since 1970 (H. Hinnant's algorithm).
fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The day number since 1970 of a date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn calendar_buckets_and_what_is_left() {
        // 2026-12-31T23:59:30Z
        let t = at(1_798_761_570);
        assert_eq!(civil(Window::Day.bucket(t)), (2026, 12, 31));
        assert_eq!(Window::Month.bucket(t), 2026 * 12 + 11);
        assert_eq!(Window::Minute.remaining(t), Duration::from_secs(30));
        assert_eq!(Window::Day.remaining(t), Duration::from_secs(30));
        assert_eq!(Window::Month.remaining(t), Duration::from_secs(30));
        // A second later in the next month and year.
        let next = at(1_798_761_600);
        assert_eq!(Window::Month.bucket(next), 2027 * 12);
        assert_eq!(Window::Minute.remaining(next), Duration::from_secs(60));
        assert_eq!(
            Window::Month.remaining(next),
            Duration::from_secs(31 * 86_400)
        );
        // February of a leap year.
        let feb = UNIX_EPOCH + Duration::from_secs(days_from_civil(2028, 2, 10) as u64 * 86_400);
        assert_eq!(
            Window::Month.remaining(feb),
            Duration::from_secs(20 * 86_400)
        );
        for days in [-1, 0, 59, 365 * 30 + 7, 20_000] {
            let (y, m, d) = civil(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        for w in Window::ALL {
            assert_eq!(Window::parse(w.as_str()), Some(w));
        }
    }
}
