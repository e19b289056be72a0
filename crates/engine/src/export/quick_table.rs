//! The table of a quick-mode run: one row per input line.
//!
//! `custom_id, status, status_code, attempts, latency_ms, prompt_tokens,
//! completion_tokens`, then `content` (the answer's text) and/or `embedding`
//! (the vector, or the list of vectors of a list input, in one cell) as the
//! run's answers call for, `error`, and `metadata` — or, with the item's
//! fields asked for, the metadata's keys as `item.KEY` columns.

use serde_json::Value as Json;
use sluice_store::{ItemRecord, ItemStatus};

use super::table::{embedding_type, widen, Cell, ColType, Column, Flatten, ItemFields};

/// What a done item's body holds.
enum Answer {
    Text(String),
    Embedding(Json),
}

/// Reads a response body: an embeddings list (`data[].embedding`, by
/// `index`), else the text of a chat message or completion, else the body.
fn answer(body: &str) -> Answer {
    let Ok(value) = serde_json::from_str::<Json>(body) else {
        return Answer::Text(body.to_string());
    };
    if let Some(data) = value.get("data").and_then(Json::as_array) {
        let mut vectors: Vec<(u64, &Json)> = data
            .iter()
            .filter_map(|d| Some((d["index"].as_u64().unwrap_or(0), d.get("embedding")?)))
            .collect();
        if !vectors.is_empty() && vectors.len() == data.len() {
            vectors.sort_by_key(|(i, _)| *i);
            return Answer::Embedding(if vectors.len() == 1 {
                vectors[0].1.clone()
            } else {
                Json::Array(vectors.into_iter().map(|(_, v)| v.clone()).collect())
            });
        }
    }
    let choice = value.pointer("/choices/0");
    let text = choice
        .and_then(|c| c.pointer("/message/content").or_else(|| c.get("text")))
        .or_else(|| value.pointer("/content/0/text"));
    match text {
        Some(Json::String(s)) => Answer::Text(s.clone()),
        _ => Answer::Text(body.to_string()),
    }
}

fn done_answer(item: &ItemRecord) -> Option<Answer> {
    match (item.status, item.response.as_deref()) {
        (ItemStatus::Done, Some(body)) => Some(answer(body)),
        _ => None,
    }
}

fn metadata(item: &ItemRecord) -> Option<Json> {
    item.metadata
        .as_deref()
        .and_then(|m| serde_json::from_str(m).ok())
}

/// Flattens quick-mode records.
pub(crate) struct QuickTable {
    include_item: bool,
    texts: u64,
    embedding: Option<ColType>,
    item: ItemFields,
}

impl QuickTable {
    pub(crate) fn new(include_item: bool) -> QuickTable {
        QuickTable {
            include_item,
            texts: 0,
            embedding: None,
            item: ItemFields::default(),
        }
    }

    /// `content` is left out only when every answer is an embedding.
    fn has_content(&self) -> bool {
        self.texts > 0 || self.embedding.is_none()
    }
}

impl Flatten for QuickTable {
    fn observe(&mut self, item: &ItemRecord) {
        match done_answer(item) {
            Some(Answer::Text(_)) => self.texts += 1,
            Some(Answer::Embedding(v)) => match embedding_type(&v) {
                Some(t) => self.embedding = Some(widen(self.embedding, t)),
                None => self.texts += 1,
            },
            None => {}
        }
        if self.include_item {
            self.item.observe(metadata(item).as_ref());
        }
    }

    fn columns(&self) -> Vec<Column> {
        let mut columns = vec![
            Column::new("custom_id", ColType::Str),
            Column::new("status", ColType::Str),
            Column::new("status_code", ColType::Int),
            Column::new("attempts", ColType::Int),
            Column::new("latency_ms", ColType::Int),
            Column::new("prompt_tokens", ColType::Int),
            Column::new("completion_tokens", ColType::Int),
        ];
        if self.has_content() {
            columns.push(Column::new("content", ColType::Str));
        }
        if let Some(t) = self.embedding {
            columns.push(Column::new("embedding", t));
        }
        columns.push(Column::new("error", ColType::Str));
        if self.include_item {
            columns.extend(self.item.columns());
        } else {
            columns.push(Column::new("metadata", ColType::Json));
        }
        columns
    }

    fn row(&self, item: &ItemRecord, row: &mut Vec<Cell>) {
        let int = |v: Option<u64>| v.map_or(Cell::Null, |v| Cell::Int(v as i64));
        row.push(Cell::Str(
            item.custom_id
                .clone()
                .unwrap_or_else(|| item.item_id.clone()),
        ));
        row.push(Cell::Str(item.status.as_str().to_string()));
        row.push(int(item.status_code.map(u64::from)));
        row.push(Cell::Int(i64::from(item.attempts)));
        row.push(Cell::Int(item.latency_ms as i64));
        row.push(int(item.prompt_tokens));
        row.push(int(item.completion_tokens));
        let answer = done_answer(item);
        if self.has_content() {
            row.push(match &answer {
                Some(Answer::Text(t)) => Cell::Str(t.clone()),
                Some(Answer::Embedding(v)) if embedding_type(v).is_none() => {
                    Cell::Str(v.to_string())
                }
                _ => Cell::Null,
            });
        }
        if let Some(t) = self.embedding {
            row.push(match &answer {
                Some(Answer::Embedding(v)) => Cell::of(Some(v), t),
                _ => Cell::Null,
            });
        }
        row.push(item.error.clone().map_or(Cell::Null, Cell::Str));
        if self.include_item {
            self.item.cells(metadata(item).as_ref(), row);
        } else {
            row.push(item.metadata.clone().map_or(Cell::Null, Cell::Json));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(body: &str, metadata: Option<&str>) -> ItemRecord {
        ItemRecord {
            item_id: "line-1".into(),
            idx: 1,
            hash: 0,
            status: ItemStatus::Done,
            attempts: 1,
            throttled: 0,
            status_code: Some(200),
            response: Some(body.into()),
            error: None,
            prompt_tokens: Some(3),
            completion_tokens: None,
            latency_ms: 4,
            started_at: 0,
            finished_at: 0,
            metadata: metadata.map(str::to_string),
            custom_id: None,
        }
    }

    fn table(records: &[ItemRecord], include_item: bool) -> (Vec<String>, Vec<Vec<Cell>>) {
        let mut t = QuickTable::new(include_item);
        records.iter().for_each(|r| t.observe(r));
        let names = t.columns().into_iter().map(|c| c.name).collect();
        let rows = records
            .iter()
            .map(|r| {
                let mut row = Vec::new();
                t.row(r, &mut row);
                row
            })
            .collect();
        (names, rows)
    }

    #[test]
    fn an_embeddings_run_has_one_vector_column_and_no_empty_text_column() {
        let body = r#"{"data":[{"index":0,"embedding":[0.5,1.5]}],"usage":{"prompt_tokens":3}}"#;
        let (names, rows) = table(&[record(body, None)], false);
        assert_eq!(
            names.join(","),
            "custom_id,status,status_code,attempts,latency_ms,prompt_tokens,completion_tokens,embedding,error,metadata"
        );
        assert_eq!(rows[0][7], Cell::Vector(vec![0.5, 1.5]));
        assert_eq!(rows[0][7].to_csv(), "[0.5,1.5]");
    }

    #[test]
    fn a_list_input_gives_the_vectors_in_input_order() {
        let body = r#"{"data":[{"index":1,"embedding":[2]},{"index":0,"embedding":[1]}]}"#;
        let (_, rows) = table(&[record(body, None)], false);
        assert_eq!(rows[0][7], Cell::Vectors(vec![vec![1.0], vec![2.0]]));
    }

    #[test]
    fn item_fields_come_from_the_metadata() {
        let body = r#"{"choices":[{"message":{"content":"hi"}}]}"#;
        let (names, rows) = table(&[record(body, Some(r#"{"row":7,"topic":"x"}"#))], true);
        assert_eq!(names[7..].join(","), "content,error,item.row,item.topic");
        assert_eq!(rows[0][7], Cell::Str("hi".into()));
        assert_eq!(rows[0][9], Cell::Int(7));
    }
}
