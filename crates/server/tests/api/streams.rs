//! Streams over a real socket: `?wait=stream` sends `run`, one `item` per
//! unit (each already durable), then `summary`; a client that leaves does
//! not stop or lose the run; `/events` follows runs executed here and runs
//! executed by another process against the same store (heartbeats).

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::json;
use sluice_mock::MockConfig;

use crate::util::{Setup, SseClient};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_sends_each_item_once_after_it_is_durable_then_a_summary() {
    let s = Setup::new(MockConfig {
        latency_ms: 5,
        jitter_ms: 30,
        seed: 5,
        ..MockConfig::default()
    })
    .await;
    let addr = s.listen().await;
    let job = s.job(60, json!({"concurrency": 8}));
    let mut stream =
        SseClient::open(addr, "POST", "/v1/runs?wait=stream", Some(&job.to_string())).await;
    let first = stream.next().await.unwrap();
    assert_eq!(first.event, "run");
    let id = first.data["id"].as_str().unwrap().to_owned();
    let mut seen = Vec::new();
    let mut progress = 0;
    let summary = loop {
        let e = stream
            .next()
            .await
            .expect("the stream ended before its summary");
        match e.event.as_str() {
            "item" => {
                let item = e.data["id"].as_str().unwrap().to_owned();
                // Only durable outcomes are streamed: the store has it already.
                let r = s
                    .call("GET", &format!("/v1/runs/{id}/items/{item}"), None)
                    .await;
                assert_eq!(r.status, 200, "{item} streamed before it was recorded");
                assert_eq!(e.data["status"], "done");
                seen.push(item);
            }
            "progress" => progress += 1,
            "summary" => break e.data,
            other => panic!("unexpected event {other}"),
        }
    };
    assert!(stream.next().await.is_none(), "nothing after the summary");
    assert_eq!(seen.len(), 60);
    assert_eq!(
        seen.iter().collect::<HashSet<_>>().len(),
        60,
        "each item once"
    );
    // Jittered latency: they arrive as they finish, not in input order.
    let mut sorted = seen.clone();
    sorted.sort();
    assert_ne!(seen, sorted, "items should stream in finish order");
    assert_eq!(summary["state"], "finished");
    assert_eq!(summary["counts"]["done"], 60);
    let _ = progress;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_does_not_stop_or_lose_the_run() {
    let s = Setup::new(MockConfig {
        latency_ms: 20,
        ..MockConfig::default()
    })
    .await;
    let addr = s.listen().await;
    let job = s.job(80, json!({"concurrency": 4}));
    let mut stream =
        SseClient::open(addr, "POST", "/v1/runs?wait=stream", Some(&job.to_string())).await;
    let id = stream.next().await.unwrap().data["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut items = 0;
    while items < 3 {
        if stream.next().await.unwrap().event == "item" {
            items += 1;
        }
    }
    drop(stream);
    let view = s.wait_for(&id, |v| v["state"] == "finished").await;
    assert_eq!(view["counts"]["done"], 80);
    let results = s
        .call("GET", &format!("/v1/runs/{id}/results?limit=1000"), None)
        .await;
    assert_eq!(results.text.lines().count(), 80);
    assert_eq!(s.mock.stats().requests, 80, "each item sent once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_follow_a_run_executed_here_until_it_ends() {
    let s = Setup::new(MockConfig {
        latency_ms: 20,
        ..MockConfig::default()
    })
    .await;
    let addr = s.listen().await;
    let id = s
        .submit(&s.job(60, json!({"concurrency": 3, "rpm": 6000})))
        .await;
    let mut events = SseClient::open(addr, "GET", &format!("/v1/runs/{id}/events"), None).await;
    let mut done = Vec::new();
    let last = loop {
        let e = events.next().await.expect("events end with `end`");
        if e.event == "end" {
            break e.data;
        }
        assert_eq!(e.event, "progress");
        assert_eq!(e.data["live"]["source"], "server");
        let providers = &e.data["live"]["stats"]["providers"];
        assert_eq!(providers[0]["limits"]["rpm"], 6000, "{}", e.data);
        assert_eq!(providers[0]["concurrency"], 3);
        done.push(e.data["counts"]["done"].as_u64().unwrap());
    };
    assert_eq!(last["state"], "finished");
    assert_eq!(last["counts"]["done"], 60);
    assert!(done.windows(2).all(|w| w[0] <= w[1]), "{done:?}");
    assert!(done.len() >= 2, "progress while it ran: {done:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_follow_a_run_started_by_another_process_through_its_heartbeats() {
    let s = Setup::new(MockConfig {
        latency_ms: 30,
        ..MockConfig::default()
    })
    .await;
    let addr = s.listen().await;
    // What `sluice run job.toml` would do, against the same store.
    let cli = start_cli_run(&s, 150, 4, "rpm = 30000\n");
    // Wait for its first heartbeat to be recorded (a minute at most).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let id = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no heartbeat from the CLI run"
        );
        let list = s.call("GET", "/v1/runs", None).await.json();
        if let Some(run) = list["runs"].as_array().unwrap().first() {
            let id = run["id"].as_str().unwrap().to_owned();
            let view = s.call("GET", &format!("/v1/runs/{id}"), None).await.json();
            if !view["live"].is_null() {
                break id;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let mut events = SseClient::open(addr, "GET", &format!("/v1/runs/{id}/events"), None).await;
    let e = events.next().await.unwrap();
    assert_eq!(e.event, "progress", "{}", e.data);
    assert_eq!(e.data["live"]["source"], "worker");
    assert_eq!(
        e.data["live"]["stats"]["providers"][0]["limits"]["rpm"],
        30000
    );
    let last = loop {
        let e = events
            .next()
            .await
            .expect("events end once the other process stops");
        if e.event == "end" {
            break e.data;
        }
    };
    cli.join().unwrap().unwrap();
    assert_eq!(last["state"], "finished");
    assert_eq!(last["counts"]["done"], 150);
    // Another process's run cannot be paused from here.
    let r = s.call("POST", &format!("/v1/runs/{id}/pause"), None).await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (409, "conflict")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_of_another_process_is_paused_and_resumed_through_the_store() {
    let s = Setup::new(MockConfig {
        latency_ms: 50,
        ..MockConfig::default()
    })
    .await;
    let addr = s.listen().await;
    // What `sluice run job.toml` would do, against the same store: not a
    // run of this server, steered only through the store's control.
    let cli = start_cli_run(&s, 120, 2, "");
    s.wait_for("cli", |v| {
        !v["live"].is_null() && v["counts"]["done"].as_u64() > Some(4)
    })
    .await;
    let r = s.call("POST", "/v1/runs/cli-1/pause", None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let doc: serde_json::Value = serde_json::from_str(sluice_server::OPENAPI).unwrap();
    crate::openapi::conforms(
        &doc,
        "/v1/runs/{id}/pause",
        "post",
        200,
        "application/json",
        &r.text,
    );
    let view = r.json();
    // `pausing` until the other process applied it (within a heartbeat).
    let held = |state: &serde_json::Value| state == "pausing" || state == "paused";
    assert!(held(&view["state"]), "{view}");
    assert_eq!(
        (&view["executed_here"], &view["control"]["state"]),
        (&json!(false), &json!("pause")),
        "{view}"
    );
    let mut events = SseClient::open(addr, "GET", "/v1/runs/cli-1/events", None).await;
    let e = events.next().await.unwrap();
    assert_eq!(e.event, "progress");
    assert!(held(&e.data["state"]), "{}", e.data);
    assert_eq!(e.data["control"]["state"], "pause");
    // The other process applies it with its next heartbeat; then the run
    // shows `paused` and nothing more is sent.
    let view = s
        .wait_for("cli-1", |v| {
            v["live"]["control"] == "pause" && v["live"]["counters"]["in_flight"] == 0
        })
        .await;
    assert_eq!(view["state"], "paused", "{view}");
    assert!(
        view["live"]["eta_secs"].is_null(),
        "the clock stands still: {view}"
    );
    let sent = s.mock.stats().requests;
    tokio::time::sleep(std::time::Duration::from_millis(1_000)).await;
    assert_eq!(s.mock.stats().requests, sent, "no call while paused");
    assert!(sent < 120);
    let r = s.call("POST", "/v1/runs/cli-1/resume", None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["state"], "running");
    let report = cli.join().unwrap().unwrap();
    assert!(!report.interrupted);
    assert_eq!(report.progress.done, 120);
    assert_eq!(s.mock.stats().requests, 120);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_tells_calls_on_the_wire_from_places_waiting_for_a_rate_slot() {
    let s = Setup::new(MockConfig::default()).await;
    // One call a second, 8 units at once: 8 places taken, at most one on the wire.
    let cli = start_cli_run(&s, 40, 8, "rpm = 60\n");
    let view = s
        .wait_for("cli", |v| {
            v["live"]["stats"]["providers"][0]["in_flight"].as_u64() >= Some(4)
        })
        .await;
    let provider = &view["live"]["stats"]["providers"][0];
    let on_wire = provider["on_wire"].as_u64().expect("on_wire is reported");
    assert!(on_wire <= 1, "{provider}");
    let id = view["id"].as_str().unwrap().to_owned();
    let r = s.call("POST", &format!("/v1/runs/{id}/cancel"), None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let report = cli.join().unwrap().unwrap();
    assert!(report.interrupted);
}

/// Runs job "cli" (`n` items, one chat step on the mock, `concurrency`,
/// `provider_extra` lines under its provider) on a thread, the way
/// `sluice run job.toml` would, against the setup's store.
fn start_cli_run(
    s: &Setup,
    n: usize,
    concurrency: usize,
    provider_extra: &str,
) -> std::thread::JoinHandle<sluice_engine::Result<sluice_engine::RunReport>> {
    let items: String = (0..n).map(|i| format!("{{\"q\":\"q{i}\"}}\n")).collect();
    std::fs::write(s.dir.path().join("cli.jsonl"), items).unwrap();
    let toml = format!(
        "name = \"cli\"\nconcurrency = {concurrency}\n[input]\npath = \"cli.jsonl\"\n[providers.p]\nbase_url = \"{}\"\n{provider_extra}[[steps]]\nname = \"a\"\nkind = \"chat\"\nprovider = \"p\"\nmodel = \"m\"\nmessages = [{{ role = \"user\", content = \"{{{{ item.q }}}}\" }}]\n",
        s.base()
    );
    let path = s.dir.path().join("cli.toml");
    std::fs::write(&path, toml).unwrap();
    let job = sluice_spec::load(&path, &[]).unwrap();
    let config = sluice_engine::JobConfig {
        store: s.dir.path().join("store.db").into(),
        fresh: true,
        skip_bad: false,
        sets: vec![],
        lease: sluice_engine::DEFAULT_LEASE,
        queue_only: false,
        limit: None,
        early_stop: true,
    };
    std::thread::spawn(move || {
        sluice_engine::run_job(
            &job,
            &config,
            Arc::new(sluice_engine::Progress::new(&sluice_engine::Engine::new())),
        )
    })
}
