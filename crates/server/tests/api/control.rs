//! Steering runs executed here: pause holds new calls, resume continues,
//! cancel ends the run `interrupted` with its items pending and a resume
//! finishes them, retry re-runs failures; and runs sharing a provider take
//! turns, so a small run is not starved by a huge one.

use std::time::Duration;

use serde_json::json;
use sluice_mock::MockConfig;

use crate::util::Setup;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_new_calls_and_resume_finishes_the_run() {
    let s = Setup::new(MockConfig {
        latency_ms: 20,
        ..MockConfig::default()
    })
    .await;
    let id = s.submit(&s.job(120, json!({"concurrency": 4}))).await;
    s.wait_for(&id, |v| v["counts"]["done"].as_u64() > Some(10))
        .await;
    let r = s.call("POST", &format!("/v1/runs/{id}/pause"), None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["state"], "paused");
    // Calls on the wire finish, then nothing more is sent.
    let paused = s
        .wait_for(&id, |v| {
            v["live"]["counters"]["in_flight"] == 0 && v["state"] == "paused"
        })
        .await;
    let sent = s.mock.stats().requests;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(s.mock.stats().requests, sent, "no call while paused");
    assert!(paused["counts"]["pending"].as_u64().unwrap() > 0);
    let r = s.call("POST", &format!("/v1/runs/{id}/resume"), None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let view = s.wait_for(&id, |v| v["state"] == "finished").await;
    assert_eq!(view["counts"]["done"], 120);
    assert_eq!(s.mock.stats().requests, 120);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_leaves_items_pending_and_resume_finishes_them() {
    let s = Setup::new(MockConfig {
        latency_ms: 20,
        ..MockConfig::default()
    })
    .await;
    let id = s.submit(&s.job(200, json!({"concurrency": 4}))).await;
    s.wait_for(&id, |v| v["counts"]["done"].as_u64() > Some(5))
        .await;
    let r = s.call("POST", &format!("/v1/runs/{id}/cancel"), None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let view = s.wait_for(&id, |v| v["state"] == "interrupted").await;
    let pending = view["counts"]["pending"].as_u64().unwrap();
    assert!(pending > 0 && pending < 200, "{view}");
    assert_eq!(
        view["counts"]["failed"], 0,
        "cancelled items are pending, not failed"
    );
    // Pausing or cancelling a run that does not run is a conflict.
    let r = s.call("POST", &format!("/v1/runs/{id}/pause"), None).await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (409, "conflict")
    );
    let r = s.call("POST", &format!("/v1/runs/{id}/resume"), None).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let view = s.wait_for(&id, |v| v["state"] == "finished").await;
    assert_eq!(view["counts"]["done"], 200);
    // Every item sent once, bar the few cut off on the wire at the cancel.
    let sent = s.mock.stats().requests;
    assert!((200..=204).contains(&sent), "{sent}");
    let r = s.call("POST", &format!("/v1/runs/{id}/resume"), None).await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (409, "conflict")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_reruns_the_failed_items() {
    let s = Setup::new(MockConfig {
        fail_rate: 0.3,
        seed: 9,
        ..MockConfig::default()
    })
    .await;
    let job = s.job(
        40,
        json!({"concurrency": 4, "retries": {"max": 0}, "circuit_breaker": false}),
    );
    let id = s.submit(&job).await;
    let first = s.wait_for(&id, |v| v["state"] == "finished").await;
    let failed = first["counts"]["failed"].as_u64().unwrap();
    assert!(failed > 0, "{first}");
    // The failures by cause: one group, every failed item in it.
    let groups = first["error_groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "{first}");
    assert_eq!(groups[0]["code"], "server_error", "{first}");
    assert_eq!(groups[0]["count"], failed, "{first}");
    assert!(groups[0]["example"]["item"].is_string(), "{first}");
    let r = s.call("POST", &format!("/v1/runs/{id}/retry"), None).await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.json()["requeued"], failed);
    let second = s
        .wait_for(&id, |v| {
            v["state"] == "finished" && v["executed_here"] == false
        })
        .await;
    assert_eq!(
        second["counts"]["done"].as_u64().unwrap() + second["counts"]["failed"].as_u64().unwrap(),
        40
    );
    assert!(
        second["counts"]["failed"].as_u64().unwrap() < failed,
        "{second}"
    );
    assert_eq!(s.mock.stats().requests, 40 + failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_run_is_not_starved_by_a_huge_one_on_the_same_provider() {
    let s = Setup::new(MockConfig {
        latency_ms: 10,
        ..MockConfig::default()
    })
    .await;
    // Both runs use the provider's 2 slots; the big one queues all its 600
    // units at the gate first.
    let provider = json!({"concurrency": 2});
    let mut big = s.job(600, provider.clone());
    big["concurrency"] = json!(600);
    big["name"] = json!("big");
    let big = s.submit(&big).await;
    s.wait_for(&big, |v| v["counts"]["done"].as_u64() > Some(4))
        .await;
    let mut small = s.job(20, provider);
    small["name"] = json!("small");
    let small = s.submit(&small).await;
    s.wait_for(&small, |v| v["state"] == "finished").await;
    let big_view = s.call("GET", &format!("/v1/runs/{big}"), None).await.json();
    let big_done = big_view["counts"]["done"].as_u64().unwrap();
    // Taking turns, the small run's 20 finish while the big one does about
    // as many; first come, first served they would wait for ~590 calls.
    eprintln!("big run done when the small one finished: {big_done}");
    assert!(
        big_done < 150,
        "the big run did {big_done} before the small run's 20"
    );
    s.wait_for(&big, |v| v["state"] == "finished").await;
}
