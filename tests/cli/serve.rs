//! `sluice serve` as a process: bind rules, the token on a public bind, and
//! runs started from the CLI against the same store seen through the API.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::util::{bin, u, Mock, Scratch};

/// A `sluice serve` child process, killed on drop.
pub(crate) struct Serve {
    pub(crate) child: Child,
    pub(crate) port: u16,
    /// The token it requires (none with `--no-token`).
    pub(crate) token: Option<String>,
    /// The dashboard URL it printed (carrying a generated token).
    pub(crate) dashboard: String,
}

/// Distinct tokens for the servers of one test process.
static NEXT_TOKEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Serve {
    /// Starts `sluice serve --bind 127.0.0.1:0 ARGS...` in `dir` over
    /// `store`, with a token of the test's in SLUICE_TOKEN unless `args` or
    /// `env` decide otherwise (`--no-token`, `--token-env`, or SLUICE_TOKEN
    /// given, empty to have one generated).
    pub(crate) fn start(scratch: &Scratch, args: &[&str], env: &[(&str, &str)]) -> Serve {
        let mut cmd = Command::new(bin());
        cmd.current_dir(scratch.dir.path())
            .arg("serve")
            .args(args)
            .env("SLUICE_STORE", scratch.store());
        if !args.contains(&"--bind") {
            cmd.args(["--bind", "127.0.0.1:0"]);
        }
        let chosen = args.contains(&"--no-token")
            || args.contains(&"--token-env")
            || env.iter().any(|(k, _)| *k == "SLUICE_TOKEN");
        let mut token = None;
        if !chosen {
            let t = format!(
                "test-token-{}-{}",
                std::process::id(),
                NEXT_TOKEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            );
            cmd.env("SLUICE_TOKEN", &t);
            token = Some(t);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let named = args
            .iter()
            .position(|a| *a == "--token-env")
            .and_then(|i| args.get(i + 1))
            .copied()
            .unwrap_or("SLUICE_TOKEN");
        if let Some((_, v)) = env.iter().find(|(k, v)| *k == named && !v.is_empty()) {
            token = Some(v.to_string());
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        // Its stderr is passed on; the dashboard line is kept.
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.split("dashboard at ").nth(1) {
                    let _ = tx.send(url.split_whitespace().next().unwrap_or("").to_owned());
                }
                eprintln!("[serve] {line}");
            }
        });
        let dashboard = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("sluice serve prints the dashboard URL");
        if let Some((_, t)) = dashboard.split_once("?token=") {
            token = Some(t.to_owned());
        }
        if args.contains(&"--no-token") {
            token = None;
        }
        Serve {
            child,
            port,
            token,
            dashboard,
        }
    }

    /// One request with its token; (status, body).
    pub(crate) fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[&str],
        body: &str,
    ) -> (u16, String) {
        self.http_bytes(method, path, headers, body.as_bytes())
    }

    /// [`Serve::http`] with a binary body.
    pub(crate) fn http_bytes(
        &self,
        method: &str,
        path: &str,
        headers: &[&str],
        body: &[u8],
    ) -> (u16, String) {
        let auth = self.auth();
        let mut all: Vec<&str> = headers.to_vec();
        if let Some(auth) = &auth {
            all.push(auth);
        }
        http_bytes(self.port, method, path, &all, body)
    }

    /// The header that carries its token, if it has one.
    pub(crate) fn auth(&self) -> Option<String> {
        self.token
            .as_ref()
            .map(|t| format!("Authorization: Bearer {t}"))
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request to 127.0.0.1:`port` (named so in `Host`, unless
/// `headers` name one), without a token; returns (status, body).
pub(crate) fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &str,
) -> (u16, String) {
    http_bytes(port, method, path, headers, body.as_bytes())
}

/// [`http`] with a binary body.
pub(crate) fn http_bytes(
    port: u16,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &[u8],
) -> (u16, String) {
    let (status, _, body) = exchange(port, method, path, headers, body);
    (status, body)
}

/// One request; (status, response head, body).
pub(crate) fn exchange(
    port: u16,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &[u8],
) -> (u16, String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers
        .iter()
        .any(|h| h.to_ascii_lowercase().starts_with("host:"))
    {
        head += &format!("Host: 127.0.0.1:{port}\r\n");
    }
    if !headers
        .iter()
        .any(|h| h.to_ascii_lowercase().starts_with("content-length:"))
    {
        head += &format!("Content-Length: {}\r\n", body.len());
    }
    for h in headers {
        head += &format!("{h}\r\n");
    }
    write!(stream, "{head}\r\n").unwrap();
    // A server that answered from the headers may have closed already.
    let _ = stream.write_all(body);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, head.to_owned(), body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

#[test]
fn serve_refuses_flags_that_would_open_it_and_names_what_to_do() {
    let s = Scratch::new();
    for (args, says) in [
        (
            vec!["--bind", "0.0.0.0:0", "--no-token"],
            "loopback binds only",
        ),
        // Every IPv6 interface is as public as every IPv4 one.
        (
            vec!["--bind", "[::]:0", "--no-token"],
            "loopback binds only",
        ),
        (
            vec!["--token-env", "SLUICE_TEST_NO_SUCH_VAR"],
            "SLUICE_TEST_NO_SUCH_VAR",
        ),
        (vec!["--allow-origin", "*"], "any web page"),
        (vec!["--allow-origin", "evil.example"], "scheme://host"),
        (vec!["--allow-host", "*"], "never *"),
        (
            vec!["--allow-dir", "no/such/dir"],
            "--allow-dir no/such/dir",
        ),
        (vec!["--max-runs", "0"], "--max-runs must be at least 1"),
        (
            vec!["--default-concurrency", "8", "--max-concurrency", "4"],
            "above --max-concurrency",
        ),
    ] {
        let mut all = vec!["serve"];
        if !args.contains(&"--bind") {
            all.extend(["--bind", "127.0.0.1:0"]);
        }
        all.extend(&args);
        // A server that starts instead would serve forever.
        let out = s
            .sluice(&all)
            .timeout(Duration::from_secs(60))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

#[test]
fn a_public_bind_needs_the_token_on_every_route_but_healthz() {
    let s = Scratch::new();
    let server = Serve::start(
        &s,
        &["--bind", "0.0.0.0:0", "--token-env", "SERVE_TOKEN"],
        &[("SERVE_TOKEN", "tok-123")],
    );
    assert!(
        !server.dashboard.contains("tok-123"),
        "a token from the environment is not printed: {}",
        server.dashboard
    );
    let (status, body) = http(server.port, "GET", "/v1/runs", &[], "");
    assert_eq!(status, 401, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "unauthorized");
    assert_eq!(http(server.port, "GET", "/", &[], "").0, 401);
    assert_eq!(http(server.port, "GET", "/healthz", &[], "").0, 200);
    let (status, body) = http(
        server.port,
        "GET",
        "/v1/runs",
        &["Authorization: Bearer tok-123"],
        "",
    );
    assert_eq!(status, 200, "{body}");
}

#[test]
fn a_run_from_the_cli_is_listed_and_its_results_served() {
    let s = Scratch::new();
    let mock = Mock::start(&[]);
    let server = Serve::start(&s, &[], &[]);
    let input = s.write_lines(
        "items.jsonl",
        &(0..5)
            .map(|i| format!("{{\"q\":\"q{i}\"}}"))
            .collect::<Vec<_>>(),
    );
    let job = s.path("job.toml");
    std::fs::write(
        &job,
        format!(
            "name = \"cli\"\n[input]\npath = \"{}\"\n[providers.p]\nbase_url = \"{}\"\n[[steps]]\nname = \"a\"\nkind = \"chat\"\nprovider = \"p\"\nmodel = \"m\"\nmessages = [{{ role = \"user\", content = \"{{{{ item.q }}}}\" }}]\n",
            input.display(),
            mock.url("/v1")
        ),
    )
    .unwrap();
    let out = s
        .sluice(&["run", job.to_str().unwrap(), "--out", "out.jsonl"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, body) = server.http("GET", "/v1/runs", &[], "");
    assert_eq!(status, 200);
    let runs: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(runs["runs"][0]["id"], "cli-1");
    assert_eq!(runs["runs"][0]["counts"]["done"], 5);
    let (status, results) = server.http("GET", "/v1/runs/cli-1/results", &[], "");
    assert_eq!(status, 200);
    let exported = std::fs::read_to_string(s.path("out.jsonl")).unwrap();
    assert_eq!(
        results, exported,
        "the API serves what `sluice export` writes"
    );
}

#[test]
fn a_finished_cli_run_opens_with_its_summary_and_history() {
    let s = Scratch::new();
    let mock = Mock::start(&[]);
    let input = s.write_lines(
        "items.jsonl",
        &(0..20)
            .map(|i| format!("{{\"q\":\"q{i}\"}}"))
            .collect::<Vec<_>>(),
    );
    let job = s.path("job.toml");
    std::fs::write(
        &job,
        format!(
            "name = \"told\"\n[input]\npath = \"{}\"\n[providers.p]\nbase_url = \"{}\"\n[[steps]]\nname = \"a\"\nkind = \"chat\"\nprovider = \"p\"\nmodel = \"m\"\nmessages = [{{ role = \"user\", content = \"{{{{ item.q }}}}\" }}]\n",
            input.display(),
            mock.url("/v1")
        ),
    )
    .unwrap();
    // The CLI ran it with no server around; a server started later shows it.
    let out = s.sluice(&["run", job.to_str().unwrap()]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = Serve::start(&s, &[], &[]);
    let (status, body) = server.http("GET", "/v1/runs/told-1", &[], "");
    assert_eq!(status, 200, "{body}");
    let view: Value = serde_json::from_str(&body).unwrap();
    let summary = &view["summary"];
    assert_eq!(summary["sessions"], 1, "{view}");
    assert_eq!(summary["done"], 20, "{summary}");
    assert_eq!(summary["attempts"], 20, "{summary}");
    assert_eq!(summary["steps"][0]["step"], "a", "{summary}");
    assert_eq!(summary["providers"][0]["name"], "p", "{summary}");
    let (status, body) = server.http("GET", "/v1/runs/told-1/history", &[], "");
    assert_eq!(status, 200, "{body}");
    let history: Value = serde_json::from_str(&body).unwrap();
    let points = history["points"].as_array().unwrap();
    assert!(!points.is_empty(), "{history}");
    let done: f64 = points
        .iter()
        .map(|p| p["done_per_min"].as_f64().unwrap())
        .sum();
    assert!(done > 0.0, "{history}");
}

#[test]
fn the_server_follows_a_cli_run_live_and_its_end_carries_the_summary() {
    let s = Scratch::new();
    let mock = Mock::start(&["--latency-ms", "10"]);
    let server = Serve::start(&s, &[], &[]);
    let input = s.write_lines(
        "items.jsonl",
        &(0..150)
            .map(|i| format!("{{\"q\":\"q{i}\"}}"))
            .collect::<Vec<_>>(),
    );
    let job = s.path("job.toml");
    // 150 items at 1,800 requests/minute: five seconds at least.
    std::fs::write(
        &job,
        format!(
            "name = \"followed\"\n[input]\npath = \"{}\"\n[providers.p]\nbase_url = \"{}\"\nrpm = 1800\n[[steps]]\nname = \"a\"\nkind = \"chat\"\nprovider = \"p\"\nmodel = \"m\"\nmessages = [{{ role = \"user\", content = \"{{{{ item.q }}}}\" }}]\n",
            input.display(),
            mock.url("/v1")
        ),
    )
    .unwrap();
    let mut cli = Command::new(bin())
        .current_dir(s.dir.path())
        .args(["run", job.to_str().unwrap()])
        .env("SLUICE_STORE", s.store())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        // Running, with its process's first heartbeat in (else the stream
        // sees a run nobody works on, and ends at once).
        let (status, body) = server.http("GET", "/v1/runs/followed-1", &[], "");
        let view: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let beating = view["workers"]
            .as_array()
            .is_some_and(|w| w.iter().any(|w| w["state"] == "running"));
        if status == 200 && view["state"] == "running" && beating {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the CLI run never showed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The stream ends with the run.
    let (status, body) = server.http("GET", "/v1/runs/followed-1/events", &[], "");
    assert_eq!(status, 200);
    assert!(cli.wait().unwrap().success());
    let events: Vec<(String, Value)> = body
        .split("\n\n")
        .filter_map(|e| {
            let name = e.lines().find_map(|l| l.strip_prefix("event: "))?;
            let data = e.lines().find_map(|l| l.strip_prefix("data: "))?;
            Some((name.to_owned(), serde_json::from_str(data).ok()?))
        })
        .collect();
    let points: Vec<&Value> = events
        .iter()
        .filter(|(n, d)| n == "progress" && !d["point"].is_null())
        .map(|(_, d)| &d["point"])
        .collect();
    assert!(!points.is_empty(), "{body}");
    assert!(
        points
            .iter()
            .any(|p| p["calls_per_sec"].as_f64() > Some(0.0)),
        "{points:?}"
    );
    let (name, end) = events.last().unwrap();
    assert_eq!(name, "end", "{body}");
    assert_eq!(end["summary"]["attempts"], 150, "{end}");
    assert_eq!(end["summary"]["done"], 150, "{end}");
}

#[test]
fn stopping_the_server_leaves_its_runs_interrupted_and_resumable() {
    let s = Scratch::new();
    let mock = Mock::start(&["--latency-ms", "20"]);
    let mut server = Serve::start(&s, &[], &[]);
    let job = serde_json::json!({
        "name": "long",
        "items": (0..600).map(|i| serde_json::json!({"q": format!("q{i}")})).collect::<Vec<_>>(),
        "provider": {"base_url": mock.url("/v1"), "concurrency": 2},
        "step": {"kind": "chat", "model": "m", "messages": [{"role": "user", "content": "{{ item.q }}"}]},
    });
    let (status, body) = server.http(
        "POST",
        "/v1/runs",
        &["Content-Type: application/json"],
        &job.to_string(),
    );
    assert_eq!(status, 202, "{body}");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = server.http("GET", "/v1/runs/long-1", &[], "");
        let v: Value = serde_json::from_str(&body).unwrap();
        if v["counts"]["done"].as_u64() > Some(5) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no progress: {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = server.child.id();
    let killed = Command::new("sh")
        .args(["-c", &format!("kill -TERM {pid}")])
        .status()
        .unwrap();
    assert!(killed.success());
    let exit = server.child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
    let out = s.sluice(&["status", "long-1", "--json"]).output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["run"]["state"], "interrupted", "{v}");
    let pending = v["pending"].as_u64().unwrap();
    assert!(pending > 0 && pending < 600, "{v}");
    // A new server resumes it.
    let server = Serve::start(&s, &[], &[]);
    let (status, body) = server.http("POST", "/v1/runs/long-1/resume", &[], "");
    assert_eq!(status, 202, "{body}");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (_, body) = server.http("GET", "/v1/runs/long-1", &[], "");
        let v: Value = serde_json::from_str(&body).unwrap();
        if v["state"] == "finished" {
            assert_eq!(v["counts"]["done"], 600);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{v}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn sluice_retry_reruns_a_run_submitted_to_the_server() {
    let s = Scratch::new();
    let mock = Mock::start(&["--fail-rate", "0.4", "--seed", "4"]);
    let server = Serve::start(&s, &[], &[]);
    let job = serde_json::json!({
        "name": "sub",
        "items": (0..30).map(|i| serde_json::json!({"q": format!("q{i}")})).collect::<Vec<_>>(),
        "provider": {"base_url": mock.url("/v1"), "retries": {"max": 0}, "circuit_breaker": false},
        "step": {"kind": "chat", "model": "m", "messages": [{"role": "user", "content": "{{ item.q }}"}]},
    });
    let (status, body) = server.http(
        "POST",
        "/v1/runs?wait=all",
        &["Content-Type: application/json"],
        &job.to_string(),
    );
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let failed = v["run"]["counts"]["failed"].as_u64().unwrap();
    assert!(failed > 0, "{v}");
    drop(server);
    let out = s.sluice(&["retry", "sub-1", "--json"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{failed} failed item(s) of sub-1 re-queued")),
        "{stderr}"
    );
    let summary: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    assert_eq!(summary["run"], "sub-1", "{summary}");
    assert_eq!(summary["resumed"], true);
    assert_eq!(mock.stats()["requests"].as_u64().unwrap(), 30 + failed);
}

#[test]
fn a_server_on_postgres_streams_a_submitted_run_and_records_it() {
    let Some(pg) = crate::pg::PgSchema::create() else {
        return;
    };
    let s = Scratch::new();
    let mock = Mock::start(&[]);
    let server = Serve::start(&s, &["--store", &pg.url], &[]);
    let job = serde_json::json!({
        "name": "pg",
        "items": (0..20).map(|i| serde_json::json!({"q": format!("q{i}")})).collect::<Vec<_>>(),
        "provider": {"base_url": mock.url("/v1"), "concurrency": 4},
        "step": {"kind": "chat", "model": "m", "messages": [{"role": "user", "content": "{{ item.q }}"}]},
    });
    let (status, body) = server.http(
        "POST",
        "/v1/runs?wait=stream",
        &["Content-Type: application/json"],
        &job.to_string(),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body.matches("event: item\n").count(), 20, "{body}");
    assert!(body.contains("event: summary\n"), "{body}");
    let (status, results) = server.http("GET", "/v1/runs/pg-1/results", &[], "");
    assert_eq!(status, 200, "{results}");
    assert_eq!(results.lines().count(), 20);
}

#[test]
fn a_server_killed_with_9_leaves_its_run_resumable_and_nothing_is_done_twice() {
    let s = Scratch::new();
    let mock = Mock::start(&["--latency-ms", "100"]);
    let mut server = Serve::start(&s, &[], &[]);
    let n = 300;
    let job = serde_json::json!({
        "name": "long",
        "items": (0..n).map(|i| serde_json::json!({"q": format!("q{i}")})).collect::<Vec<_>>(),
        "provider": {"base_url": mock.url("/v1"), "concurrency": 2},
        "step": {"kind": "chat", "model": "m", "messages": [{"role": "user", "content": "{{ item.q }}"}]},
    });
    let (status, body) = server.http(
        "POST",
        "/v1/runs",
        &["Content-Type: application/json"],
        &job.to_string(),
    );
    assert_eq!(status, 202, "{body}");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = server.http("GET", "/v1/runs/long-1", &[], "");
        let v: Value = serde_json::from_str(&body).unwrap();
        if v["counts"]["done"].as_u64() > Some(5) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no progress: {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
    server.child.kill().unwrap(); // SIGKILL: no last word from the server
    server.child.wait().unwrap();
    let out = s.sluice(&["status", "long-1", "--json"]).output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    // Stored as running, shown as what it is: nobody executes it.
    assert_eq!(v["state"], "interrupted (process gone)", "{v}");
    // What the killed server had sent and what it had recorded: only the
    // difference may be sent again.
    let sent_at_kill = u(&mock.stats()["requests"]);
    let recorded_at_kill = u(&v["counts"]["done"]);
    // A new server resumes it; every item ends done once.
    let server = Serve::start(&s, &[], &[]);
    let (status, body) = server.http("POST", "/v1/runs/long-1/resume", &[], "");
    assert_eq!(status, 202, "{body}");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (_, body) = server.http("GET", "/v1/runs/long-1", &[], "");
        let v: Value = serde_json::from_str(&body).unwrap();
        if v["state"] == "finished" {
            assert_eq!(v["counts"]["done"], n);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{v}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let stats = mock.stats();
    // Sent twice: only what was on the wire at the kill or answered and not
    // yet committed — the requests sent less the items recorded, counted
    // at the kill rather than guessed from how far a loaded machine lets
    // the writer lag. Never a recorded item.
    let unrecorded = sent_at_kill - recorded_at_kill.min(sent_at_kill);
    let duplicates = u(&stats["duplicate_requests"]);
    eprintln!(
        "{duplicates} sent twice; {sent_at_kill} sent, {recorded_at_kill} recorded at the kill"
    );
    assert!(
        duplicates <= unrecorded,
        "{duplicates} sent twice, but only {unrecorded} were sent and not recorded: {stats}"
    );
    assert_eq!(u(&stats["ok"]) - u(&stats["duplicate_requests"]), n);
}

#[test]
fn status_json_and_the_servers_run_view_agree() {
    let s = Scratch::new();
    let mock = Mock::start(&["--fail-rate", "0.4", "--seed", "7"]);
    let input = s.write_lines(
        "items.jsonl",
        &(0..20)
            .map(|i| format!("{{\"q\":\"q{i}\"}}"))
            .collect::<Vec<_>>(),
    );
    let job = s.path("job.toml");
    std::fs::write(
        &job,
        format!(
            "name = \"same\"\n[input]\npath = \"{}\"\n[providers.p]\nbase_url = \"{}\"\nretries = {{ max = 0 }}\ncircuit_breaker = false\n[[steps]]\nname = \"a\"\nkind = \"chat\"\nprovider = \"p\"\nmodel = \"m\"\nmessages = [{{ role = \"user\", content = \"{{{{ item.q }}}}\" }}]\n",
            input.display(),
            mock.url("/v1")
        ),
    )
    .unwrap();
    let out = s.sluice(&["run", job.to_str().unwrap()]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = s.sluice(&["status", "same-1", "--json"]).output().unwrap();
    assert!(out.status.success());
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    let server = Serve::start(&s, &[], &[]);
    let (code, body) = server.http("GET", "/v1/runs/same-1", &[], "");
    assert_eq!(code, 200, "{body}");
    let view: Value = serde_json::from_str(&body).unwrap();
    let failed = u(&status["counts"]["failed"]);
    assert!(failed > 0 && failed < 20, "{status}");
    assert!(!status["error_groups"].as_array().unwrap().is_empty());
    // One view of a run: every field both surfaces show is the same.
    for field in [
        "id",
        "name",
        "state",
        "control",
        "mode",
        "executed_here",
        "created_at",
        "updated_at",
        "finished_at",
        "counts",
        "pending",
        "live",
        "workers",
        "top_errors",
        "error_groups",
        "queue",
        "batches",
        "offload",
    ] {
        assert!(
            status.get(field).is_some(),
            "status lacks {field}: {status}"
        );
        assert_eq!(status[field], view[field], "{field} differs");
    }
    // What each adds: the stored record (CLI), advice and summary (server).
    assert_eq!(status["run"]["id"], "same-1");
    assert!(view.get("run").is_none() && view["recommendations"].is_array());
    assert_eq!(status["state"], "finished");
}
