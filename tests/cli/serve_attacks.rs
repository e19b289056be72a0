//! `sluice serve` tried as an attacker would (issue 14), against the real
//! binary: a web page posting a command step cross-origin, a rebound Host,
//! jobs reading server files or naming server secrets, a traversal name, an
//! over-long body, and the operator's flags that allow each on purpose.
//! Each refused attack has a positive control: the same request with the
//! flag does what the attack wanted, so the refusal is what stopped it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::serve::{exchange, http, Serve};
use crate::util::{Mock, Scratch};

/// A job file whose one step runs `touch MARKER` on the server.
fn command_job(marker: &std::path::Path) -> String {
    format!(
        "name = \"pwn\"\n[input]\nurl = \"http://127.0.0.1:9/unused\"\n\n[[steps]]\nname = \"run\"\nkind = \"command\"\ncommand = [\"touch\", \"{}\"]\n",
        marker.display()
    )
}

/// The same attack as JSON with inline items (no input to fetch).
fn command_json(marker: &std::path::Path) -> String {
    json!({
        "name": "pwn",
        "items": [{"q": "x"}],
        "step": {"kind": "command", "command": ["touch", marker.display().to_string()]},
    })
    .to_string()
}

fn code(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["error"]["code"].as_str().unwrap_or("").to_owned()
}

/// Polls run `id` until `done(view)`, 60 s at most.
fn wait_for(server: &Serve, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = server.http("GET", &format!("/v1/runs/{id}"), &[], "");
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if done(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "run {id} never got there: {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_web_page_cannot_make_the_server_run_a_command() {
    let s = Scratch::new();
    let marker = s.path("PWNED");
    // As documented before: loopback, no token. Origin and type still hold.
    let open = Serve::start(&s, &["--no-token"], &[]);
    let page = "Origin: http://evil.example";
    let (status, body) = http(
        open.port,
        "POST",
        "/v1/runs",
        &[page, "Content-Type: text/plain"],
        &command_job(&marker),
    );
    assert_eq!(
        (status, code(&body).as_str()),
        (403, "forbidden_origin"),
        "{body}"
    );
    // A simple request without an Origin (not a browser) is still no job file.
    let (status, body) = http(
        open.port,
        "POST",
        "/v1/runs",
        &["Content-Type: text/plain"],
        &command_job(&marker),
    );
    assert_eq!(
        (status, code(&body).as_str()),
        (415, "unsupported_media_type"),
        "{body}"
    );
    // Even sent properly, by the server's own origin, the job is data.
    let own = format!("Origin: http://127.0.0.1:{}", open.port);
    for (kind, job) in [
        ("application/toml", command_job(&marker)),
        ("application/json", command_json(&marker)),
    ] {
        let (status, body) = http(
            open.port,
            "POST",
            "/v1/runs",
            &[&own, &format!("Content-Type: {kind}")],
            &job,
        );
        assert_eq!(
            (status, code(&body).as_str()),
            (403, "forbidden_job"),
            "{body}"
        );
        let v: Value = serde_json::from_str(&body).unwrap();
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("--allow-commands"),
            "{body}"
        );
    }
    let (_, runs) = http(open.port, "GET", "/v1/runs", &[], "");
    assert_eq!(
        serde_json::from_str::<Value>(&runs).unwrap()["runs"],
        json!([])
    );
    drop(open);

    // The token server refuses the page before the token matters.
    let guarded = Serve::start(&s, &[], &[]);
    let (status, body) = guarded.http(
        "POST",
        "/v1/runs",
        &[page, "Content-Type: application/toml"],
        &command_job(&marker),
    );
    assert_eq!(
        (status, code(&body).as_str()),
        (403, "forbidden_origin"),
        "{body}"
    );
    drop(guarded);
    assert!(!marker.exists(), "no command ran");

    // Control: with --allow-commands the same job does run, so the checks
    // above are what kept it from running.
    let allowed = Serve::start(&s, &["--allow-commands"], &[]);
    let (status, body) = allowed.http(
        "POST",
        "/v1/runs?wait=all",
        &["Content-Type: application/json"],
        &command_json(&marker),
    );
    assert_eq!(status, 200, "{body}");
    assert!(marker.exists(), "--allow-commands lets it run");
}

#[test]
fn a_rebound_host_is_refused_unless_listed() {
    let s = Scratch::new();
    let server = Serve::start(&s, &["--allow-host", "sluice.internal"], &[]);
    for host in ["attacker.example", "attacker.example:80"] {
        let (status, body) = server.http("GET", "/v1/runs", &[&format!("Host: {host}")], "");
        assert_eq!(
            (status, code(&body).as_str()),
            (421, "unknown_host"),
            "{body}"
        );
    }
    for host in ["localhost", "sluice.internal:8080"] {
        let (status, body) = server.http("GET", "/v1/runs", &[&format!("Host: {host}")], "");
        assert_eq!(status, 200, "{host}: {body}");
    }
    // The page of a rebound name is refused whatever it carries.
    let (status, _) = http(
        server.port,
        "GET",
        "/",
        &["Host: attacker.example", "Accept: text/html"],
        "",
    );
    assert_eq!(status, 421);
}

#[test]
fn a_job_reading_server_files_is_refused_then_allowed_with_allow_dir() {
    let s = Scratch::new();
    let mock = Mock::start(&["--journal", "100"]);
    // glob of a server file, each sent to a URL the submitter chose.
    let glob = json!({
        "name": "exfil",
        "input": {"glob": "/etc/passw*"},
        "provider": {"base_url": mock.url("")},
        "step": {"kind": "http", "path": "/stages/x", "upload": {"file": "{{ item.path }}"}},
    })
    .to_string();
    // An item naming a server file, read at run time.
    let by_item = json!({
        "name": "exfil",
        "items": [{"file": "/etc/passwd"}],
        "provider": {"base_url": mock.url("")},
        "step": {"kind": "http", "path": "/stages/x", "upload": {"file": "{{ item.file }}"}},
    })
    .to_string();
    let json = "Content-Type: application/json";
    let server = Serve::start(&s, &[], &[]);
    let (status, body) = server.http("POST", "/v1/runs", &[json], &glob);
    assert_eq!(
        (status, code(&body).as_str()),
        (403, "forbidden_job"),
        "{body}"
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    let problem = &v["error"]["details"]["problems"][0];
    assert_eq!(problem["key"], "input.glob", "{v}");
    assert_eq!(problem["flag"], "--allow-dir /etc", "{v}");
    let line = problem["line"].as_u64().unwrap() as usize;
    let toml = v["error"]["details"]["job_toml"].as_str().unwrap();
    assert!(
        toml.lines().nth(line - 1).unwrap().starts_with("glob"),
        "{toml}"
    );
    let (status, body) = server.http("POST", "/v1/runs?wait=all", &[json], &by_item);
    assert_eq!(
        status, 200,
        "accepted: nothing static names the file: {body}"
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["results"][0]["status"], "failed", "{v}");
    assert!(
        v["results"][0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("upload.file /etc/passwd is outside the directories"),
        "{v}"
    );
    assert!(mock.journal("/stages").is_empty(), "nothing was sent");
    drop(server);

    let server = Serve::start(&s, &["--allow-dir", "/etc"], &[]);
    let (status, body) = server.http("POST", "/v1/runs?wait=all", &[json], &glob);
    assert_eq!(status, 200, "{body}");
    let (status, body) = server.http("POST", "/v1/runs?wait=all", &[json], &by_item);
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["results"][0]["status"], "done", "{v}");
    let matched = std::fs::read_dir("/etc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("passw"))
        .count();
    assert_eq!(
        mock.journal("/stages").len(),
        matched + 1,
        "allowed: every upload went"
    );
}

#[test]
fn a_job_naming_a_server_secret_is_refused_then_allowed_with_allow_env() {
    let s = Scratch::new();
    let mock = Mock::start(&["--journal", "100"]);
    let job = json!({
        "name": "steal",
        "items": [{"q": "x"}],
        "provider": {"base_url": mock.url("/v1"), "api_key_env": "SERVER_DB_PASSWORD"},
        "step": {"kind": "chat", "model": "m", "messages": [{"role": "user", "content": "{{ item.q }}"}]},
    })
    .to_string();
    let env = [("SERVER_DB_PASSWORD", "hunter2")];
    let json = "Content-Type: application/json";
    let server = Serve::start(&s, &[], &env);
    let (status, body) = server.http("POST", "/v1/runs", &[json], &job);
    assert_eq!(
        (status, code(&body).as_str()),
        (403, "forbidden_job"),
        "{body}"
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    let problem = &v["error"]["details"]["problems"][0];
    assert_eq!(problem["key"], "providers.default.api_key_env", "{v}");
    assert_eq!(problem["flag"], "--allow-env SERVER_DB_PASSWORD", "{v}");
    assert!(!body.contains("hunter2"));
    assert_eq!(mock.stats()["requests"], 0);
    drop(server);
    let server = Serve::start(&s, &["--allow-env", "SERVER_DB_PASSWORD"], &env);
    let (status, body) = server.http("POST", "/v1/runs?wait=all", &[json], &job);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        mock.stats()["requests"],
        1,
        "allowed: the call went, with the key"
    );
}

#[test]
fn a_traversal_name_is_refused_by_the_server_and_the_cli() {
    let s = Scratch::new();
    let server = Serve::start(&s, &[], &[]);
    for name in ["../../../../srv/x/TRAV", "a/b", "line\nbreak", ".."] {
        let job = json!({
            "name": name,
            "items": [{"q": "x"}],
            "provider": {"base_url": "http://127.0.0.1:9/v1"},
            "step": {"kind": "chat", "model": "m", "messages": [{"role": "user", "content": "hi"}]},
        });
        let (status, body) = server.http(
            "POST",
            "/v1/runs",
            &["Content-Type: application/json"],
            &job.to_string(),
        );
        assert_eq!(
            (status, code(&body).as_str()),
            (400, "invalid_job"),
            "{name:?}: {body}"
        );
        assert!(body.contains("name"), "{body}");
    }
    let kept = s.path("store/jobs");
    assert!(
        !kept.exists() || std::fs::read_dir(&kept).unwrap().count() == 0,
        "no job copy written"
    );
    assert!(!s.dir.path().parent().unwrap().join("srv").exists());
    drop(server);

    // The CLI: a job file's name, and --name.
    let job = s.path("bad.toml");
    std::fs::write(
        &job,
        "name = \"../../x\"\n[input]\npath = \"items.jsonl\"\n[providers.p]\nbase_url = \"http://127.0.0.1:9/v1\"\n[[steps]]\nname = \"a\"\nkind = \"chat\"\nprovider = \"p\"\nmodel = \"m\"\nmessages = [{ role = \"user\", content = \"hi\" }]\n",
    )
    .unwrap();
    std::fs::write(s.path("items.jsonl"), "{}\n").unwrap();
    let out = s.sluice(&["run", job.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.toml:1:8: name"));
    let input = s.write_lines("my batch.jsonl", &crate::util::chat_lines(1));
    let out = s
        .run(
            &input,
            "http://127.0.0.1:9/v1/chat/completions",
            &["--name", "a/b"],
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--name \"a/b\""));
}

#[test]
fn a_body_over_the_limit_is_answered_413_from_its_headers() {
    let s = Scratch::new();
    let server = Serve::start(&s, &["--max-body", "1000"], &[]);
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // The headers announce a gigabyte; not a byte of it is sent.
    write!(
        stream,
        "POST /v1/runs HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n{}\r\nContent-Type: application/toml\r\nContent-Length: 1000000000\r\n\r\n",
        server.port,
        server.auth().unwrap()
    )
    .unwrap();
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).expect("an answer without the body");
    let head = String::from_utf8_lossy(&head[..n]);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    // A run's events, pages, controls: 64 KiB.
    let (status, _, body) = exchange(
        server.port,
        "POST",
        "/v1/runs/x/pause",
        &[&server.auth().unwrap(), "Content-Length: 100000"],
        b"",
    );
    assert_eq!((status, code(&body).as_str()), (413, "too_large"));
}

#[test]
fn past_max_runs_the_server_answers_429_with_retry_after() {
    let s = Scratch::new();
    let mock = Mock::start(&["--latency-ms", "200"]);
    let server = Serve::start(&s, &["--max-runs", "1"], &[]);
    let job = |n: usize| {
        json!({
            "name": "busy",
            "items": (0..n).map(|i| json!({"q": format!("q{i}")})).collect::<Vec<_>>(),
            "provider": {"base_url": mock.url("/v1"), "concurrency": 1},
            "step": {"kind": "chat", "model": "m", "messages": [{"role": "user", "content": "{{ item.q }}"}]},
        })
        .to_string()
    };
    let json = "Content-Type: application/json";
    let (status, body) = server.http("POST", "/v1/runs", &[json], &job(500));
    assert_eq!(status, 202, "{body}");
    let (status, head, body) = exchange(
        server.port,
        "POST",
        "/v1/runs",
        &[json, &server.auth().unwrap()],
        job(1).as_bytes(),
    );
    assert_eq!(
        (status, code(&body).as_str()),
        (429, "too_many_runs"),
        "{body}"
    );
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 5"),
        "{head}"
    );
    let (status, _) = server.http("POST", "/v1/runs/busy-1/cancel", &[], "");
    assert_eq!(status, 200);
    let (status, body) = server.http("POST", "/v1/runs?wait=all", &[json], &job(1));
    assert_eq!(status, 200, "a place again once it ended: {body}");
}

#[test]
fn a_submitted_jobs_concurrency_is_defaulted_and_clamped_and_its_view_says_so() {
    let s = Scratch::new();
    let mock = Mock::start(&["--latency-ms", "50"]);
    let server = Serve::start(
        &s,
        &["--default-concurrency", "2", "--max-concurrency", "3"],
        &[],
    );
    let job = |extra: Value| {
        let mut j = json!({
            "name": "capped",
            "items": (0..30).map(|i| json!({"q": format!("q{i}")})).collect::<Vec<_>>(),
            "provider": {"base_url": mock.url("/v1")},
            "step": {"kind": "chat", "model": "m", "messages": [{"role": "user", "content": "{{ item.q }}"}]},
        });
        j.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        j.to_string()
    };
    let json = "Content-Type: application/json";
    let (status, body) = server.http(
        "POST",
        "/v1/runs?wait=all",
        &[json],
        &job(json!({"concurrency": 64})),
    );
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let notice = v["run"]["notices"][0].as_str().unwrap_or_default();
    assert!(notice.contains("concurrency 64 asked, 3 allowed"), "{v}");
    let stats = mock.stats();
    assert!(stats["max_in_flight"].as_u64().unwrap() <= 3, "{stats}");
    let run = v["run"]["id"].as_str().unwrap().to_owned();
    let later = wait_for(&server, &run, |v| v["state"] == "finished");
    assert_eq!(later["notices"], v["run"]["notices"], "kept with the run");
    // A job that sets none gets the default, and no notice.
    let (status, body) = server.http("POST", "/v1/runs?wait=all", &[json], &job(json!({})));
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["run"]["notices"], json!([]), "{v}");
}

#[test]
fn a_listed_origin_gets_cors_and_its_preflight_others_do_not() {
    let s = Scratch::new();
    let server = Serve::start(&s, &["--allow-origin", "http://localhost:3000"], &[]);
    let (status, head, _) = exchange(
        server.port,
        "OPTIONS",
        "/v1/runs",
        &[
            "Origin: http://localhost:3000",
            "Access-Control-Request-Method: POST",
            "Access-Control-Request-Headers: authorization, content-type",
        ],
        b"",
    );
    let head = head.to_ascii_lowercase();
    assert_eq!(status, 204, "{head}");
    assert!(
        head.contains("access-control-allow-origin: http://localhost:3000"),
        "{head}"
    );
    assert!(
        head.contains("access-control-allow-headers: authorization"),
        "{head}"
    );
    let (status, head, _) = exchange(
        server.port,
        "GET",
        "/v1/runs",
        &["Origin: http://localhost:3000", &server.auth().unwrap()],
        b"",
    );
    assert_eq!(status, 200);
    assert!(head
        .to_ascii_lowercase()
        .contains("access-control-allow-origin: http://localhost:3000"));
    let (status, _, body) = exchange(
        server.port,
        "GET",
        "/v1/runs",
        &["Origin: http://localhost:3001", &server.auth().unwrap()],
        b"",
    );
    assert_eq!((status, code(&body).as_str()), (403, "forbidden_origin"));
    // Its preflight is refused too, with no CORS header a browser could use.
    let (status, head, _) = exchange(
        server.port,
        "OPTIONS",
        "/v1/runs",
        &[
            "Origin: http://localhost:3001",
            "Access-Control-Request-Method: POST",
        ],
        b"",
    );
    assert_eq!(status, 403, "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("access-control-allow"),
        "{head}"
    );
}

#[test]
fn credentials_in_a_url_are_masked_in_status_runs_and_the_api() {
    let s = Scratch::new();
    let mock = Mock::start(&[]);
    let input = s.write_lines("in.jsonl", &crate::util::chat_lines(2));
    let url = format!(
        "http://user:KEY123@127.0.0.1:{}/v1/chat/completions?key=QUERYKEY",
        mock.port
    );
    let out = s.run(&input, &url, &["--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", crate::util::stderr(&out));
    let server = Serve::start(&s, &[], &[]);
    let (_, view) = server.http("GET", "/v1/runs/in-1", &[], "");
    let (_, list) = server.http("GET", "/v1/runs", &[], "");
    let status = s.sluice(&["status", "in-1", "--json"]).output().unwrap();
    let runs = s.sluice(&["runs", "--json"]).output().unwrap();
    for shown in [
        view,
        list,
        String::from_utf8_lossy(&status.stdout).into_owned(),
        String::from_utf8_lossy(&runs.stdout).into_owned(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ] {
        assert!(
            !shown.contains("KEY123") && !shown.contains("QUERYKEY"),
            "{shown}"
        );
    }
    let stored = String::from_utf8_lossy(&status.stdout);
    assert!(
        stored.contains("user:***@") && stored.contains("key=***"),
        "{stored}"
    );
    // Retry cannot call a URL it does not have: it says how to instead.
    let retry = s.sluice(&["retry", "in-1"]).output().unwrap();
    assert_eq!(retry.status.code(), Some(2));
    let err = crate::util::stderr(&retry);
    assert!(err.contains("rerun `sluice run"), "{err}");
    assert!(!err.contains("re-queued"), "{err}");
}

#[test]
fn an_allowed_key_reaches_the_provider_but_never_the_servers_output_store_or_api() {
    let s = Scratch::new();
    let secret = "sk-serve-0123456789-very-secret";
    let mock = Mock::start_with_env(&["--api-key-env", "MOCK_KEY"], &[("MOCK_KEY", secret)]);
    let (out, err) = (s.path("serve.out"), s.path("serve.err"));
    let mut child = std::process::Command::new(crate::util::bin())
        .current_dir(s.dir.path())
        .args([
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--no-token",
            "--allow-env",
            "MY_KEY",
        ])
        .env("SLUICE_STORE", s.store())
        .env("MY_KEY", secret)
        .env("SLUICE_LOG", "debug")
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    // Its address is its first line of output.
    let deadline = Instant::now() + Duration::from_secs(60);
    let port = loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        if let Some(p) = text
            .lines()
            .next()
            .and_then(|l| l.trim().rsplit(':').next())
            .and_then(|p| p.parse::<u16>().ok())
        {
            break p;
        }
        assert!(Instant::now() < deadline, "no address from sluice serve");
        std::thread::sleep(Duration::from_millis(50));
    };
    let job = json!({
        "name": "keyed",
        "items": (0..5).map(|i| json!({"q": format!("q{i}")})).collect::<Vec<_>>(),
        "provider": {"base_url": mock.url("/v1"), "api_key_env": "MY_KEY"},
        "step": {"kind": "chat", "model": "m", "messages": [{"role": "user", "content": "{{ item.q }}"}]},
    })
    .to_string();
    let (status, body) = http(
        port,
        "POST",
        "/v1/runs?wait=all",
        &["Content-Type: application/json"],
        &job,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(mock.stats()["ok"], 5, "the key was sent");
    let mut answers = vec![body];
    for path in ["/v1/runs", "/v1/runs/keyed-1", "/v1/runs/keyed-1/results"] {
        answers.push(http(port, "GET", path, &[], "").1);
    }
    // Killed, not stopped: whatever it had written stays as it was.
    child.kill().unwrap();
    child.wait().unwrap();
    let mut haystacks: Vec<(String, Vec<u8>)> = answers
        .into_iter()
        .map(|a| ("an API answer".to_string(), a.into_bytes()))
        .collect();
    for path in [out, err] {
        haystacks.push((path.display().to_string(), std::fs::read(&path).unwrap()));
    }
    // The store, its -wal, and whatever else the server wrote beside it.
    let mut dirs = vec![s.path("store")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                haystacks.push((path.display().to_string(), std::fs::read(&path).unwrap()));
            }
        }
    }
    for (what, hay) in haystacks {
        assert!(
            !String::from_utf8_lossy(&hay).contains(secret),
            "the key is in {what}"
        );
    }
}
