//! Small helpers: a mock process, request files, the binary with a scratch store.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::watchdog::Watchdog;

/// Path of the binary under test.
pub(crate) fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sluice"))
}

/// A `sluice mock` child process, killed on drop.
pub(crate) struct Mock {
    child: Child,
    pub(crate) port: u16,
    _watchdog: Watchdog,
}

impl Mock {
    /// Starts `sluice mock --port 0 ARGS...` (the port ARGS give, if any)
    /// and waits for its address line.
    pub(crate) fn start(args: &[&str]) -> Mock {
        Mock::start_with_env(args, &[])
    }

    pub(crate) fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Mock {
        let mut cmd = Command::new(bin());
        cmd.arg("mock");
        if !args.contains(&"--port") {
            cmd.args(["--port", "0"]);
        }
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn mock");
        let stdout = child.stdout.take().expect("mock stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("mock address line");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        let port = addr.rsplit(':').next().unwrap().parse().unwrap();
        Mock {
            child,
            port,
            _watchdog: Watchdog::start(),
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub(crate) fn chat_url(&self) -> String {
        self.url("/v1/chat/completions")
    }

    /// What the mock has seen (`GET /_mock/stats`).
    pub(crate) fn stats(&self) -> Value {
        self.get_json("/_mock/stats")
    }

    /// The rates the mock's referee measured over windows of `window_ms`
    /// (`GET /_mock/stats?window_ms=N`, its `window` part).
    pub(crate) fn rates(&self, window_ms: u64) -> Value {
        self.get_json(&format!("/_mock/stats?window_ms={window_ms}"))["window"].clone()
    }

    /// The mock's journal of requests whose path starts with `prefix`
    /// (`GET /_mock/requests`; the mock needs `--journal N`).
    pub(crate) fn journal(&self, prefix: &str) -> Vec<Value> {
        let v = self.get_json(&format!("/_mock/requests?path={prefix}"));
        v["requests"].as_array().cloned().unwrap_or_default()
    }

    /// `GET path` on the mock, parsed as JSON.
    pub(crate) fn get_json(&self, path: &str) -> Value {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let body = response.split("\r\n\r\n").nth(1).expect("a body");
        serde_json::from_str(body).unwrap_or_else(|e| panic!("GET {path}: {body:?}: {e}"))
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scratch directory with a store, for one test.
pub(crate) struct Scratch {
    pub(crate) dir: tempfile::TempDir,
    _watchdog: Watchdog,
}

impl Scratch {
    pub(crate) fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().unwrap(),
            _watchdog: Watchdog::start(),
        }
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub(crate) fn store(&self) -> PathBuf {
        self.path("store/sluice.db")
    }

    /// `sluice ARGS... --store <scratch store>`, run in the scratch directory.
    pub(crate) fn sluice(&self, args: &[&str]) -> assert_cmd::Command {
        let mut cmd = assert_cmd::Command::new(bin());
        cmd.current_dir(self.dir.path())
            .args(args)
            .env("SLUICE_STORE", self.store())
            .env("SLUICE_PROGRESS_INTERVAL", "0")
            // Quick mode falls back on these; a developer's shell must not
            // send tests (or their keys) elsewhere.
            .env_remove("OPENAI_API_KEY")
            .env_remove("OPENAI_BASE_URL")
            .timeout(Duration::from_secs(120));
        cmd
    }

    /// `sluice run INPUT --url URL EXTRA...`, ready for more `.args` or `.output()`.
    pub(crate) fn run(&self, input: &Path, url: &str, extra: &[&str]) -> assert_cmd::Command {
        let mut cmd = self.sluice(&["run", input.to_str().unwrap(), "--url", url]);
        cmd.args(extra);
        cmd
    }

    /// Writes lines to a file and returns its path.
    pub(crate) fn write_lines(&self, name: &str, lines: &[String]) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        path
    }
}

/// `n` Batch API chat lines with ids `r-00000`… and metadata `{"i": i}`.
pub(crate) fn chat_lines(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| chat_line(&format!("r-{i:05}"), &format!("question number {i}"), i))
        .collect()
}

pub(crate) fn chat_line(id: &str, prompt: &str, i: usize) -> String {
    json!({
        "custom_id": id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "m", "messages": [{"role": "user", "content": prompt}], "max_tokens": 20},
        "metadata": {"i": i},
    })
    .to_string()
}

/// Parses a JSONL file.
pub(crate) fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect()
}

/// Parses stdout of a `--json` command.
pub(crate) fn json_stdout(output: &std::process::Output) -> Value {
    let text = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("stdout {text:?}: {e}"))
}

pub(crate) fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub(crate) fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// A port on 127.0.0.1 bound by a socket that does not listen (so connects
/// are refused) and kept bound while the returned guard lives.
pub(crate) fn refusing_port() -> (u16, OwnedFd) {
    // SAFETY: plain socket(2)/bind(2)/getsockname(2) on a fresh descriptor
    // that the OwnedFd then owns and closes.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0, "socket");
        let fd = OwnedFd::from_raw_fd(fd);
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let sa = &mut addr as *mut libc::sockaddr_in as *mut libc::sockaddr;
        assert_eq!(libc::bind(fd.as_raw_fd(), sa, len), 0, "bind");
        let mut got = len;
        assert_eq!(
            libc::getsockname(fd.as_raw_fd(), sa, &mut got),
            0,
            "getsockname"
        );
        (u16::from_be(addr.sin_port), fd)
    }
}

/// A port on 127.0.0.1 the test holds for its whole length, relaying each
/// connection to whichever local port it is pointed at: a server can be
/// replaced behind one address without freeing the port for another test
/// to be handed (a server stopped and restarted on its old port would).
pub(crate) struct Relay {
    pub(crate) port: u16,
    target: Arc<AtomicU16>,
    stop: Arc<AtomicBool>,
}

impl Relay {
    pub(crate) fn start(target: u16) -> Relay {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let to = Arc::new(AtomicU16::new(target));
        let stop = Arc::new(AtomicBool::new(false));
        let (to_, stop_) = (to.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop_.load(Ordering::SeqCst) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                // Refused by the target: the client sees its connection end.
                let Ok(server) = TcpStream::connect(("127.0.0.1", to_.load(Ordering::SeqCst)))
                else {
                    continue;
                };
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
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Relay {
            port,
            target: to,
            stop,
        }
    }

    /// Relays new connections to `target` from now on.
    pub(crate) fn point_to(&self, target: u16) {
        self.target.store(target, Ordering::SeqCst);
    }

    /// `http://127.0.0.1:PORT{path}` through the relay.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
