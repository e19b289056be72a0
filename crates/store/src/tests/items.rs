//! Suite checks for item outcomes: upsert, lookup, export order, counts, errors, reset.

use super::{ids, new_run, rec, Connect};
use crate::{Error, ItemRecord, ItemStatus, RecordedItem, RunCounts};

pub(crate) fn upsert_replaces_earlier_outcome(connect: Connect<'_>) {
    let mut s = connect();
    let run = s.create_run(&new_run("r", "s")).unwrap();
    s.write_batch(
        &run.id,
        &[
            rec("x", 0, ItemStatus::Failed),
            rec("y", 1, ItemStatus::Done),
        ],
    )
    .unwrap();
    let mut retried = rec("x", 0, ItemStatus::Done);
    retried.attempts = 3;
    s.write_batch(&run.id, &[retried.clone()]).unwrap();
    assert_eq!(s.get_item(&run.id, "x").unwrap(), Some(retried));
    assert_eq!(s.get_item(&run.id, "nope").unwrap(), None);
    let counts = s.counts(&run.id).unwrap();
    assert_eq!((counts.done, counts.failed, counts.attempts), (2, 0, 4));
}

pub(crate) fn lookup_returns_found_ids_only(connect: Connect<'_>) {
    let mut s = connect();
    let run = s.create_run(&new_run("r", "s")).unwrap();
    let other = s.create_run(&new_run("o", "s")).unwrap();
    let mut big_hash = rec("b", 7, ItemStatus::Failed);
    big_hash.hash = u64::MAX - 1;
    s.write_batch(&run.id, &[rec("a", 3, ItemStatus::Done), big_hash])
        .unwrap();
    s.write_batch(&other.id, &[rec("c", 0, ItemStatus::Done)])
        .unwrap();
    let mut found = s.lookup(&run.id, &["a", "b", "c", "zzz"]).unwrap();
    found.sort_by(|x, y| x.item_id.cmp(&y.item_id));
    let expect = [
        RecordedItem {
            item_id: "a".into(),
            hash: rec("a", 3, ItemStatus::Done).hash,
            status: ItemStatus::Done,
            idx: 3,
        },
        RecordedItem {
            item_id: "b".into(),
            hash: u64::MAX - 1,
            status: ItemStatus::Failed,
            idx: 7,
        },
    ];
    assert_eq!(found, expect);
    assert_eq!(s.lookup(&run.id, &[]).unwrap(), []);
}

pub(crate) fn lookup_handles_large_batches(connect: Connect<'_>) {
    let mut s = connect();
    let run = s.create_run(&new_run("r", "s")).unwrap();
    let records: Vec<_> = (0..5_000)
        .map(|i| rec(&format!("line-{i}"), i, ItemStatus::Done))
        .collect();
    for batch in records.chunks(500) {
        s.write_batch(&run.id, batch).unwrap();
    }
    // Every other id exists, so chunks of every size mix hits and misses.
    let wanted: Vec<String> = (0..10_000)
        .map(|i| format!("line-{}", i * 2 % 10_001))
        .collect();
    let refs: Vec<&str> = wanted.iter().map(String::as_str).collect();
    for n in [1, 15, 17, 129, 1_000, 10_000] {
        let found = s.lookup(&run.id, &refs[..n]).unwrap();
        let expected = refs[..n]
            .iter()
            .filter(|id| id[5..].parse::<u64>().unwrap() < 5_000);
        assert_eq!(found.len(), expected.count(), "batch of {n}");
        for k in &found {
            let r = &records[k.idx as usize];
            assert_eq!(
                (&k.item_id, k.hash, k.status),
                (&r.item_id, r.hash, r.status)
            );
        }
    }
}

pub(crate) fn for_each_item_streams_in_input_order(connect: Connect<'_>) {
    let mut s = connect();
    let run = s.create_run(&new_run("r", "s")).unwrap();
    let mut with_meta = rec("m", 1, ItemStatus::Done);
    with_meta.metadata = Some(r#"{"k":[1,"two"]}"#.into());
    with_meta.custom_id = Some("req-1".into());
    with_meta.prompt_tokens = None;
    with_meta.status_code = None;
    let batch = [
        rec("c", 2, ItemStatus::Done),
        rec("z", 0, ItemStatus::Failed),
        with_meta.clone(),
        rec("b", 2, ItemStatus::Done),
    ];
    s.write_batch(&run.id, &batch).unwrap();
    let mut seen = Vec::new();
    s.for_each_item(&run.id, &mut |r| {
        seen.push(r);
        Ok(())
    })
    .unwrap();
    let order: Vec<_> = seen.iter().map(|r| r.item_id.as_str()).collect();
    assert_eq!(order, ["z", "m", "b", "c"]);
    assert_eq!(seen[1], with_meta);
    assert_eq!(seen[0], batch[1]);
}

pub(crate) fn for_each_item_stops_at_callback_error(connect: Connect<'_>) {
    let mut s = connect();
    let run = s.create_run(&new_run("r", "s")).unwrap();
    let batch: Vec<_> = (0..10)
        .map(|i| rec(&format!("i{i}"), i, ItemStatus::Done))
        .collect();
    s.write_batch(&run.id, &batch).unwrap();
    let mut calls = 0;
    let err = s
        .for_each_item(&run.id, &mut |_| {
            calls += 1;
            if calls == 3 {
                return Err("disk full writing results.jsonl".into());
            }
            Ok(())
        })
        .unwrap_err();
    assert_eq!(calls, 3);
    assert!(matches!(err, Error::Callback(_)));
    assert_eq!(err.to_string(), "disk full writing results.jsonl");
}

pub(crate) fn counts_sum_attempts_and_tokens(connect: Connect<'_>) {
    let mut s = connect();
    let run = s.create_run(&new_run("r", "s")).unwrap();
    assert_eq!(s.counts(&run.id).unwrap(), RunCounts::default());
    let mut a = rec("a", 0, ItemStatus::Done);
    (a.attempts, a.throttled, a.latency_ms) = (3, 2, 50);
    let mut b = rec("b", 1, ItemStatus::Failed);
    (
        b.attempts,
        b.prompt_tokens,
        b.completion_tokens,
        b.started_at,
    ) = (6, None, None, 500);
    let mut c = rec("c", 2, ItemStatus::Done);
    (c.attempts, c.finished_at) = (0, 9_999); // never sent (e.g. a cache hit): no retries
    s.write_batch(&run.id, &[a, b, c]).unwrap();
    let expect = RunCounts {
        done: 2,
        failed: 1,
        attempts: 9,
        retries: 2 + 5,
        throttled: 2,
        prompt_tokens: 20,
        completion_tokens: 10,
        latency_ms_sum: 250,
        first_started_at: Some(500),
        last_finished_at: Some(9_999),
    };
    assert_eq!(s.counts(&run.id).unwrap(), expect);
}

pub(crate) fn top_errors_by_frequency(connect: Connect<'_>) {
    let mut s = connect();
    let run = s.create_run(&new_run("r", "s")).unwrap();
    let failed = |i: u64, msg: Option<&str>| ItemRecord {
        error: msg.map(Into::into),
        ..rec(&format!("i{i}"), i, ItemStatus::Failed)
    };
    let mut batch = vec![
        failed(0, Some("timeout")),
        failed(1, Some("429 after 6 tries")),
    ];
    batch.extend((2..5).map(|i| failed(i, Some("timeout"))));
    batch.extend((5..7).map(|i| failed(i, Some("connection reset"))));
    batch.push(failed(7, Some("bad request")));
    batch.push(failed(8, None));
    batch.push(ItemRecord {
        error: Some("ignored: done".into()),
        ..rec("ok", 9, ItemStatus::Done)
    });
    s.write_batch(&run.id, &batch).unwrap();
    let top = s.top_errors(&run.id, 3).unwrap();
    let expect = [
        ("timeout", 4),
        ("connection reset", 2),
        ("(no error message)", 1),
    ];
    let expect: Vec<_> = expect.iter().map(|(m, n)| (m.to_string(), *n)).collect();
    assert_eq!(top, expect);
    assert_eq!(s.top_errors(&run.id, 100).unwrap().len(), 5);
    assert_eq!(s.top_errors(&run.id, 0).unwrap(), []);
}

pub(crate) fn error_messages_count_and_name_an_example(connect: Connect<'_>) {
    let mut s = connect();
    let run = s.create_run(&new_run("r", "s")).unwrap();
    let failed = |id: &str, i: u64, msg: Option<&str>| ItemRecord {
        error: msg.map(Into::into),
        ..rec(id, i, ItemStatus::Failed)
    };
    let batch = vec![
        failed("b", 0, Some("timeout")),
        failed("a", 1, Some("timeout")),
        failed("c", 2, Some("bad request")),
        failed("d", 3, None),
        ItemRecord {
            error: Some("timeout".into()),
            ..rec("ok", 4, ItemStatus::Done)
        },
    ];
    s.write_batch(&run.id, &batch).unwrap();
    let found = s.error_messages(&run.id, 10).unwrap();
    let shown: Vec<(&str, u64, &str)> = found
        .iter()
        .map(|m| (m.message.as_str(), m.count, m.example.as_str()))
        .collect();
    assert_eq!(
        shown,
        [
            ("timeout", 2, "a"),
            ("(no error message)", 1, "d"),
            ("bad request", 1, "c"),
        ]
    );
    assert_eq!(s.error_messages(&run.id, 1).unwrap().len(), 1);
}

pub(crate) fn reset_failed_makes_items_pending(connect: Connect<'_>) {
    let mut s = connect();
    let run = s.create_run(&new_run("r", "s")).unwrap();
    let other = s.create_run(&new_run("o", "s")).unwrap();
    let batch = [
        rec("a", 0, ItemStatus::Failed),
        rec("b", 1, ItemStatus::Done),
        rec("c", 2, ItemStatus::Failed),
    ];
    s.write_batch(&run.id, &batch).unwrap();
    s.write_batch(&other.id, &batch).unwrap();
    assert_eq!(s.reset_failed(&run.id).unwrap(), 2);
    let found = s.lookup(&run.id, &["a", "b", "c"]).unwrap();
    assert_eq!(
        found.iter().map(|k| k.item_id.as_str()).collect::<Vec<_>>(),
        ["b"]
    );
    assert_eq!(
        s.counts(&other.id).unwrap().failed,
        2,
        "other runs untouched"
    );
    assert_eq!(s.reset_failed(&run.id).unwrap(), 0);
}

pub(crate) fn set_positions_changes_export_order(connect: Connect<'_>) {
    let mut s = connect();
    let run = s.create_run(&new_run("r", "s")).unwrap();
    let batch: Vec<_> = ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, id)| rec(id, i as u64, ItemStatus::Done))
        .collect();
    s.write_batch(&run.id, &batch).unwrap();
    s.set_positions(
        &run.id,
        &[("a".into(), 10), ("c".into(), 0), ("ghost".into(), 1)],
    )
    .unwrap();
    assert_eq!(ids(&mut *s, &run.id), ["c", "b", "a"]);
    assert_eq!(s.lookup(&run.id, &["a"]).unwrap()[0].idx, 10);
}

pub(crate) fn batch_is_atomic(connect: Connect<'_>) {
    let mut s = connect();
    let run = s.create_run(&new_run("r", "s")).unwrap();
    let mut bad = rec("bad", u64::MAX, ItemStatus::Done);
    bad.idx = u64::MAX;
    let err = s
        .write_batch(&run.id, &[rec("a", 0, ItemStatus::Done), bad])
        .unwrap_err();
    assert!(matches!(err, Error::OutOfRange { .. }), "{err}");
    assert_eq!(
        s.counts(&run.id).unwrap().done,
        0,
        "a failed batch leaves nothing behind"
    );
    s.write_batch(&run.id, &[rec("a", 0, ItemStatus::Done)])
        .unwrap();
}
