//! The raw load generator: the bound of the overhead scenario, so it must be
//! honestly fast.
//!
//! One thread (a current-thread runtime, like `wrk -t1`), `concurrency`
//! kept-alive connections opened before the clock starts, each writing a
//! prebuilt request in one system call and reading its response (head parsed
//! by `httparse`, body skipped by `Content-Length`); nothing is parsed,
//! recorded or allocated per call. BENCHMARKS.md compares it with wrk.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What one load run achieved.
#[derive(Debug, Clone, Copy)]
pub(super) struct Load {
    /// Responses with status 200.
    pub(super) ok: u64,
    /// Responses with any other status.
    pub(super) other: u64,
    /// From the first request written to the last response read.
    pub(super) elapsed: Duration,
    /// CPU time of the generator's thread, user + system.
    pub(super) cpu: Duration,
}

/// The requests, prebuilt: one buffer and each request's range in it.
///
/// Two large allocations instead of one per request, so the memory goes back
/// to the system when they are dropped: a child forked later starts its peak
/// RSS at what the bench holds (see `harness::spawn`).
struct Requests {
    bytes: Vec<u8>,
    ranges: Vec<(usize, usize)>,
}

/// POSTs the body of each line of the Batch API file `input` once to
/// `http://addr{path}` over `concurrency` connections, on a thread of its own.
pub(super) fn run(
    addr: SocketAddr,
    path: &str,
    input: &Path,
    concurrency: usize,
) -> anyhow::Result<Load> {
    let context = || format!("reading {}", input.display());
    let file = std::fs::File::open(input).with_context(context)?;
    let mut requests = Requests {
        bytes: Vec::new(),
        ranges: Vec::new(),
    };
    for line in std::io::BufReader::new(file).lines() {
        let line: serde_json::Value = serde_json::from_str(&line.with_context(context)?)?;
        // Serialized as sluice sends it: compact JSON.
        let body = line["body"].to_string();
        let start = requests.bytes.len();
        write!(
            requests.bytes,
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        requests.ranges.push((start, requests.bytes.len()));
    }
    let requests = Arc::new(requests);
    std::thread::Builder::new()
        .name("bench-loadgen".into())
        .spawn(move || generate(addr, requests, concurrency))
        .context("starting the load generator thread")?
        .join()
        .map_err(|_| anyhow::anyhow!("the load generator panicked"))?
}

fn generate(addr: SocketAddr, requests: Arc<Requests>, concurrency: usize) -> anyhow::Result<Load> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .context("starting the load generator's runtime")?;
    runtime.block_on(async move {
        let mut streams = Vec::with_capacity(concurrency);
        for _ in 0..concurrency {
            let stream = TcpStream::connect(addr)
                .await
                .with_context(|| format!("connecting to the mock at {addr}"))?;
            stream.set_nodelay(true).context("setting TCP_NODELAY")?;
            streams.push(stream);
        }
        let next = Arc::new(AtomicUsize::new(0));
        let cpu_before = thread_cpu();
        let started = Instant::now();
        let tasks: Vec<_> = streams
            .into_iter()
            .map(|s| tokio::spawn(connection(s, requests.clone(), next.clone())))
            .collect();
        let (mut ok, mut other) = (0, 0);
        for task in tasks {
            let (o, x) = task
                .await
                .context("a load generator connection panicked")?
                .context("a load generator connection failed")?;
            ok += o;
            other += x;
        }
        Ok(Load {
            ok,
            other,
            elapsed: started.elapsed(),
            cpu: thread_cpu().saturating_sub(cpu_before),
        })
    })
}

/// One connection: takes the next request until none are left.
async fn connection(
    mut stream: TcpStream,
    requests: Arc<Requests>,
    next: Arc<AtomicUsize>,
) -> anyhow::Result<(u64, u64)> {
    let mut buf = vec![0u8; 16 * 1024];
    let (mut ok, mut other) = (0u64, 0u64);
    while let Some(&(start, end)) = requests.ranges.get(next.fetch_add(1, Relaxed)) {
        stream.write_all(&requests.bytes[start..end]).await?;
        let mut filled = 0;
        let (code, total) = loop {
            let n = stream.read(&mut buf[filled..]).await?;
            anyhow::ensure!(n > 0, "the mock closed a connection mid-response");
            filled += n;
            if let Some(head) = parse_head(&buf[..filled])? {
                break head;
            }
            if filled == buf.len() {
                buf.resize(buf.len() * 2, 0);
            }
        };
        if total > buf.len() {
            buf.resize(total, 0);
        }
        while filled < total {
            let n = stream.read(&mut buf[filled..total]).await?;
            anyhow::ensure!(n > 0, "the mock closed a connection mid-body");
            filled += n;
        }
        if code == 200 {
            ok += 1;
        } else {
            other += 1;
        }
    }
    Ok((ok, other))
}

/// (status, head + body length) once the head is complete.
fn parse_head(data: &[u8]) -> anyhow::Result<Option<(u16, usize)>> {
    let mut slots = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut slots);
    let head = match response.parse(data).context("the mock sent invalid HTTP")? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let length = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| {
            std::str::from_utf8(h.value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        })
        .context("the mock's response has no Content-Length")?;
    Ok(Some((response.code.unwrap_or(0), head + length)))
}

/// CPU time of the calling thread so far.
fn thread_cpu() -> Duration {
    // SAFETY: rusage is plain old data; all-zero is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the pointer is valid for writes; RUSAGE_THREAD is Linux's.
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_measured_with_their_body() {
        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(parse_head(reply).unwrap(), Some((200, reply.len())));
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-le").unwrap(), None);
        assert!(parse_head(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
    }

    #[test]
    fn every_line_is_sent_once_and_answered() {
        let dir = std::env::temp_dir().join(format!("sluice-bench-loadgen-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let input = dir.join("in.jsonl");
        super::super::data::write_requests(&input, 300, &|i| i as usize, 16).unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let mock = runtime
            .block_on(sluice_mock::MockServer::start(0, Default::default()))
            .unwrap();
        let load = run(mock.addr(), "/v1/chat/completions", &input, 8).unwrap();
        assert_eq!((load.ok, load.other), (300, 0));
        let stats = mock.stats();
        // Each body once, each parsed by the mock as a valid chat request.
        assert_eq!((stats.ok, stats.bad_requests), (300, 0));
        assert_eq!(stats.duplicate_requests, 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
