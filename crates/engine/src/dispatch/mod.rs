//! The one dispatch loop: hands the work a [`Source`] yields (quick mode's
//! lines, a job's units, units claimed from a shared queue) to an
//! [`Executor`] (quick mode's fixed set of workers, a task per unit), and
//! owns what every run does around that: the stopping check (the budget, a
//! failed store, an early stop), pause, the stop signals, growing to the rate
//! ([`Window`]), records for the writer (bad lines, moved lines) and the
//! drain at the end.

mod local;
#[cfg(test)]
mod tests;
mod window;

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::control::{ControlState, RunControl};
use crate::error::Result;
use crate::lifecycle::{drain_halted, StopSignals};
use crate::progress::Progress;
use crate::stopping::Stopping;
use crate::writer::Message;

pub(crate) use local::{Chunks, Entry, Keyed, Local, Resume};
pub(crate) use window::{Window, MAX_IN_FLIGHT};

/// What a source yields next.
// Handed over at once, never kept in bulk (a chunk boxes its records:
// `Entry`), so its size costs nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Next<W> {
    /// Work to start.
    Work(W),
    /// A record for the writer (a bad line, lines that moved).
    Write(Message),
    /// Nothing yet: ask again (with a fresh count of the work in progress,
    /// once the loop has looked at pause and stopping again).
    Wait,
    /// Nothing more.
    End,
}

/// Where the work comes from.
pub(crate) trait Source {
    type Work;
    /// The next piece of work, given how much is in progress (a source that
    /// claims work ahead paces itself by it). Dropped unfinished only when
    /// the run stops.
    async fn next(&mut self, in_progress: usize) -> Result<Next<Self::Work>>;
    /// Called once, when the loop hands out nothing more.
    async fn finish(&mut self) {}
}

/// What runs the work.
pub(crate) trait Executor {
    type Work;
    /// Room for one more piece of work.
    type Room;
    /// Waits for room; `None`: nothing more can start.
    async fn room(&mut self) -> Option<Self::Room>;
    /// Starts `work` in `room`.
    fn start(&mut self, work: Self::Work, room: Self::Room);
    /// Makes room for `size` pieces of work in progress (a grown window).
    fn grow(&mut self, size: usize);
    /// Work started and not finished.
    fn in_progress(&self) -> usize;
    /// Resolves once every piece of work started has finished.
    async fn drained(self);
}

/// What the loop shares with the run's calls.
pub(crate) struct Run {
    pub(crate) progress: Arc<Progress>,
    /// The budget spent, the store failed or the first answers all failed alike.
    pub(crate) stopping: Arc<Stopping>,
    /// Pause and cancel.
    pub(crate) control: Arc<RunControl>,
    /// The writer.
    pub(crate) tx: mpsc::Sender<Message>,
}

/// Hands out everything `source` yields to `executor`, `window` at once,
/// until the source ends or the run stops; waits for the work in progress
/// (a stop gives it a grace period); returns whether the run was
/// interrupted (a signal, a cancel or a halt).
pub(crate) async fn run<S, E>(
    run: &Run,
    mut source: S,
    mut executor: E,
    mut window: Window,
) -> Result<bool>
where
    S: Source,
    E: Executor<Work = S::Work>,
{
    let signals = StopSignals::watch(run.control.clone());
    let stop = &signals.stop;
    let mut interrupted = false;
    let handed_out: Result<()> = loop {
        if run.stopping.is_set() {
            // The budget is spent, the store failed, or the first answers
            // all failed alike: the rest stays pending.
            break Ok(());
        }
        // Paused: nothing read, claimed or started (a cancel or a signal
        // ends the wait); claimed units stay leased here.
        if paused(&run.control) && !signals.proceed(&run.control).await {
            interrupted = true;
            break Ok(());
        }
        let next = tokio::select! {
            // A source with work at hand answers at once: nothing else polled.
            biased;
            next = source.next(executor.in_progress()) => next,
            _ = stop.notified() => { interrupted = true; break Ok(()); }
            () = run.stopping.wait() => continue,
        };
        let work = match next {
            Ok(Next::Work(work)) => work,
            Ok(Next::Write(message)) => {
                // A send error means the writer died; its error is reported at the end.
                let _ = run.tx.send(message).await;
                continue;
            }
            Ok(Next::Wait) => continue,
            Ok(Next::End) => break Ok(()),
            Err(e) => break Err(e),
        };
        if let Some(size) = window.grow(&run.progress) {
            executor.grow(size);
        }
        let room = tokio::select! {
            room = executor.room() => room,
            _ = stop.notified() => { interrupted = true; break Ok(()); }
            () = run.stopping.wait() => break Ok(()),
        };
        let Some(room) = room else { break Ok(()) };
        // Paused while waiting for room: the work waits with its room.
        if paused(&run.control) && !signals.proceed(&run.control).await {
            interrupted = true;
            break Ok(());
        }
        if run.stopping.is_set() {
            break Ok(());
        }
        executor.start(work, room);
    };
    source.finish().await;
    handed_out?;
    Ok(drain_halted(executor.drained(), stop, &run.stopping, interrupted).await)
}

fn paused(control: &RunControl) -> bool {
    control.state() != ControlState::Run
}
