//! A run outlives its database connection: PostgreSQL backends terminated
//! mid-run (`pg_terminate_backend`, as a failover or a restarted pooler
//! does) are reconnected and every item is done once, by `sluice run` and by
//! `sluice worker`; a database that stays away stops the run with its real
//! error; NUL characters are refused up front on both stores; a run whose
//! process was killed shows `interrupted (process gone)`.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::pg::PgSchema;
use crate::shared::{exported_once, finish, job};
use crate::util::*;

/// `sluice ARGS` in the background with `store`.
fn spawn(s: &Scratch, store: &str, args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(bin());
    cmd.current_dir(s.dir.path())
        .args(args)
        .env("SLUICE_STORE", store)
        .env("SLUICE_PROGRESS_INTERVAL", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// `sluice status RUN --json` on `store`, once `ready` (at most a minute).
fn wait_status(s: &Scratch, store: &str, run: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = s
            .sluice(&["status", run, "--json"])
            .env("SLUICE_STORE", store)
            .output()
            .unwrap();
        if out.status.success() {
            let v = json_stdout(&out);
            if ready(&v) {
                return v;
            }
        }
        assert!(Instant::now() < deadline, "timed out waiting on {run}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn done(v: &Value) -> u64 {
    u(&v["counts"]["done"])
}

/// Terminates the named process's backends (at least one must be there).
fn terminate(pg: &PgSchema, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while pg.terminate(name) == 0 {
        assert!(Instant::now() < deadline, "no backend named {name}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sluice_run_on_postgres_survives_its_connections_being_terminated() {
    let Some(pg) = PgSchema::create() else {
        return;
    };
    let mock = Mock::start(&["--latency-ms", "100"]);
    let s = Scratch::new();
    let n = 400;
    let input = s.write_lines("in.jsonl", &chat_lines(n));
    let name = "sluice_survive_run";
    let url = mock.chat_url();
    let args = [
        "run",
        input.to_str().unwrap(),
        "--url",
        url.as_str(),
        "--concurrency",
        "8",
        "--out",
        "out.jsonl",
    ];
    let run = spawn(&s, &pg.url_named(name), &args, &[]);
    wait_status(&s, &pg.url, "in", |v| done(v) >= 60);
    terminate(&pg, name);
    wait_status(&s, &pg.url, "in", |v| done(v) >= 200);
    terminate(&pg, name);
    let (code, err) = finish(run, Duration::from_secs(120));
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("reconnecting"), "{err}");
    let rows = read_jsonl(&s.path("out.jsonl"));
    let ids: HashSet<&str> = rows
        .iter()
        .filter_map(|r| r["custom_id"].as_str())
        .collect();
    assert_eq!((rows.len(), ids.len()), (n, n), "every item once");
    assert!(rows.iter().all(|r| r["error"].is_null()), "every item done");
    let stats = mock.stats();
    assert_eq!(u(&stats["requests"]), n as u64, "{stats}");
    assert_eq!(stats["duplicate_requests"], 0, "{stats}");
}

#[test]
fn a_worker_survives_its_connections_being_terminated() {
    let Some(pg) = PgSchema::create() else {
        return;
    };
    let mock = Mock::start(&["--latency-ms", "100"]);
    let s = Scratch::new();
    let n = 300;
    let job = job(&s, &mock, n, "concurrency = 8");
    let queued = s
        .sluice(&["run", job.to_str().unwrap(), "--queue-only"])
        .env("SLUICE_STORE", &pg.url)
        .output()
        .unwrap();
    assert!(queued.status.success(), "{}", stderr(&queued));
    let name = "sluice_survive_worker";
    let worker = spawn(
        &s,
        &pg.url_named(name),
        &["worker", "--exit-when-idle"],
        &[],
    );
    wait_status(&s, &pg.url, "shared", |v| done(v) >= 60);
    terminate(&pg, name);
    wait_status(&s, &pg.url, "shared", |v| done(v) >= 150);
    terminate(&pg, name);
    let (code, err) = finish(worker, Duration::from_secs(120));
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("reconnecting"), "{err}");
    let out = s
        .sluice(&["export", "shared", "--out", "out.jsonl"])
        .env("SLUICE_STORE", &pg.url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    exported_once(&s.path("out.jsonl"), n);
    let stats = mock.stats();
    assert_eq!(u(&stats["requests"]), n as u64, "{stats}");
    assert_eq!(stats["duplicate_requests"], 0, "{stats}");
}

/// A TCP proxy on 127.0.0.1 to PostgreSQL that can be cut: every
/// connection closed and new ones refused, as a database that went away.
struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(target: (String, u16)) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let streams = Arc::new(Mutex::new(Vec::new()));
        let (stop, open) = (cut.clone(), streams.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let client = match listener.accept() {
                    Ok((client, _)) => client,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                };
                client.set_nonblocking(false).unwrap();
                let Ok(server) = TcpStream::connect((target.0.as_str(), target.1)) else {
                    continue;
                };
                let mut open = open.lock().unwrap();
                // Cut while this one was being connected: it must not
                // outlive the cut (the run would reconnect through it).
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                open.push(client.try_clone().unwrap());
                open.push(server.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
            // Dropping the listener refuses new connections.
        });
        Proxy { port, cut, streams }
    }

    fn cut(&self) {
        // Under the lock, so a connection being set up either is in the
        // list to be shut or sees the flag and is dropped.
        let mut open = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        self.cut.store(true, Ordering::SeqCst);
        for s in open.drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
    }
}

#[test]
fn a_database_that_stays_away_stops_the_run_with_its_own_error() {
    let Some(pg) = PgSchema::create() else {
        return;
    };
    let proxy = Proxy::start(pg.address());
    let through = pg.url_via(proxy.port);
    let mock = Mock::start(&["--latency-ms", "100"]);
    let s = Scratch::new();
    let n = 3_000;
    let concurrency = 8;
    let input = s.write_lines("in.jsonl", &chat_lines(n));
    let url = mock.chat_url();
    let c = concurrency.to_string();
    let args = [
        "run",
        input.to_str().unwrap(),
        "--url",
        url.as_str(),
        "--concurrency",
        c.as_str(),
    ];
    let mut run = spawn(&s, &through, &args, &[("SLUICE_PG_RECONNECT_SECS", "6")]);
    wait_status(&s, &pg.url, "in", |v| done(v) >= 50);
    proxy.cut();
    // While the store does not answer, no new call goes out.
    std::thread::sleep(Duration::from_secs(3));
    let held = u(&mock.stats()["requests"]);
    std::thread::sleep(Duration::from_secs(1));
    assert!(run.try_wait().unwrap().is_none(), "still reconnecting");
    assert_eq!(
        u(&mock.stats()["requests"]),
        held,
        "calls went out meanwhile"
    );
    let (code, err) = finish(run, Duration::from_secs(60));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("lost the connection to PostgreSQL")
            && err.contains("could not work again within 6 s")
            && err.contains("sending stopped at once"),
        "{err}"
    );
    assert!(!err.contains("db error"), "the server's own error: {err}");
    let lost = if err.contains("could not be recorded") {
        let at = err.find(" answer").unwrap();
        err[..at]
            .split_whitespace()
            .last()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    } else {
        0
    };
    let status = wait_status(&s, &pg.url, "in", |_| true);
    let recorded = done(&status) + u(&status["counts"]["failed"]);
    assert!(
        held <= recorded + lost + concurrency,
        "{held} sent, {recorded} recorded, {lost} lost"
    );
    assert_eq!(status["state"], "interrupted (process gone)", "{status}");
}

/// A line whose `custom_id` holds a NUL character, among good ones.
fn lines_with_nul(n: usize) -> Vec<String> {
    let mut lines = chat_lines(n);
    lines[2] = json!({
        "custom_id": "bad\u{0}id",
        "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
    })
    .to_string();
    lines
}

fn nul_is_refused_on(store: &str) {
    let mock = Mock::start(&[]);
    let s = Scratch::new();
    let input = s.write_lines("in.jsonl", &lines_with_nul(10));
    let out = s
        .run(&input, &mock.chat_url(), &[])
        .env("SLUICE_STORE", store)
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("in.jsonl:3: custom_id contains a NUL character"),
        "{err}"
    );
    assert_eq!(mock.stats()["requests"], 0, "nothing sent");
    // --skip-bad records the line as failed and runs the rest; a rerun
    // works (the run is not stuck).
    for _ in 0..2 {
        let out = s
            .run(
                &input,
                &mock.chat_url(),
                &["--skip-bad", "--out", "out.jsonl"],
            )
            .env("SLUICE_STORE", store)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let rows = read_jsonl(&s.path("out.jsonl"));
        assert_eq!(rows.len(), 10);
        assert_eq!(rows[2]["error"]["code"], "invalid_input", "{}", rows[2]);
    }
    assert_eq!(mock.stats()["requests"], 9, "each good line once");

    // A job's item field with a NUL: refused with its line and field.
    let items = [
        json!({"q": "fine"}).to_string(),
        json!({"q": "not\u{0}fine"}).to_string(),
    ];
    s.write_lines("items.jsonl", &items);
    let job = s.path("job.toml");
    std::fs::write(
        &job,
        format!(
            "name = \"nul\"\n[input]\npath = \"items.jsonl\"\n[providers.mock]\nbase_url = \"{}\"\n\
             [[steps]]\nname = \"ask\"\nkind = \"chat\"\nprovider = \"mock\"\nmodel = \"m\"\n\
             messages = [{{ role = \"user\", content = \"{{{{ item.q }}}}\" }}]\n",
            mock.url("/v1")
        ),
    )
    .unwrap();
    let out = s
        .sluice(&["run", job.to_str().unwrap()])
        .env("SLUICE_STORE", store)
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("items.jsonl:2: field q contains a NUL character"),
        "{err}"
    );
    assert_eq!(mock.stats()["requests"], 9, "nothing more sent");
}

#[test]
fn a_nul_character_is_refused_up_front_on_sqlite() {
    let s = Scratch::new();
    nul_is_refused_on(s.store().to_str().unwrap());
}

#[test]
fn a_nul_character_is_refused_up_front_on_postgres() {
    let Some(pg) = PgSchema::create() else {
        return;
    };
    nul_is_refused_on(&pg.url);
}

#[test]
fn a_killed_run_shows_its_process_gone() {
    let mock = Mock::start(&["--latency-ms", "200"]);
    let s = Scratch::new();
    let input = s.write_lines("in.jsonl", &chat_lines(200));
    let store = s.store();
    let store = store.to_str().unwrap();
    let url = mock.chat_url();
    let args = [
        "run",
        input.to_str().unwrap(),
        "--url",
        url.as_str(),
        "--concurrency",
        "2",
    ];
    let mut run = spawn(&s, store, &args, &[]);
    let running = wait_status(&s, store, "in", |v| done(v) >= 2);
    assert_eq!(running["state"], "running", "{running}");
    run.kill().unwrap(); // SIGKILL: no last beat, the run stays `running` in the store
    run.wait().unwrap();
    let status = wait_status(&s, store, "in", |_| true);
    assert_eq!(status["run"]["state"], "running");
    assert_eq!(status["state"], "interrupted (process gone)", "{status}");
    assert_eq!(status["workers"][0]["state"], "lost", "{status}");
    let shown = s.sluice(&["status", "in"]).output().unwrap();
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(text.contains("interrupted (process gone)"), "{text}");
    // Rerunning resumes it.
    let out = s.run(&input, &url, &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let status = wait_status(&s, store, "in", |_| true);
    assert_eq!(status["state"], "finished", "{status}");
}
