//! Suite checks for runs: ids, finding, updating, listing.

use super::{new_run, rec, Connect};
use crate::{Error, ItemStatus};

pub(crate) fn creates_runs_with_sequential_ids_per_name(connect: Connect<'_>) {
    let mut s = connect();
    let a = s.create_run(&new_run("requests", "in.jsonl")).unwrap();
    let b = s.create_run(&new_run("requests", "in.jsonl")).unwrap();
    let c = s.create_run(&new_run("other", "x.jsonl")).unwrap();
    let d = s.create_run(&new_run("requests-1", "y.jsonl")).unwrap();
    assert_eq!(
        [&*a.id, &*b.id, &*c.id, &*d.id],
        ["requests-1", "requests-2", "other-1", "requests-1-1"]
    );
    assert_eq!(
        (a.state.as_str(), a.total, a.finished_at),
        ("running", None, None)
    );
    assert_eq!(a.settings, serde_json::json!({"rpm": 60}));
    assert!(
        a.created_at > 1_600_000_000_000,
        "unix ms: {}",
        a.created_at
    );
    assert_eq!(s.find_run("requests-2").unwrap(), Some(b));
}

pub(crate) fn finds_runs_by_id_then_name(connect: Connect<'_>) {
    let mut s = connect();
    let first = s.create_run(&new_run("a", "s")).unwrap();
    let latest = s.create_run(&new_run("a", "s")).unwrap();
    let named_like_id = s.create_run(&new_run("a-1", "s")).unwrap();
    assert_eq!(s.find_run("a").unwrap(), Some(latest));
    // An exact id wins over a run name spelled the same.
    assert_eq!(s.find_run("a-1").unwrap(), Some(first));
    assert_eq!(s.find_run("a-1-1").unwrap(), Some(named_like_id));
    assert_eq!(s.find_run("missing").unwrap(), None);
}

pub(crate) fn finds_latest_run_for_source(connect: Connect<'_>) {
    let mut s = connect();
    assert_eq!(s.latest_run_for_source("in.jsonl").unwrap(), None);
    s.create_run(&new_run("a", "in.jsonl")).unwrap();
    s.create_run(&new_run("b", "other.jsonl")).unwrap();
    let latest = s.create_run(&new_run("renamed", "in.jsonl")).unwrap();
    s.create_run(&new_run("c", "other.jsonl")).unwrap();
    assert_eq!(s.latest_run_for_source("in.jsonl").unwrap(), Some(latest));
}

pub(crate) fn updates_run_fields(connect: Connect<'_>) {
    let mut s = connect();
    let run = s.create_run(&new_run("r", "s")).unwrap();
    s.set_total(&run.id, 42).unwrap();
    s.update_settings(&run.id, &serde_json::json!({"rpm": 30, "out": "x"}))
        .unwrap();
    s.set_state(&run.id, "finished", Some(123)).unwrap();
    let got = s.find_run(&run.id).unwrap().unwrap();
    assert_eq!(
        (got.total, got.state.as_str(), got.finished_at),
        (Some(42), "finished", Some(123))
    );
    assert_eq!(got.settings, serde_json::json!({"rpm": 30, "out": "x"}));
    assert!(got.updated_at >= run.updated_at);
    s.set_state(&run.id, "interrupted", None).unwrap();
    assert_eq!(s.find_run(&run.id).unwrap().unwrap().finished_at, None);
    let err = s.set_state(&run.id, "paused", None).unwrap_err();
    assert!(matches!(err, Error::InvalidState(_)), "{err}");
}

pub(crate) fn unknown_run_is_an_error(connect: Connect<'_>) {
    let mut s = connect();
    let no_run = |r: crate::Result<()>| match r {
        Err(Error::NoSuchRun(id)) => assert_eq!(id, "ghost-1"),
        other => panic!("expected NoSuchRun, got {other:?}"),
    };
    no_run(s.write_batch("ghost-1", &[rec("a", 0, ItemStatus::Done)]));
    no_run(s.set_total("ghost-1", 1));
    no_run(s.set_state("ghost-1", "finished", Some(1)));
    no_run(s.update_settings("ghost-1", &serde_json::json!({})));
    no_run(s.set_positions("ghost-1", &[]));
    no_run(s.lookup("ghost-1", &["a"]).map(drop));
    no_run(s.counts("ghost-1").map(drop));
    no_run(s.top_errors("ghost-1", 5).map(drop));
    no_run(s.error_messages("ghost-1", 5).map(drop));
    no_run(s.reset_failed("ghost-1").map(drop));
    no_run(s.get_item("ghost-1", "a").map(drop));
    no_run(s.for_each_item("ghost-1", &mut |_| Ok(())));
    let msg = s.counts("ghost-1").unwrap_err().to_string();
    assert_eq!(msg, "no run named ghost-1 (list runs with `sluice runs`)");
}

pub(crate) fn lists_runs_newest_first(connect: Connect<'_>) {
    let mut s = connect();
    assert_eq!(s.list_runs().unwrap(), []);
    let a = s.create_run(&new_run("a", "s")).unwrap();
    let b = s.create_run(&new_run("b", "s")).unwrap();
    s.write_batch(
        &a.id,
        &[
            rec("x", 0, ItemStatus::Done),
            rec("y", 1, ItemStatus::Failed),
        ],
    )
    .unwrap();
    let runs = s.list_runs().unwrap();
    let got: Vec<_> = runs
        .iter()
        .map(|r| (r.run.id.as_str(), r.counts.done, r.counts.failed))
        .collect();
    assert_eq!(got, [(&*b.id, 0, 0), (&*a.id, 1, 1)]);
}
