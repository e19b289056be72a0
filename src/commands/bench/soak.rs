//! Soak: `sluice bench --only soak --minutes N` runs a mixed workload for N
//! minutes and checks that nothing drifts: one PostgreSQL run under a shared
//! rpm the mock enforces, with injected 500s and resets, worked by three
//! `sluice worker`s of which one is killed with SIGKILL every minute (and
//! replaced), while `sluice serve` streams the run's events to two SSE
//! clients. Checks: every unit exported exactly once; no 429 (the limit was
//! told); the long-lived processes (the server and the one worker never
//! killed) end within a stated bound of their memory and open files after
//! the first minute.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::data::fmt_int;
use super::harness::{arg, run, spawn_as, Ctx, Mock, Running};
use super::report::{Figure, Scenario, Target};
use super::runs::{check_units, rate};
use super::scale::{postgres_or_skip, write_job, Schema};

const ABOUT: &str =
    "N minutes: faults, a shared rpm, kill -9 of a worker every minute, SSE clients";
/// The shared limit the mock enforces and the job states.
const RPM: u64 = 1_200;
/// Growth allowed after the first minute: resident memory (MB) and open
/// files. A leak of one buffer per call (~20 calls/s) passes neither in ten
/// minutes; allocator noise and a connection pool refilling stay well inside.
const RSS_GROWTH_MB: f64 = 32.0;
const FD_GROWTH: i64 = 16;

/// Resident memory (MB) and open files of `pid`, from /proc.
fn usage(pid: u32) -> Option<(f64, i64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as i64;
    Some((kb / 1024.0, fds))
}

/// An SSE client reading the run's events until told to stop; counts them.
/// A stream that ends (the run looked idle: queued, or between workers) is
/// opened again, as the dashboard does.
fn sse_client(port: u16, path: String, stop: Arc<AtomicBool>, events: Arc<AtomicU64>) {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
                std::thread::sleep(Duration::from_millis(200));
                continue;
            };
            let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
            let _ = write!(
                stream,
                "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n"
            );
            let mut buf = [0u8; 16 * 1024];
            while !stop.load(Ordering::Relaxed) {
                match stream.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        let text = String::from_utf8_lossy(&buf[..n]);
                        events.fetch_add(text.matches("event:").count() as u64, Ordering::Relaxed);
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => break,
                }
            }
        }
    });
}

/// The server's port: the last `:N` of its first line of output.
fn port_of(out: &Path, deadline: Instant) -> anyhow::Result<u16> {
    loop {
        let text = std::fs::read_to_string(out).unwrap_or_default();
        if let Some(port) = text
            .lines()
            .next()
            .and_then(|l| l.trim().rsplit(':').next())
            .and_then(|p| p.parse().ok())
        {
            return Ok(port);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "`sluice serve` printed no address"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(super) fn soak(ctx: &Ctx, minutes: u64) -> anyhow::Result<Scenario> {
    let postgres = match postgres_or_skip(ctx, "soak", ABOUT)? {
        Ok(url) => url,
        Err(skipped) => return Ok(skipped),
    };
    let minutes = minutes.max(1);
    let length = Duration::from_secs(60 * minutes);
    // A minute's limit per minute: at the rate three workers reach (75-90%
    // of it) the run outlasts the soak; the surviving workers then finish
    // the rest.
    let n = RPM * minutes;
    let mock = Mock::start(
        ctx,
        &[
            "--rpm",
            &RPM.to_string(),
            "--slack-ms",
            "125",
            "--latency-ms",
            "50",
            "--jitter-ms",
            "50",
            "--fail-rate",
            "0.02",
            "--reset-rate",
            "0.01",
            "--seed",
            "22",
        ],
    )?;
    let dir = ctx.dir("soak")?;
    write_job(&dir, &mock.url("/v1"), n, Some(RPM))?;
    let schema = Schema::create(&postgres, "soak")?;
    let store = schema.url.clone();
    let job = dir.join("job.toml");
    let queued = run(
        ctx,
        &dir,
        &["run", arg(&job)?, "--queue-only", "--store", &store],
    )?;
    anyhow::ensure!(
        queued.code == Some(0),
        "queueing failed: {}",
        queued.describe()
    );

    let server = spawn_as(
        ctx,
        &dir,
        "serve",
        &[
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--no-token",
            "--store",
            &store,
        ],
    )?;
    let port = port_of(
        &dir.join("serve.stdout"),
        Instant::now() + Duration::from_secs(60),
    )?;
    let stop = Arc::new(AtomicBool::new(false));
    let events = Arc::new(AtomicU64::new(0));
    for _ in 0..2 {
        sse_client(
            port,
            "/v1/runs/job-1/events".into(),
            stop.clone(),
            events.clone(),
        );
    }

    let worker = |i: usize| -> anyhow::Result<Running> {
        spawn_as(
            ctx,
            &dir,
            &format!("worker-{i}"),
            &[
                "worker",
                "--store",
                &store,
                "--exit-when-idle",
                "--lease",
                "5s",
            ],
        )
    };
    // Worker 0 lives throughout (its memory is watched); 1 and 2 take turns
    // being killed.
    let mut workers: Vec<Option<Running>> =
        vec![Some(worker(0)?), Some(worker(1)?), Some(worker(2)?)];
    let mut spawned = 3;
    let started = Instant::now();
    let watched = |w: &Option<Running>| w.as_ref().and_then(Running::pid);
    let (mut base_server, mut base_worker) = (None, None);
    // The latest figures of each watched process while it runs.
    let (mut last_server, mut last_worker) = (None, None);
    let mut kills = 0u64;
    let mut exits_ok = true;
    let mut next_kill = started + Duration::from_secs(60);
    while started.elapsed() < length {
        std::thread::sleep(Duration::from_millis(500));
        for w in workers.iter_mut().flatten() {
            // Reaps one that finished (its pid is then gone).
            if w.pid().is_some() {
                if let Some(exit) = w.poll()? {
                    exits_ok &= exit.code == Some(0);
                }
            }
        }
        last_server = server.pid().and_then(usage).or(last_server);
        last_worker = watched(&workers[0]).and_then(usage).or(last_worker);
        if base_server.is_none() && started.elapsed() >= Duration::from_secs(60).min(length / 2) {
            (base_server, base_worker) = (last_server, last_worker);
        }
        if Instant::now() >= next_kill {
            let victim = 1 + (kills as usize % 2);
            if let Some(w) = workers[victim].take() {
                if w.pid().is_some() {
                    w.kill()?;
                    kills += 1;
                }
            }
            workers[victim] = Some(worker(spawned)?);
            spawned += 1;
            next_kill += Duration::from_secs(60);
        }
    }
    let (end_server, end_worker) = (last_server, last_worker);
    let soaked = started.elapsed();
    // The rest of the run: the surviving workers finish it and exit.
    for w in workers.into_iter().flatten() {
        if w.pid().is_some() {
            exits_ok &= w.wait()?.code == Some(0);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let results = dir.join("results.jsonl");
    let export = ["export", "job", "--store", &store, "--out", arg(&results)?];
    let exported = run(ctx, &dir, &export)?;
    anyhow::ensure!(
        exported.code == Some(0),
        "export failed: {}",
        exported.describe()
    );
    drop(server);
    let stats = mock.stats()?;

    let mut s = Scenario::new(
        "soak",
        format!(
            "{} units over {minutes} min at rpm {RPM} with 2% 500s and 1% resets; 3 workers, one killed -9 every minute ({kills} kills); sluice serve with 2 SSE clients",
            fmt_int(n)
        ),
    );
    check_units(&mut s, &results, n, true)?;
    s.check("the surviving workers exited 0", exits_ok);
    s.check(
        format!("no 429 ({} seen)", stats.rate_limited),
        stats.rate_limited == 0,
    );
    s.check(
        format!("a worker was killed every minute ({kills} in {minutes} min)"),
        kills + 1 >= minutes,
    );
    let seen = events.load(Ordering::Relaxed);
    s.check(
        format!("the SSE clients received events ({seen})"),
        seen > 0,
    );
    for (what, base, end) in [
        ("sluice serve", base_server, end_server),
        ("the unkilled worker", base_worker, end_worker),
    ] {
        match (base, end) {
            (Some((rss0, fd0)), Some((rss1, fd1))) => {
                s.check(
                    format!("{what}: RSS {rss0:.0} → {rss1:.0} MB after the first minute (≤ +{RSS_GROWTH_MB} MB)"),
                    rss1 - rss0 <= RSS_GROWTH_MB,
                );
                s.check(
                    format!("{what}: open files {fd0} → {fd1} (≤ +{FD_GROWTH})"),
                    fd1 - fd0 <= FD_GROWTH,
                );
            }
            _ => s.check(format!("{what} was measured at both ends"), false),
        }
    }
    let shared = stats.ok.saturating_sub(1) as f64 / super::runs::span_seconds(&stats) * 60.0;
    s.figure(Figure::new(
        "shared rate over the soak",
        RPM as f64,
        shared,
        |v| rate(v, "/min"),
        // What three workers reach in `scale-out` (slice handovers leave
        // part of each slot unused), less a margin for a loaded machine.
        Target::RatioAtLeast(0.66),
    ));
    s.note(format!(
        "soaked {:.0} s; the mock saw {} requests: {} ok, {} 500s, {} resets, {} duplicates (work a killed worker had in flight)",
        soaked.as_secs_f64(),
        stats.requests,
        stats.ok,
        stats.server_errors,
        stats.resets,
        stats.duplicate_requests
    ));
    Ok(s)
}
