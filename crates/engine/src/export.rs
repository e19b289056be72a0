//! Writing a run's results in input order: OpenAI Batch API output lines
//! (JSONL), or a flat table (`export/table.rs`) as CSV or Parquet.
//!
//! Failed items carry `error: {code, message}`; the code is the part of the
//! recorded error before its first `": "`.

mod parquet;
pub(crate) mod quick_table;
pub(crate) mod table;

use std::io::Write;
use std::path::Path;

use serde_json::value::RawValue;
use sluice_store::{ItemRecord, ItemStatus, Output, Store};

use crate::error::{Error, Result};
use table::{Cell, Flatten};

/// Output formats of `sluice export` and `--out`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// One Batch API output object (quick mode) or unit result (job runs) per line.
    Jsonl,
    /// A header row, then one row per item.
    Csv,
    /// The same columns as CSV, typed; embeddings as lists of float32.
    Parquet,
}

impl ExportFormat {
    /// The format a file name's extension names: `.jsonl` (or `.ndjson`),
    /// `.csv`, `.parquet`. `.json` is refused too: it promises one JSON
    /// document, and results are JSON lines. Anything else is refused with what to use, so a
    /// typo never writes JSONL under a name that promises another format.
    pub fn from_path(path: &Path) -> std::result::Result<ExportFormat, String> {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        match ext.to_ascii_lowercase().as_str() {
            "jsonl" | "ndjson" => Ok(ExportFormat::Jsonl),
            "csv" => Ok(ExportFormat::Csv),
            "parquet" => Ok(ExportFormat::Parquet),
            _ => Err(format!(
                "{}: {} names no results format; name the file .jsonl, .csv or .parquet (or give --format)",
                path.display(),
                if ext.is_empty() {
                    "a file without an extension".to_string()
                } else {
                    format!("the extension .{ext}")
                }
            )),
        }
    }
}

/// What an export writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportOptions {
    /// The format.
    pub format: ExportFormat,
    /// Carry each item's own fields: a job item's fields (`"item"` in JSONL,
    /// `item.KEY` columns), a quick-mode line's `metadata` keys (`item.KEY`
    /// columns; its JSONL lines carry `metadata` already).
    pub include_item: bool,
    /// JSONL only: one flat object per item with the CSV and Parquet columns
    /// (typed, vectors as lists) instead of the nested result lines.
    pub flat: bool,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Quick mode's JSONL: one Batch API output line per item of its input, in
/// input order (`pending` where it has no outcome for its current request),
/// or for a run without an input list one per recorded item.
pub(crate) fn write_lines(store: &mut dyn Store, run_id: &str, out: &mut dyn Write) -> Result<u64> {
    let mut count = 0u64;
    let mut io_error: Option<std::io::Error> = None;
    let result = store.for_each_output(run_id, &mut |output| {
        count += 1;
        let written = match &output {
            Output::Recorded(item) => write_output_line(&mut *out, run_id, item),
            Output::Pending { item_id, idx } => {
                write_pending_line(&mut *out, run_id, item_id, *idx)
            }
        };
        written.map_err(|e| {
            let boxed: BoxError = e.to_string().into();
            io_error = Some(e);
            boxed
        })
    });
    if let Some(source) = io_error {
        return Err(write_error(source));
    }
    result?;
    Ok(count)
}

/// Writes a run as a table: one pass to learn the columns, one to write
/// the rows. Returns the number of rows.
pub(crate) fn write_table(
    store: &mut dyn Store,
    run_id: &str,
    table: &mut dyn Flatten,
    format: ExportFormat,
    out: &mut (dyn Write + Send),
) -> Result<u64> {
    store.for_each_output(run_id, &mut |output| {
        if let Output::Recorded(item) = &output {
            table.observe(item);
        }
        Ok(())
    })?;
    let columns = table.columns();
    let mut count = 0u64;
    let mut cells: Vec<Cell> = Vec::with_capacity(columns.len());
    let mut fill = |output: &Output, cells: &mut Vec<Cell>| {
        count += 1;
        cells.clear();
        match output {
            Output::Recorded(item) => table.row(item, cells),
            Output::Pending { item_id, .. } => pending_cells(&columns, item_id, cells),
        }
    };
    match format {
        ExportFormat::Parquet => {
            let mut sink = parquet::ParquetSink::new(&mut *out, &columns)?;
            let mut failure: Option<Error> = None;
            let result = store.for_each_output(run_id, &mut |output| {
                fill(&output, &mut cells);
                sink.push(&cells).map_err(|e| {
                    let boxed: BoxError = e.to_string().into();
                    failure = Some(e);
                    boxed
                })
            });
            if let Some(e) = failure {
                return Err(e);
            }
            result?;
            sink.finish()?;
        }
        ExportFormat::Jsonl => {
            let result = store.for_each_output(run_id, &mut |output| {
                fill(&output, &mut cells);
                write_flat(&mut *out, &columns, &cells).map_err(|e| Box::new(e) as BoxError)
            });
            result?;
        }
        ExportFormat::Csv => {
            let mut writer = csv::Writer::from_writer(&mut *out);
            writer
                .write_record(columns.iter().map(|c| c.name.as_str()))
                .map_err(csv_error)?;
            let result = store.for_each_output(run_id, &mut |output| {
                fill(&output, &mut cells);
                writer
                    .write_record(cells.iter().map(Cell::to_csv))
                    .map_err(|e| Box::new(e) as BoxError)
            });
            writer.flush().map_err(write_error)?;
            result?;
        }
    }
    Ok(count)
}

/// The row of an item with no outcome yet: its id in the first column,
/// `pending` as its status and error, the rest empty (never an earlier
/// error: a rerun sends it again).
fn pending_cells(columns: &[table::Column], item_id: &str, cells: &mut Vec<Cell>) {
    for (i, column) in columns.iter().enumerate() {
        cells.push(match column.name.as_str() {
            _ if i == 0 => Cell::Str(item_id.to_owned()),
            "status" => Cell::Str("pending".into()),
            "error" => Cell::Str(format!("pending: {PENDING_MESSAGE}")),
            _ => Cell::Null,
        });
    }
}

/// One row as a JSON object, keys in column order (a `serde_json::Map`
/// would sort them).
fn write_flat(
    out: &mut dyn Write,
    columns: &[table::Column],
    cells: &[Cell],
) -> std::io::Result<()> {
    out.write_all(b"{")?;
    for (i, (column, cell)) in columns.iter().zip(cells).enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        serde_json::to_writer(&mut *out, &column.name).map_err(std::io::Error::other)?;
        out.write_all(b":")?;
        serde_json::to_writer(&mut *out, &cell.to_json()).map_err(std::io::Error::other)?;
    }
    out.write_all(b"}\n")
}

fn write_error(source: std::io::Error) -> Error {
    Error::Write {
        path: "output".into(),
        source,
    }
}

pub(crate) fn csv_error(e: csv::Error) -> Error {
    Error::Write {
        path: "output".into(),
        source: std::io::Error::other(e.to_string()),
    }
}

/// Splits a recorded error into its code and message (see [`crate::ItemError`]).
pub(crate) fn split_error(error: &str) -> (&str, &str) {
    crate::item_error::split(error).unwrap_or(("error", error))
}

/// Writes one Batch API output line:
/// `{"id","custom_id","response":{"status_code","body"},"error"}` plus
/// `metadata` when the input had it, and a newline.
///
/// Written by hand rather than through a serde struct: a done item's body and
/// every item's metadata were validated as JSON when they were recorded, so
/// they are copied as they are instead of being parsed again (export is a
/// pass over every row at the end of each run).
pub(crate) fn write_output_line(
    out: &mut dyn Write,
    run_id: &str,
    item: &ItemRecord,
) -> std::io::Result<()> {
    let text = |out: &mut dyn Write, s: &str| -> std::io::Result<()> {
        serde_json::to_writer(&mut *out, s).map_err(std::io::Error::other)
    };
    write!(out, "{{\"id\":")?;
    text(out, &format!("{run_id}-{}", item.idx))?;
    out.write_all(b",\"custom_id\":")?;
    text(out, item.custom_id.as_deref().unwrap_or(&item.item_id))?;
    out.write_all(b",\"response\":")?;
    match (item.status_code, item.response.as_deref()) {
        (Some(code), Some(body)) => {
            write!(out, "{{\"status_code\":{code},\"body\":")?;
            let trusted = item.status == ItemStatus::Done;
            if trusted || serde_json::from_str::<&RawValue>(body).is_ok() {
                out.write_all(body.trim().as_bytes())?;
            } else {
                text(out, body)?;
            }
            out.write_all(b"}")?;
        }
        _ => out.write_all(b"null")?,
    }
    out.write_all(b",\"error\":")?;
    match item.status {
        ItemStatus::Done => out.write_all(b"null")?,
        ItemStatus::Failed => {
            let (code, message) = split_error(item.error.as_deref().unwrap_or("error: failed"));
            out.write_all(b"{\"code\":")?;
            text(out, code)?;
            out.write_all(b",\"message\":")?;
            text(out, message)?;
            out.write_all(b"}")?;
        }
    }
    if let Some(metadata) = item.metadata.as_deref() {
        out.write_all(b",\"metadata\":")?;
        out.write_all(metadata.as_bytes())?;
    }
    out.write_all(b"}\n")
}

/// What a pending item's line and row say.
pub(crate) const PENDING_MESSAGE: &str =
    "not sent yet (the run did not finish): run it again to send it";

/// The line of an item with no outcome yet: no response, error `pending`.
fn write_pending_line(
    out: &mut dyn Write,
    run_id: &str,
    item_id: &str,
    idx: u64,
) -> std::io::Result<()> {
    let line = serde_json::json!({
        "id": format!("{run_id}-{idx}"),
        "custom_id": item_id,
        "response": null,
        "error": {"code": "pending", "message": PENDING_MESSAGE},
    });
    writeln!(out, "{line}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(status: ItemStatus) -> ItemRecord {
        ItemRecord {
            item_id: "a".into(),
            idx: 3,
            hash: 1,
            status,
            attempts: 2,
            throttled: 0,
            status_code: Some(200),
            response: Some(r#"{"choices":[{"message":{"content":"hi"}}]}"#.into()),
            error: None,
            prompt_tokens: Some(5),
            completion_tokens: Some(1),
            latency_ms: 7,
            started_at: 0,
            finished_at: 0,
            metadata: Some(r#"{"row":1}"#.into()),
            custom_id: Some("a".into()),
        }
    }

    fn line(run_id: &str, item: &ItemRecord) -> String {
        let mut out = Vec::new();
        write_output_line(&mut out, run_id, item).unwrap();
        assert_eq!(out.last(), Some(&b'\n'));
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn done_item_is_a_batch_api_output_line_with_metadata() {
        let line = line("r-1", &item(ItemStatus::Done));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["custom_id"], "a");
        assert_eq!(v["response"]["status_code"], 200);
        assert_eq!(
            v["response"]["body"]["choices"][0]["message"]["content"],
            "hi"
        );
        assert!(v["error"].is_null());
        assert_eq!(v["metadata"]["row"], 1);
    }

    #[test]
    fn failed_item_splits_code_and_message() {
        let mut it = item(ItemStatus::Failed);
        it.status_code = None;
        it.response = None;
        it.error = Some("timeout: no complete response within 5s (after 3 attempts)".into());
        let v: serde_json::Value = serde_json::from_str(&line("r", &it)).unwrap();
        assert!(v["response"].is_null());
        assert_eq!(v["error"]["code"], "timeout");
        assert_eq!(
            v["error"]["message"],
            "no complete response within 5s (after 3 attempts)"
        );
    }

    #[test]
    fn a_failed_items_non_json_body_is_exported_as_a_string() {
        let mut it = item(ItemStatus::Failed);
        it.status_code = Some(502);
        it.response = Some("<html>Bad gateway \"x\"</html>".into());
        it.error = Some("server_error: HTTP 502".into());
        it.custom_id = Some("quote\"d".into());
        let v: serde_json::Value = serde_json::from_str(&line("r", &it)).unwrap();
        assert_eq!(v["response"]["body"], "<html>Bad gateway \"x\"</html>");
        assert_eq!(v["custom_id"], "quote\"d");
        assert_eq!(v["id"], "r-3");
    }
}
