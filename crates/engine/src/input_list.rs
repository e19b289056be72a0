//! The input list of a quick-mode run: every line's id, position and request
//! hash, read once when an execution starts and kept in the store, so exports
//! and counts follow the input as it is now.

use std::path::Path;

use sluice_store::InputRow;

use crate::error::Result;
use crate::input::LineReader;

/// The input list of a quick-mode run: every non-blank line's id, position
/// and request hash; a line that cannot be sent is `line-N` (as recorded
/// when `--skip-bad` records it failed).
pub(crate) fn input_rows<'a>(
    path: &Path,
    duplicates: &'a [u64],
) -> Result<impl Iterator<Item = std::result::Result<InputRow, sluice_store::SinkError>> + 'a> {
    let mut reader = LineReader::open(path)?;
    Ok(std::iter::from_fn(move || {
        let entry = match reader.next_entry(duplicates) {
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
