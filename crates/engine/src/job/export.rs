//! Results of a job run: one line (or row) per unit, with every step's output.
//!
//! JSONL: `{"id","item_id","matrix","status","error","steps":{name: output}}`.
//! CSV: `id, item_id, status, error`, a column per matrix key, then
//! `<step>.text`, `<step>.json`, `<step>.file`, `<step>.status` per step (a
//! fan-out step's list is JSON in its `.json` cell), and `<step>.ttft_ms`,
//! `<step>.tokens_per_s` for steps with `stream = true`.

use std::io::Write;

use serde_json::{json, Value as Json};
use sluice_store::{ItemRecord, ItemStatus, Output, RunMeta, Store};

use crate::error::{Error, Result};
use crate::export::{csv_error, split_error, ExportFormat};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Writes a line per unit of `run`'s input in input order (`pending` where
/// it has no outcome yet; for a run without an input list, one per
/// recorded unit); returns how many.
pub(crate) fn export_units(
    store: &mut dyn Store,
    run: &RunMeta,
    format: ExportFormat,
    out: &mut dyn Write,
) -> Result<u64> {
    let names = |key: &str| -> Vec<String> {
        run.settings
            .get(key)
            .and_then(Json::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (steps, axes, streamed) = (names("steps"), names("matrix"), names("streamed"));
    let mut count = 0u64;
    let written = match format {
        ExportFormat::Jsonl => store.for_each_output(&run.id, &mut |output| {
            count += 1;
            let line = match &output {
                Output::Recorded(item) => unit_result(item),
                Output::Pending { item_id, .. } => pending_result(item_id),
            };
            writeln!(out, "{line}").map_err(|e| Box::new(e) as BoxError)
        }),
        ExportFormat::Csv => {
            let mut writer = csv::Writer::from_writer(&mut *out);
            let mut header = vec![
                "id".to_string(),
                "item_id".into(),
                "status".into(),
                "error".into(),
            ];
            header.extend(axes.iter().map(|a| format!("matrix.{a}")));
            for s in &steps {
                for field in fields(s, &streamed) {
                    header.push(format!("{s}.{field}"));
                }
            }
            writer.write_record(&header).map_err(csv_error)?;
            let r = store.for_each_output(&run.id, &mut |output| {
                count += 1;
                let row = match &output {
                    Output::Recorded(item) => unit_row(item, &steps, &axes, &streamed),
                    Output::Pending { item_id, .. } => {
                        let mut row = vec![String::new(); header.len()];
                        row[0] = item_id.clone();
                        row[2] = "pending".into();
                        row
                    }
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
    written?;
    Ok(count)
}

fn recorded(item: &ItemRecord) -> Json {
    item.response
        .as_deref()
        .and_then(|r| serde_json::from_str(r).ok())
        .unwrap_or_else(|| json!({}))
}

fn error_value(item: &ItemRecord) -> Json {
    match (item.status, item.error.as_deref()) {
        (ItemStatus::Failed, Some(e)) => {
            let (code, message) = split_error(e);
            json!({"code": code, "message": message})
        }
        (ItemStatus::Failed, None) => json!({"code": "error", "message": "failed"}),
        _ => Json::Null,
    }
}

/// A job run's result line for one recorded unit, as the JSONL export
/// writes it: `{"id","item_id","matrix","status","error","steps"}`.
pub fn unit_result(item: &ItemRecord) -> Json {
    let r = recorded(item);
    json!({
        "id": item.item_id,
        "item_id": r.get("item_id").cloned().unwrap_or_else(|| json!(item.custom_id)),
        "matrix": r.get("matrix").cloned().unwrap_or_else(|| json!({})),
        "status": item.status.as_str(),
        "error": error_value(item),
        "steps": r.get("steps").cloned().unwrap_or_else(|| json!({})),
    })
}

/// The line of a unit with no outcome yet.
fn pending_result(unit_id: &str) -> Json {
    json!({
        "id": unit_id,
        "item_id": null,
        "matrix": null,
        "status": "pending",
        "error": null,
        "steps": {},
    })
}

fn cell(v: Option<&Json>) -> String {
    match v {
        None | Some(Json::Null) => String::new(),
        Some(Json::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// The CSV columns of step `s`.
fn fields(s: &str, streamed: &[String]) -> &'static [&'static str] {
    const PLAIN: &[&str] = &["text", "json", "file", "status"];
    const STREAMED: &[&str] = &["text", "json", "file", "status", "ttft_ms", "tokens_per_s"];
    if streamed.iter().any(|n| n == s) {
        STREAMED
    } else {
        PLAIN
    }
}

fn unit_row(
    item: &ItemRecord,
    steps: &[String],
    axes: &[String],
    streamed: &[String],
) -> Vec<String> {
    let r = recorded(item);
    let mut row = vec![
        item.item_id.clone(),
        cell(r.get("item_id")),
        item.status.as_str().to_string(),
        item.error.clone().unwrap_or_default(),
    ];
    for a in axes {
        row.push(cell(r.pointer(&format!("/matrix/{a}"))));
    }
    for s in steps {
        let out = r.get("steps").and_then(|st| st.get(s));
        let fields = fields(s, streamed);
        match out {
            // A fan-out step: its list of outputs goes in the .json cell.
            Some(Json::Array(_)) => {
                row.extend(
                    (0..fields.len()).map(|i| if i == 1 { cell(out) } else { String::new() }),
                );
            }
            _ => {
                for field in fields {
                    row.push(cell(out.and_then(|o| o.get(field))));
                }
            }
        }
    }
    row
}
