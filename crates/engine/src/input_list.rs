//! The input list of a quick-mode run: every line's id, position and request
//! hash, read when an execution starts and kept in the store, so exports and
//! counts follow the input as it is now.

use std::path::Path;

use sluice_store::{InputCounts, InputRow, Store};

use crate::error::Result;
use crate::input::{LineReader, Survey};

/// The run state entry that says which input the list was made from.
const LISTED: &str = "input_list";

/// Makes the run's input list that of `path` (as `found` surveyed it; its
/// first `first` lines for a trial run), and earlier failures pending. An
/// input unchanged since the list was written (same fingerprint) keeps its
/// list: rewriting a million rows took seconds.
pub(crate) fn input_list(
    store: &mut dyn Store,
    run_id: &str,
    path: &Path,
    found: &Survey,
    first: Option<u64>,
) -> Result<InputCounts> {
    let fingerprint = serde_json::json!({
        "fingerprint": format!("{:016x}", found.fingerprint),
        "first": first,
    });
    let unchanged = store
        .run_state(run_id, LISTED)?
        .into_iter()
        .any(|(key, value)| key == LISTED && value == fingerprint);
    if unchanged {
        store.reset_failed(run_id)?;
        let done = store.counts(run_id)?.done;
        return Ok(InputCounts {
            total: first.map_or(found.total, |n| found.total.min(n)),
            done,
        });
    }
    let rows = input_rows(path, &found.duplicate_lines, found.base_url)?;
    let limit = first.map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
    let listed = store.replace_inputs(run_id, &mut rows.take(limit))?;
    store.put_run_state(run_id, LISTED, &fingerprint)?;
    Ok(listed)
}

/// The input list of a quick-mode run: every non-blank line's id, position
/// and request hash; a line that cannot be sent is `line-N` (as recorded
/// when `--skip-bad` records it failed).
fn input_rows<'a>(
    path: &Path,
    duplicates: &'a [u64],
    base_url: bool,
) -> Result<impl Iterator<Item = std::result::Result<InputRow, sluice_store::SinkError>> + 'a> {
    let mut reader = LineReader::open(path)?;
    Ok(std::iter::from_fn(move || {
        let entry = match reader.next_entry(duplicates, base_url) {
            Ok(entry) => entry?,
            Err(e) => return Some(Err(e.to_string().into())),
        };
        Some(Ok(match entry {
            Ok(request) => InputRow {
                item_id: request.item_id,
                idx: request.line,
                hash: request.hash,
            },
            Err(bad) => {
                let (item_id, hash) = bad_line_id(bad.line);
                InputRow {
                    item_id,
                    idx: bad.line,
                    hash,
                }
            }
        }))
    }))
}

/// The id and hash a line that cannot be sent is recorded under.
pub(crate) fn bad_line_id(line: u64) -> (String, u64) {
    (format!("line-{line}"), 0)
}
