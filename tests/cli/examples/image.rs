//! examples/image-service: `sluice serve` takes a batch of images with the
//! job (one multipart request), streams each result back as it finishes
//! while 4 run at once, answers the same batch at once with `wait=all`, and
//! leaves no temporary file behind; a client that leaves mid-stream loses
//! nothing.
//!
//! The image model is an in-test host that holds every answer until the
//! test releases it, so "as it finishes" is checked without any clock: the
//! test releases one image, then must receive that image's event before it
//! releases the next (a stream that waited for the end would hang here).

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::Example;
use crate::serve::Serve;
use crate::util::*;

/// Images in flight at once: the server's default for a submitted job that
/// sets no `concurrency` (the example's `run.sh` starts it so).
const N: usize = 4;

/// `sluice serve` as the example's `run.sh` starts it: N workers a job.
const WORKERS: &[&str] = &["--default-concurrency", "4", "--max-concurrency", "4"];

#[test]
fn image_service_streams_each_image_as_it_finishes_and_leaves_no_temp_files() {
    let ex = Example::copy("image-service");
    let model = Model::start();
    ex.point_to(9500, model.port);
    let server = Serve::start(&ex.s, WORKERS, &[]);
    let images = images(&ex);
    assert!(images.len() > 2 * N, "the example sends more images than N");
    let (content_type, body) = form(&ex.job, &images);

    // wait=stream, every answer held until released.
    model.hold(true);
    let mut sse = Sse::open(&server, "/v1/runs?wait=stream", &content_type, &body);
    let first = sse.next().expect("the run event");
    assert_eq!(first.0, "run", "{first:?}");
    let run = first.1["id"].as_str().unwrap().to_owned();
    // Release, each time, the last-named image in flight (never the input
    // order), once the host has as many in flight as the job allows.
    let mut released = Vec::new();
    let mut streamed = Vec::new();
    for k in 0..images.len() {
        let pick = model.pending_when(N.min(images.len() - k));
        model.release(&pick);
        released.push(stem(&pick));
        let (event, data) = sse.next_not_progress().expect("an item event");
        assert_eq!(event, "item", "{data}");
        assert_eq!(
            data["id"], released[k],
            "events come in the order the images finished"
        );
        streamed.push(data);
    }
    let mut input_order = released.clone();
    input_order.sort();
    assert_ne!(released, input_order, "the test finished them out of order");
    let (event, summary) = sse.next_not_progress().expect("the summary");
    assert_eq!(event, "summary", "{summary}");
    assert_eq!(summary["id"], run);
    assert_eq!(summary["state"], "finished", "{summary}");
    assert_eq!(summary["counts"]["done"], images.len());
    assert!(sse.next().is_none(), "the summary is the last event");
    assert_eq!(model.max_in_flight(), N, "N images at once, never more");
    for (result, image) in streamed.iter().zip(&released) {
        check_result(result, &ex.path("images").join(format!("{image}.png")));
    }
    assert_eq!(
        uploads_left(&ex),
        0,
        "the run's files are gone once it ended"
    );

    // The same batch with wait=all: one answer, input order, same results.
    model.hold(false);
    let (status, text) = post(&server, "/v1/runs?wait=all", &content_type, &body);
    assert_eq!(status, 200, "{text}");
    let all: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(all["run"]["state"], "finished", "{all}");
    assert_ne!(all["run"]["id"], run.as_str(), "a new run");
    let results = all["results"].as_array().unwrap();
    let ids: Vec<&str> = results.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, input_order, "wait=all answers in input order");
    for result in results {
        let same = streamed.iter().find(|s| s["id"] == result["id"]).unwrap();
        assert_eq!(result["status"], same["status"]);
        assert_eq!(
            result["steps"]["describe"]["json"], same["steps"]["describe"]["json"],
            "the same answer both ways"
        );
    }
    assert_eq!(uploads_left(&ex), 0);
}

#[test]
fn a_client_that_leaves_mid_stream_leaves_the_run_to_finish() {
    let ex = Example::copy("image-service");
    let model = Model::start();
    ex.point_to(9500, model.port);
    let server = Serve::start(&ex.s, WORKERS, &[]);
    let images = images(&ex);
    let (content_type, body) = form(&ex.job, &images);
    model.hold(true);
    let mut sse = Sse::open(&server, "/v1/runs?wait=stream", &content_type, &body);
    let run = sse.next().unwrap().1["id"].as_str().unwrap().to_owned();
    let pick = model.pending_when(N);
    model.release(&pick);
    assert_eq!(sse.next_not_progress().unwrap().1["id"], stem(&pick));
    drop(sse); // The client goes away with 11 images to go.
    model.hold(false);

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, text) = server.http("GET", &format!("/v1/runs/{run}"), &[], "");
        let view: Value = serde_json::from_str(&text).unwrap();
        if view["state"] == "finished" {
            assert_eq!(view["counts"]["done"], images.len(), "{view}");
            break;
        }
        assert!(Instant::now() < deadline, "{view}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, lines) = server.http("GET", &format!("/v1/runs/{run}/results"), &[], "");
    assert_eq!(status, 200, "{lines}");
    let results: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), images.len());
    for (result, image) in results.iter().zip(&images) {
        assert_eq!(result["id"], stem(image));
        check_result(result, image);
    }
    assert_eq!(uploads_left(&ex), 0);
}

#[test]
fn the_compare_script_submits_both_ways_against_the_mock() {
    if std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: no python3 to run examples/image-service/compare.py");
        return;
    }
    let ex = Example::copy("image-service");
    // The example's mock, faster (run.sh: 300-900 ms an image).
    let mock = Mock::start(&["--latency-ms", "20", "--jitter-ms", "60", "--seed", "8"]);
    ex.point(9500, &mock);
    let server = Serve::start(
        &ex.s,
        &[
            "--store",
            ".sluice/sluice.db",
            "--default-concurrency",
            "4",
            "--max-concurrency",
            "4",
        ],
        &[],
    );
    let out = std::process::Command::new("python3")
        .arg(ex.path("compare.py"))
        .args(["--server", &format!("http://127.0.0.1:{}", server.port)])
        .arg("--json")
        .env("SLUICE_TOKEN", server.token.as_deref().unwrap_or_default())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let figures = json_stdout(&out);
    let images = images(&ex);
    assert_eq!(figures["images"], images.len());
    assert_eq!(figures["same_results"], true, "{figures}");
    assert_eq!(figures["complete"], true, "{figures}");
    let arrivals = figures["stream"]["arrivals"].as_array().unwrap();
    assert_eq!(arrivals.len(), images.len());
    assert!(arrivals.iter().all(|a| a[2] == "done"), "{figures}");
    let stems: Vec<String> = images.iter().map(stem).collect();
    assert_eq!(figures["all"]["order"], json!(stems));
    let (first, total) = (&figures["stream"]["first_s"], &figures["stream"]["total_s"]);
    assert!(
        first.as_f64().unwrap() <= total.as_f64().unwrap(),
        "{figures}"
    );
    // The mock saw each image twice (once per mode) and every upload whole.
    let stats = mock.stats();
    assert_eq!(u(&stats["ok"]), 2 * images.len() as u64, "{stats}");
    let left = std::fs::read_dir(ex.path(".sluice/uploads"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| std::fs::read_dir(e.path()).unwrap().count())
        .sum::<usize>();
    assert_eq!(left, 0, "no upload directory left");
}

/// The example's images, sorted (the input order).
fn images(ex: &Example) -> Vec<PathBuf> {
    let mut images: Vec<PathBuf> = std::fs::read_dir(ex.path("images"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    images.sort();
    images
}

fn stem(path: impl AsRef<Path>) -> String {
    path.as_ref()
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// The image model's answer for `image` is about exactly that file's bytes.
fn check_result(result: &Value, image: &Path) {
    let bytes = std::fs::read(image).unwrap();
    assert_eq!(result["status"], "done", "{result}");
    let answer = &result["steps"]["describe"]["json"];
    assert_eq!(
        answer["file"],
        json!({"field": "image", "name": format!("{}.png", stem(image)), "type": "image/png", "bytes": bytes.len()}),
        "{result}"
    );
    assert_eq!(answer["fields"], json!({"detail": "low"}));
    assert_eq!(
        answer["checksum"],
        format!("{:016x}", fnv(&bytes)),
        "{result}"
    );
}

/// Run directories left under the store's `uploads/`.
fn uploads_left(ex: &Example) -> usize {
    let root = ex.s.store().parent().unwrap().join("uploads");
    std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| std::fs::read_dir(e.path()).unwrap().count())
        .sum()
}

/// The submission as a form: the job as the part `job`, each image a part.
fn form(job: &Path, images: &[PathBuf]) -> (String, Vec<u8>) {
    let boundary = "sluice-test-4f1c9a";
    let mut body = Vec::new();
    let mut part = |name: &str, file: &str, kind: &str, data: &[u8]| {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{file}\"\r\nContent-Type: {kind}\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    };
    part(
        "job",
        "job.toml",
        "application/toml",
        &std::fs::read(job).unwrap(),
    );
    for image in images {
        let name = image.file_name().unwrap().to_string_lossy();
        part("image", &name, "image/png", &std::fs::read(image).unwrap());
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// `POST path` with a binary body; (status, body).
fn post(server: &Serve, path: &str, content_type: &str, body: &[u8]) -> (u16, String) {
    server.http_bytes(
        "POST",
        path,
        &[&format!("Content-Type: {content_type}")],
        body,
    )
}

/// A server-sent event stream read from a raw connection (chunked framing
/// undone as it arrives).
struct Sse {
    reader: BufReader<TcpStream>,
    text: String,
    /// When reading it must have ended: progress keeps coming while a run
    /// lives, so each read's timeout alone would not end a wait for an
    /// event that never comes.
    deadline: Instant,
}

impl Sse {
    fn open(server: &Serve, path: &str, content_type: &str, body: &[u8]) -> Sse {
        let port = server.port;
        let auth = server.auth().map(|a| a + "\r\n").unwrap_or_default();
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        write!(
            stream,
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        stream.write_all(body).unwrap();
        let mut reader = BufReader::new(stream);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push_str(&line);
        }
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("transfer-encoding: chunked"),
            "{head}"
        );
        Sse {
            reader,
            text: String::new(),
            deadline: Instant::now() + Duration::from_secs(180),
        }
    }

    /// The next event (name, data); `None` once the stream has ended.
    fn next(&mut self) -> Option<(String, Value)> {
        loop {
            assert!(
                Instant::now() < self.deadline,
                "the event stream was still open after 180 s"
            );
            if let Some(end) = self.text.find("\n\n") {
                let block: String = self.text.drain(..end + 2).collect();
                let mut name = String::new();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        name = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push_str(v);
                    }
                }
                if name.is_empty() {
                    continue; // a keep-alive comment
                }
                return Some((name, serde_json::from_str(&data).unwrap()));
            }
            let mut size = String::new();
            if self.reader.read_line(&mut size).unwrap_or(0) == 0 {
                return None;
            }
            let n = usize::from_str_radix(size.trim(), 16).expect("a chunk size");
            if n == 0 {
                return None;
            }
            let mut chunk = vec![0; n + 2];
            self.reader.read_exact(&mut chunk).unwrap();
            self.text.push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    }

    fn next_not_progress(&mut self) -> Option<(String, Value)> {
        loop {
            match self.next()? {
                (name, _) if name == "progress" => continue,
                event => return Some(event),
            }
        }
    }
}

/// The fake image model: `POST /stages/describe` with a multipart image,
/// answered like `sluice mock`'s stages (`{id, stage, file, fields}`) plus a
/// checksum of the bytes it received. While held, each answer waits for
/// [`Model::release`].
struct Model {
    port: u16,
    shared: Arc<(Mutex<Seen>, Condvar)>,
}

#[derive(Default)]
struct Seen {
    hold: bool,
    /// File names that arrived and are not answered yet.
    pending: Vec<String>,
    released: HashSet<String>,
    in_flight: usize,
    max_in_flight: usize,
}

impl Model {
    fn start() -> Model {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new((Mutex::new(Seen::default()), Condvar::new()));
        let s = shared.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let s = s.clone();
                std::thread::spawn(move || answer(stream, &s));
            }
        });
        Model { port, shared }
    }

    fn hold(&self, hold: bool) {
        let (lock, wake) = &*self.shared;
        lock.lock().unwrap().hold = hold;
        wake.notify_all();
    }

    fn release(&self, name: &str) {
        let (lock, wake) = &*self.shared;
        lock.lock().unwrap().released.insert(name.to_owned());
        wake.notify_all();
    }

    /// Once `n` images wait for an answer: the last-named of them.
    fn pending_when(&self, n: usize) -> String {
        let (lock, wake) = &*self.shared;
        let seen = lock.lock().unwrap();
        // Released answers still on their way out are not waiting.
        let waiting = |s: &Seen| {
            s.pending
                .iter()
                .filter(|p| !s.released.contains(*p))
                .cloned()
                .collect::<Vec<_>>()
        };
        let (seen, timeout) = wake
            .wait_timeout_while(seen, Duration::from_secs(60), |s| waiting(s).len() < n)
            .unwrap();
        let waiting = waiting(&seen);
        assert!(
            !timeout.timed_out(),
            "{waiting:?}: not {n} images in flight"
        );
        assert_eq!(waiting.len(), n, "never more than the job allows");
        waiting.into_iter().max().unwrap()
    }

    fn max_in_flight(&self) -> usize {
        self.shared.0.lock().unwrap().max_in_flight
    }
}

/// One request on `stream`, answered once released (or at once).
fn answer(stream: TcpStream, shared: &(Mutex<Seen>, Condvar)) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if line == "\r\n" {
            break;
        }
        head.push(line.trim_end().to_owned());
    }
    let header = |name: &str| {
        head.iter().find_map(|h| {
            let (k, v) = h.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    };
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    let boundary = header("content-type")
        .and_then(|c| {
            c.split("boundary=")
                .nth(1)
                .map(|b| b.trim_matches('"').to_owned())
        })
        .unwrap_or_default();
    let parts = multipart(&body, &boundary);
    let (field, name, kind, bytes) = parts
        .iter()
        .find(|p| p.1.is_some())
        .map(|(f, n, k, b)| (f.clone(), n.clone().unwrap(), k.clone(), b.clone()))
        .expect("a file part");
    let fields: serde_json::Map<String, Value> = parts
        .iter()
        .filter(|p| p.1.is_none())
        .map(|(f, _, _, b)| (f.clone(), json!(String::from_utf8_lossy(b))))
        .collect();
    let (lock, wake) = shared;
    {
        let mut seen = lock.lock().unwrap();
        seen.pending.push(name.clone());
        seen.in_flight += 1;
        seen.max_in_flight = seen.max_in_flight.max(seen.in_flight);
        wake.notify_all();
        let mut seen = wake
            .wait_while(seen, |s| s.hold && !s.released.contains(&name))
            .unwrap();
        seen.pending.retain(|p| p != &name);
        seen.in_flight -= 1;
    }
    let checksum = format!("{:016x}", fnv(&bytes));
    let reply = json!({
        "id": format!("describe-{}", &checksum[..12]),
        "stage": "describe",
        "file": {"field": field, "name": name, "type": kind, "bytes": bytes.len()},
        "fields": fields,
        "checksum": checksum,
    })
    .to_string();
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
        reply.len()
    );
}

/// A part of a form: (field name, file name, content type, content).
type Part = (String, Option<String>, String, Vec<u8>);

fn multipart(body: &[u8], boundary: &str) -> Vec<Part> {
    let delimiter = format!("\r\n--{boundary}");
    // The first delimiter has no CRLF before it.
    let mut rest = &body[boundary.len() + 2..];
    let mut parts = Vec::new();
    while !rest.starts_with(b"--") {
        let rest_after = &rest[2..]; // the CRLF after the delimiter
        let head_end = find(rest_after, b"\r\n\r\n").expect("part headers");
        let head = String::from_utf8_lossy(&rest_after[..head_end]).into_owned();
        let content = &rest_after[head_end + 4..];
        let end = find(content, delimiter.as_bytes()).expect("a closing delimiter");
        let disposition = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition:"))
            .unwrap_or("");
        let param = |key: &str| {
            disposition.split(';').find_map(|p| {
                let (k, v) = p.trim().split_once('=')?;
                (k == key).then(|| v.trim_matches('"').to_owned())
            })
        };
        let kind = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-type:")
                    .map(|v| v.trim().to_owned())
            })
            .unwrap_or_default();
        parts.push((
            param("name").unwrap_or_default(),
            param("filename"),
            kind,
            content[..end].to_vec(),
        ));
        rest = &content[end + delimiter.len()..];
    }
    parts
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
