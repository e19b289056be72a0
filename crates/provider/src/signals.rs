//! Rate-limit signals a provider sends back: `retry-after`, `retry-after-ms`,
//! OpenAI's `x-ratelimit-*` family and Anthropic's `anthropic-ratelimit-*`
//! (whose resets are RFC 3339 times), parsed once per response.

use std::time::Duration;

use http::HeaderMap;

/// What the provider said about its limits in one response.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RateSignals {
    /// `x-ratelimit-remaining-requests`.
    pub remaining_requests: Option<u64>,
    /// `x-ratelimit-reset-requests`: time until the request budget is full again.
    pub reset_requests: Option<Duration>,
    /// `x-ratelimit-remaining-tokens`.
    pub remaining_tokens: Option<u64>,
    /// `x-ratelimit-reset-tokens`.
    pub reset_tokens: Option<Duration>,
    /// `x-ratelimit-limit-requests`: the provider's requests per minute.
    pub limit_requests: Option<u64>,
    /// `x-ratelimit-limit-tokens`: the provider's tokens per minute.
    pub limit_tokens: Option<u64>,
}

impl RateSignals {
    /// Reads the OpenAI-style headers, else Anthropic's; absent or malformed
    /// ones are `None`.
    pub fn from_headers(headers: &HeaderMap) -> RateSignals {
        let openai = RateSignals::openai(headers);
        // Most responses carry no Anthropic headers: check once, allocate nothing.
        let anthropic = headers
            .keys()
            .any(|k| k.as_str().starts_with(ANTHROPIC_PREFIX));
        if openai != RateSignals::default() || !anthropic {
            return openai;
        }
        RateSignals::anthropic(headers, unix_now())
    }

    fn openai(headers: &HeaderMap) -> RateSignals {
        let num = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let dur = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_reset_duration)
        };
        RateSignals {
            remaining_requests: num("x-ratelimit-remaining-requests"),
            reset_requests: dur("x-ratelimit-reset-requests"),
            remaining_tokens: num("x-ratelimit-remaining-tokens"),
            reset_tokens: dur("x-ratelimit-reset-tokens"),
            limit_requests: num("x-ratelimit-limit-requests"),
            limit_tokens: num("x-ratelimit-limit-tokens"),
        }
    }
}

impl RateSignals {
    /// Anthropic's `anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}`
    /// (tokens: the combined family, else the input-token one); `now` in
    /// Unix seconds turns the reset times into waits.
    fn anthropic(headers: &HeaderMap, now: f64) -> RateSignals {
        let text = |name: &str| {
            headers
                .get(format!("{ANTHROPIC_PREFIX}{name}"))
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        };
        let num = |name: &str| text(name).and_then(|v| v.parse::<u64>().ok());
        let reset = |name: &str| {
            let at = rfc3339_unix(text(name)?)?;
            Some(Duration::from_secs_f64((at - now).max(0.0)))
        };
        let tokens = if text("tokens-limit").is_some() {
            "tokens"
        } else {
            "input-tokens"
        };
        RateSignals {
            remaining_requests: num("requests-remaining"),
            reset_requests: reset("requests-reset"),
            remaining_tokens: num(&format!("{tokens}-remaining")),
            reset_tokens: reset(&format!("{tokens}-reset")),
            limit_requests: num("requests-limit"),
            limit_tokens: num(&format!("{tokens}-limit")),
        }
    }
}

const ANTHROPIC_PREFIX: &str = "anthropic-ratelimit-";

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

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

/// The wait a provider asked for: `retry-after-ms` (milliseconds) wins over
/// `retry-after` (seconds; an HTTP date is ignored, it is rare on APIs).
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        if ms.is_finite() && ms >= 0.0 {
            return Some(Duration::from_micros((ms * 1000.0) as u64));
        }
    }
    let secs = text("retry-after")?.parse::<f64>().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_millis((secs * 1000.0) as u64))
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
    fn anthropic_headers_are_read_when_openai_ones_are_absent() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("anthropic-ratelimit-requests-limit", "50"),
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", "1970-01-01T00:00:12Z"),
            ("anthropic-ratelimit-input-tokens-limit", "40000"),
            ("anthropic-ratelimit-input-tokens-remaining", "39000"),
            (
                "anthropic-ratelimit-input-tokens-reset",
                "1970-01-01T00:00:10.5Z",
            ),
        ] {
            h.insert(http::HeaderName::from_static(k), v.parse().unwrap());
        }
        let s = RateSignals::anthropic(&h, 10.0);
        assert_eq!(s.limit_requests, Some(50));
        assert_eq!(s.remaining_requests, Some(0));
        assert_eq!(s.reset_requests, Some(Duration::from_secs(2)));
        assert_eq!(
            (s.limit_tokens, s.remaining_tokens),
            (Some(40_000), Some(39_000))
        );
        assert_eq!(s.reset_tokens, Some(Duration::from_millis(500)));
        // A reset in the past is no wait at all.
        assert_eq!(
            RateSignals::anthropic(&h, 100.0).reset_requests,
            Some(Duration::ZERO)
        );
        // OpenAI's headers win when both are present.
        h.insert("x-ratelimit-limit-requests", "7".parse().unwrap());
        assert_eq!(RateSignals::from_headers(&h).limit_requests, Some(7));
    }

    #[test]
    fn retry_after_ms_wins_over_seconds() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after-ms", "150".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(150)));
        h.insert("retry-after-ms", "garbage".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
    }
}
