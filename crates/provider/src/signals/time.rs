//! The time formats rate-limit headers use: Go-style durations (OpenAI's
//! resets), RFC 3339 times (Anthropic's resets) and HTTP dates
//! (`retry-after`'s other form).

use std::time::Duration;

/// An RFC 3339 time (`2026-12-01T15:04:05Z`, fractions and `+02:00` offsets
/// allowed) as Unix seconds.
pub fn rfc3339_unix(text: &str) -> Option<f64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let n = |range: std::ops::Range<usize>| text.get(range)?.parse::<i64>().ok();
    let (year, month, day) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (hour, minute) = (n(11..13)?, n(14..16)?);
    let mut rest = text.get(17..)?;
    let secs_end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let seconds: f64 = rest[..secs_end].parse().ok()?;
    rest = &rest[secs_end..];
    let offset = match rest.as_bytes().first()? {
        b'Z' | b'z' => 0,
        sign @ (b'+' | b'-') => {
            let h: i64 = rest.get(1..3)?.parse().ok()?;
            let m: i64 = rest.get(4..6)?.parse().ok()?;
            let o = h * 3600 + m * 60;
            if *sign == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return None,
    };
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + hour * 3600 + minute * 60 - offset) as f64 + seconds)
}

/// Parses OpenAI's reset durations: `"1s"`, `"6m0s"`, `"20ms"`, `"1h2m3.5s"`, or
/// a bare number of seconds.
pub fn parse_reset_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let mut total = 0f64;
    let mut rest = text;
    let mut any = false;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let value: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (scale, unit_len) = if rest.starts_with("ms") {
            (0.001, 2)
        } else if rest.starts_with('h') {
            (3600.0, 1)
        } else if rest.starts_with('m') {
            (60.0, 1)
        } else if rest.starts_with('s') {
            (1.0, 1)
        } else {
            return None;
        };
        total += value * scale;
        rest = &rest[unit_len..];
        any = true;
    }
    any.then(|| Duration::from_secs_f64(total))
}

/// An HTTP date (RFC 9110 IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`) as
/// Unix seconds; the obsolete RFC 850 and asctime forms are not read.
pub(crate) fn http_date_unix(text: &str) -> Option<f64> {
    let rest = text.trim().split_once(", ")?.1;
    let mut parts = rest.split(' ');
    let day: i64 = parts.next()?.parse().ok()?;
    let month = parts.next()?;
    let year: i64 = parts.next()?.parse().ok()?;
    let time = parts.next()?;
    if parts.next()? != "GMT" {
        return None;
    }
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == month)? + 1;
    rfc3339_unix(&format!("{year:04}-{month:02}-{day:02}T{time}Z"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_openai_reset_formats() {
        assert_eq!(parse_reset_duration("1s"), Some(Duration::from_secs(1)));
        assert_eq!(parse_reset_duration("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(
            parse_reset_duration("20ms"),
            Some(Duration::from_millis(20))
        );
        assert_eq!(
            parse_reset_duration("1h2m3.5s"),
            Some(Duration::from_secs_f64(3723.5))
        );
        assert_eq!(
            parse_reset_duration("23h47m36s"),
            Some(Duration::from_secs(85_656))
        );
        assert_eq!(
            parse_reset_duration("2.5"),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(parse_reset_duration("soon"), None);
        assert_eq!(parse_reset_duration("5x"), None);
    }

    #[test]
    fn rfc3339_times_become_unix_seconds() {
        assert_eq!(rfc3339_unix("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(rfc3339_unix("2026-11-23T14:50:01Z"), Some(1_795_445_401.0));
        assert_eq!(
            rfc3339_unix("2026-11-23T16:50:01.5+02:00"),
            Some(1_795_445_401.5)
        );
        assert_eq!(
            rfc3339_unix("2000-02-29T00:00:00-00:30"),
            Some(951_784_200.0)
        );
        assert_eq!(rfc3339_unix("soon"), None);
        assert_eq!(rfc3339_unix("2026-13-01T00:00:00Z"), None);
    }

    #[test]
    fn http_dates_become_unix_seconds() {
        // RFC 9110's own example.
        assert_eq!(
            http_date_unix("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777.0)
        );
        assert_eq!(
            http_date_unix("Mon, 23 Nov 2026 14:50:01 GMT"),
            Some(1_795_445_401.0)
        );
        assert_eq!(http_date_unix("Sunday, 06-Nov-94 08:49:37 GMT"), None);
        assert_eq!(http_date_unix("120"), None);
    }
}
