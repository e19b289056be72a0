//! `sluice demo`: a bundled batch run against the built-in mock, in a
//! scratch directory, ending with the summary and a sample of the results.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use sluice_engine::{InputSource, QuickConfig};
use sluice_limit::Backoff;
use sluice_mock::{MockConfig, MockServer};

use crate::cli::DemoArgs;

/// Prompts the demo batch cycles through (examples/quickstart/prompts.txt).
const PROMPTS: &str = include_str!("../../examples/quickstart/prompts.txt");

pub(crate) fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let dir = std::env::temp_dir().join(format!("sluice-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = demo_in(&dir, args.items);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn demo_in(dir: &std::path::Path, items: u64) -> anyhow::Result<ExitCode> {
    // The mock: 40–80 ms per call, 3% of calls fail with a 500, and it
    // enforces 6,000 requests/minute the way a provider would.
    let mock_config = MockConfig {
        latency_ms: 40,
        jitter_ms: 40,
        rpm: Some(6_000),
        fail_rate: 0.03,
        seed: 7,
        ..MockConfig::default()
    };
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mock_thread = std::thread::spawn(move || -> anyhow::Result<sluice_mock::MockStats> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let server = MockServer::start(0, mock_config).await?;
            let _ = addr_tx.send(server.addr());
            let _ = stop_rx.await;
            let stats = server.stats();
            server.shutdown();
            Ok(stats)
        })
    });
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(10))
        .context("the built-in mock did not start")?;

    let prompts: Vec<&str> = PROMPTS.lines().filter(|l| !l.trim().is_empty()).collect();
    let input = dir.join("requests.jsonl");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&input)?);
    for i in 0..items {
        let prompt = prompts[i as usize % prompts.len()];
        let line = serde_json::json!({
            "custom_id": format!("q-{i:05}"),
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "mock-small",
                "messages": [{"role": "user", "content": prompt}],
                "max_tokens": 64,
            },
            "metadata": {"topic": i as usize % prompts.len()},
        });
        writeln!(file, "{line}")?;
    }
    file.flush()?;
    drop(file);

    eprintln!(
        "sluice demo: {items} chat requests → built-in mock at {addr} (40–80 ms latency, 3% errors, 6,000 rpm enforced)"
    );
    eprintln!(
        "             sent with --concurrency 32 --rpm 6000: the limiter paces, retries recover the errors\n"
    );
    let config = QuickConfig {
        input: InputSource::Path(input),
        url: format!("http://{addr}/v1/chat/completions"),
        concurrency: 32,
        grow_to_rate: false,
        rpm: Some(6_000),
        tpm: None,
        retries: 5,
        timeout: Duration::from_secs(10),
        api_key_env: None,
        store: dir.join("sluice.db").into(),
        fresh: true,
        skip_bad: false,
        name: Some("demo".into()),
        backoff: Backoff {
            base_ms: 100,
            cap_ms: 2_000,
        },
    };
    let (report, code) = super::run::execute(&config, 1.0, true)?;
    let out = dir.join("results.jsonl");
    // The scratch directory goes away at exit: the first line is shown below.
    let mut store = config.store.open()?;
    super::run::write_atomically(
        &mut *store,
        &report.run_id,
        &out,
        sluice_engine::ExportFormat::Jsonl,
    )?;
    let _ = stop_tx.send(());
    let stats = mock_thread
        .join()
        .map_err(|_| anyhow::anyhow!("the mock thread panicked"))??;
    eprintln!(
        "  mock saw   {} requests · {} ok · {} × 500 · {} × 429 · peak {} in flight",
        stats.requests, stats.ok, stats.server_errors, stats.rate_limited, stats.max_in_flight
    );
    let results = std::fs::read_to_string(&out)?;
    eprintln!("\nfirst result line (OpenAI Batch API output format):");
    if let Some(first) = results.lines().next() {
        println!("{first}");
    }
    eprintln!("\nTry it on your own file: sluice run requests.jsonl --url http://HOST/v1/chat/completions --rpm 3000 --out results.jsonl");
    Ok(code)
}
