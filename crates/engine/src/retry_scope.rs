//! A retry of chosen failures only (one cause, or the retryable ones): the
//! run-state flag set before such a resume, so that it leaves the run's
//! other failed units failed instead of sending them again (a plain resume
//! of a job run retries every unit not done). The resume it was set for
//! consumes it.

use sluice_store::Store;

/// The run-state key of the flag.
pub const KEEP_FAILED: &str = "retry.keep_failed";

/// Makes the next resume of `run_id` leave its failed units failed (the
/// caller deleted the records of those it wants retried).
pub fn keep_failed(store: &mut dyn Store, run_id: &str) -> sluice_store::Result<()> {
    store.put_run_state(run_id, KEEP_FAILED, &serde_json::json!(true))
}

/// Whether this resume leaves failed units failed; clears the flag.
pub(crate) fn take(store: &mut dyn Store, run_id: &str) -> sluice_store::Result<bool> {
    let set = store
        .run_state(run_id, KEEP_FAILED)?
        .into_iter()
        .any(|(k, v)| k == KEEP_FAILED && v == serde_json::json!(true));
    if set {
        store.put_run_state(run_id, KEEP_FAILED, &serde_json::json!(false))?;
    }
    Ok(set)
}

/// The failed records of `run_id`, to put back after its input list was
/// replaced.
pub(crate) fn failures(
    store: &mut dyn Store,
    run_id: &str,
) -> sluice_store::Result<Vec<sluice_store::ItemRecord>> {
    let mut failed = Vec::new();
    store.for_each_item(run_id, &mut |item| {
        if item.status == sluice_store::ItemStatus::Failed {
            failed.push(item);
        }
        Ok(())
    })?;
    Ok(failed)
}
