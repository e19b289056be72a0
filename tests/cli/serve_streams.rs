//! Event streams under load, against the real binary: a thousand clients
//! following one running run's `/events` at once keep `sluice serve` under
//! 150 MB of resident memory and 50 threads (the streams are tasks sharing
//! one feed, not threads or a view each). Linux: read from /proc.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::serve::Serve;
use crate::util::{Mock, Scratch};

/// Clients following the run at once.
const CLIENTS: usize = 1_000;

/// A field of /proc/PID/status (kB for memory).
#[cfg(target_os = "linux")]
fn status_field(pid: u32, name: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
}

/// Lets this test process open a socket per client.
#[cfg(target_os = "linux")]
fn raise_open_files(needed: u64) {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        let mut limit = std::mem::zeroed::<libc::rlimit>();
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur < needed {
            assert!(
                limit.rlim_max >= needed,
                "this test needs {needed} open files; the hard limit is {}",
                limit.rlim_max
            );
            limit.rlim_cur = needed;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
    }
}

/// Reads `stream` until `text` has arrived `times` times in all (what was
/// read is kept in `seen`).
fn read_until(stream: &mut TcpStream, seen: &mut String, text: &str, times: usize) {
    let mut buf = [0u8; 16 << 10];
    // Each read has its timeout; a stream that keeps sending something else
    // is ended by this one.
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.matches(text).count() < times {
        assert!(
            Instant::now() < deadline,
            "{text:?} not {times} times in 120 s: {seen}"
        );
        let n = stream.read(&mut buf).expect("the stream stays open");
        assert!(n > 0, "the server closed a stream: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

#[cfg(target_os = "linux")]
#[test]
fn a_thousand_clients_on_a_running_run_stay_under_150_mb_and_50_threads() {
    raise_open_files(CLIENTS as u64 + 500);
    let s = Scratch::new();
    let mock = Mock::start(&["--latency-ms", "200"]);
    let server = Serve::start(&s, &[], &[]);
    let pid = server.child.id();
    // 3,000 calls, 2 at a time, 200 ms each: five minutes at least, so the
    // run is running throughout; it is cancelled at the end.
    let job = json!({
        "name": "watched",
        "items": (0..3000).map(|i| json!({"q": format!("q{i}")})).collect::<Vec<_>>(),
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
    let run: Value = serde_json::from_str(&body).unwrap();
    let id = run["id"].as_str().unwrap().to_owned();
    let auth = server.auth().unwrap();
    let started = Instant::now();
    let mut clients: Vec<(TcpStream, String)> = (0..CLIENTS)
        .map(|_| {
            let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(120)))
                .unwrap();
            write!(
                stream,
                "GET /v1/runs/{id}/events HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n{auth}\r\nAccept: text/event-stream\r\n\r\n",
                server.port
            )
            .unwrap();
            (stream, String::new())
        })
        .collect();
    // Every client gets its first event, then a second one: all thousand
    // are followed at once, while the run runs.
    for round in 1..=2 {
        for (stream, seen) in &mut clients {
            read_until(stream, seen, "event: progress\n", round);
        }
    }
    let connected = started.elapsed();
    let rss_kb = status_field(pid, "VmRSS");
    let peak_kb = status_field(pid, "VmHWM");
    let threads = status_field(pid, "Threads");
    eprintln!(
        "{CLIENTS} event streams on a running run: server RSS {} MB (peak {} MB), {threads} threads; all followed after {:.1} s",
        rss_kb / 1024,
        peak_kb / 1024,
        connected.as_secs_f64()
    );
    assert!(
        clients[0].1.contains("\"state\":\"running\""),
        "{}",
        clients[0].1
    );
    assert!(peak_kb < 150 * 1024, "peak RSS {peak_kb} kB");
    assert!(threads < 50, "{threads} threads");
    drop(clients);
    let (status, _) = server.http("POST", &format!("/v1/runs/{id}/cancel"), &[], "");
    assert_eq!(status, 200);
}
