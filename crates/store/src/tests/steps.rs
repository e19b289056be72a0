//! Checks of pipeline step records.

use super::{new_run, rec, Connect};
use crate::{ItemStatus, StepRecord};

fn step(unit: &str, name: &str, part: i64, status: ItemStatus) -> StepRecord {
    StepRecord {
        unit_id: unit.into(),
        step: name.into(),
        part,
        hash: 0xfeed_0000_0000_0001,
        status,
        attempts: 2,
        throttled: 1,
        status_code: Some(200),
        prompt_tokens: Some(5),
        completion_tokens: None,
        latency_ms: 12,
        started_at: 1_000,
        finished_at: 2_000,
        error: (status == ItemStatus::Failed).then(|| "server_error: HTTP 500".into()),
        output: Some(format!(r#"{{"text":"{name}-{part}"}}"#)),
    }
}

/// Step records round-trip, are replaced per (unit, step, part), and come back by step and part.
pub(crate) fn step_records_round_trip_and_replace(connect: Connect<'_>) {
    let mut s = connect();
    let run = s.create_run(&new_run("job", "job:a")).unwrap();
    let first = vec![
        step("u1", "b", 1, ItemStatus::Done),
        step("u1", "b", 0, ItemStatus::Failed),
        step("u1", "a", -1, ItemStatus::Done),
        step("u2", "a", -1, ItemStatus::Done),
    ];
    s.write_steps(&run.id, &first).unwrap();
    s.write_steps(&run.id, &[step("u1", "b", 0, ItemStatus::Done)])
        .unwrap();
    let got = s.unit_steps(&run.id, "u1").unwrap();
    let keys: Vec<(String, i64, ItemStatus)> = got
        .iter()
        .map(|r| (r.step.clone(), r.part, r.status))
        .collect();
    assert_eq!(
        keys,
        vec![
            ("a".into(), -1, ItemStatus::Done),
            ("b".into(), 0, ItemStatus::Done),
            ("b".into(), 1, ItemStatus::Done),
        ]
    );
    assert_eq!(got[0], first[2]);
    assert!(s.unit_steps(&run.id, "nobody").unwrap().is_empty());
}

/// Resetting failed steps makes their units pending again, optionally for one step only.
pub(crate) fn reset_failed_steps_reopens_their_units(connect: Connect<'_>) {
    let mut s = connect();
    let run = s.create_run(&new_run("job", "job:b")).unwrap();
    s.write_steps(
        &run.id,
        &[
            step("u1", "a", -1, ItemStatus::Failed),
            step("u2", "a", -1, ItemStatus::Done),
            step("u2", "b", -1, ItemStatus::Failed),
        ],
    )
    .unwrap();
    s.write_batch(
        &run.id,
        &[
            rec("u1", 0, ItemStatus::Failed),
            rec("u2", 1, ItemStatus::Failed),
        ],
    )
    .unwrap();
    assert_eq!(s.reset_failed_steps(&run.id, Some("b")).unwrap(), 1);
    assert!(s.get_item(&run.id, "u2").unwrap().is_none());
    assert!(s.get_item(&run.id, "u1").unwrap().is_some());
    assert_eq!(s.unit_steps(&run.id, "u2").unwrap().len(), 1);
    assert_eq!(s.reset_failed_steps(&run.id, None).unwrap(), 1);
    assert!(s.get_item(&run.id, "u1").unwrap().is_none());
    assert!(s.unit_steps(&run.id, "u1").unwrap().is_empty());
}

/// The cache is shared by runs, replaced per key, and honours `since` (the TTL).
pub(crate) fn cache_entries_expire_by_age(connect: Connect<'_>) {
    let mut s = connect();
    assert_eq!(s.cache_get(7, 0).unwrap(), None);
    s.cache_put(&[
        (7, r#"{"text":"a"}"#.into(), 1_000),
        (u64::MAX, "{}".into(), 5_000),
    ])
    .unwrap();
    assert_eq!(
        s.cache_get(7, 500).unwrap().as_deref(),
        Some(r#"{"text":"a"}"#)
    );
    assert_eq!(
        s.cache_get(7, 1_001).unwrap(),
        None,
        "older than the TTL allows"
    );
    s.cache_put(&[(7, r#"{"text":"b"}"#.into(), 9_000)])
        .unwrap();
    let mut other = connect();
    assert_eq!(
        other.cache_get(7, 8_000).unwrap().as_deref(),
        Some(r#"{"text":"b"}"#)
    );
    assert_eq!(other.cache_get(u64::MAX, 0).unwrap().as_deref(), Some("{}"));
}

/// A pipeline unit's record sums the attempts of all its steps, so its
/// retries are counted per step: a unit of three steps answered at once has
/// three attempts and no retry. Webhook deliveries are not calls of the run.
pub(crate) fn retries_of_pipeline_runs_count_per_step(connect: Connect<'_>) {
    let mut s = connect();
    let run = s.create_run(&new_run("job", "job:r")).unwrap();
    let mut unit = rec("u1", 0, ItemStatus::Done);
    unit.attempts = 5;
    s.write_batch(&run.id, &[unit]).unwrap();
    let mut once = step("u1", "a", -1, ItemStatus::Done);
    once.attempts = 1;
    let mut thrice = step("u1", "b", -1, ItemStatus::Done);
    thrice.attempts = 3;
    let mut single = step("u1", "c", 0, ItemStatus::Done);
    single.attempts = 1;
    let mut hook = step("u1", "(webhook)", -1, ItemStatus::Done);
    hook.attempts = 4;
    s.write_steps(&run.id, &[once, thrice, single, hook])
        .unwrap();
    let counts = s.counts(&run.id).unwrap();
    assert_eq!((counts.attempts, counts.retries), (5, 2));
    // A run without step records (quick mode) counts per item.
    let quick = s.create_run(&new_run("quick", "q")).unwrap();
    let mut item = rec("x", 0, ItemStatus::Done);
    item.attempts = 4;
    s.write_batch(&quick.id, &[item]).unwrap();
    assert_eq!(s.counts(&quick.id).unwrap().retries, 3);
}

/// Resetting chosen units reopens those that failed, with their failed
/// steps, and leaves the others (failed or done) alone.
pub(crate) fn reset_failed_units_reopens_just_those(connect: Connect<'_>) {
    let mut s = connect();
    let run = s.create_run(&new_run("job", "job:units")).unwrap();
    s.write_steps(
        &run.id,
        &[
            step("u1", "a", -1, ItemStatus::Failed),
            step("u2", "a", -1, ItemStatus::Failed),
            step("u3", "a", -1, ItemStatus::Done),
        ],
    )
    .unwrap();
    s.write_batch(
        &run.id,
        &[
            rec("u1", 0, ItemStatus::Failed),
            rec("u2", 1, ItemStatus::Failed),
            rec("u3", 2, ItemStatus::Done),
        ],
    )
    .unwrap();
    let chosen = ["u1".to_string(), "u3".to_string(), "nobody".to_string()];
    assert_eq!(s.reset_failed_units(&run.id, &chosen).unwrap(), 1);
    assert!(s.get_item(&run.id, "u1").unwrap().is_none());
    assert!(s.unit_steps(&run.id, "u1").unwrap().is_empty());
    assert!(s.get_item(&run.id, "u2").unwrap().is_some(), "not chosen");
    assert_eq!(s.unit_steps(&run.id, "u2").unwrap().len(), 1);
    assert!(
        s.get_item(&run.id, "u3").unwrap().is_some(),
        "done stays done"
    );
    assert_eq!(s.reset_failed_units(&run.id, &[]).unwrap(), 0);
}
