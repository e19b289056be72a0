//! What a scenario found — correctness checks and figures against their targets —
//! and how the suite prints it: a table for people, JSON for scripts.

use serde::Serialize;

/// How a scenario ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Status {
    Ran,
    /// Could not run here (a missing part); never a failure.
    Skipped,
    /// Stopped by an error before it could measure: always a failure.
    Crashed,
}

/// A property that must hold in every mode, however loaded the machine:
/// no item lost or doubled, no 429 where none is allowed, a clean exit.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Check {
    pub(super) what: String,
    pub(super) ok: bool,
}

/// What a figure must reach.
#[derive(Debug, Clone, Copy)]
pub(super) enum Target {
    /// measured ÷ bound at most this.
    RatioAtMost(f64),
    /// measured ÷ bound at least this.
    RatioAtLeast(f64),
    /// measured ÷ bound strictly below this.
    RatioBelow(f64),
    /// The measured value itself at most this (`unit` names it).
    AtMost(f64, &'static str),
    /// The measured value itself strictly below this.
    Below(f64, &'static str),
}

impl Target {
    fn met(self, measured: f64, ratio: Option<f64>) -> bool {
        let r = ratio.unwrap_or(f64::NAN);
        match self {
            Target::RatioAtMost(t) => r <= t,
            Target::RatioAtLeast(t) => r >= t,
            Target::RatioBelow(t) => r < t,
            Target::AtMost(t, _) => measured <= t,
            Target::Below(t, _) => measured < t,
        }
    }

    fn text(self) -> String {
        // Targets are short decimals; printing through {:.4} hides float noise.
        let short = |t: f64| {
            let text = format!("{t:.4}");
            text.trim_end_matches('0').trim_end_matches('.').to_string()
        };
        match self {
            Target::RatioAtMost(t) => format!("≤ {}", short(t)),
            Target::RatioAtLeast(t) => format!("≥ {}", short(t)),
            Target::RatioBelow(t) => format!("< {}", short(t)),
            Target::AtMost(t, unit) => format!("≤ {}{unit}", short(t)),
            Target::Below(t, unit) => format!("< {}{unit}", short(t)),
        }
    }
}

/// One measured figure beside its bound: `ratio` is measured ÷ bound.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Figure {
    pub(super) what: String,
    pub(super) bound: Option<f64>,
    pub(super) bound_text: String,
    pub(super) measured: f64,
    pub(super) measured_text: String,
    pub(super) ratio: Option<f64>,
    pub(super) target: String,
    pub(super) met: bool,
}

impl Figure {
    /// A figure with a bound; `text` formats both values in the same unit.
    pub(super) fn new(
        what: impl Into<String>,
        bound: f64,
        measured: f64,
        text: impl Fn(f64) -> String,
        target: Target,
    ) -> Figure {
        let ratio = Some(measured / bound);
        Figure {
            what: what.into(),
            bound: Some(bound),
            bound_text: text(bound),
            measured,
            measured_text: text(measured),
            ratio,
            target: target.text(),
            met: target.met(measured, ratio),
        }
    }

    /// A figure with no bound of its own, held to an absolute target.
    pub(super) fn absolute(
        what: impl Into<String>,
        measured: f64,
        measured_text: String,
        target: Target,
    ) -> Figure {
        Figure {
            what: what.into(),
            bound: None,
            bound_text: "—".into(),
            measured,
            measured_text,
            ratio: None,
            target: target.text(),
            met: target.met(measured, None),
        }
    }

    /// Overrides how the bound is shown (e.g. to say what it is).
    pub(super) fn bound_text(mut self, text: impl Into<String>) -> Figure {
        self.bound_text = text.into();
        self
    }
}

/// Everything one scenario reports.
#[derive(Debug, Serialize)]
pub(super) struct Scenario {
    pub(super) name: &'static str,
    /// What was run, in a line.
    pub(super) about: String,
    pub(super) status: Status,
    /// Why it was skipped or how it crashed.
    pub(super) reason: Option<String>,
    pub(super) checks: Vec<Check>,
    pub(super) figures: Vec<Figure>,
    /// Figures shown for context, with no target.
    pub(super) notes: Vec<String>,
    /// Wall time of the whole scenario, setup included.
    pub(super) seconds: f64,
    /// Ran (or was skipped) and every check held.
    pub(super) correct: bool,
    /// Every figure met its target.
    pub(super) targets_met: bool,
}

impl Scenario {
    pub(super) fn new(name: &'static str, about: impl Into<String>) -> Scenario {
        Scenario {
            name,
            about: about.into(),
            status: Status::Ran,
            reason: None,
            checks: Vec::new(),
            figures: Vec::new(),
            notes: Vec::new(),
            seconds: 0.0,
            correct: true,
            targets_met: true,
        }
    }

    /// A scenario that could not run here.
    pub(super) fn skipped(name: &'static str, about: &str, reason: impl Into<String>) -> Scenario {
        let mut s = Scenario::new(name, about);
        s.status = Status::Skipped;
        s.reason = Some(reason.into());
        s
    }

    /// A scenario stopped by `error`.
    pub(super) fn crashed(name: &'static str, error: &anyhow::Error) -> Scenario {
        let mut s = Scenario::new(name, "");
        s.status = Status::Crashed;
        s.reason = Some(format!("{error:#}"));
        s.correct = false;
        s
    }

    pub(super) fn check(&mut self, what: impl Into<String>, ok: bool) {
        self.checks.push(Check {
            what: what.into(),
            ok,
        });
        self.correct &= ok;
    }

    pub(super) fn figure(&mut self, figure: Figure) {
        self.targets_met &= figure.met;
        self.figures.push(figure);
    }

    pub(super) fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }
}

/// Where the figures were measured.
#[derive(Debug, Serialize)]
pub(super) struct Machine {
    /// `release` or `debug`: a debug build's figures say nothing about speed.
    pub(super) build: &'static str,
    pub(super) cpus: usize,
    pub(super) os: String,
}

impl Machine {
    fn here() -> Machine {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        Machine {
            build: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
            cpus: std::thread::available_parallelism().map_or(0, usize::from),
            os: format!("{} {}", std::env::consts::OS, kernel.trim())
                .trim()
                .to_string(),
        }
    }
}

/// The whole suite's outcome.
#[derive(Debug, Serialize)]
pub(super) struct Report {
    pub(super) quick: bool,
    pub(super) machine: Machine,
    pub(super) seconds: f64,
    /// The suite's verdict: correctness always, targets only outside `--quick`.
    pub(super) passed: bool,
    pub(super) scenarios: Vec<Scenario>,
}

impl Report {
    pub(super) fn new(quick: bool, seconds: f64, scenarios: Vec<Scenario>) -> Report {
        let passed = scenarios
            .iter()
            .all(|s| s.correct && (quick || s.targets_met));
        Report {
            quick,
            machine: Machine::here(),
            seconds,
            passed,
            scenarios,
        }
    }

    /// The table: one row per figure and per check, then each scenario's notes.
    pub(super) fn table(&self) -> String {
        let mut rows = vec![row(&[
            "scenario", "measure", "bound", "measured", "ratio", "target", "result",
        ])];
        for s in &self.scenarios {
            match s.status {
                Status::Skipped => rows.push(row(&[
                    s.name,
                    &format!("skipped: {}", s.reason.as_deref().unwrap_or("")),
                ])),
                Status::Crashed => rows.push(row(&[
                    s.name,
                    &format!("crashed: {}", s.reason.as_deref().unwrap_or("")),
                    "",
                    "",
                    "",
                    "",
                    "FAIL",
                ])),
                Status::Ran => {}
            }
            for f in &s.figures {
                let ratio = f.ratio.map_or("—".into(), |r| format!("{r:.3}"));
                let result = match (f.met, self.quick) {
                    (true, _) => "pass",
                    (false, true) => "miss",
                    (false, false) => "FAIL",
                };
                rows.push(row(&[
                    s.name,
                    &f.what,
                    &f.bound_text,
                    &f.measured_text,
                    &ratio,
                    &f.target,
                    result,
                ]));
            }
            if s.status == Status::Ran {
                let failed = s.checks.iter().filter(|c| !c.ok).count();
                let (what, result) = match failed {
                    0 => (format!("checks: all {} hold", s.checks.len()), "pass"),
                    f => (format!("checks: {f} of {} FAILED", s.checks.len()), "FAIL"),
                };
                rows.push(row(&[s.name, &what, "", "", "", "", result]));
            }
        }
        let mut text = layout(&rows);
        for s in self.scenarios.iter().filter(|s| s.status == Status::Ran) {
            text += &format!("\n{} ({:.1} s): {}\n", s.name, s.seconds, s.about);
            for c in &s.checks {
                text += &format!("  {} {}\n", if c.ok { "ok    " } else { "FAILED" }, c.what);
            }
            for n in &s.notes {
                text += &format!("  ·      {n}\n");
            }
        }
        let m = &self.machine;
        text += &format!(
            "\n{} in {:.1} s ({} build, {} CPUs, {}){}: {}\n",
            if self.quick { "quick suite" } else { "suite" },
            self.seconds,
            m.build,
            m.cpus,
            m.os,
            if self.quick {
                " (speed targets reported, not enforced)"
            } else {
                ""
            },
            if self.passed { "passed" } else { "FAILED" }
        );
        text
    }
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

/// Pads columns to their widest cell; a row with fewer cells spans the rest.
fn layout(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; columns];
    for r in rows.iter().filter(|r| r.len() == columns) {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut text = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            line += c;
            if i + 1 < r.len() {
                let pad = widths[i].saturating_sub(c.chars().count()) + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        text += line.trim_end();
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_compare_the_ratio_or_the_value() {
        let secs = |v: f64| format!("{v:.2} s");
        assert!(Figure::new("w", 10.0, 10.2, secs, Target::RatioAtMost(1.03)).met);
        assert!(!Figure::new("w", 10.0, 10.4, secs, Target::RatioAtMost(1.03)).met);
        assert!(Figure::new("s", 100.0, 61.0, secs, Target::RatioAtLeast(0.6)).met);
        assert!(!Figure::new("m", 64.0, 64.0, secs, Target::RatioBelow(1.0)).met);
        let cpu = Figure::absolute("c", 0.3, "0.30 s".into(), Target::AtMost(0.285, " s"));
        assert!(!cpu.met);
        assert_eq!(cpu.target, "≤ 0.285 s");
    }

    #[test]
    fn quick_mode_fails_only_on_broken_checks() {
        // Twice as slow as its bound, every check holding.
        let slow = || {
            let mut s = Scenario::new("a", "");
            let f = Figure::new("w", 1.0, 2.0, |v| v.to_string(), Target::RatioAtMost(1.0));
            s.figure(f);
            s.check("every item once", true);
            s
        };
        assert!(Report::new(true, 1.0, vec![slow()]).passed);
        assert!(!Report::new(false, 1.0, vec![slow()]).passed);
        assert!(Report::new(true, 1.0, vec![slow()])
            .table()
            .contains("miss"));
        let mut lost = Scenario::new("b", "");
        lost.check("every item once", false);
        assert!(!Report::new(true, 1.0, vec![lost]).passed);
        let skipped = Scenario::skipped("c", "", "needs a part");
        let crashed = Scenario::crashed("d", &anyhow::anyhow!("boom"));
        assert!(Report::new(false, 1.0, vec![skipped]).passed);
        let report = Report::new(true, 1.0, vec![crashed]);
        assert!(!report.passed);
        assert!(report.table().contains("crashed: boom"));
    }
}
