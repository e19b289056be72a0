//! The store contract as a suite of checks every `Store` implementation must pass.
//!
//! Each check takes `connect`, which opens a new connection to one fresh, empty
//! store per check; `store_suite!` turns every check into a `#[test]` for a
//! backend (see `sqlite/tests.rs` and `postgres/tests.rs`).

mod connections;
mod executions;
mod items;
mod live;
mod runs;
mod steps;

pub(crate) use connections::*;
pub(crate) use executions::*;
pub(crate) use items::*;
pub(crate) use live::*;
pub(crate) use runs::*;
pub(crate) use steps::*;

use crate::{ItemRecord, ItemStatus, NewRun, Store};

/// Opens a new connection to the store under test.
pub(crate) type Connect<'a> = &'a dyn Fn() -> Box<dyn Store>;

/// Generates one `#[test]` per check. `$fresh` is a function returning
/// `(guard, connect)`: a value keeping the fresh store alive, and a closure
/// that opens a connection to it. With `optional`, `$fresh` returns an
/// `Option` of that pair, `None` when the backend's server is not there.
macro_rules! store_suite {
    ($fresh:path) => {
        $crate::tests::store_suite!(@list each $fresh);
    };
    (optional $fresh:path) => {
        $crate::tests::store_suite!(@list each_optional $fresh);
    };
    (@list $how:ident $fresh:path) => {
        $crate::tests::store_suite!(@ $how $fresh;
            creates_runs_with_sequential_ids_per_name, finds_runs_by_id_then_name,
            finds_latest_run_for_source, updates_run_fields, upsert_replaces_earlier_outcome,
            lookup_returns_found_ids_only, lookup_handles_large_batches,
            for_each_item_streams_in_input_order, for_each_item_stops_at_callback_error,
            counts_sum_attempts_and_tokens, top_errors_by_frequency,
            error_messages_count_and_name_an_example,
            reset_failed_makes_items_pending, set_positions_changes_export_order,
            reader_proceeds_while_writer_commits, concurrent_writer_and_reader_threads,
            batch_is_atomic, unknown_run_is_an_error, survives_drop_without_close,
            reopening_is_idempotent, lists_runs_newest_first,
            step_records_round_trip_and_replace, reset_failed_steps_reopens_their_units,
            reset_failed_units_reopens_just_those,
            cache_entries_expire_by_age, heartbeats_replace_per_worker, run_state_by_prefix,
            retries_of_pipeline_runs_count_per_step,
            lease_is_exclusive_until_released_or_lapsed,
            one_of_many_concurrent_acquirers_gets_the_lease,
            outputs_and_counts_follow_the_input_list);
    };
    (@each_optional $fresh:path; $($check:ident),* $(,)?) => {
        $(
            #[test]
            fn $check() {
                let _limit = $crate::watchdog::Watchdog::start();
                // `None`: the backend is not reachable here (the helper said so).
                let Some((_guard, connect)) = $fresh() else { return };
                $crate::tests::$check(&connect);
            }
        )*
    };
    (@each $fresh:path; $($check:ident),* $(,)?) => {
        $(
            #[test]
            fn $check() {
                let _limit = $crate::watchdog::Watchdog::start();
                let (_guard, connect) = $fresh();
                $crate::tests::$check(&connect);
            }
        )*
    };
}
pub(crate) use store_suite;

fn new_run(name: &str, source: &str) -> NewRun {
    NewRun {
        name: name.into(),
        source: source.into(),
        settings: serde_json::json!({"rpm": 60}),
    }
}

/// A small record with distinguishable values derived from `idx`.
pub(crate) fn rec(item_id: &str, idx: u64, status: ItemStatus) -> ItemRecord {
    let failed = status == ItemStatus::Failed;
    ItemRecord {
        item_id: item_id.into(),
        idx,
        hash: idx.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        status,
        attempts: 1,
        throttled: 0,
        status_code: Some(if failed { 500 } else { 200 }),
        response: (!failed).then(|| format!(r#"{{"id":"resp-{idx}"}}"#)),
        error: failed.then(|| "server error".to_owned()),
        prompt_tokens: Some(10),
        completion_tokens: Some(5),
        latency_ms: 100,
        started_at: 1_000 + idx as i64,
        finished_at: 2_000 + idx as i64,
        metadata: None,
        custom_id: None,
    }
}

fn ids(store: &mut dyn Store, run_id: &str) -> Vec<String> {
    let mut out = Vec::new();
    store
        .for_each_item(run_id, &mut |r| {
            out.push(r.item_id);
            Ok(())
        })
        .unwrap();
    out
}
