//! TIMEZONE: the zone of the calendar month in the stats.

use crate::settings::Settings;

/// Minutes east of UTC of TIMEZONE now: `UTC`, `UTC+8`, `+08:00` and `-0530` style offsets;
/// zone names count as UTC until zone data is read.
pub fn utc_offset_minutes(settings: &Settings) -> i32 {
    parse_offset(settings.text("TIMEZONE")).unwrap_or(0)
}

fn parse_offset(text: &str) -> Option<i32> {
    let rest = text.trim();
    let rest = rest
        .strip_prefix("UTC")
        .or_else(|| rest.strip_prefix("GMT"))
        .unwrap_or(rest);
    if rest.is_empty() {
        return Some(0);
    }
    let (sign, digits) = match rest.as_bytes().first()? {
        b'+' => (1, &rest[1..]),
        b'-' => (-1, &rest[1..]),
        _ => return None,
    };
    let digits: String = digits.chars().filter(|c| *c != ':').collect();
    let (h, m) = match digits.len() {
        1 | 2 => (digits.parse::<i32>().ok()?, 0),
        4 => (
            digits[..2].parse::<i32>().ok()?,
            digits[2..].parse::<i32>().ok()?,
        ),
        _ => return None,
    };
    (h <= 14 && m < 60).then_some(sign * (h * 60 + m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets() {
        assert_eq!(parse_offset("UTC"), Some(0));
        assert_eq!(parse_offset("UTC+8"), Some(480));
        assert_eq!(parse_offset("+05:30"), Some(330));
        assert_eq!(parse_offset("-0300"), Some(-180));
        assert_eq!(parse_offset("Asia/Shanghai"), None);
    }
}
