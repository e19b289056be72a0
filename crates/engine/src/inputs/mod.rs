//! Item sources for job files: `[input]` as a JSONL, CSV or JSON file, stdin,
//! a glob of files or a paged HTTP API, checked end to end by [`prepare`]
//! before anything is sent, then streamed in order by [`Prepared::items`].
//!
//! Stdin and url inputs are spooled to a JSONL (or the stdin's own format)
//! file first, so every kind is re-read from disk and a run can be resumed.

mod fetch;
mod files;
mod json_array;
mod pattern;
mod spool;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sluice_spec::{InputFormat, InputSource};

/// One item read from the input.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RawItem {
    /// 0-based, in input order; bad entries take a position too, so positions
    /// stay the same whichever entries are bad.
    pub(crate) position: u64,
    /// 1-based line where the item starts (JSONL, CSV and stdin; not JSON
    /// arrays, globs or url inputs, whose lines mean nothing to the user).
    pub(crate) line: Option<u64>,
    /// Always a JSON object.
    pub(crate) value: serde_json::Value,
}

/// An input entry that could not become an item.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BadItem {
    /// 0-based position in input order.
    pub(crate) position: u64,
    /// 1-based line, when the format has lines.
    pub(crate) line: Option<u64>,
    /// What is wrong with it, for the user.
    pub(crate) message: String,
}

/// One entry of the input: an item or the reason it is not one.
type Entry = Result<RawItem, BadItem>;

/// Entries as a reader produces them; an `Err` is fatal (unreadable file,
/// broken JSON syntax) and ends the stream.
type Entries = Box<dyn Iterator<Item = Result<Entry, InputError>> + Send>;

/// Spools standard input as JSONL for quick mode's `-` (the same file a job's
/// `path = "-"` would use) and returns its path.
pub(crate) fn spool_stdin_jsonl(dir: &Path) -> Result<PathBuf, InputError> {
    let (path, _) = spool::stdin(&mut std::io::stdin().lock(), dir, InputFormat::Jsonl)?;
    Ok(path)
}

/// How many bad entries [`Prepared::bad`] keeps in full.
const KEEP_BAD: usize = 5;

/// Why the input cannot be used at all.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InputError {
    /// The file (or stdin) cannot be read.
    #[error("cannot read {}: {source}; check [input] path", path.display())]
    Read {
        /// The file; `-` for stdin.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A spool file cannot be written.
    #[error("cannot write {}: {source}; check that the directory is writable and the disk not full", path.display())]
    Write {
        /// The spool file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file as a whole is not in its format (JSON syntax, not an array,
    /// a CSV header naming a column twice).
    #[error("{}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong and where.
        message: String,
    },
    /// `glob` is not a valid pattern.
    #[error("[input] glob {pattern:?} is not a valid pattern: {message}")]
    BadPattern {
        /// The pattern.
        pattern: String,
        /// The glob crate's message.
        message: String,
    },
    /// `glob` matched no regular file.
    #[error(
        "[input] glob {pattern:?} matched no files; check the pattern and that the files exist"
    )]
    NoMatch {
        /// The pattern.
        pattern: String,
    },
    /// A url page could not be fetched or is not the expected JSON. Never
    /// names the request headers: they may carry secrets.
    #[error("fetching [input] url {url}: {message}")]
    Fetch {
        /// The page's URL.
        url: String,
        /// Status and body start, or what is wrong with the page.
        message: String,
    },
    /// A url header template failed.
    #[error("[input] headers: {0}")]
    Render(#[from] sluice_spec::RenderError),
    /// A background task failed (a bug, or the runtime shutting down).
    #[error("reading the input stopped: {0}")]
    Task(String),
}

/// Where the items are read from once the input has been prepared.
#[derive(Debug, Clone)]
enum Kind {
    /// A file on disk (the input itself or a spool of stdin/url).
    File {
        /// Absolute path.
        path: PathBuf,
        /// Its format.
        format: InputFormat,
        /// Whether line numbers mean something to the user (not for url spools).
        lines: bool,
    },
    /// The files a glob matched when prepared, sorted; kept so the items read
    /// later are exactly the ones counted and checked.
    Glob {
        /// Absolute paths of regular files.
        files: Arc<[PathBuf]>,
    },
}

impl Kind {
    /// Opens the source and streams its entries; an item holding a NUL
    /// character anywhere is a bad entry ([`crate::nul`]).
    fn entries(&self) -> Result<Entries, InputError> {
        let entries = self.raw_entries()?;
        Ok(Box::new(entries.map(|entry| {
            entry.map(|e| {
                e.and_then(|item| match crate::nul::in_value(&item.value) {
                    None => Ok(item),
                    Some(path) => Err(BadItem {
                        position: item.position,
                        line: item.line,
                        message: crate::nul::message(&format!("field {path}")),
                    }),
                })
            })
        })))
    }

    /// The source's entries as read.
    fn raw_entries(&self) -> Result<Entries, InputError> {
        match self {
            Kind::File {
                path,
                format,
                lines,
            } => {
                let entries: Entries = match format {
                    InputFormat::Jsonl => Box::new(files::JsonlReader::open(path)?),
                    InputFormat::Csv => Box::new(files::CsvReader::open(path)?),
                    InputFormat::Json => json_array::entries(path)?,
                };
                if *lines {
                    return Ok(entries);
                }
                Ok(Box::new(entries.map(|entry| {
                    entry.map(|e| match e {
                        Ok(item) => Ok(RawItem { line: None, ..item }),
                        Err(bad) => Err(BadItem { line: None, ..bad }),
                    })
                })))
            }
            Kind::Glob { files } => Ok(pattern::entries(files.clone())),
        }
    }
}

/// The input, checked end to end before anything is sent.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// Where the items are read from.
    kind: Kind,
    /// Entries found, bad ones included (the units to run are `total - bad_count`).
    pub(crate) total: u64,
    /// The first few bad entries, in input order.
    pub(crate) bad: Vec<BadItem>,
    /// Every bad entry.
    pub(crate) bad_count: u64,
    /// A stable key to find this run again: `file:<canonical path>`,
    /// `glob:<pattern>`, `url:<url>` or `stdin:<content hash>`.
    pub(crate) source_key: String,
    /// A url input read only up to its first page, which was full: more
    /// items may follow.
    pub(crate) more_pages: bool,
}

impl Prepared {
    /// Streams the items in order, never loading the input whole. A read error
    /// part way (the file changed since it was prepared) is the last entry, as
    /// a [`BadItem`].
    pub(crate) fn items(
        &self,
    ) -> Result<Box<dyn Iterator<Item = Result<RawItem, BadItem>> + Send>, InputError> {
        Ok(Box::new(Items {
            entries: self.kind.entries()?,
            next: 0,
            done: false,
        }))
    }
}

/// Entries with a fatal error turned into a final [`BadItem`].
struct Items {
    entries: Entries,
    /// The position after the last entry seen.
    next: u64,
    done: bool,
}

impl Iterator for Items {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        if self.done {
            return None;
        }
        match self.entries.next() {
            None => {
                self.done = true;
                None
            }
            Some(Ok(entry)) => {
                self.next = match &entry {
                    Ok(item) => item.position,
                    Err(bad) => bad.position,
                } + 1;
                Some(entry)
            }
            Some(Err(e)) => {
                self.done = true;
                Some(Err(BadItem {
                    position: self.next,
                    line: None,
                    message: e.to_string(),
                }))
            }
        }
    }
}

/// Validates the whole input once, spooling stdin and url inputs to a file
/// under `spool_dir` first so they can be re-read and resumed. `env` is the
/// context for url header templates (`{env: {...}}`).
pub(crate) async fn prepare(
    source: &InputSource,
    client: &sluice_provider::Client,
    spool_dir: &Path,
    env: &minijinja::Value,
) -> Result<Prepared, InputError> {
    prepare_with(source, client, spool_dir, env, false).await
}

/// [`prepare`], reading only the first page of a url input when
/// `first_page_only` (a look at the data that fetches little).
pub(crate) async fn prepare_with(
    source: &InputSource,
    client: &sluice_provider::Client,
    spool_dir: &Path,
    env: &minijinja::Value,
    first_page_only: bool,
) -> Result<Prepared, InputError> {
    let mut more_pages = false;
    let (kind, source_key) = match source {
        InputSource::File { path, format } => {
            let canonical = std::fs::canonicalize(path).map_err(|source| InputError::Read {
                path: path.clone(),
                source,
            })?;
            let key = format!("file:{}", canonical.display());
            let kind = Kind::File {
                path: canonical,
                format: *format,
                lines: true,
            };
            (kind, key)
        }
        InputSource::Stdin { format } => {
            let dir = spool_dir.to_path_buf();
            let format = *format;
            let (path, hash) =
                blocking(move || spool::stdin(&mut std::io::stdin().lock(), &dir, format)).await?;
            let kind = Kind::File {
                path,
                format,
                lines: true,
            };
            (kind, format!("stdin:{hash:016x}"))
        }
        InputSource::Glob { pattern } => {
            let owned = pattern.clone();
            let files = blocking(move || pattern::matches(&owned)).await?;
            (Kind::Glob { files }, format!("glob:{pattern}"))
        }
        InputSource::Url {
            url,
            pointer,
            page_size,
            limit_param,
            offset_param,
            headers,
        } => {
            let headers = headers
                .iter()
                .map(|(name, value)| Ok((name.clone(), value.render(env)?)))
                .collect::<Result<Vec<_>, InputError>>()?;
            let paging = fetch::Paging {
                pointer: pointer.as_deref(),
                page_size: page_size.filter(|n| *n > 0),
                limit_param,
                offset_param,
                first_only: first_page_only,
            };
            let (path, more) = fetch::spool_url(client, url, &paging, &headers, spool_dir).await?;
            more_pages = more;
            let kind = Kind::File {
                path,
                format: InputFormat::Jsonl,
                lines: false,
            };
            // The run's identity and its shown input: no credentials.
            (kind, format!("url:{}", sluice_store::redact_url(url)))
        }
    };
    let surveyed = kind.clone();
    let (total, bad, bad_count) = blocking(move || survey(&surveyed)).await?;
    Ok(Prepared {
        kind,
        total,
        bad,
        bad_count,
        source_key,
        more_pages,
    })
}

/// Reads every entry once: counts them and keeps the first bad ones.
fn survey(kind: &Kind) -> Result<(u64, Vec<BadItem>, u64), InputError> {
    let (mut total, mut bad, mut bad_count) = (0, Vec::new(), 0);
    for entry in kind.entries()? {
        total += 1;
        if let Err(b) = entry? {
            bad_count += 1;
            if bad.len() < KEEP_BAD {
                bad.push(b);
            }
        }
    }
    Ok((total, bad, bad_count))
}

/// Runs file work off the async workers: inputs may be gigabytes.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, InputError> + Send + 'static,
) -> Result<T, InputError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| InputError::Task(e.to_string()))?
}
