//! Progress on stderr (a live bar on a terminal, plain periodic lines
//! otherwise) and the end-of-run summary.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sluice_engine::{Progress, RunReport, Snapshot};

/// A thread drawing progress until [`ProgressDisplay::finish`].
pub(crate) struct ProgressDisplay {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl ProgressDisplay {
    /// Starts drawing; `interval_secs` is the period of plain lines off a terminal
    /// (0 turns them off).
    pub(crate) fn start(progress: Arc<Progress>, interval_secs: f64) -> ProgressDisplay {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let terminal = std::io::stderr().is_terminal();
        let handle = std::thread::Builder::new()
            .name("sluice-progress".into())
            .spawn(move || {
                if terminal {
                    draw_bar(&progress, &flag)
                } else if interval_secs > 0.0 {
                    print_lines(&progress, &flag, Duration::from_secs_f64(interval_secs))
                }
            })
            .ok();
        ProgressDisplay { stop, handle }
    }

    /// Stops drawing and clears the bar.
    pub(crate) fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

fn draw_bar(progress: &Progress, stop: &AtomicBool) {
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr_with_hz(10));
    bar.set_style(
        ProgressStyle::with_template("{bar:30.cyan/blue} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    while !stop.load(Ordering::Relaxed) {
        let s = progress.snapshot();
        bar.set_length(s.total);
        bar.set_position(s.skipped + s.done + s.failed);
        bar.set_message(status_text(&s));
        std::thread::sleep(Duration::from_millis(100));
    }
    bar.finish_and_clear();
}

fn print_lines(progress: &Progress, stop: &AtomicBool, every: Duration) {
    let tick = Duration::from_millis(50);
    let mut waited = Duration::ZERO;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(tick);
        waited += tick;
        if waited >= every {
            waited = Duration::ZERO;
            let s = progress.snapshot();
            eprintln!(
                "[{:>7.1}s] {}/{} · {}",
                s.elapsed_secs,
                fmt_count(s.skipped + s.done + s.failed),
                fmt_count(s.total),
                status_text(&s)
            );
        }
    }
}

/// done/failed/in-flight, calls/s, tokens/min and ETA on one line.
fn status_text(s: &Snapshot) -> String {
    let minutes = s.elapsed_secs / 60.0;
    let tokens_per_min = if minutes > 0.0 {
        s.tokens as f64 / minutes
    } else {
        0.0
    };
    // A paused run's clock stands still: no ETA until it resumes.
    let eta = if s.paused {
        "– (paused)".to_string()
    } else {
        s.eta().map(fmt_duration).unwrap_or_else(|| "–".to_string())
    };
    // Only runs that offload to a batch API have requests waiting there.
    let in_batch = if s.in_batch > 0 {
        format!(" · {} in batch", fmt_count(s.in_batch))
    } else {
        String::new()
    };
    format!(
        "{} done · {} failed · {} in flight{in_batch} · {:.0} calls/s · {} tok/min · {} retries · {} × 429 · ETA {eta}",
        fmt_count(s.done),
        fmt_count(s.failed),
        s.in_flight,
        if s.elapsed_secs > 0.0 { s.attempts as f64 / s.elapsed_secs } else { 0.0 },
        fmt_count(tokens_per_min as u64),
        fmt_count(s.retries),
        fmt_count(s.throttled),
    )
}

/// The end-of-run summary for a person.
pub(crate) fn summary(report: &RunReport) -> String {
    let s = &report.progress;
    let headline = if report.interrupted {
        "interrupted (state saved; run the same command again to resume)"
    } else if s.budget_reached {
        "stopped at its budget (state saved)"
    } else if s.failed > 0 {
        "finished with failures"
    } else {
        "finished"
    };
    let mut text = format!(
        "sluice: run {} {headline} in {}\n",
        report.run_id,
        fmt_duration(Duration::from_secs_f64(s.elapsed_secs))
    );
    text += &format!(
        "  items      {} total · {} done · {} failed · {} already done{}\n",
        fmt_count(s.total),
        fmt_count(s.done),
        fmt_count(s.failed),
        fmt_count(s.skipped),
        match s.remaining() {
            0 => String::new(),
            n => format!(" · {} pending", fmt_count(n)),
        }
    );
    let secs = s.elapsed_secs.max(1e-9);
    text += &format!(
        "  throughput {:.1} items/s · {} tokens/min\n",
        (s.done + s.failed) as f64 / secs,
        fmt_count((s.tokens as f64 / secs * 60.0) as u64)
    );
    text += &format!(
        "  calls      {} attempts · {} retries · {} × 429\n",
        fmt_count(s.attempts),
        fmt_count(s.retries),
        fmt_count(s.throttled)
    );
    if s.cache_hits > 0 || s.fallbacks > 0 {
        text += &format!(
            "  steps      {} from cache · {} ended with their fallback\n",
            fmt_count(s.cache_hits),
            fmt_count(s.fallbacks)
        );
    }
    if s.spent_usd > 0.0 || s.budget_reached {
        text += &format!("  spent      ${:.4}", s.spent_usd);
        if s.budget_reached {
            text += " · budget reached: no new calls were started; rerun with a higher budget to continue";
        }
        text += "\n";
    }
    for note in &report.notes {
        text += &format!("  offload    {note}\n");
    }
    if s.breaker_openings > 0 {
        text += &format!(
            "  breakers   opened {} time(s): an endpoint kept failing and was rested\n",
            s.breaker_openings
        );
        for b in &report.breakers {
            text += &format!(
                "             {} {} opened {} time(s)\n",
                b.provider, b.url, b.openings
            );
        }
    }
    if s.webhook_failures > 0 {
        text += &format!(
            "  webhooks   {} deliveries failed after their retries (recorded as step \"(webhook)\")\n",
            fmt_count(s.webhook_failures)
        );
    }
    if !report.errors.is_empty() {
        text += "  errors     by cause (step · code · message; reply text and ids left out)\n";
        for line in error_group_lines(&report.errors, "             ") {
            text += &line;
        }
    }
    if s.failed > 0 {
        text += &format!("  see errors with `sluice status {}`\n", report.run_id);
    }
    text
}

/// Each group as `COUNT × step · code: cause` and an example item, indented.
pub(crate) fn error_group_lines(groups: &[sluice_engine::ErrorGroup], indent: &str) -> Vec<String> {
    let mut lines = Vec::new();
    for g in groups {
        let step = g
            .key
            .step
            .as_ref()
            .map(|s| format!("{s} · "))
            .unwrap_or_default();
        lines.push(format!(
            "{indent}{:>7} × {step}{}: {}\n",
            fmt_count(g.count),
            g.key.code,
            shorten(&g.key.cause, 160)
        ));
        lines.push(format!(
            "{indent}          e.g. {}: {}\n",
            g.example.item,
            shorten(&g.example.message, 160)
        ));
    }
    lines
}

/// `text` cut to `max` characters with an ellipsis.
fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let cut: String = text.chars().take(max).collect();
    format!("{cut}…")
}

/// 1234567 → "1,234,567".
pub(crate) fn fmt_count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// 75.3 s → "1m15s"; 4.21 s → "4.21s".
pub(crate) fn fmt_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.2}s")
    } else if secs < 3600.0 {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    } else {
        format!("{}h{:02}m", d.as_secs() / 3600, d.as_secs() % 3600 / 60)
    }
}

/// Unix milliseconds → "2026-11-23 14:50:01 UTC" (times before 1970 show as 1970).
pub(crate) fn fmt_time(unix_ms: i64) -> String {
    // humantime formats years up to 9999 only (a hand-edited or corrupt time
    // must not stop `sluice status`).
    const LAST_MS: i64 = 253_402_300_799_999;
    let ms = u64::try_from(unix_ms.min(LAST_MS)).unwrap_or(0);
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    // "2026-11-23T14:50:01Z" → "2026-11-23 14:50:01 UTC"
    let iso = humantime::format_rfc3339_seconds(at).to_string();
    format!("{} UTC", iso.trim_end_matches('Z').replacen('T', " ", 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(fmt_count(1_234_567), "1,234,567");
        assert_eq!(fmt_count(12), "12");
        assert_eq!(fmt_duration(Duration::from_secs(75)), "1m15s");
        assert_eq!(fmt_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(fmt_time(1_795_445_401_000), "2026-11-23 14:50:01 UTC");
        assert_eq!(fmt_time(i64::MAX), "9999-12-31 23:59:59 UTC");
        assert_eq!(fmt_time(-5), "1970-01-01 00:00:00 UTC");
    }
}
