//! A source read from this process's own input (quick mode's lines, a job's
//! units), a chunk at a time, with the resume skip: work the store already
//! holds done under the same request hash is counted as skipped and not
//! handed out, and a record whose line moved is told its new position.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use sluice_store::{ItemStatus, RecordedItem, Store};

use super::{Next, Source};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::writer::Message;

/// What the resume skip needs of a piece of work.
pub(crate) trait Keyed {
    /// The id it is recorded under.
    fn key(&self) -> &str;
    /// Its position in the input.
    fn idx(&self) -> u64;
    /// The hash of its request.
    fn hash(&self) -> u64;
}

/// One entry of a chunk: work to look up, or a record to write as it is (a
/// bad line is recorded failed, never sent). The record is boxed: a chunk's
/// slots are as large as its largest entry, and records are rare and larger
/// than a request.
pub(crate) enum Entry<R> {
    Read(R),
    Write(Box<Message>),
}

/// An input read a chunk at a time.
pub(crate) trait Chunks {
    /// What is read (and looked up on resume).
    type Read: Keyed;
    /// What is handed out.
    type Work;
    /// Appends the next chunk's entries to `out` (empty when called);
    /// nothing appended: the end.
    fn read(&mut self, out: &mut VecDeque<Entry<Self::Read>>) -> Result<()>;
    /// Turns a read entry that is not skipped into work (or a record).
    fn ready(&mut self, read: Self::Read) -> Next<Self::Work>;
}

/// The resume skip: a connection for look-ups on a resumed run (`None` for
/// a new run, with nothing to skip).
pub(crate) struct Resume {
    store: Option<Box<dyn Store>>,
    run_id: String,
    /// Failed work stays failed too (a retry of chosen failures).
    keep_failed: bool,
}

impl Resume {
    pub(crate) fn new(store: Option<Box<dyn Store>>, run_id: String, keep_failed: bool) -> Resume {
        Resume {
            store,
            run_id,
            keep_failed,
        }
    }

    /// What the store holds for `keys`, looked up on a blocking thread (a
    /// PostgreSQL round trip must not hold the calls this thread serves).
    async fn known(&mut self, keys: Vec<String>) -> Result<HashMap<String, RecordedItem>> {
        let Some(store) = self.store.take() else {
            return Ok(HashMap::new());
        };
        let run_id = self.run_id.clone();
        let (store, found) = tokio::task::spawn_blocking(move || {
            let mut store = store;
            let ids: Vec<&str> = keys.iter().map(String::as_str).collect();
            let found = store.lookup(&run_id, &ids);
            (store, found)
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        self.store = Some(store);
        Ok(found
            .map_err(Error::from)?
            .into_iter()
            .map(|k| (k.item_id.clone(), k))
            .collect())
    }

    /// Whether `known` keeps `read` from being handed out again.
    fn kept(&self, known: &RecordedItem, read: &impl Keyed) -> bool {
        let kept = known.status == ItemStatus::Done
            || (self.keep_failed && known.status == ItemStatus::Failed);
        kept && known.hash == read.hash()
    }
}

/// [`Chunks`] as a [`Source`], with the resume skip.
pub(crate) struct Local<C: Chunks> {
    chunks: C,
    resume: Resume,
    progress: Arc<Progress>,
    /// The chunk read, less what was skipped (one buffer: memory stays
    /// what quick mode's reader alone held).
    ready: VecDeque<Entry<C::Read>>,
    /// Records whose line moved, told after their chunk.
    moves: Vec<(String, u64)>,
    ended: bool,
}

impl<C: Chunks> Local<C> {
    pub(crate) fn new(chunks: C, resume: Resume, progress: Arc<Progress>) -> Local<C> {
        Local {
            chunks,
            resume,
            progress,
            ready: VecDeque::new(),
            moves: Vec::new(),
            ended: false,
        }
    }

    /// Reads the next chunk and drops what the store holds done.
    async fn refill(&mut self) -> Result<()> {
        self.chunks.read(&mut self.ready)?;
        if self.ready.is_empty() {
            self.ended = true;
            return Ok(());
        }
        if self.resume.store.is_none() {
            return Ok(());
        }
        let keys = self
            .ready
            .iter()
            .filter_map(|e| match e {
                Entry::Read(r) => Some(r.key().to_owned()),
                Entry::Write(_) => None,
            })
            .collect();
        let known = self.resume.known(keys).await?;
        let (resume, progress, moves) = (&self.resume, &self.progress, &mut self.moves);
        self.ready.retain(|entry| {
            let Entry::Read(read) = entry else {
                return true;
            };
            match known.get(read.key()) {
                Some(k) if resume.kept(k, read) => {
                    Progress::add(&progress.skipped, 1);
                    if k.idx != read.idx() {
                        moves.push((read.key().to_owned(), read.idx()));
                    }
                    false
                }
                _ => true,
            }
        });
        Ok(())
    }
}

impl<C: Chunks> Source for Local<C> {
    type Work = C::Work;

    async fn next(&mut self, _in_progress: usize) -> Result<Next<C::Work>> {
        loop {
            match self.ready.pop_front() {
                Some(Entry::Read(read)) => return Ok(self.chunks.ready(read)),
                Some(Entry::Write(message)) => return Ok(Next::Write(*message)),
                None if !self.moves.is_empty() => {
                    let moves = std::mem::take(&mut self.moves);
                    return Ok(Next::Write(Message::Moves(moves)));
                }
                None if self.ended => return Ok(Next::End),
                None => self.refill().await?,
            }
        }
    }
}
