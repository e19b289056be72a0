//! The parts every scenario uses: a `sluice mock` child process, `sluice run`
//! children measured with wait4(2), and a scratch directory per scenario.
//!
//! Client and server are separate processes of this same binary, so neither
//! shares a runtime (or a CPU account) with the other or with the bench.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;
use sluice_mock::MockStats;

/// Where the suite runs: the binary under test and a scratch directory that
/// is removed when the suite ends.
pub(super) struct Ctx {
    pub(super) bin: PathBuf,
    pub(super) quick: bool,
    root: PathBuf,
}

impl Ctx {
    pub(super) fn new(quick: bool) -> anyhow::Result<Ctx> {
        let bin = std::env::current_exe().context("finding the sluice binary to benchmark")?;
        sweep_leftovers();
        let root = std::env::temp_dir().join(format!("{SCRATCH_PREFIX}{}", std::process::id()));
        std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        remove_on_interrupt(root.clone());
        Ok(Ctx { bin, quick, root })
    }

    /// A fresh, empty directory for one scenario (or one part of it).
    pub(super) fn dir(&self, name: &str) -> anyhow::Result<PathBuf> {
        let dir = self.root.join(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(dir)
    }

    /// Removes every scenario's directory (the memory scenario's alone holds
    /// over a gigabyte at full size).
    pub(super) fn clear(&self) {
        if let Ok(entries) = std::fs::read_dir(&self.root) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }

    /// The quick or the full size of something.
    pub(super) fn size<T>(&self, quick: T, full: T) -> T {
        if self.quick {
            quick
        } else {
            full
        }
    }
}

/// Scratch directories are `$TMPDIR/sluice-bench-<pid>`.
const SCRATCH_PREFIX: &str = "sluice-bench-";

/// Removes the scratch directories of earlier suites whose process is gone
/// (killed with `kill -9`, or a machine that went down): the memory
/// scenario's alone holds over a gigabyte.
fn sweep_leftovers() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(SCRATCH_PREFIX))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            continue;
        };
        // SAFETY: signal 0 only asks whether the process exists.
        let gone = unsafe { libc::kill(pid, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Set once Ctrl-C was pressed: what is measured after it is not reported.
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether the suite was interrupted: stop, remove the scratch directory
/// (drop the [`Ctx`]) and exit 130.
pub(super) fn interrupted() -> bool {
    INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst)
}

/// After Ctrl-C no child starts: one started now would not have had the
/// signal, and could outlive the suite.
pub(super) fn refuse_when_interrupted() -> anyhow::Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

/// Ctrl-C ends the suite without unwinding, so [`Ctx`]'s drop would not
/// run: a watcher thread marks the suite interrupted (the suite's thread then
/// removes the scratch directory and exits 130) and, should the suite not
/// get there, does it itself after a while. The
/// children (mock, runs) are in the terminal's foreground process group too
/// and get the signal themselves. (Other signals leave the directory to the
/// next suite's [`sweep_leftovers`].)
fn remove_on_interrupt(root: PathBuf) {
    let watcher = move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(async {
            if tokio::signal::ctrl_c().await.is_err() {
                return;
            }
            INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
            eprintln!("bench: interrupted; cleaning up {}", root.display());
            // The suite's thread cleans up once the scenario's children have
            // stopped (a run gets 5 s to finish its calls and may write its
            // results there meanwhile); this is in case it never returns.
            tokio::time::sleep(Duration::from_secs(15)).await;
            let _ = std::fs::remove_dir_all(&root);
            std::process::exit(130);
        });
    };
    let _ = std::thread::Builder::new()
        .name("bench-interrupt".into())
        .spawn(watcher);
}

impl Drop for Ctx {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// A `sluice mock --port 0 ...` child, killed when dropped.
pub(super) struct Mock {
    child: Child,
    pub(super) addr: SocketAddr,
}

/// The slack a `--quick` mock gives its `--rpm`/`--tpm` checks: `--quick`
/// is CI's smoke test on loaded machines, where a stalled process bunches
/// requests paced 50 ms apart; the full run keeps the strict default (25 ms).
const QUICK_SLACK: [&str; 2] = ["--slack-ms", "100"];

impl Mock {
    /// Starts the mock with `args` and waits for its `listening on ADDR` line.
    pub(super) fn start(ctx: &Ctx, args: &[&str]) -> anyhow::Result<Mock> {
        refuse_when_interrupted()?;
        let limited = args.iter().any(|a| matches!(*a, "--rpm" | "--tpm"));
        let slack: &[&str] = if ctx.quick && limited {
            &QUICK_SLACK
        } else {
            &[]
        };
        let mut child = Command::new(&ctx.bin)
            .args(["mock", "--port", "0"])
            .args(args)
            .args(slack)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting `sluice mock`")?;
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            BufReader::new(out)
                .read_line(&mut line)
                .context("reading the mock's address")?;
        }
        let addr = line.trim().strip_prefix("listening on ").map(str::parse);
        let Some(Ok(addr)) = addr else {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "`sluice mock {}` did not start: it printed {line:?}",
                args.join(" ")
            );
        };
        Ok(Mock { child, addr })
    }

    pub(super) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub(super) fn chat_url(&self) -> String {
        self.url("/v1/chat/completions")
    }

    /// What the mock has seen (`GET /_mock/stats`).
    pub(super) fn stats(&self) -> anyhow::Result<MockStats> {
        let body = self.request("GET", "/_mock/stats")?;
        serde_json::from_str(&body).with_context(|| format!("the mock's stats {body:?}"))
    }

    /// Zeroes the stats and restarts the mock's limiters.
    pub(super) fn reset(&self) -> anyhow::Result<()> {
        self.request("POST", "/_mock/reset").map(drop)
    }

    fn request(&self, method: &str, path: &str) -> anyhow::Result<String> {
        let context = || format!("{method} {path} on the mock at {}", self.addr);
        let mut stream = TcpStream::connect(self.addr).with_context(context)?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .with_context(context)?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.addr
        )
        .with_context(context)?;
        let mut response = String::new();
        stream.read_to_string(&mut response).with_context(context)?;
        match response.split_once("\r\n\r\n") {
            Some((head, body)) if head.starts_with("HTTP/1.1 2") => Ok(body.to_string()),
            _ => bail!("{}: unexpected answer {response:?}", context()),
        }
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How a `sluice` child ended, with its own resource use.
#[derive(Debug)]
pub(super) struct Exit {
    /// `None` when a signal ended it.
    pub(super) code: Option<i32>,
    pub(super) wall: Duration,
    /// User + system CPU of the child (all its threads).
    pub(super) cpu: Duration,
    pub(super) peak_rss_mb: f64,
    pub(super) stdout: String,
    pub(super) stderr: String,
}

impl Exit {
    /// The `--json` summary the child printed on stdout.
    pub(super) fn summary(&self) -> anyhow::Result<Value> {
        serde_json::from_str(self.stdout.trim()).with_context(|| {
            format!(
                "the run printed no JSON summary (exit {:?}): {}",
                self.code,
                self.stderr.trim()
            )
        })
    }

    /// `recorded.<field>` of the summary, 0 when absent.
    pub(super) fn recorded(&self, field: &str) -> u64 {
        self.summary()
            .ok()
            .and_then(|s| s["recorded"][field].as_u64())
            .unwrap_or(0)
    }

    /// A short reason for a failed exit, for the report.
    pub(super) fn describe(&self) -> String {
        let last = self.stderr.lines().last().unwrap_or("").trim();
        match self.code {
            Some(code) => format!("exit {code}: {last}"),
            None => "killed by a signal".into(),
        }
    }
}

/// A `sluice` child still running; killed and reaped when dropped.
pub(super) struct Running {
    child: Option<Child>,
    started: Instant,
    stdout: PathBuf,
    stderr: PathBuf,
}

/// Starts `sluice ARGS...` in `dir`, stdout and stderr to files there.
pub(super) fn spawn(ctx: &Ctx, dir: &Path, args: &[&str]) -> anyhow::Result<Running> {
    spawn_as(ctx, dir, "sluice", args)
}

/// [`spawn`], its output in DIR/`name`.stdout and .stderr (several at once).
pub(super) fn spawn_as(
    ctx: &Ctx,
    dir: &Path,
    name: &str,
    args: &[&str],
) -> anyhow::Result<Running> {
    let stdout = dir.join(format!("{name}.stdout"));
    let stderr = dir.join(format!("{name}.stderr"));
    let file =
        |p: &Path| std::fs::File::create(p).with_context(|| format!("creating {}", p.display()));
    refuse_when_interrupted()?;
    let started = Instant::now();
    let mut command = Command::new(&ctx.bin);
    // SAFETY: the hook does nothing, so it is trivially async-signal-safe.
    // Its presence makes std fork + exec instead of posix_spawn's vfork: a
    // vforked child's ru_maxrss starts at the parent's peak (the bench's own,
    // after building the load generator's requests), a forked one only at
    // what the parent holds at the moment (a few MB).
    unsafe {
        command.pre_exec(|| Ok(()));
    }
    // What the bench freed (the load generator's requests, parsed results)
    // may still be mapped by malloc; hand it back so the fork copies little.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap memory to the system.
    unsafe {
        libc::malloc_trim(0);
    }
    let child = command
        .current_dir(dir)
        .args(args)
        // The bench passes everything explicitly; the user's settings must not leak in.
        .env_remove("SLUICE_STORE")
        .env_remove("SLUICE_URL")
        .env("SLUICE_PROGRESS_INTERVAL", "0")
        .stdin(Stdio::null())
        .stdout(file(&stdout)?)
        .stderr(file(&stderr)?)
        .spawn()
        .with_context(|| format!("starting `sluice {}`", args.join(" ")))?;
    Ok(Running {
        child: Some(child),
        started,
        stdout,
        stderr,
    })
}

/// Runs `sluice ARGS...` in `dir` to its end.
pub(super) fn run(ctx: &Ctx, dir: &Path, args: &[&str]) -> anyhow::Result<Exit> {
    spawn(ctx, dir, args)?.wait()
}

impl Running {
    /// Waits for the child and collects what it used.
    pub(super) fn wait(mut self) -> anyhow::Result<Exit> {
        let Some(child) = self.child.take() else {
            bail!("the child was already reaped");
        };
        let (status, usage) = wait4(child.id(), false)?.context("wait4 returned no child")?;
        self.exit(status, &usage)
    }

    /// Whether the child has ended, reaping it if so.
    pub(super) fn poll(&mut self) -> anyhow::Result<Option<Exit>> {
        let Some(child) = &self.child else {
            bail!("the child was already reaped");
        };
        match wait4(child.id(), true)? {
            None => Ok(None),
            Some((status, usage)) => {
                self.child = None;
                self.exit(status, &usage).map(Some)
            }
        }
    }

    /// The child's pid while it has not been reaped.
    pub(super) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `kill -9`, then reaps it.
    pub(super) fn kill(mut self) -> anyhow::Result<Exit> {
        if let Some(child) = &mut self.child {
            child.kill().context("sending SIGKILL")?;
        }
        self.wait()
    }

    fn exit(&self, status: libc::c_int, usage: &libc::rusage) -> anyhow::Result<Exit> {
        let wall = self.started.elapsed();
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        Ok(Exit {
            code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
            wall,
            cpu: Duration::from_secs_f64(secs(usage.ru_utime) + secs(usage.ru_stime)),
            // Kilobytes on Linux.
            peak_rss_mb: usage.ru_maxrss as f64 / 1024.0,
            stdout: read(&self.stdout),
            stderr: read(&self.stderr),
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = wait4(child.id(), false);
        }
    }
}

/// wait4(2) on our own child: its status and resource use, or `None` with
/// `nohang` while it still runs.
fn wait4(pid: u32, nohang: bool) -> anyhow::Result<Option<(libc::c_int, libc::rusage)>> {
    let pid = libc::pid_t::try_from(pid).context("child pid out of range")?;
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain old data; all-zero is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let flags = if nohang { libc::WNOHANG } else { 0 };
    loop {
        // SAFETY: `pid` is an unreaped child of this process and both
        // pointers are valid for writes for the duration of the call.
        let r = unsafe { libc::wait4(pid, &mut status, flags, &mut usage) };
        match r {
            0 => return Ok(None),
            r if r == pid => return Ok(Some((status, usage))),
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e).context("waiting for a sluice child");
                }
            }
        }
    }
}

/// Resident memory of this process now, in MB (from /proc; 0 if unreadable).
///
/// A forked child's `ru_maxrss` starts at what its parent held at the fork,
/// so this is a floor under the child's figure (see [`spawn`]).
pub(super) fn own_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The path as a `&str` argument (scratch paths are ours and UTF-8).
pub(super) fn arg(path: &Path) -> anyhow::Result<&str> {
    path.to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))
}
