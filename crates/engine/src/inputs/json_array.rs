//! A JSON input file: one array of objects, streamed element by element so a
//! huge array is never loaded whole.
//!
//! serde_json only streams through a visitor (push), while items are pulled,
//! so a thread runs the visitor and hands entries over a small bounded
//! channel; dropping the iterator makes the next hand-over fail, which stops
//! the thread.

use std::fmt;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::mpsc::{sync_channel, SyncSender};

use serde::de::{self, Deserializer as _, SeqAccess, Visitor};
use serde_json::Value;

use super::files::{bare_message, json_kind};
use super::{BadItem, Entries, Entry, InputError, RawItem};

/// Entries decoded ahead of the reader; small, so memory stays flat.
const AHEAD: usize = 64;

/// The visitor's error when the reader went away: not a problem of the file.
const STOPPED: &str = "the reader stopped";

/// Streams the elements of the array in `path`.
pub(super) fn entries(path: &Path) -> Result<Entries, InputError> {
    let file = File::open(path).map_err(|source| InputError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let (tx, rx) = sync_channel(AHEAD);
    let owned = path.to_path_buf();
    std::thread::Builder::new()
        .name("sluice-json-input".into())
        .spawn(move || decode(file, &owned, &tx))
        .map_err(|e| InputError::Task(format!("cannot start the JSON reader: {e}")))?;
    Ok(Box::new(rx.into_iter()))
}

fn decode(file: File, path: &Path, tx: &SyncSender<Result<Entry, InputError>>) {
    let mut de = serde_json::Deserializer::from_reader(BufReader::with_capacity(256 * 1024, file));
    let result = (&mut de)
        .deserialize_seq(Elements { tx })
        .and_then(|()| de.end());
    if let Err(e) = result {
        if e.to_string().starts_with(STOPPED) {
            return;
        }
        let message = if e.is_io() {
            format!("cannot read it: {}", bare_message(&e))
        } else {
            format!(
                "line {} column {}: {}; the file must hold one JSON array of objects",
                e.line(),
                e.column(),
                bare_message(&e)
            )
        };
        // The reader may be gone already; then nobody needs the error.
        let _ = tx.send(Err(InputError::Invalid {
            path: path.to_path_buf(),
            message,
        }));
    }
}

/// Sends each array element as an entry.
struct Elements<'a> {
    tx: &'a SyncSender<Result<Entry, InputError>>,
}

impl<'de> Visitor<'de> for Elements<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array of objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut position = 0;
        while let Some(value) = seq.next_element::<Value>()? {
            let entry = match value {
                Value::Object(map) => Ok(RawItem {
                    position,
                    line: None,
                    value: Value::Object(map),
                }),
                other => Err(BadItem {
                    position,
                    line: None,
                    message: format!(
                        "element {position} of the array is {}; expected a JSON object",
                        json_kind(&other)
                    ),
                }),
            };
            if self.tx.send(Ok(entry)).is_err() {
                return Err(de::Error::custom(STOPPED));
            }
            position += 1;
        }
        Ok(())
    }
}
