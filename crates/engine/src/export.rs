//! Writing a run's results in input order: OpenAI Batch API output lines
//! (JSONL) or a flat CSV.
//!
//! Failed items carry `error: {code, message}`; the code is the part of the
//! recorded error before its first `": "`.

use std::io::Write;
use std::path::Path;

use serde_json::value::RawValue;
use sluice_store::{ItemRecord, ItemStatus, Output, Store};

use crate::error::{Error, Result};

/// Output formats of `sluice export` and `--out`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// One Batch API output object per line.
    Jsonl,
    /// A header row, then one row per item.
    Csv,
}

impl ExportFormat {
    /// The format a file name implies (`.csv` → CSV, otherwise JSONL).
    pub fn from_path(path: &Path) -> ExportFormat {
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("csv") => ExportFormat::Csv,
            _ => ExportFormat::Jsonl,
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Writes the results of `run_id` to `out`, in input order: one line per
/// item of its input (`pending` where it has no outcome for its current
/// request), or for a run without an input list one per recorded item.
/// Returns the number of lines written.
pub fn export_run(
    store: &mut dyn Store,
    run_id: &str,
    format: ExportFormat,
    out: &mut dyn Write,
) -> Result<u64> {
    let mut count = 0u64;
    let mut io_error: Option<std::io::Error> = None;
    let job = store
        .find_run(run_id)?
        .filter(|r| r.settings.get("mode").and_then(|m| m.as_str()) == Some("job"));
    if let Some(run) = job {
        return crate::job::export::export_units(store, &run, format, out);
    }
    let result = match format {
        ExportFormat::Jsonl => store.for_each_output(run_id, &mut |output| {
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
        }),
        ExportFormat::Csv => {
            let mut writer = csv::Writer::from_writer(&mut *out);
            let header = [
                "custom_id",
                "status",
                "status_code",
                "attempts",
                "latency_ms",
                "prompt_tokens",
                "completion_tokens",
                "content",
                "error",
                "metadata",
            ];
            writer.write_record(header).map_err(csv_error)?;
            let r = store.for_each_output(run_id, &mut |output| {
                count += 1;
                let row = match &output {
                    Output::Recorded(item) => csv_row(item),
                    Output::Pending { item_id, .. } => pending_row(item_id),
                };
                writer
                    .write_record(row)
                    .map_err(|e| Box::new(e) as BoxError)
            });
            writer.flush().map_err(|source| Error::Write {
                path: "output".into(),
                source,
            })?;
            r
        }
    };
    if let Some(source) = io_error {
        return Err(Error::Write {
            path: "output".into(),
            source,
        });
    }
    result?;
    Ok(count)
}

pub(crate) fn csv_error(e: csv::Error) -> Error {
    Error::Write {
        path: "output".into(),
        source: std::io::Error::other(e.to_string()),
    }
}

/// Splits a recorded error into its code and message.
pub(crate) fn split_error(error: &str) -> (&str, &str) {
    match error.split_once(": ") {
        Some((code, message)) if !code.contains(' ') => (code, message),
        _ => ("error", error),
    }
}

/// Writes one Batch API output line:
/// `{"id","custom_id","response":{"status_code","body"},"error"}` plus
/// `metadata` when the input had it, and a newline.
///
/// Written by hand rather than through a serde struct: a done item's body and
/// every item's metadata were validated as JSON when they were recorded, so
/// they are copied as they are instead of being parsed again (export is a
/// pass over every row at the end of each run).
fn write_output_line(out: &mut dyn Write, run_id: &str, item: &ItemRecord) -> std::io::Result<()> {
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

fn pending_row(item_id: &str) -> Vec<String> {
    let mut row = vec![String::new(); 10];
    row[0] = item_id.to_owned();
    row[1] = "pending".into();
    row[8] = format!("pending: {PENDING_MESSAGE}");
    row
}

/// The answer's text: a chat message's content, a completion's text, else the body.
fn content(body: &str) -> String {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(body) else {
        return body.to_string();
    };
    let choice = value.pointer("/choices/0");
    let text = choice
        .and_then(|c| c.pointer("/message/content").or_else(|| c.get("text")))
        .or_else(|| value.pointer("/content/0/text"));
    match text {
        Some(serde_json::Value::String(s)) => s.clone(),
        _ => body.to_string(),
    }
}

fn csv_row(item: &ItemRecord) -> Vec<String> {
    let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
    vec![
        item.custom_id
            .clone()
            .unwrap_or_else(|| item.item_id.clone()),
        item.status.as_str().to_string(),
        opt(item.status_code.map(u64::from)),
        item.attempts.to_string(),
        item.latency_ms.to_string(),
        opt(item.prompt_tokens),
        opt(item.completion_tokens),
        match (item.status, item.response.as_deref()) {
            (ItemStatus::Done, Some(body)) => content(body),
            _ => String::new(),
        },
        item.error.clone().unwrap_or_default(),
        item.metadata.clone().unwrap_or_default(),
    ]
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

    #[test]
    fn csv_content_is_the_answer_text() {
        let row = csv_row(&item(ItemStatus::Done));
        assert_eq!(row[7], "hi");
        assert_eq!(row[1], "done");
    }
}
