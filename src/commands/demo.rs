//! `sluice demo`: examples/audio-pipeline, the richest example, run against
//! built-in mocks started in this process (three GPU hosts, one of them
//! flaky; an LLM API that is also the CMS and the webhook receiver), on
//! generated recordings, leaving its results in a directory to look at.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use sluice_engine::{Engine, JobConfig};
use sluice_mock::{MockConfig, MockServer, MockStats};
use sluice_server::{AppState, ServerConfig};
use sluice_store::StoreLocation;

use crate::cli::DemoArgs;

/// The example's job file; its fixed ports are replaced by the mocks'.
const JOB: &str = include_str!("../../examples/audio-pipeline/job.toml");

/// The ports the job file names: the LLM/CMS/webhook host, then the pool.
const PORTS: [u16; 4] = [9200, 9201, 9202, 9203];

/// Uploads larger than this are refused by the GPU hosts (413).
const MAX_UPLOAD: u64 = 16 * 1024;

/// The webhook secret when `HOOK_SECRET` is not set.
const SECRET: &str = "sluice-demo-secret";

/// What the mocks saw, collected before they stop.
struct Seen {
    gpu: Vec<(String, MockStats)>,
    llm: MockStats,
    transcripts: Vec<serde_json::Value>,
}

pub(crate) fn demo(args: DemoArgs, engine: &Engine) -> anyhow::Result<ExitCode> {
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("sluice-demo"));
    // A fresh directory each time, kept afterwards for looking at.
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir.join("audio"))
        .with_context(|| format!("creating {}", dir.display()))?;
    let long = write_recordings(&dir.join("audio"), args.items)?;
    let secret = std::env::var("HOOK_SECRET").unwrap_or_else(|_| SECRET.to_string());
    if std::env::var_os("HOOK_SECRET").is_none() {
        // Before any thread starts: the job reads its webhook key from here.
        std::env::set_var("HOOK_SECRET", &secret);
    }

    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mocks = std::thread::spawn(move || -> anyhow::Result<Seen> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let gpu = |fail_rate| MockConfig {
                latency_ms: 40,
                jitter_ms: 40,
                max_upload_bytes: Some(MAX_UPLOAD),
                fail_rate,
                seed: 3,
                ..MockConfig::default()
            };
            let llm = MockServer::start(
                0,
                MockConfig {
                    latency_ms: 60,
                    jitter_ms: 60,
                    completion_tokens: 60,
                    max_concurrency: Some(100),
                    hook_secret: Some(secret.into_bytes()),
                    ..MockConfig::default()
                },
            )
            .await?;
            let mut pool = Vec::new();
            // The last host fails 30% of its calls: its files stay on it (the
            // job's `affinity`), so its faults are retried there, not elsewhere.
            for fail_rate in [0.0, 0.0, 0.3] {
                pool.push(MockServer::start(0, gpu(fail_rate)).await?);
            }
            let mut addrs = vec![llm.addr()];
            addrs.extend(pool.iter().map(MockServer::addr));
            let _ = addr_tx.send(addrs);
            let _ = stop_rx.await;
            Ok(Seen {
                gpu: pool
                    .iter()
                    .map(|m| (m.addr().to_string(), m.stats()))
                    .collect(),
                llm: llm.stats(),
                transcripts: llm.items("transcripts"),
            })
        })
    });
    let addrs = addr_rx
        .recv_timeout(Duration::from_secs(10))
        .context("the built-in mocks did not start")?;
    let mut text = JOB.to_string();
    for (port, addr) in PORTS.iter().zip(&addrs) {
        text = text.replace(&format!("127.0.0.1:{port}"), &addr.to_string());
    }
    let job_path = dir.join("job.toml");
    std::fs::write(&job_path, text).with_context(|| format!("writing {}", job_path.display()))?;

    eprintln!(
        "sluice demo: examples/audio-pipeline on {} generated recordings ({} too long for the hosts)",
        args.items, long
    );
    eprintln!(
        "  GPU pool   {}, {}, {} (the last fails 30% of its calls)",
        addrs[1], addrs[2], addrs[3]
    );
    eprintln!(
        "  LLM API    {} (also the CMS and the webhook receiver)\n",
        addrs[0]
    );
    let job = sluice_spec::load(&job_path, &[])?;
    let store = dir.join(".sluice/sluice.db");
    let location = StoreLocation::from(store.clone());
    let config = JobConfig {
        store: location.clone(),
        fresh: true,
        skip_bad: false,
        sets: Vec::new(),
        lease: sluice_engine::DEFAULT_LEASE,
        queue_only: false,
        limit: None,
        early_stop: true,
    };
    let outcome = super::run::with_progress(engine, 1.0, true, &location, |p, on_start| {
        let hooks = sluice_engine::RunHooks {
            on_start: Some(on_start),
            ..Default::default()
        };
        sluice_engine::run_job_with(&job, &config, p, hooks)
    });
    let _ = stop_tx.send(());
    let seen = mocks
        .join()
        .map_err(|_| anyhow::anyhow!("the mock thread panicked"))??;
    let (report, code) = outcome?;
    let results = job.output.path.clone().unwrap_or(dir.join("results.jsonl"));
    let target = super::run::results_target(Some(&results), false)?;
    super::run::deliver(&location, &report, target, super::run::Ending::Text)?;
    let records = dir.join("transcripts.json");
    std::fs::write(&records, serde_json::to_string_pretty(&seen.transcripts)?)?;

    eprintln!("\n  what the fake services saw");
    for (addr, s) in &seen.gpu {
        eprintln!(
            "    GPU {addr}  {} calls · {} ok · {} × 500 · {} refused (too long)",
            s.requests, s.ok, s.server_errors, s.rejected
        );
    }
    eprintln!(
        "    LLM          {} calls · peak {} in flight (limit 100)",
        seen.llm.requests, seen.llm.max_in_flight
    );
    eprintln!(
        "    CMS          {} transcripts recorded, one per file that went through",
        seen.transcripts.len()
    );
    eprintln!(
        "    webhooks     {} received · {} with a valid signature",
        seen.llm.hooks.received, seen.llm.hooks.verified
    );
    let store_arg = format!("--store {}", store.display());
    eprintln!("\n  where to look");
    eprintln!(
        "    {}   one line per recording, every step's output or the error",
        results.display()
    );
    eprintln!("    {}   the records the pipeline wrote", records.display());
    eprintln!(
        "    {}   the job (ports pointed at the demo's mocks)",
        job_path.display()
    );
    eprintln!("    sluice status {} {store_arg}", report.run_id);
    eprintln!(
        "    sluice export {} {store_arg} --format csv",
        report.run_id
    );
    eprintln!("\n  the example itself: examples/audio-pipeline/README.md");
    if args.serve {
        serve_dashboard(&location, &dir, &report.run_id)?;
    } else {
        eprintln!("\n  the dashboard (the run's rates, limits, latency, errors and advice)");
        eprintln!("    sluice serve {store_arg}");
        eprintln!(
            "    then open the URL it prints (it carries the token), adding #run={}   (or run `sluice demo --serve`)",
            report.run_id
        );
    }
    // Refused recordings are part of the show: the demo worked when the run
    // completed; only an interruption changes the exit code.
    Ok(if report.interrupted {
        code
    } else {
        ExitCode::SUCCESS
    })
}

/// Serves the dashboard over the demo's store on a free loopback port until
/// Ctrl-C or SIGTERM.
fn serve_dashboard(store: &StoreLocation, dir: &Path, run_id: &str) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the server's runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("finding a free port on 127.0.0.1 for the dashboard")?;
        let addr = listener.local_addr()?;
        let token = sluice_server::new_token().context("generating the dashboard's token")?;
        eprintln!(
            "\n  the dashboard   http://{addr}/?token={token}#run={run_id}   (Ctrl-C stops it)"
        );
        let mut config = ServerConfig::new(store.clone());
        config.workdir = dir.to_path_buf();
        config.token = Some(token);
        config.bound = Some(addr);
        sluice_server::serve(
            listener,
            AppState::new(config),
            super::serve::stop_signal(),
            Duration::from_millis(200),
        )
        .await
        .context("serving the dashboard")
    })
}

/// Writes `n` fake call recordings (8 kHz mono 8-bit WAV, a tone each);
/// every sixth is a long call past the hosts' upload limit. Returns how many
/// are long.
fn write_recordings(dir: &Path, n: u64) -> anyhow::Result<u64> {
    let mut long = 0;
    for i in 1..=n {
        let samples = if i % 6 == 0 {
            long += 1;
            20_000
        } else {
            2_000 + (i % 5) * 600
        };
        let path: PathBuf = dir.join(format!("call-{i:04}.wav"));
        std::fs::write(&path, wav(i, samples as u32))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(long)
}

/// A WAV file of `samples` 8-bit samples of a tone chosen by `i`.
fn wav(i: u64, samples: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(44 + samples as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + samples).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&8_000u32.to_le_bytes());
    out.extend_from_slice(&8_000u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&8u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&samples.to_le_bytes());
    let freq = 200.0 + 40.0 * (i % 10) as f64;
    out.extend((0..samples).map(|t| {
        let phase = 2.0 * std::f64::consts::PI * freq * f64::from(t) / 8_000.0;
        (128.0 + 100.0 * phase.sin()) as u8
    }));
    out
}
