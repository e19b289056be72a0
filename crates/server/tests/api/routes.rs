//! Each route's answer for a run through the server: list, one run, results
//! (paged, input order), one item with its step records, metrics, health,
//! the dashboard's assets, and JSON errors for unknown routes and methods.

use serde_json::{json, Value};
use sluice_mock::MockConfig;

use crate::util::Setup;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_is_listed_read_and_its_results_paged_in_input_order() {
    let s = Setup::new(MockConfig {
        latency_ms: 2,
        jitter_ms: 8,
        seed: 3,
        ..MockConfig::default()
    })
    .await;
    let id = s
        .submit(&s.job(25, json!({"concurrency": 5, "rpm": 60000})))
        .await;
    let view = s.wait_for(&id, |v| v["state"] == "finished").await;
    assert_eq!(view["counts"]["done"], 25);
    assert_eq!(view["counts"]["pending"], 0);
    assert_eq!(view["mode"], "job");

    let list = s.call("GET", "/v1/runs", None).await.json();
    assert_eq!(list["runs"][0]["id"], id.as_str());
    assert_eq!(list["runs"][0]["counts"]["done"], 25);

    // Pages of 10 in input order, the next offset in a header.
    let mut ids = Vec::new();
    let mut offset = Some("0".to_string());
    let mut pages = 0;
    while let Some(o) = offset {
        let r = s
            .call(
                "GET",
                &format!("/v1/runs/{id}/results?offset={o}&limit=10"),
                None,
            )
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.headers["content-type"], "application/x-ndjson");
        for line in r.text.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["status"], "done");
            ids.push(v["id"].as_str().unwrap().to_owned());
        }
        offset = r
            .headers
            .get("x-next-offset")
            .map(|v| v.to_str().unwrap().to_owned());
        pages += 1;
        // A next offset that never runs out ends here, not in a hang.
        assert!(
            pages <= 3,
            "more than 3 pages of 10 for 25 results: {ids:?}"
        );
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = (0..25).map(|i| format!("i{i:04}")).collect();
    assert_eq!(ids, expected);
    let r = s
        .call("GET", &format!("/v1/runs/{id}/results?limit=0"), None)
        .await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (400, "invalid_query")
    );

    let item = s
        .call("GET", &format!("/v1/runs/{id}/items/i0007"), None)
        .await
        .json();
    assert_eq!(item["status"], "done");
    assert_eq!(item["steps"][0]["step"], "main");
    assert_eq!(item["steps"][0]["attempts"], 1);
    assert!(item["result"]["steps"]["main"]["text"]
        .as_str()
        .unwrap()
        .starts_with("mock reply"));
    let missing = s
        .call("GET", &format!("/v1/runs/{id}/items/nope"), None)
        .await;
    assert_eq!(
        (missing.status.as_u16(), missing.error_code().as_str()),
        (404, "not_found")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_calls_by_provider_step_and_status() {
    let s = Setup::new(MockConfig {
        fail_rate: 0.2,
        seed: 11,
        ..MockConfig::default()
    })
    .await;
    let job = s.job(
        30,
        json!({"concurrency": 4, "retries": {"max": 3, "base": "1ms", "cap": "2ms"}}),
    );
    let id = s.submit(&job).await;
    let view = s.wait_for(&id, |v| v["state"] == "finished").await;
    let text = s.call("GET", "/metrics", None).await.text;
    let value = |needle: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(needle))
            .unwrap_or_else(|| panic!("{needle} missing in\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let ok = value("sluice_calls_total{provider=\"default\",step=\"main\",status=\"200\"}");
    let errors = value("sluice_calls_total{provider=\"default\",step=\"main\",status=\"500\"}");
    // Process-wide counters: at least this run's attempts (other tests share the process).
    let attempts = view["counts"]["attempts"].as_f64().unwrap();
    assert!(ok + errors >= attempts, "{ok} + {errors} < {attempts}");
    assert!(errors >= 1.0);
    assert!(
        value("sluice_retries_total{provider=\"default\",step=\"main\"}")
            >= errors.min(attempts - 30.0)
    );
    assert!(text.contains(
        "sluice_call_latency_seconds_bucket{provider=\"default\",step=\"main\",le=\"+Inf\"}"
    ));
    assert!(text.contains("# TYPE sluice_breaker_state gauge"));
    assert!(
        value("sluice_tokens_total{provider=\"default\",step=\"main\",kind=\"completion\"}") > 0.0
    );
}

#[tokio::test]
async fn health_dashboard_and_json_errors_for_unknown_routes() {
    let s = Setup::new(MockConfig::default()).await;
    assert_eq!(
        s.call("GET", "/healthz", None).await.json(),
        json!({"status": "ok"})
    );
    let page = s.call("GET", "/", None).await;
    assert!(page.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(
        page.text.contains("/assets/app.js") && !page.text.contains("http"),
        "no external assets"
    );
    let script = s.call("GET", "/assets/app.js", None).await;
    assert!(script.text.contains("EventSource"));
    assert!(s
        .call("GET", "/assets/style.css", None)
        .await
        .text
        .contains("canvas"));
    let r = s.call("GET", "/nope", None).await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (404, "not_found")
    );
    let r = s.call("DELETE", "/v1/runs", None).await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (405, "method_not_allowed")
    );
    let r = s.call("GET", "/v1/runs/none-1", None).await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (404, "not_found")
    );
}
