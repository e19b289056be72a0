//! `sluice serve` against the CLI: the same job of 10,000 items, run by
//! `sluice run` (the whole process) and submitted to a server that is already
//! listening, as `POST /v1/runs?wait=stream` with every item's result read
//! back as a server-sent event. Target: the server adds less than 10%.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::data::{fmt_int, write_items};
use super::harness::{Ctx, Mock};
use super::report::{Figure, Scenario, Target};
use super::runs::{check_exit, run_job, secs};

const JOB: &str = r#"
name = "bench"
concurrency = {concurrency}
[input]
path = "items.jsonl"
[providers.mock]
base_url = "{url}"
concurrency = {concurrency}
[[steps]]
name = "ask"
kind = "chat"
provider = "mock"
model = "m"
messages = [{ role = "user", content = "{{ item.q }}" }]
params = { max_tokens = 8 }
"#;

/// Tries on each side; the best counts (the machine is shared and noisy).
const TRIES: usize = 3;

/// A `sluice serve` child on 127.0.0.1, killed when dropped.
struct Server {
    child: std::process::Child,
    port: u16,
    /// The token it was started with.
    token: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(ctx: &Ctx, dir: &std::path::Path) -> anyhow::Result<Server> {
    super::harness::refuse_when_interrupted()?;
    let token = sluice_server::new_token().context("generating the server's token")?;
    // The job reads items.jsonl in `dir`: a submitted job needs leave for that.
    let mut child = Command::new(&ctx.bin)
        .args(["serve", "--bind", "127.0.0.1:0", "--store", "served.db"])
        .args(["--allow-dir", "."])
        .current_dir(dir)
        .env_remove("SLUICE_STORE")
        .env("SLUICE_TOKEN", &token)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting `sluice serve`")?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        BufReader::new(out).read_line(&mut line)?;
    }
    let port = line.trim().rsplit(':').next().and_then(|p| p.parse().ok());
    let Some(port) = port else {
        let _ = child.kill();
        bail!("`sluice serve` did not start: it printed {line:?}");
    };
    Ok(Server { child, port, token })
}

/// Submits `toml` with `?wait=stream` and reads the stream to its end:
/// (wall seconds, item events, whether a summary came last).
fn submit_streaming(port: u16, token: &str, toml: &str) -> anyhow::Result<(f64, u64, bool)> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(600)))?;
    write!(
        stream,
        "POST /v1/runs?wait=stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\nContent-Type: application/toml\r\nContent-Length: {}\r\n\r\n{toml}",
        toml.len()
    )?;
    let mut body = Vec::new();
    stream
        .read_to_end(&mut body)
        .context("reading the event stream")?;
    let wall = started.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&body);
    let items = text.matches("event: item\n").count() as u64;
    let summary = text
        .rfind("event: summary\n")
        .is_some_and(|at| !text[at..].contains("event: item\n"));
    Ok((wall, items, summary))
}

pub(super) fn server(ctx: &Ctx) -> anyhow::Result<Scenario> {
    let (n, latency_ms, concurrency) = (ctx.size(2_000u64, 10_000u64), 20u64, 100u64);
    let dir = ctx.dir("server")?;
    let mock = Mock::start(ctx, &["--latency-ms", &latency_ms.to_string()])?;
    write_items(&dir.join("items.jsonl"), n)?;
    let toml = JOB
        .replace("{concurrency}", &concurrency.to_string())
        .replace("{url}", &mock.url("/v1"));
    let server = serve(ctx, &dir)?;
    let mut s = Scenario::new(
        "server",
        format!(
            "job file, {} items × 1 chat step × {latency_ms} ms, concurrency {concurrency}: \
             `sluice run` vs POST /v1/runs?wait=stream to a listening `sluice serve`, every \
             result streamed back; best of {TRIES} each",
            fmt_int(n)
        ),
    );
    let (mut cli, mut served) = (f64::MAX, f64::MAX);
    let mut streams_complete = true;
    for _ in 0..TRIES {
        let exit = run_job(ctx, &dir, &toml)?;
        check_exit(&mut s, &exit, &[0]);
        cli = cli.min(exit.wall.as_secs_f64());
        let (wall, items, summary) = submit_streaming(server.port, &server.token, &toml)?;
        streams_complete &= items == n && summary;
        served = served.min(wall);
    }
    s.check(
        format!(
            "every stream carried {} item events, then its summary",
            fmt_int(n)
        ),
        streams_complete,
    );
    s.figure(
        Figure::new(
            "submit + stream wall time",
            cli,
            served,
            secs,
            Target::RatioBelow(1.10),
        )
        .bound_text(format!("CLI {}", secs(cli))),
    );
    Ok(s)
}
