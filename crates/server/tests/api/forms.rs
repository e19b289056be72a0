//! Submissions that carry their files (`multipart/form-data`): the job's
//! relative paths resolve in the run's scratch directory, which is gone once
//! the run has ended (finished or cancelled) and at once when the form is
//! refused (400 with what is wrong, 413 past the limit); such a run cannot
//! be resumed later.

use serde_json::{json, Value};
use sluice_mock::MockConfig;

use crate::util::Setup;

const BOUNDARY: &str = "form-test-boundary";

/// One part of a form: name, file name, content type, content.
type Part<'a> = (&'a str, Option<&'a str>, &'a str, &'a str);

/// A form body of `parts`.
fn form(parts: &[Part<'_>]) -> (&'static str, String) {
    let mut body = String::new();
    for (name, file, kind, content) in parts {
        body += &format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"");
        if let Some(file) = file {
            body += &format!("; filename=\"{file}\"");
        }
        body += &format!("\r\nContent-Type: {kind}\r\n\r\n{content}\r\n");
    }
    body += &format!("--{BOUNDARY}--\r\n");
    ("multipart/form-data; boundary=form-test-boundary", body)
}

/// A JSON job uploading every `*.txt` sent with it to the mock's stage.
fn job(s: &Setup, concurrency: u64) -> String {
    json!({
        "name": "files",
        "concurrency": concurrency,
        "input": {"glob": "*.txt", "id": "{{ item.stem }}"},
        "provider": {"base_url": format!("http://{}", s.mock.addr())},
        "step": {"kind": "http", "path": "/stages/read", "upload": {"file": "{{ item.path }}"}},
    })
    .to_string()
}

/// Run directories under the store's `uploads/`.
fn uploads_left(s: &Setup) -> usize {
    let Ok(servers) = std::fs::read_dir(s.dir.path().join("uploads")) else {
        return 0;
    };
    servers
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| std::fs::read_dir(e.path()).unwrap().count())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_sent_with_the_job_are_its_input_and_are_gone_after_the_run() {
    let s = Setup::new(MockConfig::default()).await;
    let job = job(&s, 2);
    let body = form(&[
        ("job", Some("job.json"), "application/octet-stream", &job),
        ("file", Some("b.txt"), "text/plain", "bravo"),
        ("file", Some("photos/a.txt"), "text/plain", "alpha!"),
        (
            "file",
            Some("c.png"),
            "image/png",
            "not matched by the glob",
        ),
    ]);
    let r = s.call("POST", "/v1/runs?wait=all", Some(body)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    let results = v["results"].as_array().unwrap();
    let ids: Vec<&str> = results.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["a", "b"], "the *.txt files, by name");
    let file = |i: usize| results[i]["steps"]["main"]["json"]["file"].clone();
    assert_eq!(file(0)["name"], "a.txt");
    assert_eq!(file(0)["bytes"], 6, "the bytes sent arrived");
    assert_eq!(file(1)["bytes"], 5);
    assert_eq!(uploads_left(&s), 0, "the files went with the run");

    // A run whose files are gone cannot be retried (nor resumed, below).
    let id = v["run"]["id"].as_str().unwrap();
    let r = s.call("POST", &format!("/v1/runs/{id}/retry"), None).await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.text.contains("submit the batch again"), "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_run_takes_its_files_with_it() {
    let s = Setup::new(MockConfig {
        latency_ms: 100,
        ..MockConfig::default()
    })
    .await;
    let job = job(&s, 1);
    let names: Vec<String> = (0..20).map(|i| format!("f{i:02}.txt")).collect();
    let mut parts = vec![("job", None, "application/json", job.as_str())];
    for name in &names {
        parts.push(("file", Some(name.as_str()), "text/plain", "x"));
    }
    let r = s.call("POST", "/v1/runs", Some(form(&parts))).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.json()["id"].as_str().unwrap().to_owned();
    s.wait_for(&id, |v| v["counts"]["done"].as_u64() >= Some(1))
        .await;
    assert_eq!(uploads_left(&s), 1, "kept while the run runs");
    let r = s.call("POST", &format!("/v1/runs/{id}/cancel"), None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["state"], "interrupted");
    assert_eq!(uploads_left(&s), 0);
    let r = s.call("POST", &format!("/v1/runs/{id}/resume"), None).await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.text.contains("submit the batch again"), "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_forms_are_refused_with_what_is_wrong_and_leave_nothing() {
    let s = Setup::with(MockConfig::default(), |c| c.max_submit_bytes = 4_096).await;
    let job = job(&s, 1);
    let file = ("file", Some("a.txt"), "text/plain", "alpha");
    let big = "x".repeat(5_000);
    let no_match = job.replace("*.txt", "*.jpg");
    // The parts, and the status, code and words of the answer.
    let cases: Vec<(Vec<Part<'_>>, u16, &str, &str)> = vec![
        (
            vec![file],
            400,
            "invalid_multipart",
            "no part named \"job\"",
        ),
        (
            vec![
                ("job", None, "application/json", &job),
                ("job", None, "application/json", &job),
            ],
            400,
            "invalid_multipart",
            "two parts named \"job\"",
        ),
        (
            vec![
                ("job", None, "application/json", &job),
                ("note", None, "text/plain", "hi"),
            ],
            400,
            "invalid_multipart",
            "neither the job nor a file",
        ),
        (
            vec![("job", None, "application/json", &job), file, file],
            400,
            "invalid_multipart",
            "two files are named \"a.txt\"",
        ),
        (
            vec![
                ("job", None, "application/json", &job),
                ("file", Some(".env"), "text/plain", "k"),
            ],
            400,
            "invalid_upload",
            "\".env\"",
        ),
        (
            vec![
                (
                    "job",
                    None,
                    "application/toml",
                    "name = \"x\"\n[input]\nglob = \"*.txt\"\n",
                ),
                file,
            ],
            400,
            "invalid_job",
            "job.toml:",
        ),
        (
            vec![("job", None, "application/json", &no_match), file],
            400,
            "invalid_input",
            "*.jpg",
        ),
        (
            vec![
                ("job", None, "application/json", &job),
                ("file", Some("big.txt"), "text/plain", &big),
            ],
            413,
            "too_large",
            "--max-body",
        ),
    ];
    for (parts, status, code, says) in cases {
        let r = s.call("POST", "/v1/runs", Some(form(&parts))).await;
        assert_eq!(
            (r.status.as_u16(), r.error_code().as_str()),
            (status, code),
            "{}",
            r.text
        );
        let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(message.contains(says), "{message}");
        assert!(
            !message.contains(s.dir.path().to_str().unwrap()),
            "no server paths: {message}"
        );
        assert_eq!(uploads_left(&s), 0, "{code}: nothing kept");
    }
    // A body cut short, and a form without a boundary.
    let (kind, body) = form(&[("job", None, "application/json", &job), file]);
    let cut = body[..body.len() - 30].to_owned();
    let r = s.call("POST", "/v1/runs", Some((kind, cut))).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.error_code(), "invalid_multipart");
    let r = s
        .call("POST", "/v1/runs", Some(("multipart/form-data", body)))
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.error_code(), "invalid_multipart");
    assert_eq!(uploads_left(&s), 0);

    assert_eq!(s.mock.stats().requests, 0, "nothing was sent");
    let list: Value = s.call("GET", "/v1/runs", None).await.json();
    assert_eq!(
        list["runs"].as_array().unwrap().len(),
        0,
        "no run was created"
    );
}
