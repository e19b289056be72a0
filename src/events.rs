//! `sluice run --events`: a run's life as JSON lines on stdout, for programs
//! driving the binary (the Python API): `start` once the run is open, a
//! `result` per item as soon as its outcome is committed, `progress` every
//! interval, and `end` with the summary `--json` would print.
//!
//! One thread owns stdout: the writer thread's commit hook only hands it
//! lines (a slow reader slows commits down, never loses a line).

use std::io::Write;
use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{json, Value as Json};
use sluice_engine::{result_line, Progress, RunHooks};
use sluice_store::{ItemRecord, RunMeta};

/// Lines waiting for stdout at most; beyond it the commit hook waits.
const QUEUE: usize = 65_536;

/// The thread writing events, and how to feed it.
pub(crate) struct EventStream {
    tx: SyncSender<Option<String>>,
    handle: Option<JoinHandle<()>>,
    /// The run, once open (results need its id and kind).
    run: Arc<OnceLock<RunMeta>>,
    progress: Arc<Progress>,
}

impl EventStream {
    /// Starts the thread; a `progress` event follows every `interval` of
    /// the run (none when it is zero).
    pub(crate) fn start(progress: Arc<Progress>, interval: Duration) -> EventStream {
        // `None` ends the stream: the hooks' senders may outlive the run.
        let (tx, rx) = sync_channel::<Option<String>>(QUEUE);
        let ticker = progress.clone();
        let run = Arc::new(OnceLock::new());
        let opened = run.clone();
        let handle = std::thread::Builder::new()
            .name("sluice-events".into())
            .spawn(move || {
                // Not locked for the whole run: a stray print elsewhere must
                // not deadlock against this thread.
                let mut out = std::io::BufWriter::new(std::io::stdout());
                let wait = if interval.is_zero() {
                    Duration::from_secs(3600)
                } else {
                    interval
                };
                loop {
                    let line = match rx.recv_timeout(wait) {
                        Ok(Some(line)) => line,
                        Ok(None) => break,
                        // Progress means something once the run is open.
                        Err(RecvTimeoutError::Timeout)
                            if !interval.is_zero() && opened.get().is_some() =>
                        {
                            progress_event(&ticker)
                        }
                        Err(RecvTimeoutError::Timeout) => continue,
                        Err(RecvTimeoutError::Disconnected) => break,
                    };
                    // A reader that went away ends the stream, not the run.
                    if writeln!(out, "{line}").is_err() {
                        break;
                    }
                    // Flushed whenever nothing else is waiting: a line
                    // reaches the reader at once without a write per line
                    // under load.
                    let mut end = false;
                    for next in rx.try_iter() {
                        let Some(line) = next else {
                            end = true;
                            break;
                        };
                        if writeln!(out, "{line}").is_err() {
                            end = true;
                            break;
                        }
                    }
                    if end || out.flush().is_err() {
                        break;
                    }
                }
                let _ = out.flush();
            })
            .ok();
        EventStream {
            tx,
            handle,
            run,
            progress,
        }
    }

    /// Hooks that feed the stream: `start` when the run opens, `result` per
    /// committed item (with the item's fields when `include_item`).
    pub(crate) fn hooks(&self, include_item: bool) -> RunHooks {
        let (tx, run) = (self.tx.clone(), self.run.clone());
        let progress = self.progress.clone();
        let on_open = move |meta: &RunMeta| {
            let total = progress.snapshot().total;
            let _ = run.set(meta.clone());
            let _ = tx.send(Some(
                json!({"event": "start", "run": meta.id, "name": meta.name, "total": total})
                    .to_string(),
            ));
        };
        let (tx, run) = (self.tx.clone(), self.run.clone());
        let on_commit = move |items: &[ItemRecord]| {
            let Some(meta) = run.get() else { return };
            for item in items {
                let line = format!(
                    "{{\"event\":\"result\",\"index\":{},\"result\":{}}}",
                    item.idx,
                    result_line(meta, item, include_item)
                );
                if tx.send(Some(line)).is_err() {
                    return;
                }
            }
        };
        RunHooks {
            on_open: Some(Box::new(on_open)),
            on_commit: Some(Arc::new(on_commit)),
            ..RunHooks::default()
        }
    }

    /// Writes what is queued, then the `end` event with `summary`.
    pub(crate) fn finish(mut self, summary: Json) {
        let mut end = json!({"event": "end"});
        if let (Json::Object(end), Json::Object(summary)) = (&mut end, summary) {
            end.extend(summary);
        }
        let _ = self.tx.send(Some(end.to_string()));
        let _ = self.tx.send(None);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

fn progress_event(progress: &Progress) -> String {
    let mut event = json!({"event": "progress"});
    if let (Json::Object(event), Ok(Json::Object(counts))) =
        (&mut event, serde_json::to_value(progress.snapshot()))
    {
        event.extend(counts);
    }
    event.to_string()
}
