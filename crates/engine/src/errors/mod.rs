//! A run's errors grouped by cause — step, code and normalised message —
//! with counts and one example item each, for `sluice status`, the run
//! summary and the server's run view.

mod normalise;

use std::collections::HashMap;

use serde::Serialize;
use sluice_store::Store;

pub use normalise::{normalise, ErrorKey};

/// Distinct messages read from the store to group (the most frequent first):
/// enough for any run whose failures have a handful of causes.
const MESSAGES_READ: usize = 10_000;

/// Failures with one cause.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorGroup {
    /// Step, code and normalised message.
    #[serde(flatten)]
    pub key: ErrorKey,
    /// Failed items with this cause.
    pub count: u64,
    /// One of them.
    pub example: ErrorExample,
}

/// One failed item of a group, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorExample {
    /// The item (unit) id.
    pub item: String,
    /// Its whole error message.
    pub message: String,
}

/// The run's failures grouped by cause, most frequent first, at most `limit`.
pub fn group_errors(
    store: &mut dyn Store,
    run_id: &str,
    limit: usize,
) -> sluice_store::Result<Vec<ErrorGroup>> {
    let messages = store.error_messages(run_id, MESSAGES_READ)?;
    let mut groups: Vec<ErrorGroup> = Vec::new();
    let mut index: HashMap<ErrorKey, usize> = HashMap::new();
    for m in messages {
        let key = normalise(&m.message);
        match index.get(&key) {
            Some(&i) => groups[i].count += m.count,
            None => {
                index.insert(key.clone(), groups.len());
                groups.push(ErrorGroup {
                    key,
                    count: m.count,
                    example: ErrorExample {
                        item: m.example,
                        message: m.message,
                    },
                });
            }
        }
    }
    groups.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
    groups.truncate(limit);
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_store::{ItemRecord, ItemStatus, NewRun, SqliteStore};

    #[test]
    fn failures_differing_only_in_their_answer_are_one_group() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
        let run = store
            .create_run(&NewRun {
                name: "r".into(),
                source: "s".into(),
                settings: serde_json::json!({}),
            })
            .unwrap();
        let failed = |i: usize, error: String| ItemRecord {
            item_id: format!("q{i:03}"),
            idx: i as u64,
            hash: 0,
            status: ItemStatus::Failed,
            attempts: 1,
            throttled: 0,
            status_code: None,
            response: None,
            error: Some(error),
            prompt_tokens: None,
            completion_tokens: None,
            latency_ms: 0,
            started_at: 0,
            finished_at: 0,
            metadata: None,
            custom_id: None,
        };
        let mut batch: Vec<ItemRecord> = (0..60)
            .map(|i| {
                failed(
                    i,
                    format!(
                        "bad_response: step grade: the answer is not the JSON the step's \
                         response_format asks for; it starts: \"answer number {i} {}\"",
                        i % 7
                    ),
                )
            })
            .collect();
        batch.extend((60..65).map(|i| {
            failed(
                i,
                format!(
                    "server_error: step ask: HTTP 500: boom (after {} attempts)",
                    i % 3 + 1
                ),
            )
        }));
        store.write_batch(&run.id, &batch).unwrap();
        let groups = group_errors(&mut store, &run.id, 10).unwrap();
        assert_eq!(groups.len(), 2, "{groups:#?}");
        assert_eq!(groups[0].count, 60);
        assert_eq!(groups[0].key.step.as_deref(), Some("grade"));
        assert_eq!(groups[0].key.code, "bad_response");
        assert!(groups[0].example.item.starts_with('q'), "{groups:?}");
        assert!(
            groups[0].example.message.contains("answer number"),
            "{groups:?}"
        );
        assert_eq!(
            (groups[1].count, groups[1].key.cause.as_str()),
            (5, "HTTP 500: boom (after N attempts)")
        );
        assert_eq!(group_errors(&mut store, &run.id, 1).unwrap().len(), 1);
    }
}
