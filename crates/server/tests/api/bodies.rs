//! Bad submissions: 400 with what is wrong and where (job.toml:LINE:COL for
//! job files), 413 past the size limit, never a run started.

use serde_json::json;
use sluice_mock::MockConfig;

use crate::util::Setup;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_are_400_with_a_message_and_start_nothing() {
    let s = Setup::with(MockConfig::default(), |c| c.max_submit_bytes = 4_096).await;
    let toml = "name = \"x\"\n[input]\npath = \"items.jsonl\"\n\n[[steps]]\nname = \"a\"\nkind = \"chat\"\nprovider = \"missing\"\nmodel = \"m\"\nmessages = [{ role = \"user\", content = \"{{ item.q }}\" }]\n";
    let r = s
        .call("POST", "/v1/runs", Some(("application/toml", toml.into())))
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.error_code(), "invalid_job");
    let v = r.json();
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("job.toml:8:"), "{message}");
    assert!(
        !message.contains(s.dir.path().to_str().unwrap()),
        "no server paths: {message}"
    );
    assert_eq!(v["error"]["details"][0]["line"], 8);

    let r = s
        .call(
            "POST",
            "/v1/runs",
            Some(("application/json", "{\"items\": [".into())),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (400, "invalid_json")
    );
    let r = s
        .call("POST", "/v1/runs", Some(("application/json", "[]".into())))
        .await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (400, "invalid_json")
    );
    let r = s
        .call("POST", "/v1/runs", Some(("application/toml", "".into())))
        .await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (400, "invalid_body")
    );
    let r = s
        .call(
            "POST",
            "/v1/runs?wait=forever",
            Some(("application/json", "{}".into())),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (400, "invalid_query")
    );

    // A job whose input file is not there: refused before anything is sent.
    let toml = toml.replace("\"missing\"", "\"p\"")
        + &format!("[providers.p]\nbase_url = \"{}\"\n", s.base());
    let r = s
        .call("POST", "/v1/runs", Some(("application/toml", toml)))
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.error_code(), "invalid_input");

    let big = s.job(200, json!({}));
    let r = s
        .call(
            "POST",
            "/v1/runs",
            Some(("application/json", big.to_string())),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.error_code().as_str()),
        (413, "too_large")
    );

    assert_eq!(s.mock.stats().requests, 0, "nothing was sent");
    let list = s.call("GET", "/v1/runs", None).await.json();
    assert_eq!(
        list["runs"].as_array().unwrap().len(),
        0,
        "no run was created"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_file_body_reads_inputs_relative_to_the_working_directory() {
    let s = Setup::new(MockConfig::default()).await;
    std::fs::write(
        s.dir.path().join("items.jsonl"),
        "{\"q\":\"a\"}\n{\"q\":\"b\"}\n",
    )
    .unwrap();
    let toml = format!(
        "name = \"file\"\n[input]\npath = \"items.jsonl\"\n[providers.p]\nbase_url = \"{}\"\n[[steps]]\nname = \"a\"\nkind = \"chat\"\nprovider = \"p\"\nmodel = \"m\"\nmessages = [{{ role = \"user\", content = \"{{{{ item.q }}}}\" }}]\n",
        s.base()
    );
    let r = s
        .call(
            "POST",
            "/v1/runs?wait=all",
            Some(("application/toml", toml)),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(v["run"]["state"], "finished");
    assert_eq!(v["results"].as_array().unwrap().len(), 2);
    assert_eq!(v["results"][0]["id"], "line-1");
    assert_eq!(v["results"][1]["status"], "done");
}

/// The items files a JSON submission spooled (`inputs/api-*.jsonl`) and the
/// job files kept for its runs (`jobs/*.toml`), by name.
fn written(s: &Setup) -> Vec<String> {
    let mut names = Vec::new();
    for sub in ["inputs", "jobs"] {
        let Ok(entries) = std::fs::read_dir(s.dir.path().join(sub)) else {
            continue;
        };
        for entry in entries {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            if sub == "jobs" || name.starts_with("api-") {
                names.push(format!("{sub}/{name}"));
            }
        }
    }
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_json_submission_leaves_no_file_behind() {
    let s = Setup::with(
        MockConfig {
            latency_ms: 50,
            ..MockConfig::default()
        },
        |c| c.max_runs = 1,
    )
    .await;
    let post = |body: serde_json::Value| {
        let s = &s;
        async move {
            s.call(
                "POST",
                "/v1/runs",
                Some(("application/json", body.to_string())),
            )
            .await
        }
    };
    let base = s.job(3, json!({}));
    let mut refusals = Vec::new();
    // Refused while parsing: `step` is no object, a null, an unknown provider.
    let mut not_object = base.clone();
    not_object["step"] = json!("chat");
    refusals.push((not_object, 400, "invalid_json"));
    let mut null = base.clone();
    null["budget"] = serde_json::Value::Null;
    refusals.push((null, 400, "invalid_json"));
    let mut unknown = base.clone();
    unknown["step"]["provider"] = json!("missing");
    refusals.push((unknown, 400, "invalid_job"));
    // Refused by the server's policy: an environment variable not allowed.
    let mut env = base.clone();
    env["provider"]["api_key_env"] = json!("SLUICE_TEST_NOT_ALLOWED");
    refusals.push((env, 403, "forbidden_job"));
    for (body, status, code) in refusals {
        let r = post(body).await;
        assert_eq!(
            (r.status.as_u16(), r.error_code().as_str()),
            (status, code),
            "{}",
            r.text
        );
        assert_eq!(
            written(&s),
            Vec::<String>::new(),
            "after {code}: {}",
            r.text
        );
    }
    // Refused by its run before it opened: the provider is unreachable.
    let mut unreachable = base.clone();
    unreachable["provider"]["base_url"] = json!("http://127.0.0.1:9/v1");
    let r = post(unreachable).await;
    assert!(
        r.status.is_client_error() || r.status.is_server_error(),
        "{}",
        r.text
    );
    assert_eq!(written(&s), Vec::<String>::new(), "{}", r.text);

    // An accepted run keeps its files (so this test can fail) ...
    let first = s.submit(&s.job(200, json!({"concurrency": 1}))).await;
    let kept = written(&s);
    assert_eq!(kept.len(), 2, "{kept:?}");
    // ... and a submission refused past --max-runs takes back only its own:
    // new items are removed, the same items as the running run's stay.
    let r = post(s.job(5, json!({}))).await;
    assert_eq!(r.status, 429, "{}", r.text);
    assert_eq!(written(&s), kept);
    let r = post(s.job(200, json!({"concurrency": 1}))).await;
    assert_eq!(r.status, 429, "{}", r.text);
    assert_eq!(written(&s), kept, "the running run's items stay");

    s.call("POST", &format!("/v1/runs/{first}/cancel"), None)
        .await;
    s.wait_for(&first, |v| {
        v["state"] == "interrupted" && v["executed_here"] == false
    })
    .await;
}
