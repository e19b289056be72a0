//! When a unit and each of its steps started and finished: `started_at`,
//! `finished_at` (RFC 3339, UTC, milliseconds) and `duration_ms` in results.
//!
//! A step's time runs from the moment the unit entered it to the moment its
//! output was ready: waits for a rate or a place, retries and backoff
//! included (`latency_ms` is the call alone). The fixed-width stamps sort as
//! text, so the span of a fan-out's elements is their least and greatest.

use serde_json::{json, Map, Value as Json};

use super::output::StepOutput;

/// `unix_ms` as `2026-12-07T03:40:00.123Z`.
pub(crate) fn stamp(unix_ms: i64) -> String {
    let ms = u64::try_from(unix_ms).unwrap_or(0);
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(at).to_string()
}

/// Sets `output`'s times to the span `started_ms`..`finished_ms`.
pub(crate) fn set(output: &mut StepOutput, started_ms: i64, finished_ms: i64) {
    let finished_ms = finished_ms.max(started_ms);
    output.started_at = Some(stamp(started_ms));
    output.finished_at = Some(stamp(finished_ms));
    output.duration_ms = Some((finished_ms - started_ms) as u64);
}

/// The unit's three fields, from its record's times (milliseconds).
pub(crate) fn unit_fields(line: &mut Map<String, Json>, started_ms: i64, finished_ms: i64) {
    let finished_ms = finished_ms.max(started_ms);
    line.insert("started_at".into(), json!(stamp(started_ms)));
    line.insert("finished_at".into(), json!(stamp(finished_ms)));
    line.insert("duration_ms".into(), json!(finished_ms - started_ms));
}

/// The span of several outputs' times (a fan-out's elements, a
/// conversation's turns): the earliest start, the latest end, and the
/// milliseconds between them; `None` when none carries times (results
/// recorded before times were kept).
pub(crate) fn span<'a>(
    outputs: impl IntoIterator<Item = &'a Json>,
) -> Option<(String, String, u64)> {
    let mut first: Option<&str> = None;
    let mut last: Option<&str> = None;
    for o in outputs {
        let (Some(s), Some(f)) = (
            o.get("started_at").and_then(Json::as_str),
            o.get("finished_at").and_then(Json::as_str),
        ) else {
            continue;
        };
        first = Some(first.map_or(s, |a| a.min(s)));
        last = Some(last.map_or(f, |a| a.max(f)));
    }
    let (first, last) = (first?, last?);
    let ms = |t: &str| sluice_provider::rfc3339_unix(t).map(|s| (s * 1000.0).round() as i64);
    let duration = (ms(last)? - ms(first)?).max(0) as u64;
    Some((first.to_owned(), last.to_owned(), duration))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_utc_with_milliseconds_and_sort_as_text() {
        assert_eq!(stamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(stamp(1_795_445_401_250), "2026-11-23T14:50:01.250Z");
        assert!(stamp(1_795_445_401_250) < stamp(1_795_445_401_251));
        assert!(stamp(999) < stamp(1_000));
    }

    #[test]
    fn a_span_runs_from_the_earliest_start_to_the_latest_end() {
        let mut a = StepOutput::default();
        set(&mut a, 1_000, 1_500);
        let mut b = StepOutput::default();
        set(&mut b, 1_200, 3_250);
        let list = [a.to_value(), b.to_value(), json!({"text": "old"})];
        let (s, f, d) = span(&list).unwrap();
        assert_eq!(s, stamp(1_000));
        assert_eq!(f, stamp(3_250));
        assert_eq!(d, 2_250);
        assert_eq!(span(&[json!({"text": "old"})]), None);
    }

    #[test]
    fn an_end_before_its_start_is_no_negative_duration() {
        let mut a = StepOutput::default();
        set(&mut a, 2_000, 1_000);
        assert_eq!(a.duration_ms, Some(0));
        assert_eq!(a.started_at, a.finished_at);
    }
}
