//! Quick mode's source: the JSONL file's lines a chunk at a time, each
//! parsed to its request and routed to its endpoint; a line that cannot be
//! sent is recorded failed.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use sluice_provider::Endpoint;
use sluice_store::ItemRecord;

use crate::clock::now_ms;
use crate::dispatch::{Chunks, Entry, Keyed, Next};
use crate::error::Result;
use crate::input::{BadLine, LineReader, Request};
use crate::input_list::bad_line_id;
use crate::writer::Message;

/// Lines read (and looked up in the store on resume) per chunk.
const CHUNK: usize = 1_024;

/// A request and where it goes.
pub(super) type Routed = (Arc<Endpoint>, Request);

/// The input's lines.
pub(super) struct Lines {
    reader: LineReader,
    duplicate_lines: Vec<u64>,
    /// The URL is a base URL: a bare body goes to the endpoint its shape implies.
    base_url: bool,
    /// `--limit N`: read only the first N lines.
    first: Option<u64>,
    read: u64,
    /// A tokens/minute limit is set: estimate with the model's tokenizer.
    exact_tokens: bool,
    base: Endpoint,
    endpoints: HashMap<String, Arc<Endpoint>>,
}

impl Lines {
    pub(super) fn open(
        path: &Path,
        base: Endpoint,
        duplicate_lines: Vec<u64>,
        base_url: bool,
        first: Option<u64>,
        exact_tokens: bool,
    ) -> Result<Lines> {
        Ok(Lines {
            reader: LineReader::open(path)?,
            duplicate_lines,
            base_url,
            first,
            read: 0,
            exact_tokens,
            base,
            endpoints: HashMap::new(),
        })
    }

    /// Where a request goes: its batch line's `url` path on the URL's
    /// origin; else, under a base URL, the endpoint its shape implies; else
    /// the URL itself.
    fn endpoint(
        &mut self,
        path: Option<&str>,
        shape: Option<&'static str>,
    ) -> std::result::Result<Arc<Endpoint>, String> {
        let inferred = match (path, shape) {
            (None, Some(shape)) if self.base_url => {
                Some(crate::shape::join(self.base.uri.path(), shape))
            }
            _ => None,
        };
        let path = path.or(inferred.as_deref());
        let key = path.unwrap_or("");
        if let Some(e) = self.endpoints.get(key) {
            return Ok(e.clone());
        }
        let endpoint = match path {
            None => self.base.clone(),
            Some(p) => self.base.with_path(p).map_err(|e| e.to_string())?,
        };
        let endpoint = Arc::new(endpoint);
        self.endpoints.insert(key.to_string(), endpoint.clone());
        Ok(endpoint)
    }
}

impl Keyed for Request {
    fn key(&self) -> &str {
        &self.item_id
    }

    fn idx(&self) -> u64 {
        self.line
    }

    fn hash(&self) -> u64 {
        self.hash
    }
}

impl Chunks for Lines {
    type Read = Request;
    type Work = Routed;

    fn read(&mut self, out: &mut std::collections::VecDeque<Entry<Request>>) -> Result<()> {
        while out.len() < CHUNK {
            if self.first.is_some_and(|n| self.read >= n) {
                break;
            }
            self.read += 1;
            match self
                .reader
                .next_entry(&self.duplicate_lines, self.base_url)?
            {
                Some(Ok(request)) => out.push_back(Entry::Read(request)),
                Some(Err(bad)) => out.push_back(Entry::Write(Box::new(bad_record(bad, None)))),
                None => break,
            }
        }
        Ok(())
    }

    fn ready(&mut self, mut request: Request) -> Next<Routed> {
        if self.exact_tokens {
            request.estimate = crate::input::exact_estimate(&request.body);
        }
        match self.endpoint(request.path.as_deref(), request.shape) {
            Ok(endpoint) => Next::Work((endpoint, request)),
            Err(message) => {
                // Under its own id and hash: the input list has this line
                // as the request it parsed to.
                let id = Some((request.item_id, request.hash));
                let bad = BadLine {
                    line: request.line,
                    custom_id: request.custom_id,
                    message,
                };
                Next::Write(bad_record(bad, id))
            }
        }
    }
}

/// The failed record of a line that cannot be sent: under `line-N` (as in
/// the input list) unless it parsed to a request with an id and hash.
fn bad_record(bad: BadLine, id: Option<(String, u64)>) -> Message {
    let (item_id, hash) = id.unwrap_or_else(|| bad_line_id(bad.line));
    let error = format!("invalid_input: line {}: {}", bad.line, bad.message);
    Message::Record(ItemRecord {
        custom_id: bad.custom_id,
        ..ItemRecord::failed_before_sending(item_id, bad.line, hash, error, now_ms())
    })
}
