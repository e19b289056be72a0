//! Line-based input files: JSONL (one object per non-blank line) and CSV
//! (header row, then one item of strings per row), both streamed.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::{BadItem, Entry, InputError, RawItem};

/// Reads JSONL entries: one per non-blank line, with its 1-based line number.
pub(super) struct JsonlReader {
    reader: BufReader<File>,
    path: PathBuf,
    /// Lines read so far (the current line's number once one is read).
    line: u64,
    /// Entries produced so far (the next entry's position).
    position: u64,
    buf: Vec<u8>,
    /// Set after a read error: the stream ends.
    failed: bool,
}

impl JsonlReader {
    /// Opens `path`.
    pub(super) fn open(path: &Path) -> Result<JsonlReader, InputError> {
        let file = File::open(path).map_err(|source| InputError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(JsonlReader {
            reader: BufReader::with_capacity(256 * 1024, file),
            path: path.to_path_buf(),
            line: 0,
            position: 0,
            buf: Vec::new(),
            failed: false,
        })
    }
}

impl Iterator for JsonlReader {
    type Item = Result<Entry, InputError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            self.buf.clear();
            match self.reader.read_until(b'\n', &mut self.buf) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(source) => {
                    self.failed = true;
                    return Some(Err(InputError::Read {
                        path: self.path.clone(),
                        source,
                    }));
                }
            }
            self.line += 1;
            let mut text = self.buf.trim_ascii();
            if self.line == 1 {
                // Editors on Windows may start the file with a byte-order mark.
                text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
            }
            if text.is_empty() {
                continue;
            }
            let position = self.position;
            self.position += 1;
            let line = Some(self.line);
            let entry = match serde_json::from_slice::<Value>(text) {
                Ok(Value::Object(map)) => Ok(RawItem {
                    position,
                    line,
                    value: Value::Object(map),
                }),
                Ok(other) => Err(BadItem {
                    position,
                    line,
                    message: format!("expected a JSON object, found {}", json_kind(&other)),
                }),
                Err(e) => Err(BadItem {
                    position,
                    line,
                    message: format!(
                        "invalid JSON at column {}: {}",
                        e.column(),
                        bare_message(&e)
                    ),
                }),
            };
            return Some(Ok(entry));
        }
    }
}

/// Reads CSV entries: the header row names the fields, every later row is an
/// object of strings; a row with another number of fields is a bad entry.
pub(super) struct CsvReader {
    reader: csv::Reader<File>,
    path: PathBuf,
    headers: Vec<String>,
    record: csv::StringRecord,
    position: u64,
    failed: bool,
}

impl CsvReader {
    /// Opens `path` and reads its header row.
    pub(super) fn open(path: &Path) -> Result<CsvReader, InputError> {
        let file = File::open(path).map_err(|source| InputError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        // Flexible: a ragged row is reported as a bad entry with its line,
        // not as a reader error.
        let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(file);
        let invalid = |message: String| InputError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let headers: Vec<String> = reader
            .headers()
            .map_err(|e| {
                let text = e.to_string();
                match e.into_kind() {
                    csv::ErrorKind::Io(source) => InputError::Read {
                        path: path.to_path_buf(),
                        source,
                    },
                    _ => invalid(format!("cannot read the CSV header row: {text}")),
                }
            })?
            .iter()
            .map(str::to_string)
            .collect();
        for (i, name) in headers.iter().enumerate() {
            if headers[..i].contains(name) {
                return Err(invalid(format!(
                    "the header row names the column {name:?} twice; rename one so every field has its own name"
                )));
            }
        }
        Ok(CsvReader {
            reader,
            path: path.to_path_buf(),
            headers,
            record: csv::StringRecord::new(),
            position: 0,
            failed: false,
        })
    }
}

impl Iterator for CsvReader {
    type Item = Result<Entry, InputError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let read = self.reader.read_record(&mut self.record);
        let position = self.position;
        let entry = match read {
            Ok(false) => return None,
            Ok(true) => {
                let line = self.record.position().map(|p| p.line());
                if self.record.len() != self.headers.len() {
                    Err(BadItem {
                        position,
                        line,
                        message: format!(
                            "this row has {} fields but the header has {}; quote fields that contain commas",
                            self.record.len(),
                            self.headers.len()
                        ),
                    })
                } else {
                    let map: Map<String, Value> = self
                        .headers
                        .iter()
                        .zip(self.record.iter())
                        .map(|(k, v)| (k.clone(), Value::String(v.to_string())))
                        .collect();
                    Ok(RawItem {
                        position,
                        line,
                        value: Value::Object(map),
                    })
                }
            }
            Err(e) => {
                let line = e.position().map(|p| p.line());
                let text = e.to_string();
                match e.into_kind() {
                    csv::ErrorKind::Io(source) => {
                        self.failed = true;
                        return Some(Err(InputError::Read {
                            path: self.path.clone(),
                            source,
                        }));
                    }
                    csv::ErrorKind::Utf8 { err, .. } => Err(BadItem {
                        position,
                        line,
                        message: format!(
                            "field {} is not valid UTF-8; save the file as UTF-8",
                            err.field() + 1
                        ),
                    }),
                    _ => Err(BadItem {
                        position,
                        line,
                        message: format!("unreadable CSV row: {text}"),
                    }),
                }
            }
        };
        self.position += 1;
        Some(Ok(entry))
    }
}

/// "an array", "a string", … for messages.
pub(super) fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// serde_json's message without its " at line L column C" suffix (the caller
/// says where in its own terms).
pub(super) fn bare_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    text.strip_suffix(&suffix).unwrap_or(&text).to_string()
}
