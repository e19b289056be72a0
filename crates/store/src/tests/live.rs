//! Suite checks for worker heartbeats and named run state.

use super::{new_run, Connect};
use crate::{Error, WorkerBeat};

fn beat(run_id: &str, worker: &str, at: i64, in_flight: u64) -> WorkerBeat {
    WorkerBeat {
        run_id: run_id.into(),
        worker_id: worker.into(),
        host: "host-a".into(),
        pid: 4242,
        started_at: 1_000,
        beat_at: at,
        state: "running".into(),
        in_flight,
        live: serde_json::json!({"done": at / 10, "rates": {"calls_per_sec": 1.5}}),
    }
}

pub(crate) fn heartbeats_replace_per_worker(connect: Connect<'_>) {
    let mut s = connect();
    let run = s.create_run(&new_run("r", "s")).unwrap();
    let other = s.create_run(&new_run("o", "s")).unwrap();
    s.heartbeat(&beat(&run.id, "a", 2_000, 3)).unwrap();
    s.heartbeat(&beat(&run.id, "b", 2_500, 1)).unwrap();
    s.heartbeat(&beat(&other.id, "a", 9_000, 7)).unwrap();
    let mut later = beat(&run.id, "a", 3_000, 0);
    later.state = "stopped".into();
    s.heartbeat(&later).unwrap();
    let got = connect().workers(&run.id).unwrap();
    assert_eq!(got, vec![later, beat(&run.id, "b", 2_500, 1)]);
    assert_eq!(s.workers(&other.id).unwrap().len(), 1);
    assert!(matches!(
        s.heartbeat(&beat("nope-1", "a", 1, 1)),
        Err(Error::NoSuchRun(_))
    ));
    assert!(matches!(s.workers("nope-1"), Err(Error::NoSuchRun(_))));
}

pub(crate) fn run_state_by_prefix(connect: Connect<'_>) {
    let mut s = connect();
    let run = s.create_run(&new_run("r", "s")).unwrap();
    let other = s.create_run(&new_run("o", "s")).unwrap();
    s.put_run_state(&run.id, "batch:openai:2", &serde_json::json!({"id": "b2"}))
        .unwrap();
    s.put_run_state(&run.id, "batch:openai:1", &serde_json::json!({"id": "b1"}))
        .unwrap();
    s.put_run_state(&run.id, "batch%_x", &serde_json::json!(1))
        .unwrap();
    s.put_run_state(&run.id, "spent", &serde_json::json!(0.5))
        .unwrap();
    s.put_run_state(&other.id, "batch:openai:1", &serde_json::json!("x"))
        .unwrap();
    s.put_run_state(&run.id, "spent", &serde_json::json!(0.75))
        .unwrap();
    let batches = connect().run_state(&run.id, "batch:").unwrap();
    assert_eq!(
        batches,
        vec![
            (
                "batch:openai:1".to_string(),
                serde_json::json!({"id": "b1"})
            ),
            (
                "batch:openai:2".to_string(),
                serde_json::json!({"id": "b2"})
            ),
        ]
    );
    // Prefixes are literal: % and _ are not wildcards.
    assert_eq!(s.run_state(&run.id, "batch%").unwrap().len(), 1);
    assert_eq!(s.run_state(&run.id, "").unwrap().len(), 4);
    assert_eq!(
        s.run_state(&run.id, "spent").unwrap(),
        vec![("spent".to_string(), serde_json::json!(0.75))]
    );
    assert!(matches!(
        s.put_run_state("nope-1", "k", &serde_json::json!(1)),
        Err(Error::NoSuchRun(_))
    ));
}
