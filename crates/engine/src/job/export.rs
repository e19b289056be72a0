//! Results of a job run: one line (or row) per unit, with every step's output.
//!
//! JSONL: `{"id","item_id","matrix","status","error","started_at",
//! "finished_at","duration_ms","steps":{name: output}}` (and `"item"` with the
//! item's fields when asked for); each step's output carries its own times.
//! CSV and Parquet: `id, item_id, status, error, started_at, finished_at,
//! duration_ms`, a column per matrix key,
//! `item.KEY` columns when asked for, then per step: `<step>.text`,
//! `<step>.json`, `<step>.file`, `<step>.status` (a fan-out step's list is
//! JSON in its `.json` cell), `<step>.ttft_ms`, `<step>.tokens_per_s` for
//! steps with `stream = true`, and `<step>.prompt_tokens`,
//! `<step>.completion_tokens`, `<step>.latency_ms`, `<step>.started_at`,
//! `<step>.finished_at`, `<step>.duration_ms` (a fan-out step: the span of
//! its elements). An `embed` step has
//! `<step>.embedding` (the vector, or the list of vectors of a list input)
//! instead of text/json/file/status, and no completion tokens.

use std::io::Write;

use serde_json::{json, Value as Json};
use sluice_store::{ItemRecord, ItemStatus, Output, RunMeta, Store};

use crate::error::Result;
use crate::export::table::{embedding_type, widen, Cell, ColType, Column, Flatten, ItemFields};
use crate::export::{split_error, write_table, ExportFormat, ExportOptions};
use crate::job::timing;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Writes a line per unit of `run`'s input in input order (`pending` where
/// it has no outcome yet; for a run without an input list, one per
/// recorded unit); returns how many.
pub(crate) fn export_units(
    store: &mut dyn Store,
    run: &RunMeta,
    options: ExportOptions,
    out: &mut (dyn Write + Send),
) -> Result<u64> {
    if options.format != ExportFormat::Jsonl || options.flat {
        let mut table = JobTable::new(run, options.include_item);
        return write_table(store, &run.id, &mut table, options.format, out);
    }
    let mut count = 0u64;
    store.for_each_output(&run.id, &mut |output| {
        count += 1;
        let line = match &output {
            Output::Recorded(item) => result_line(item, options.include_item),
            Output::Pending { item_id, .. } => pending_result(item_id),
        };
        writeln!(out, "{line}").map_err(|e| Box::new(e) as BoxError)
    })?;
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
    result_line(item, false)
}

/// [`unit_result`], with `"item"` (the unit's input item) after `matrix`
/// when `include_item` (null for units recorded before items were kept).
pub(crate) fn result_line(item: &ItemRecord, include_item: bool) -> Json {
    let r = recorded(item);
    let mut line = serde_json::Map::new();
    line.insert("id".into(), json!(item.item_id));
    line.insert(
        "item_id".into(),
        r.get("item_id")
            .cloned()
            .unwrap_or_else(|| json!(item.custom_id)),
    );
    line.insert(
        "matrix".into(),
        r.get("matrix").cloned().unwrap_or_else(|| json!({})),
    );
    if include_item {
        line.insert("item".into(), r.get("item").cloned().unwrap_or(Json::Null));
    }
    line.insert("status".into(), json!(item.status.as_str()));
    line.insert("error".into(), error_value(item));
    timing::unit_fields(&mut line, item.started_at, item.finished_at);
    line.insert(
        "steps".into(),
        r.get("steps").cloned().unwrap_or_else(|| json!({})),
    );
    Json::Object(line)
}

/// One step's columns.
struct StepColumns {
    name: String,
    /// `Some` for an embed step: the type of its vectors once seen.
    embedding: Option<Option<ColType>>,
    streamed: bool,
}

impl StepColumns {
    fn fields(&self) -> Vec<(&'static str, ColType)> {
        if let Some(ty) = self.embedding {
            return vec![
                ("embedding", ty.unwrap_or(ColType::Vector)),
                ("prompt_tokens", ColType::Int),
                ("latency_ms", ColType::Int),
                ("started_at", ColType::Str),
                ("finished_at", ColType::Str),
                ("duration_ms", ColType::Int),
            ];
        }
        let mut fields = vec![
            ("text", ColType::Str),
            ("json", ColType::Json),
            ("file", ColType::Str),
            ("status", ColType::Int),
        ];
        if self.streamed {
            fields.push(("ttft_ms", ColType::Int));
            fields.push(("tokens_per_s", ColType::Float));
        }
        fields.extend([
            ("prompt_tokens", ColType::Int),
            ("completion_tokens", ColType::Int),
            ("latency_ms", ColType::Int),
            ("started_at", ColType::Str),
            ("finished_at", ColType::Str),
            ("duration_ms", ColType::Int),
        ]);
        fields
    }
}

/// The line of a unit with no outcome yet.
fn pending_result(unit_id: &str) -> Json {
    json!({
        "id": unit_id,
        "item_id": null,
        "matrix": null,
        "status": "pending",
        "error": null,
        "started_at": null,
        "finished_at": null,
        "duration_ms": null,
        "steps": {},
    })
}

/// Flattens a job run's unit records.
struct JobTable {
    axes: Vec<String>,
    steps: Vec<StepColumns>,
    include_item: bool,
    item: ItemFields,
}

impl JobTable {
    fn new(run: &RunMeta, include_item: bool) -> JobTable {
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
        let (streamed, embeds) = (names("streamed"), names("embeds"));
        JobTable {
            axes: names("matrix"),
            steps: names("steps")
                .into_iter()
                .map(|name| StepColumns {
                    embedding: embeds.contains(&name).then_some(None),
                    streamed: streamed.contains(&name),
                    name,
                })
                .collect(),
            include_item,
            item: ItemFields::default(),
        }
    }
}

/// A field of a step's output as a cell (usage lives under `usage`).
fn step_cell(out: &Json, field: &str, ty: ColType) -> Cell {
    let value = match field {
        "embedding" => out.get("json"),
        "prompt_tokens" | "completion_tokens" => out.get("usage").and_then(|u| u.get(field)),
        _ => out.get(field),
    };
    Cell::of(value, ty)
}

impl Flatten for JobTable {
    fn observe(&mut self, item: &ItemRecord) {
        let r = recorded(item);
        for step in &mut self.steps {
            if let Some(known) = &mut step.embedding {
                let vectors = r.pointer(&format!("/steps/{}/json", step.name));
                if let Some(ty) = vectors.and_then(embedding_type) {
                    *known = Some(widen(*known, ty));
                }
            }
        }
        if self.include_item {
            self.item.observe(r.get("item"));
        }
    }

    fn columns(&self) -> Vec<Column> {
        let mut columns = vec![
            Column::new("id", ColType::Str),
            Column::new("item_id", ColType::Str),
            Column::new("status", ColType::Str),
            Column::new("error", ColType::Str),
            Column::new("started_at", ColType::Str),
            Column::new("finished_at", ColType::Str),
            Column::new("duration_ms", ColType::Int),
        ];
        columns.extend(
            self.axes
                .iter()
                .map(|a| Column::new(format!("matrix.{a}"), ColType::Str)),
        );
        if self.include_item {
            columns.extend(self.item.columns());
        }
        for step in &self.steps {
            for (field, ty) in step.fields() {
                columns.push(Column::new(format!("{}.{field}", step.name), ty));
            }
        }
        columns
    }

    fn row(&self, item: &ItemRecord, row: &mut Vec<Cell>) {
        let r = recorded(item);
        row.push(Cell::Str(item.item_id.clone()));
        row.push(Cell::of(r.get("item_id"), ColType::Str));
        row.push(Cell::Str(item.status.as_str().to_string()));
        row.push(item.error.clone().map_or(Cell::Null, Cell::Str));
        let mut times = serde_json::Map::new();
        timing::unit_fields(&mut times, item.started_at, item.finished_at);
        row.push(Cell::of(times.get("started_at"), ColType::Str));
        row.push(Cell::of(times.get("finished_at"), ColType::Str));
        row.push(Cell::of(times.get("duration_ms"), ColType::Int));
        for a in &self.axes {
            row.push(Cell::of(
                r.get("matrix").and_then(|m| m.get(a)),
                ColType::Str,
            ));
        }
        if self.include_item {
            self.item.cells(r.get("item"), row);
        }
        for step in &self.steps {
            let out = r.get("steps").and_then(|s| s.get(&step.name));
            // A fan-out step's times: from its first element's start to its
            // last element's end.
            let span = match out {
                Some(Json::Array(list)) => timing::span(list),
                _ => None,
            };
            for (field, ty) in step.fields() {
                row.push(match (out, &span, field) {
                    (Some(Json::Array(_)), Some((s, _, _)), "started_at") => Cell::Str(s.clone()),
                    (Some(Json::Array(_)), Some((_, f, _)), "finished_at") => Cell::Str(f.clone()),
                    (Some(Json::Array(_)), Some((_, _, d)), "duration_ms") => Cell::Int(*d as i64),
                    // A fan-out step: its list of outputs goes in the .json cell.
                    (Some(list @ Json::Array(_)), _, "json") => Cell::Json(list.to_string()),
                    (Some(Json::Array(_)) | None, _, _) => Cell::Null,
                    (Some(out), _, _) => step_cell(out, field, ty),
                });
            }
        }
    }
}
