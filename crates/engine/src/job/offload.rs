//! Live or batch for each provider of a run: decided when the run starts
//! (`auto` by its deadline, from the plan's estimate over the real input),
//! kept with the run so a resumed run stays on the path it chose, and said
//! in the run summary.

use serde_json::Value as Json;
use sluice_spec::{Job, Mode};

use super::choose::{decide, Offload};
use crate::error::Result;
use crate::inputs::Prepared;
use crate::settings::KeptWithRun;

/// Each provider's path, in job order.
pub(crate) fn decide_all(job: &Job, prepared: &Prepared) -> Result<Vec<(String, Offload)>> {
    if !job
        .providers
        .iter()
        .any(|p| matches!(p.mode, Mode::Auto { .. }))
    {
        return Ok(job
            .providers
            .iter()
            .map(|p| (p.name.clone(), decide(p, None, None, None)))
            .collect());
    }
    let plan = super::plan::estimate_plan(job, Some(prepared), &[], &Default::default(), None)?;
    Ok(plan
        .providers
        .into_iter()
        .map(|p| (p.name, p.offload))
        .collect())
}

/// A resumed run keeps what `auto` chose when it started (its batches are
/// already at the provider, or its live calls half done); returns whether
/// anything changed.
pub(crate) fn keep_earlier(offload: &mut [(String, Offload)], earlier: &Json) -> bool {
    let mut changed = false;
    let Some(mut kept) = KeptWithRun::of(earlier).offload else {
        return false;
    };
    for (name, now) in offload.iter_mut() {
        let Some(before) = kept.remove(name) else {
            continue;
        };
        if now.configured == "auto" && before.configured == "auto" && *now != before {
            *now = before;
            changed = true;
        }
    }
    changed
}

/// What a `sluice worker` does per provider: live (see [`live_only`]).
pub(crate) fn for_worker(job: &Job) -> Vec<(String, Offload)> {
    live_only(
        job.providers
            .iter()
            .map(|p| (p.name.clone(), decide(p, None, None, None)))
            .collect(),
    )
}

/// The same decisions with every batched provider sent live instead: on a
/// shared store several processes work the run, and the batch API's
/// submissions are kept per process.
pub(crate) fn live_only(offload: Vec<(String, Offload)>) -> Vec<(String, Offload)> {
    offload
        .into_iter()
        .map(|(name, o)| {
            if !o.batched() {
                return (name, o);
            }
            let reason = format!(
                "a shared store (PostgreSQL) runs live calls only (mode = \"{}\" applies to runs on SQLite)",
                o.configured
            );
            (
                name,
                Offload {
                    mode: "live".into(),
                    configured: o.configured,
                    reason,
                },
            )
        })
        .collect()
}

/// The summary's lines: every provider that is not simply live.
pub(crate) fn notes(offload: &[(String, Offload)]) -> Vec<String> {
    offload
        .iter()
        .filter(|(_, o)| o.configured != "live")
        .map(|(name, o)| match o.configured.as_str() {
            "auto" => format!("provider {name}: auto chose {}: {}", o.mode, o.reason),
            _ if !o.batched() => format!("provider {name}: live calls: {}", o.reason),
            _ => format!("provider {name}: calls went through the batch API (mode = \"batch\")"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offload(mode: &str, configured: &str) -> Offload {
        Offload {
            mode: mode.into(),
            configured: configured.into(),
            reason: format!("{mode} because"),
        }
    }

    #[test]
    fn a_resumed_run_keeps_what_auto_chose_first() {
        let mut earlier = serde_json::json!({});
        KeptWithRun::put_offload(&mut earlier, &[("p".into(), offload("batch", "auto"))]);
        let mut now = vec![("p".to_string(), offload("live", "auto"))];
        assert!(keep_earlier(&mut now, &earlier));
        assert_eq!(now[0].1.mode, "batch");
        // An explicit mode is always honoured.
        let mut fixed = vec![("p".to_string(), offload("live", "live"))];
        assert!(!keep_earlier(&mut fixed, &earlier));
        assert_eq!(fixed[0].1.mode, "live");
        assert_eq!(notes(&now), ["provider p: auto chose batch: batch because"]);
        assert!(notes(&fixed).is_empty());
    }
}
