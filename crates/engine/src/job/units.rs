//! Units: each input item × each matrix combination, with its id, input
//! position and the hash that decides whether a finished unit can be skipped.

use std::collections::HashSet;

use serde_json::{json, Map, Value as Json};
use sluice_spec::{Job, Template};
use sluice_store::InputRow;

use super::runner::Unit;
use crate::error::{Error, Result};
use crate::inputs::{BadItem, Prepared, RawItem};

/// The matrix's combinations in file order (one empty combination without a matrix).
pub(crate) struct Combos {
    combos: Vec<Map<String, Json>>,
}

impl Combos {
    pub(crate) fn new(job: &Job) -> Combos {
        let mut combos = vec![Map::new()];
        for axis in &job.matrix {
            let mut next = Vec::with_capacity(combos.len() * axis.values.len());
            for combo in &combos {
                for value in &axis.values {
                    let mut c = combo.clone();
                    c.insert(axis.name.clone(), value.clone());
                    next.push(c);
                }
            }
            combos = next;
        }
        Combos { combos }
    }

    pub(crate) fn len(&self) -> usize {
        self.combos.len()
    }

    /// Each combination.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Map<String, Json>> {
        self.combos.iter()
    }
}

/// `#model=a,run=2` for a combination; empty without a matrix. Keys in file
/// order (serde_json keeps insertion order only with preserve_order, so the
/// axes' order is taken from the job).
fn suffix(job_axes: &[String], combo: &Map<String, Json>) -> String {
    if job_axes.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = job_axes
        .iter()
        .map(|k| {
            let v = match &combo[k] {
                Json::String(s) => s.clone(),
                other => other.to_string(),
            };
            format!("{k}={v}")
        })
        .collect();
    format!("#{}", parts.join(","))
}

/// How item ids are made, checked over the whole input before anything is sent.
pub(crate) struct UnitIds {
    template: Option<Template>,
    axes: Vec<String>,
    /// Hash of the job file and overrides: part of every unit's hash.
    fingerprint: u64,
}

impl UnitIds {
    /// Computes every item's id once: a template error or a repeated id is an
    /// input error naming the entry.
    pub(crate) fn check(job: &Job, prepared: &Prepared, input: &str) -> Result<UnitIds> {
        let text = std::fs::read(&job.path).unwrap_or_default();
        let ids = UnitIds {
            template: job.input.id.clone(),
            axes: job.matrix.iter().map(|a| a.name.clone()).collect(),
            fingerprint: xxhash_rust::xxh3::xxh3_64(&text),
        };
        let mut seen = HashSet::new();
        let items = prepared.items().map_err(|e| Error::Input(e.to_string()))?;
        let mut errors: Vec<BadItem> = Vec::new();
        let mut count = 0u64;
        for item in items.flatten() {
            match ids.item_id(&item) {
                Ok(id) => {
                    if !seen.insert(xxhash_rust::xxh3::xxh3_64(id.as_bytes())) {
                        count += 1;
                        errors.push(BadItem {
                            position: item.position,
                            line: item.line,
                            message: format!("id {id:?} repeats an earlier item's; every item needs its own id (set [input] id)"),
                        });
                    }
                }
                Err(message) => {
                    count += 1;
                    errors.push(BadItem {
                        position: item.position,
                        line: item.line,
                        message,
                    });
                }
            }
            if errors.len() >= 5 {
                break;
            }
        }
        match errors.first() {
            Some(first) => Err(super::bad_item(input, first, count - 1)),
            None => Ok(ids),
        }
    }

    fn item_id(&self, item: &RawItem) -> std::result::Result<String, String> {
        if let Some(t) = &self.template {
            let ctx = json!({"item": item.value, "index": item.position});
            let id = t
                .render(&minijinja::Value::from(minijinja::value::Serde(ctx)))
                .map_err(|e| e.to_string())?;
            let id = id.trim().to_string();
            if id.is_empty() {
                return Err(format!(
                    "[input] id {:?} rendered to an empty id",
                    t.source()
                ));
            }
            return Ok(id);
        }
        for key in ["custom_id", "id"] {
            match item.value.get(key) {
                Some(Json::String(s)) if !s.is_empty() => return Ok(s.clone()),
                Some(Json::Number(n)) => return Ok(n.to_string()),
                _ => {}
            }
        }
        if let Some(Json::String(path)) = item.value.get("path") {
            return Ok(path.clone());
        }
        Ok(match item.line {
            Some(line) => format!("line-{line}"),
            None => format!("item-{}", item.position + 1),
        })
    }

    /// The units of one item, in matrix order.
    pub(crate) fn units(&self, item: &RawItem, combos: &Combos) -> Vec<Unit> {
        // `check` rendered every id already; a failure here cannot happen, but
        // falls back to the position rather than panicking.
        let item_id = self
            .item_id(item)
            .unwrap_or_else(|_| format!("item-{}", item.position + 1));
        let n = combos.len() as u64;
        combos
            .combos
            .iter()
            .enumerate()
            .map(|(k, combo)| Unit {
                id: format!("{item_id}{}", suffix(&self.axes, combo)),
                item_id: item_id.clone(),
                idx: item.position * n + k as u64,
                index: item.position,
                item: item.value.clone(),
                matrix: combo.clone(),
                hash: xxhash_rust::xxh3::xxh3_64(
                    json!([item.value, combo, self.fingerprint])
                        .to_string()
                        .as_bytes(),
                ),
                resume: false,
                place: None,
                in_flight: None,
            })
            .collect()
    }

    /// Ids and positions under which a bad entry's units are recorded as failed.
    pub(crate) fn bad_unit_ids(&self, bad: &BadItem, combos: &Combos) -> Vec<(String, u64)> {
        let base = match bad.line {
            Some(line) => format!("line-{line}"),
            None => format!("item-{}", bad.position + 1),
        };
        let n = combos.len() as u64;
        combos
            .combos
            .iter()
            .enumerate()
            .map(|(k, combo)| {
                (
                    format!("{base}{}", suffix(&self.axes, combo)),
                    bad.position * n + k as u64,
                )
            })
            .collect()
    }
}

/// The input list of a job run: every unit's id, position and hash (a bad
/// entry's units as they are recorded failed).
pub(super) fn input_rows<'a>(
    prepared: &'a Prepared,
    ids: &'a UnitIds,
    combos: &'a Combos,
) -> Result<impl Iterator<Item = std::result::Result<InputRow, sluice_store::SinkError>> + 'a> {
    let items = prepared.items().map_err(|e| Error::Input(e.to_string()))?;
    Ok(items.flat_map(move |entry| {
        let rows: Vec<InputRow> = match entry {
            Ok(item) => ids
                .units(&item, combos)
                .into_iter()
                .map(|u| InputRow {
                    item_id: u.id,
                    idx: u.idx,
                    hash: u.hash,
                })
                .collect(),
            Err(bad) => ids
                .bad_unit_ids(&bad, combos)
                .into_iter()
                .map(|(item_id, idx)| InputRow {
                    item_id,
                    idx,
                    hash: 0,
                })
                .collect(),
        };
        rows.into_iter().map(Ok)
    }))
}
