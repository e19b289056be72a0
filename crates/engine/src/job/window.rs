//! How many units may be in progress at once when the job does not say
//! (top-level `concurrency` unset): as many as the steps and providers can
//! keep busy together. A pipeline whose four steps each allow 50 calls
//! needs 200 units in flight to keep every step full; a fixed default of 64
//! made the unit window, not the provider, the limit.

use sluice_spec::{Job, Step};

use super::kinds::{self, Transport};

/// A step or provider without a cap of its own contributes this many units
/// (the window's old fixed default); a provider rate grows it at run time.
pub(crate) const UNCAPPED_UNITS: usize = 64;
/// The most units the window is derived (or grows) to.
pub(crate) const MAX_UNITS: usize = crate::dispatch::MAX_IN_FLIGHT;

/// The unit window and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UnitWindow {
    /// Units in progress at most (at the start; a provider rate may grow it).
    pub units: usize,
    /// Why this many, for `plan`: `concurrency = 8`, or the sum it was
    /// derived from.
    pub from: String,
    /// Whether it was derived (top-level `concurrency` unset).
    pub derived: bool,
}

/// The job's unit window: its `concurrency` when set, else the sum over
/// groups of steps sharing a provider (each step without one on its own) of
/// the calls the group can have in flight, in units: the provider's cap,
/// else the sum of its steps' caps (a fan-out step's cap divided by its
/// width per unit, a command step's by the CPUs), else
/// [`UNCAPPED_UNITS`].
pub(crate) fn unit_window(job: &Job) -> UnitWindow {
    if job.concurrency_set {
        return UnitWindow {
            units: job.concurrency.max(1),
            from: format!("concurrency = {}", job.concurrency),
            derived: false,
        };
    }
    let mut parts: Vec<(String, usize)> = Vec::new();
    let mut grouped: Vec<&str> = Vec::new();
    for step in &job.steps {
        match step.provider.as_deref() {
            Some(name) if grouped.contains(&name) => {}
            Some(name) => {
                grouped.push(name);
                let steps: Vec<&Step> = job
                    .steps
                    .iter()
                    .filter(|s| s.provider.as_deref() == Some(name))
                    .collect();
                let cap = job
                    .provider(name)
                    .and_then(|p| p.concurrency.or(p.adaptive));
                parts.push(group(&steps, cap, &format!("provider {name}")));
            }
            None => parts.push(group(&[step], None, &format!("step {}", step.name))),
        }
    }
    let total: usize = parts.iter().map(|(_, n)| n).sum();
    let units = total.clamp(1, MAX_UNITS);
    let terms: Vec<String> = parts
        .iter()
        .map(|(why, n)| format!("{n} ({why})"))
        .collect();
    let capped = if total > MAX_UNITS {
        format!(", capped at {MAX_UNITS}")
    } else {
        String::new()
    };
    let grows = if job
        .providers
        .iter()
        .any(|p| p.rps.is_some() || p.rpm.is_some())
    {
        "; grows at run time to what a provider's rate needs"
    } else {
        ""
    };
    UnitWindow {
        units,
        from: format!(
            "derived: {}{capped}{grows}; set concurrency to fix it",
            terms.join(" + ")
        ),
        derived: true,
    }
}

/// The window a run starts with (`limit` units) and grows at run time:
/// without a set `concurrency`, to what the fastest provider rate needs at
/// the latency observed, each unit making one call per step in turn.
pub(crate) fn growing(job: &Job, limit: usize) -> crate::dispatch::Window {
    let rate = (!job.concurrency_set)
        .then(|| {
            job.providers
                .iter()
                .filter_map(|p| {
                    let per_sec = [p.rps.map(|r| r as f64), p.rpm.map(|r| r as f64 / 60.0)];
                    per_sec.into_iter().flatten().reduce(f64::min)
                })
                .reduce(f64::max)
        })
        .flatten();
    crate::dispatch::Window::new(limit, rate, job.steps.len())
}

/// Units that keep `steps` (sharing one provider capped at `cap`) busy.
fn group(steps: &[&Step], cap: Option<usize>, label: &str) -> (String, usize) {
    let own: Option<usize> = steps
        .iter()
        .map(|s| step_units(s, cap))
        .try_fold(0usize, |sum, n| n.map(|n| sum + n));
    match (own, cap) {
        (Some(own), Some(cap)) if own <= cap => (format!("{label}: its steps' caps"), own),
        (_, Some(cap)) => (format!("{label} concurrency"), cap),
        (Some(own), None) => (format!("{label}: its steps' caps"), own),
        (None, None) => (format!("{label}: no cap"), UNCAPPED_UNITS),
    }
}

/// Units one step can keep busy by its own cap; `None` without one.
fn step_units(step: &Step, provider_cap: Option<usize>) -> Option<usize> {
    if step.for_each.is_some() {
        // `concurrency` is the width per unit: units = calls allowed ÷ width.
        let width = step.concurrency.unwrap_or(4).max(1);
        return provider_cap.map(|cap| cap.div_ceil(width));
    }
    match step.concurrency {
        Some(n) => Some(n),
        None if kinds::of(&step.kind).transport() == Transport::Command => Some(cpus()),
        None => None,
    }
}

/// Local programs in flight at most (command steps).
pub(crate) fn cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(text: &str) -> Job {
        sluice_spec::parse_str(text, std::path::Path::new("/j/job.toml"), &[])
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn chat(name: &str, provider: &str, extra: &str) -> String {
        format!(
            "[[steps]]\nname = \"{name}\"\nkind = \"chat\"\nprovider = \"{provider}\"\n\
             model = \"m\"\nmessages = [{{ role = \"user\", content = \"x\" }}]\n{extra}\n"
        )
    }

    const HEAD: &str = "[input]\npath = \"x.jsonl\"\n";

    #[test]
    fn four_steps_of_fifty_on_a_provider_of_two_hundred_need_two_hundred_units() {
        let steps: String = (0..4)
            .map(|k| chat(&format!("s{k}"), "p", "concurrency = 50"))
            .collect();
        let text =
            format!("{HEAD}[providers.p]\nbase_url = \"http://h\"\nconcurrency = 200\n{steps}");
        let w = unit_window(&job(&text));
        assert_eq!(w.units, 200, "{w:?}");
        assert!(w.derived);
        assert!(w.from.contains("its steps' caps"), "{w:?}");
    }

    #[test]
    fn a_provider_cap_below_its_steps_binds_and_providers_add_up() {
        let text = format!(
            "{HEAD}[providers.a]\nbase_url = \"http://a\"\nconcurrency = 8\n\
             [providers.b]\nbase_url = \"http://b\"\nconcurrency = 20\n{}{}{}",
            chat("x", "a", ""),
            chat("y", "a", ""),
            chat("z", "b", "concurrency = 5"),
        );
        let w = unit_window(&job(&text));
        assert_eq!(w.units, 8 + 5, "{w:?}");
        assert!(w.from.contains("8 (provider a concurrency)"), "{w:?}");
    }

    #[test]
    fn uncapped_steps_keep_the_old_default_and_a_set_concurrency_wins() {
        let text = format!(
            "{HEAD}[providers.p]\nbase_url = \"http://h\"\nrpm = 60\n{}",
            chat("x", "p", "")
        );
        assert_eq!(unit_window(&job(&text)).units, UNCAPPED_UNITS);
        let text = format!("concurrency = 3\n{text}");
        let w = unit_window(&job(&text));
        assert_eq!((w.units, w.derived), (3, false));
    }

    #[test]
    fn a_fan_out_needs_the_provider_cap_divided_by_its_width() {
        let text = format!(
            "{HEAD}[providers.p]\nbase_url = \"http://h\"\nconcurrency = 40\n{}",
            chat("x", "p", "for_each = \"{{ item.list }}\"\nconcurrency = 4"),
        );
        assert_eq!(unit_window(&job(&text)).units, 10);
    }
}
