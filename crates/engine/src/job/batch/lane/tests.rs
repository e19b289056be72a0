//! How requests are gathered into batches: every limit splits them.

use super::*;
use crate::job::lanes::Lanes;
use serde_json::json;

/// A batcher of a provider nobody answers (nothing here awaits, so no
/// submission runs), holding at most `cap` requests and bytes per batch.
fn batcher(dir: &std::path::Path, cap: (usize, usize)) -> Arc<LaneBatcher> {
    batcher_with(dir, cap, None)
}

fn batcher_with(
    dir: &std::path::Path,
    cap: (usize, usize),
    max_enqueued_tokens: Option<u64>,
) -> Arc<LaneBatcher> {
    let text = "[input]\npath = \"x.jsonl\"\n[providers.p]\nbase_url = \"http://127.0.0.1:9/v1\"\nmode = \"batch\"\n[[steps]]\nname = \"a\"\nkind = \"chat\"\nprovider = \"p\"\nmodel = \"m\"\nmessages = [{ role = \"user\", content = \"hi\" }]\n";
    let job = sluice_spec::parse_str(text, &dir.join("job.toml"), &[]).unwrap();
    let env = minijinja::Value::from(minijinja::value::Serde(json!({"env": {}})));
    let lanes = Lanes::new(&crate::engine::Engine::new(), &job, &env, 0).unwrap();
    let lane = lanes.get("p").unwrap();
    let mut store = sluice_store::SqliteStore::open(&dir.join("s.db")).unwrap();
    let run = store
        .create_run(&sluice_store::NewRun {
            name: "t".into(),
            source: "t".into(),
            settings: json!({}),
        })
        .unwrap();
    let store: Arc<Mutex<Box<dyn Store>>> = Arc::new(Mutex::new(Box::new(store)));
    let spec = BatchSpec {
        max_enqueued_tokens,
        ..job.providers[0].batch
    };
    let remote = Remote::new(lane);
    let downloads = dir.join("downloads");
    let mut b =
        LaneBatcher::start(remote, spec, 2, &run.id, downloads, store, Arc::default()).unwrap();
    let limits = &mut Arc::get_mut(&mut b).unwrap().limits;
    (limits.requests, limits.bytes) = cap;
    b
}

fn request(i: usize, text_len: usize) -> BatchRequest {
    BatchRequest {
        custom_id: format!("r{i}"),
        path: "/chat/completions".into(),
        body: json!({"model": "m", "messages": [{"role": "user", "content": "x".repeat(text_len)}]}),
    }
}

fn sealed_sizes(b: &LaneBatcher) -> Vec<u64> {
    let inner = b.lock();
    let mut seqs: Vec<&u64> = inner.entries.keys().collect();
    seqs.sort();
    seqs.iter()
        .map(|s| inner.entries[s].record.requests)
        .collect()
}

#[tokio::test]
async fn batches_split_at_the_request_count() {
    let dir = tempfile::tempdir().unwrap();
    let b = batcher(dir.path(), (3, 1 << 20));
    let _waiting: Vec<_> = (0..7).map(|i| b.register(request(i, 10))).collect();
    assert_eq!(sealed_sizes(&b), [3, 3]);
    let inner = b.lock();
    let open = &inner.open[&("/v1/chat/completions".to_string(), "m".to_string())];
    assert_eq!(
        open.ids.len(),
        1,
        "the seventh waits for more or its window"
    );
    // Sealed batches are stored before they are submitted.
    let stored = lock(&b.store).run_state(&b.run_id, "batch:p:").unwrap();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].1["state"], "submitting");
    assert_eq!(inner.index["r4"], 2);
}

#[tokio::test]
async fn batches_split_before_a_line_would_pass_the_byte_limit() {
    let dir = tempfile::tempdir().unwrap();
    let b = batcher(dir.path(), (100, 1_000));
    let line = b
        .remote
        .line("r0", "/v1/chat/completions", &request(0, 200).body);
    let per = line.len() + 1;
    assert!(3 * per <= 1_000 && 4 * per > 1_000, "{per}");
    let _waiting: Vec<_> = (0..5).map(|i| b.register(request(i, 200))).collect();
    assert_eq!(sealed_sizes(&b), [3]);
    // One line larger than a whole batch fails at once.
    let mut rx = b.register(request(9, 2_000));
    match rx.try_recv() {
        Ok(BatchEnd::Failed { error, .. }) => {
            assert_eq!(error.code, "request_error");
            assert!(
                error.message.contains("more than one batch may hold"),
                "{error}"
            )
        }
        other => panic!("{other:?}"),
    }
}

fn embedding(i: usize, inputs: usize) -> BatchRequest {
    let input: Vec<String> = (0..inputs).map(|n| format!("text {n}")).collect();
    BatchRequest {
        custom_id: format!("e{i}"),
        path: "/embeddings".into(),
        body: json!({"model": "text-embedding-3-small", "input": input}),
    }
}

#[tokio::test]
async fn embedding_batches_split_at_fifty_thousand_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let b = batcher(dir.path(), (10_000, 200_000_000));
    // 2,048 inputs a request (the embeddings API's own cap per call): the
    // 25th would pass 50,000 inputs, so 24 requests fill a batch.
    let _waiting: Vec<_> = (0..30).map(|i| b.register(embedding(i, 2_048))).collect();
    assert_eq!(sealed_sizes(&b), [24]);
    // One request with more inputs than a batch may hold fails at once.
    let mut rx = b.register(embedding(99, 50_001));
    match rx.try_recv() {
        Ok(BatchEnd::Failed { error, .. }) => {
            assert_eq!(error.code, "request_error");
            assert!(error.message.contains("embedding inputs"), "{error}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn each_model_has_its_own_batches() {
    let dir = tempfile::tempdir().unwrap();
    let b = batcher(dir.path(), (2, 1 << 20));
    let mut other = request(7, 10);
    other.body["model"] = json!("m2");
    let _a = b.register(request(1, 10));
    let _b = b.register(other);
    let _c = b.register(request(2, 10));
    // m's batch filled with 2; m2's still open.
    assert_eq!(sealed_sizes(&b), [2]);
    assert_eq!(b.lock().open.len(), 1);
}

#[tokio::test]
async fn batches_stay_under_the_enqueued_token_limit() {
    let dir = tempfile::tempdir().unwrap();
    let b = batcher_with(dir.path(), (1_000, 1 << 20), Some(100));
    // 40 characters: 10 prompt tokens by the chars ÷ 4 estimate.
    let _waiting: Vec<_> = (0..25).map(|i| b.register(request(i, 40))).collect();
    assert_eq!(sealed_sizes(&b), [10, 10]);
    assert_eq!(b.lock().entries[&1].record.tokens, 100);
    let mut rx = b.register(request(99, 404));
    match rx.try_recv() {
        Ok(BatchEnd::Failed { error, .. }) => {
            assert_eq!(error.code, "request_error");
            assert!(error.message.contains("enqueued-token limit"), "{error}")
        }
        other => panic!("{other:?}"),
    }
}
