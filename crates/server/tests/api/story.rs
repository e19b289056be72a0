//! What a run leaves for the dashboard once it ended: its history (points
//! with rates) and summary kept with it, its failures by cause with their
//! items, retries of one cause or of the retryable failures only, and its
//! results as files to download.

use serde_json::{json, Value};
use sluice_mock::MockConfig;

use crate::util::Setup;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_run_keeps_its_history_and_summary_across_a_retry() {
    let s = Setup::new(MockConfig {
        latency_ms: 5,
        fail_rate: 0.25,
        seed: 3,
        ..MockConfig::default()
    })
    .await;
    let job = s.job(
        40,
        json!({"concurrency": 4, "retries": {"max": 0}, "circuit_breaker": false}),
    );
    let id = s.submit(&job).await;
    let view = s
        .wait_for(&id, |v| {
            v["state"] == "finished" && v["executed_here"] == false
        })
        .await;
    let failed = view["counts"]["failed"].as_u64().unwrap();
    assert!(failed > 0, "{view}");
    // The view of an ended run carries its summary.
    let summary = &view["summary"];
    assert_eq!(summary["sessions"], 1, "{summary}");
    assert_eq!(
        summary["done"].as_u64().unwrap() + summary["failed"].as_u64().unwrap(),
        40
    );
    assert_eq!(summary["attempts"], 40, "{summary}");
    assert_eq!(summary["steps"][0]["attempts"], 40, "{summary}");
    assert!(summary["active_secs"].as_f64().unwrap() > 0.0, "{summary}");
    assert_eq!(summary["workers"].as_array().unwrap().len(), 1);
    let h = s.call("GET", &format!("/v1/runs/{id}/history"), None).await;
    assert_eq!(h.status, 200, "{}", h.text);
    let h = h.json();
    let points = h["points"].as_array().unwrap();
    assert!(!points.is_empty(), "{h}");
    // Rates integrate back to the counts (calls per second over each bucket).
    let ts: Vec<i64> = points.iter().map(|p| p["t"].as_i64().unwrap()).collect();
    assert!(ts.windows(2).all(|w| w[0] < w[1]), "{ts:?}");
    assert!(points
        .iter()
        .all(|p| p["calls_per_sec"].as_f64().unwrap() >= 0.0));
    assert_eq!(h["summary"]["attempts"], 40);

    // A retry is a second session; the summary adds both up.
    let r = s.call("POST", &format!("/v1/runs/{id}/retry"), None).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let after = s
        .wait_for(&id, |v| {
            v["state"] == "finished" && v["executed_here"] == false && v["summary"]["sessions"] == 2
        })
        .await;
    assert_eq!(after["summary"]["attempts"], 40 + failed, "{after}");
    let h = s
        .call("GET", &format!("/v1/runs/{id}/history"), None)
        .await
        .json();
    assert_eq!(h["summary"]["sessions"], 2);
    // Both sessions drew points (in one bucket when they ran within a second).
    let points = h["points"].as_array().unwrap();
    assert!(!points.is_empty(), "{h}");
    assert!(
        points.last().unwrap()["t"].as_i64() >= ts.last().copied(),
        "{h}"
    );
    let r = s.call("GET", "/v1/runs/nope/history", None).await;
    assert_eq!(r.status, 404);
}

fn group<'a>(failures: &'a Value, code: &str) -> &'a Value {
    failures["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["code"] == code)
        .unwrap_or_else(|| panic!("no {code} group: {failures}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_by_cause_are_retried_by_group_or_only_when_retryable() {
    let s = Setup::new(MockConfig {
        fail_rate: 0.2,
        reject_rate: 0.2,
        seed: 11,
        ..MockConfig::default()
    })
    .await;
    let job = s.job(
        60,
        json!({"concurrency": 4, "retries": {"max": 0}, "circuit_breaker": false}),
    );
    let id = s.submit(&job).await;
    let view = s
        .wait_for(&id, |v| {
            v["state"] == "finished" && v["executed_here"] == false
        })
        .await;
    let failed = view["counts"]["failed"].as_u64().unwrap();
    let f = s
        .call("GET", &format!("/v1/runs/{id}/failures"), None)
        .await;
    assert_eq!(f.status, 200, "{}", f.text);
    let f = f.json();
    assert_eq!(f["failed"], failed, "{f}");
    let server = group(&f, "server_error").clone();
    let rejected = group(&f, "request_error").clone();
    assert_eq!(server["retryable"], true);
    assert_eq!(rejected["retryable"], false);
    assert_eq!(f["retryable"], server["count"], "{f}");
    // Each group lists its items; each item opens its record.
    let n422 = rejected["count"].as_u64().unwrap();
    let items = rejected["items"].as_array().unwrap();
    assert_eq!(items.len() as u64, n422);
    let first = items[0]["item"].as_str().unwrap();
    assert!(
        items[0]["message"].as_str().unwrap().contains("HTTP 422"),
        "{rejected}"
    );
    let item = s
        .call("GET", &format!("/v1/runs/{id}/items/{first}"), None)
        .await
        .json();
    assert_eq!(item["status"], "failed", "{item}");
    let few = s
        .call("GET", &format!("/v1/runs/{id}/failures?items=1"), None)
        .await
        .json();
    assert!(few["groups"]
        .as_array()
        .unwrap()
        .iter()
        .all(|g| g["items"].as_array().unwrap().len() == 1));

    // Only the retryable ones: the 422s are not sent again.
    let sent = s.mock.stats().requests;
    let r = s
        .call("POST", &format!("/v1/runs/{id}/retry?retryable=true"), None)
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.json()["requeued"], server["count"]);
    let mid = s
        .wait_for(&id, |v| {
            v["state"] == "finished" && v["executed_here"] == false
        })
        .await;
    assert_eq!(
        s.mock.stats().requests,
        sent + server["count"].as_u64().unwrap()
    );
    // The 422s kept their failure; the 500s mostly went through.
    let f = s
        .call("GET", &format!("/v1/runs/{id}/failures"), None)
        .await
        .json();
    assert_eq!(group(&f, "request_error")["count"], n422, "{f}");
    assert!(mid["counts"]["failed"].as_u64().unwrap() < failed, "{mid}");
    // One cause: just its items, and a 422 stays a 422.
    let sent = s.mock.stats().requests;
    let r = s
        .call(
            "POST",
            &format!(
                "/v1/runs/{id}/retry?group={}",
                rejected["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.json()["requeued"], n422);
    let end = s
        .wait_for(&id, |v| {
            v["state"] == "finished" && v["executed_here"] == false
        })
        .await;
    assert_eq!(s.mock.stats().requests, sent + n422);
    let f = s
        .call("GET", &format!("/v1/runs/{id}/failures"), None)
        .await
        .json();
    assert_eq!(group(&f, "request_error")["count"], n422, "{end}");
    // A cause nobody has, or two selections at once, are refused.
    let r = s
        .call("POST", &format!("/v1/runs/{id}/retry?group=0000"), None)
        .await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (409, "conflict")
    );
    let r = s
        .call(
            "POST",
            &format!("/v1/runs/{id}/retry?step=a&retryable=true"),
            None,
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_download_as_jsonl_csv_and_parquet() {
    let s = Setup::new(MockConfig::default()).await;
    let id = s.submit(&s.job(7, json!({"concurrency": 2}))).await;
    s.wait_for(&id, |v| v["state"] == "finished").await;
    let r = s.call("GET", &format!("/v1/runs/{id}/export"), None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.text.lines().count(), 7);
    let disposition = r.headers["content-disposition"].to_str().unwrap();
    assert!(
        disposition.contains(&format!("{id}.jsonl")),
        "{disposition}"
    );
    let r = s
        .call("GET", &format!("/v1/runs/{id}/export?format=csv"), None)
        .await;
    assert_eq!(r.status, 200);
    assert!(r.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    assert_eq!(
        r.text.lines().count(),
        8,
        "a header and 7 rows:\n{}",
        r.text
    );
    let r = s
        .call("GET", &format!("/v1/runs/{id}/export?format=parquet"), None)
        .await;
    assert_eq!(r.status, 200);
    let r = s
        .call("GET", &format!("/v1/runs/{id}/export?format=xml"), None)
        .await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (400, "invalid_query")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spend_is_charted_against_the_budget() {
    let s = Setup::new(MockConfig::default()).await;
    let mut job = s.job(
        6,
        json!({"concurrency": 2, "prices": {"*": {"input": 1.0, "output": 2.0}}}),
    );
    job["budget"] = json!({"usd": 50.0});
    let id = s.submit(&job).await;
    s.wait_for(&id, |v| {
        v["state"] == "finished" && v["executed_here"] == false
    })
    .await;
    let h = s
        .call("GET", &format!("/v1/runs/{id}/history"), None)
        .await
        .json();
    assert_eq!(h["budget_usd"], 50.0, "{h}");
    let spent = h["summary"]["spent_usd"].as_f64().unwrap();
    assert!(spent > 0.0, "{h}");
    let last = h["points"].as_array().unwrap().last().unwrap()["spent_usd"]
        .as_f64()
        .unwrap();
    assert!(
        (last - spent).abs() < 1e-6,
        "the last point's spend is the run's: {h}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_events_carry_points_with_rates_and_the_end_its_summary() {
    let s = crate::util::Setup::with(MockConfig::default(), |c| c.tick_ms = 100).await;
    let addr = s.listen().await;
    // 40 items at 1,200 requests/minute: two seconds of ticks.
    let id = s
        .submit(&s.job(40, json!({"concurrency": 2, "rpm": 1200})))
        .await;
    let mut events =
        crate::util::SseClient::open(addr, "GET", &format!("/v1/runs/{id}/events"), None).await;
    let mut points = Vec::new();
    let end = loop {
        let e = events.next().await.expect("the stream ended before `end`");
        match e.event.as_str() {
            "progress" if !e.data["point"].is_null() => points.push(e.data["point"].clone()),
            "end" => break e.data,
            _ => {}
        }
    };
    assert!(points.len() >= 2, "{points:?}");
    let ts: Vec<i64> = points.iter().map(|p| p["t"].as_i64().unwrap()).collect();
    assert!(ts.windows(2).all(|w| w[0] < w[1]), "{ts:?}");
    assert!(
        points
            .iter()
            .any(|p| p["calls_per_sec"].as_f64() > Some(0.0)),
        "{points:?}"
    );
    assert_eq!(end["summary"]["attempts"], 40, "{end}");
}
