//! The dispatch loop with a source and an executor of the test's own, on
//! paused time: growth to the rate, pause, stop, the stopping check, and the
//! resume skip over a real SQLite store.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::window::needed;
use super::*;
use crate::engine::Engine;
use sluice_store::{ItemRecord, ItemStatus, NewRun, StoreLocation};

/// Numbers 0..n, one at a time.
struct Numbers(VecDeque<u64>);

impl Numbers {
    fn up_to(n: u64) -> Numbers {
        Numbers((0..n).collect())
    }
}

impl Source for Numbers {
    type Work = u64;

    async fn next(&mut self, _in_progress: usize) -> Result<Next<u64>> {
        Ok(match self.0.pop_front() {
            Some(n) => Next::Work(n),
            None => Next::End,
        })
    }
}

/// What the executor saw.
#[derive(Default)]
struct Seen {
    started: Vec<u64>,
    grown: Vec<usize>,
    most_at_once: usize,
}

/// A task per piece of work, each taking `latency` (paused time), with the
/// run's latency figure set to it.
struct Sleepers {
    slots: Arc<Semaphore>,
    size: usize,
    latency: Duration,
    seen: Arc<Mutex<Seen>>,
    progress: Arc<Progress>,
    /// Called with each piece as it starts.
    on_start: Arc<dyn Fn(u64) + Send + Sync>,
}

impl Sleepers {
    fn new(size: usize, latency: Duration, progress: &Arc<Progress>) -> Sleepers {
        progress
            .latency_ewma_us
            .store(latency.as_micros() as u64, Relaxed);
        Sleepers {
            slots: Arc::new(Semaphore::new(size)),
            size,
            latency,
            seen: Arc::default(),
            progress: progress.clone(),
            on_start: Arc::new(|_| {}),
        }
    }
}

impl Executor for Sleepers {
    type Work = u64;
    type Room = OwnedSemaphorePermit;

    async fn room(&mut self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().acquire_owned().await.ok()
    }

    fn start(&mut self, work: u64, room: OwnedSemaphorePermit) {
        let in_progress = self.in_progress();
        {
            let mut seen = self.seen.lock().unwrap();
            seen.started.push(work);
            seen.most_at_once = seen.most_at_once.max(in_progress);
        }
        (self.on_start)(work);
        let (latency, progress) = (self.latency, self.progress.clone());
        tokio::spawn(async move {
            tokio::time::sleep(latency).await;
            Progress::add(&progress.done, 1);
            drop(room);
        });
    }

    fn grow(&mut self, size: usize) {
        self.seen.lock().unwrap().grown.push(size);
        if size > self.size {
            self.slots.add_permits(size - self.size);
            self.size = size;
        }
    }

    fn in_progress(&self) -> usize {
        self.size - self.slots.available_permits()
    }

    async fn drained(self) {
        let _ = self.slots.acquire_many(self.size as u32).await;
    }
}

fn a_run() -> (Run, mpsc::Receiver<Message>) {
    let (tx, rx) = mpsc::channel(1_024);
    let run = Run {
        progress: Arc::new(Progress::new(&Engine::new())),
        stopping: Arc::new(Stopping::default()),
        control: RunControl::new(),
        tx,
    };
    (run, rx)
}

#[test]
fn the_window_grows_by_littles_law_with_headroom_and_stops_at_the_cap() {
    // 100 calls a second at 0.5 s each: 50 in progress, 63 with 25% more.
    assert_eq!(needed(100.0, 1, 0.5), 63);
    // A unit of three steps in turn holds its place three calls long.
    assert_eq!(needed(100.0, 3, 0.5), 188);
    assert_eq!(needed(1e9, 1, 10.0), MAX_IN_FLIGHT);
    assert_eq!(needed(100.0, 1, 0.0), 0, "no latency seen yet: no growth");
}

#[tokio::test(start_paused = true)]
async fn the_window_looks_again_every_200_ms_and_never_shrinks() {
    let progress = Progress::new(&Engine::new());
    progress.latency_ewma_us.store(500_000, Relaxed);
    let mut window = Window::new(4, Some(100.0), 1);
    assert_eq!(window.grow(&progress), Some(63));
    progress.latency_ewma_us.store(1_000_000, Relaxed);
    assert_eq!(
        window.grow(&progress),
        None,
        "looked at less than 200 ms ago"
    );
    tokio::time::advance(Duration::from_millis(200)).await;
    assert_eq!(window.grow(&progress), Some(125));
    progress.latency_ewma_us.store(10_000, Relaxed);
    tokio::time::advance(Duration::from_millis(200)).await;
    assert_eq!(window.grow(&progress), None);
    let mut fixed = Window::new(4, None, 1);
    assert_eq!(fixed.grow(&progress), None, "no rate: a fixed window");
}

#[tokio::test(start_paused = true)]
async fn the_loop_grows_to_the_rate_and_hands_everything_out() {
    let (run, _rx) = a_run();
    // 20 a second at 1 s each: 25 at once, from a window of 2.
    let exec = Sleepers::new(2, Duration::from_secs(1), &run.progress);
    let seen = exec.seen.clone();
    let window = Window::new(2, Some(20.0), 1);
    let interrupted = super::run(&run, Numbers::up_to(100), exec, window)
        .await
        .unwrap();
    assert!(!interrupted);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.started, (0..100).collect::<Vec<_>>(), "in order, all");
    assert_eq!(seen.grown, vec![25]);
    assert_eq!(seen.most_at_once, 25, "the window filled");
    assert_eq!(
        run.progress.done.load(Relaxed),
        100,
        "drained before returning"
    );
}

/// Hands out only while fewer than `ahead` are in progress, as claims
/// are paced, and waits a tick otherwise.
struct Paced {
    left: Numbers,
    ahead: usize,
    most_seen: usize,
}

impl Source for Paced {
    type Work = u64;

    async fn next(&mut self, in_progress: usize) -> Result<Next<u64>> {
        self.most_seen = self.most_seen.max(in_progress);
        if in_progress >= self.ahead {
            tokio::time::sleep(Duration::from_millis(5)).await;
            return Ok(Next::Wait);
        }
        self.left.next(in_progress).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_source_that_paces_itself_is_asked_again_with_fresh_counts() {
    let (run, _rx) = a_run();
    let exec = Sleepers::new(8, Duration::from_millis(50), &run.progress);
    let seen = exec.seen.clone();
    let source = Paced {
        left: Numbers::up_to(30),
        ahead: 3,
        most_seen: 0,
    };
    let interrupted = super::run(&run, source, exec, Window::new(8, None, 1))
        .await
        .unwrap();
    assert!(!interrupted);
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen.started.len(),
        30,
        "work finishing frees the source again"
    );
    assert_eq!(
        seen.most_at_once, 3,
        "never more than the source keeps ahead"
    );
}

#[tokio::test(start_paused = true)]
async fn nothing_starts_while_paused_and_everything_after_resume() {
    let (run, _rx) = a_run();
    let exec = Sleepers::new(4, Duration::from_millis(100), &run.progress);
    let seen = exec.seen.clone();
    run.control.pause();
    let control = run.control.clone();
    let run = Arc::new(run);
    let task = tokio::spawn({
        let run = run.clone();
        async move { super::run(&run, Numbers::up_to(10), exec, Window::new(4, None, 1)).await }
    });
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(
        seen.lock().unwrap().started.is_empty(),
        "paused for a minute"
    );
    control.resume();
    assert!(!task.await.unwrap().unwrap());
    assert_eq!(seen.lock().unwrap().started.len(), 10);
}

#[tokio::test(start_paused = true)]
async fn a_cancel_stops_handing_out_and_the_run_is_interrupted() {
    let (run, _rx) = a_run();
    let mut exec = Sleepers::new(2, Duration::from_secs(1), &run.progress);
    let seen = exec.seen.clone();
    let control = run.control.clone();
    // Cancelled as the fifth starts: the loop sees it waiting for room.
    exec.on_start = Arc::new(move |n| {
        if n == 4 {
            control.cancel();
        }
    });
    let interrupted = super::run(&run, Numbers::up_to(100), exec, Window::new(2, None, 1))
        .await
        .unwrap();
    assert!(interrupted);
    let started = seen.lock().unwrap().started.len();
    assert!((5..=6).contains(&started), "{started} started");
    assert!(run.stopping.is_set(), "calls on the wire are told to stop");
}

#[tokio::test(start_paused = true)]
async fn a_spent_budget_stops_handing_out_and_waits_for_the_work_started() {
    let (run, _rx) = a_run();
    let mut exec = Sleepers::new(3, Duration::from_secs(1), &run.progress);
    let seen = exec.seen.clone();
    let stopping = run.stopping.clone();
    exec.on_start = Arc::new(move |n| {
        if n == 6 {
            // What the runner does when a call's cost passes the budget.
            stopping.set();
        }
    });
    let interrupted = super::run(&run, Numbers::up_to(100), exec, Window::new(3, None, 1))
        .await
        .unwrap();
    assert!(!interrupted, "a spent budget is no interruption");
    assert_eq!(seen.lock().unwrap().started.len(), 7);
    assert_eq!(
        run.progress.done.load(Relaxed),
        7,
        "the work started finished"
    );
}

#[tokio::test(start_paused = true)]
async fn a_halt_is_an_interruption_with_the_grace_period() {
    let (run, _rx) = a_run();
    let mut exec = Sleepers::new(2, Duration::from_secs(3_600), &run.progress);
    let stopping = run.stopping.clone();
    exec.on_start = Arc::new(move |n| {
        if n == 1 {
            stopping.halt(crate::stopping::Halt::Store);
        }
    });
    let began = tokio::time::Instant::now();
    let interrupted = super::run(&run, Numbers::up_to(10), exec, Window::new(2, None, 1))
        .await
        .unwrap();
    assert!(interrupted);
    let waited = began.elapsed();
    assert!(
        waited < Duration::from_secs(3_600),
        "the grace period, not the calls: {waited:?}"
    );
}

/// Work with an id, position and hash, read in chunks of `per_chunk`.
#[derive(Debug, Clone, PartialEq)]
struct Line {
    id: String,
    idx: u64,
    hash: u64,
}

impl Keyed for Line {
    fn key(&self) -> &str {
        &self.id
    }
    fn idx(&self) -> u64 {
        self.idx
    }
    fn hash(&self) -> u64 {
        self.hash
    }
}

struct LinesOf {
    lines: VecDeque<Line>,
    per_chunk: usize,
}

impl Chunks for LinesOf {
    type Read = Line;
    type Work = Line;

    fn read(&mut self, out: &mut std::collections::VecDeque<Entry<Line>>) -> Result<()> {
        while out.len() < self.per_chunk {
            match self.lines.pop_front() {
                Some(line) => out.push_back(Entry::Read(line)),
                None => break,
            }
        }
        Ok(())
    }

    fn ready(&mut self, line: Line) -> Next<Line> {
        Next::Work(line)
    }
}

fn record(id: &str, idx: u64, hash: u64, status: ItemStatus) -> ItemRecord {
    ItemRecord {
        item_id: id.into(),
        idx,
        hash,
        status,
        attempts: 1,
        throttled: 0,
        status_code: Some(200),
        response: None,
        error: None,
        prompt_tokens: None,
        completion_tokens: None,
        latency_ms: 0,
        started_at: 0,
        finished_at: 0,
        metadata: None,
        custom_id: None,
    }
}

#[tokio::test(start_paused = true)]
async fn the_resume_skip_hands_out_only_what_is_not_done_alike_and_tells_moves() {
    let dir = tempfile::tempdir().unwrap();
    let location = StoreLocation::Sqlite(dir.path().join("runs.db"));
    let mut store = location.open().unwrap();
    let run = store
        .create_run(&NewRun {
            name: "r".into(),
            source: "test".into(),
            settings: serde_json::Value::Null,
        })
        .unwrap();
    store
        .write_batch(
            &run.id,
            &[
                record("a", 0, 1, ItemStatus::Done),   // done alike: skipped
                record("b", 5, 2, ItemStatus::Done),   // done alike, moved to 1
                record("c", 2, 99, ItemStatus::Done),  // edited since: sent again
                record("d", 3, 4, ItemStatus::Failed), // failed: sent again
            ],
        )
        .unwrap();
    let lines: VecDeque<Line> = ["a", "b", "c", "d", "e"]
        .iter()
        .enumerate()
        .map(|(i, id)| Line {
            id: (*id).into(),
            idx: i as u64,
            hash: i as u64 + 1,
        })
        .collect();
    let progress = Arc::new(Progress::new(&Engine::new()));
    let chunks = LinesOf {
        lines: lines.clone(),
        per_chunk: 2,
    };
    let mut source = Local::new(
        chunks,
        Resume::new(Some(location.open().unwrap()), run.id.clone(), false),
        progress.clone(),
    );
    let mut out = Vec::new();
    let mut moves = Vec::new();
    loop {
        match source.next(0).await.unwrap() {
            Next::Work(line) => out.push(line.id),
            Next::Write(Message::Moves(m)) => moves.extend(m),
            Next::Write(_) => panic!("no records here"),
            Next::Wait => {}
            Next::End => break,
        }
    }
    assert_eq!(out, ["c", "d", "e"]);
    assert_eq!(moves, [("b".to_string(), 1)]);
    assert_eq!(progress.skipped.load(Relaxed), 2);

    // A retry of chosen failures keeps the others failed.
    let chunks = LinesOf {
        lines,
        per_chunk: 10,
    };
    let resume = Resume::new(Some(location.open().unwrap()), run.id.clone(), true);
    let mut source = Local::new(chunks, resume, progress.clone());
    let mut out = Vec::new();
    loop {
        match source.next(0).await.unwrap() {
            Next::Work(line) => out.push(line.id),
            Next::Write(_) | Next::Wait => {}
            Next::End => break,
        }
    }
    assert_eq!(out, ["c", "e"]);
}
