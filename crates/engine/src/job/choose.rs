//! Live or batch: what `mode` says, or — for `mode = "auto"` — what the
//! deadline allows, with the reason in words (plan output, run summary, and
//! stored with the run).
//!
//! `auto` batches when the deadline leaves the batch API its whole
//! completion window (it is cheaper), or when the live calls would take
//! longer than that window anyway (then it is also faster); otherwise it goes
//! live, the only path that can meet a deadline shorter than the window.

use sluice_spec::{Mode, Provider};

pub use crate::settings::Offload;

/// Decides for `provider`, given the live wall time its limits imply and
/// the estimated cost of both paths.
pub(crate) fn decide(
    provider: &Provider,
    live_seconds: Option<f64>,
    live_usd: Option<f64>,
    batch_usd: Option<f64>,
) -> Offload {
    let offload = |mode: &str, reason: String| Offload {
        mode: mode.into(),
        configured: provider.mode.name().into(),
        reason,
    };
    let deadline = match provider.mode {
        Mode::Live => return offload("live", "mode = \"live\"".into()),
        Mode::Batch => return offload("batch", "mode = \"batch\"".into()),
        Mode::Auto { deadline } => deadline.as_secs_f64(),
    };
    let window = provider.batch.completion_window.as_secs_f64();
    let cost = match (live_usd, batch_usd) {
        (Some(l), Some(b)) => format!("~${b:.2} instead of ~${l:.2} live"),
        _ => "at the batch price, about half the live one".into(),
    };
    let live = live_seconds.map(|s| format!("about {}", span(s)));
    if window <= deadline {
        return offload(
            "batch",
            format!(
                "the {} deadline leaves the batch API its {} completion window; batch costs {cost}",
                span(deadline),
                span(window)
            ),
        );
    }
    match live_seconds {
        Some(secs) if secs > window => offload(
            "batch",
            format!(
                "live calls would take {} under the provider's limits, longer than the batch \
                 API's {} window; batch is faster and costs {cost}",
                live.unwrap_or_default(),
                span(window)
            ),
        ),
        _ => {
            let estimate = match (live_seconds, live) {
                (Some(secs), Some(text)) if secs > deadline => format!(
                    "live calls take {text} under the provider's limits (past the deadline, but the fastest path)"
                ),
                (_, Some(text)) => format!("live calls take {text} under the provider's limits"),
                _ => "the provider's limits set no bound on live calls".into(),
            };
            offload(
                "live",
                format!(
                    "the {} deadline is shorter than the batch API's {} completion window; {estimate}",
                    span(deadline),
                    span(window)
                ),
            )
        }
    }
}

/// 90 → "1m30s"; 7200 → "2h"; 93600 → "26h".
pub(crate) fn span(secs: f64) -> String {
    let s = secs.round() as u64;
    let (h, m, sec) = (s / 3600, s % 3600 / 60, s % 60);
    match (h, m, sec) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, sec) => format!("{m}m{sec:02}s"),
        (h, 0, _) => format!("{h}h"),
        (h, m, _) => format!("{h}h{m:02}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn auto(deadline_h: u64) -> Provider {
        Provider {
            mode: Mode::Auto {
                deadline: Duration::from_secs(deadline_h * 3600),
            },
            ..Provider::default()
        }
    }

    #[test]
    fn auto_batches_when_the_deadline_allows_it_or_live_is_slower_anyway() {
        let d = decide(&auto(48), Some(600.0), Some(10.0), Some(5.0));
        assert!(d.batched(), "{d:?}");
        assert!(
            d.reason
                .contains("48h deadline leaves the batch API its 24h"),
            "{}",
            d.reason
        );
        assert!(
            d.reason.contains("~$5.00 instead of ~$10.00 live"),
            "{}",
            d.reason
        );
        let d = decide(&auto(6), Some(30.0 * 3600.0), None, None);
        assert!(d.batched(), "{d:?}");
        assert!(d.reason.contains("about 30h"), "{}", d.reason);
        assert_eq!(d.configured, "auto");
    }

    #[test]
    fn auto_goes_live_when_the_deadline_is_shorter_than_the_window() {
        let d = decide(&auto(6), Some(5400.0), None, None);
        assert_eq!(d.mode, "live");
        assert!(d.reason.contains("6h deadline is shorter"), "{}", d.reason);
        assert!(d.reason.contains("about 1h30m"), "{}", d.reason);
        let d = decide(&auto(1), Some(3.0 * 3600.0), None, None);
        assert!(d.reason.contains("past the deadline"), "{}", d.reason);
        let d = decide(&auto(1), None, None, None);
        assert!(d.reason.contains("no bound"), "{}", d.reason);
    }

    #[test]
    fn fixed_modes_are_kept() {
        let live = decide(&Provider::default(), Some(1e9), None, None);
        assert_eq!(
            (live.mode.as_str(), live.configured.as_str()),
            ("live", "live")
        );
        let batch = Provider {
            mode: Mode::Batch,
            ..Provider::default()
        };
        assert!(decide(&batch, None, None, None).batched());
        assert_eq!(span(90.0), "1m30s");
        assert_eq!(span(45.0), "45s");
        assert_eq!(span(93_600.0), "26h");
    }
}
