//! Exports for analysis: Parquet with typed columns, item fields carried
//! along, embeddings in one column, unknown `--out` names refused.

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::{Field, Row};
use serde_json::{json, Value};

use crate::util::{read_jsonl, stderr, Mock, Scratch};

/// Every row of a Parquet file, as (column, field) pairs.
fn parquet_rows(path: &std::path::Path) -> Vec<Vec<(String, Field)>> {
    let reader = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
    reader
        .get_row_iter(None)
        .unwrap()
        .map(|r: Result<Row, _>| {
            r.unwrap()
                .get_column_iter()
                .map(|(n, f)| (n.clone(), f.clone()))
                .collect()
        })
        .collect()
}

fn field<'a>(row: &'a [(String, Field)], name: &str) -> &'a Field {
    &row.iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no column {name} in {row:?}"))
        .1
}

fn floats(field: &Field) -> Vec<f32> {
    match field {
        Field::ListInternal(list) => list
            .elements()
            .iter()
            .map(|f| match f {
                Field::Float(x) => *x,
                other => panic!("not a float: {other:?}"),
            })
            .collect(),
        other => panic!("not a list: {other:?}"),
    }
}

fn embedding_lines() -> Vec<String> {
    vec![
        json!({"custom_id": "a", "body": {"model": "e", "input": "rivers"}, "metadata": {"n": 1, "topic": "geo"}}).to_string(),
        json!({"custom_id": "b", "body": {"model": "e", "input": "mountains"}, "metadata": {"n": 2, "topic": "geo"}}).to_string(),
    ]
}

#[test]
fn quick_embeddings_export_to_parquet_as_float32_lists_matching_jsonl() {
    let mock = Mock::start(&[]);
    let s = Scratch::new();
    let input = s.write_lines("emb.jsonl", &embedding_lines());
    let out = s
        .run(
            &input,
            &mock.url("/v1/embeddings"),
            &["--out", "emb.parquet", "--include-item"],
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let exported = s
        .sluice(&["export", "emb-1", "--out", "emb.jsonl.out.jsonl"])
        .output()
        .unwrap();
    assert!(exported.status.success(), "{}", stderr(&exported));
    let lines = read_jsonl(&s.path("emb.jsonl.out.jsonl"));
    let rows = parquet_rows(&s.path("emb.parquet"));
    assert_eq!(rows.len(), 2);
    let names: Vec<&str> = rows[0].iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "custom_id",
            "status",
            "status_code",
            "attempts",
            "latency_ms",
            "prompt_tokens",
            "completion_tokens",
            "embedding",
            "error",
            "item.n",
            "item.topic"
        ],
        "one vector column, no empty text column, the metadata's fields"
    );
    for (row, line) in rows.iter().zip(&lines) {
        assert_eq!(
            field(row, "custom_id"),
            &Field::Str(line["custom_id"].as_str().unwrap().into())
        );
        let from_jsonl: Vec<f32> = line["response"]["body"]["data"][0]["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(floats(field(row, "embedding")), from_jsonl);
        assert_eq!(field(row, "status_code"), &Field::Long(200));
        assert_eq!(
            field(row, "item.n"),
            &Field::Long(line["metadata"]["n"].as_i64().unwrap())
        );
        assert_eq!(field(row, "error"), &Field::Null);
    }
    // The CSV of the same run keeps each vector in one cell.
    let csv = s
        .sluice(&["export", "emb-1", "--format", "csv"])
        .output()
        .unwrap();
    let csv = String::from_utf8_lossy(&csv.stdout).into_owned();
    let header = csv.lines().next().unwrap();
    assert!(header.contains(",embedding,error,metadata"), "{header}");
    assert!(!header.contains("content"), "{header}");
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let first = reader.records().next().unwrap().unwrap();
    let cell: Vec<f64> = serde_json::from_str(&first[7]).unwrap();
    assert_eq!(cell.len(), 8, "the mock's 8 dimensions in one cell");
}

#[test]
fn unknown_out_extensions_are_refused_before_anything_is_sent() {
    let mock = Mock::start(&[]);
    let s = Scratch::new();
    let input = s.write_lines("emb.jsonl", &embedding_lines());
    for name in ["r.json", "r.parquett", "results"] {
        let out = s
            .run(&input, &mock.url("/v1/embeddings"), &["--out", name])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}");
        let err = stderr(&out);
        assert!(err.contains(".jsonl, .csv or .parquet"), "{name}: {err}");
    }
    assert_eq!(mock.stats()["requests"], 0);
    // Named explicitly, the format wins over the name.
    let ran = s
        .run(&input, &mock.url("/v1/embeddings"), &[])
        .output()
        .unwrap();
    assert!(ran.status.success());
    let export = s
        .sluice(&[
            "export",
            "emb-1",
            "--format",
            "parquet",
            "--out",
            "vectors.bin",
        ])
        .output()
        .unwrap();
    assert!(export.status.success(), "{}", stderr(&export));
    assert_eq!(parquet_rows(&s.path("vectors.bin")).len(), 2);
    let refused = s
        .sluice(&["export", "emb-1", "--out", "v.txt"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let flat_csv = s
        .sluice(&["export", "emb-1", "--format", "csv", "--flat"])
        .output()
        .unwrap();
    assert_eq!(flat_csv.status.code(), Some(2));
}

const JOB: &str = r#"
[input]
path = "docs.jsonl"

[providers.local]
base_url = "{MOCK}"

[[steps]]
name = "vec"
kind = "embed"
provider = "local"
model = "e"
input = "{{ item.title }}"

[[steps]]
name = "ask"
kind = "chat"
provider = "local"
model = "m"
messages = [{ role = "user", content = "Summarise {{ item.title }}" }]
"#;

#[test]
fn job_exports_carry_item_fields_usage_latency_and_one_vector_column() {
    let mock = Mock::start(&[]);
    let s = Scratch::new();
    s.write_lines(
        "docs.jsonl",
        &[
            json!({"id": "d1", "title": "Rivers", "year": 1999, "score": 0.5}).to_string(),
            json!({"id": "d2", "title": "Hills", "year": 2001, "score": 1}).to_string(),
        ],
    );
    let job = s.job(JOB, Some(&mock), None);
    let out = s
        .sluice(&[
            "run",
            job.to_str().unwrap(),
            "--out",
            "r.jsonl",
            "--include-item",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lines = read_jsonl(&s.path("r.jsonl"));
    assert_eq!(
        lines[0]["item"],
        json!({"id": "d1", "title": "Rivers", "year": 1999, "score": 0.5})
    );
    let ask = &lines[0]["steps"]["ask"];
    assert!(ask["latency_ms"].is_u64(), "{ask}");

    let run_id = out_run_id(&s);
    let csv = s
        .sluice(&["export", &run_id, "--format", "csv", "--include-item"])
        .output()
        .unwrap();
    let csv = String::from_utf8_lossy(&csv.stdout).into_owned();
    assert_eq!(
        csv.lines().next().unwrap(),
        "id,item_id,status,error,started_at,finished_at,duration_ms,\
         item.id,item.score,item.title,item.year,\
         vec.embedding,vec.prompt_tokens,vec.latency_ms,vec.started_at,vec.finished_at,vec.duration_ms,\
         ask.text,ask.json,ask.file,ask.status,ask.prompt_tokens,ask.completion_tokens,ask.latency_ms,\
         ask.started_at,ask.finished_at,ask.duration_ms"
    );
    let parquet = s.path("r.parquet");
    let exported = s
        .sluice(&[
            "export",
            &run_id,
            "--out",
            parquet.to_str().unwrap(),
            "--include-item",
        ])
        .output()
        .unwrap();
    assert!(exported.status.success(), "{}", stderr(&exported));
    let rows = parquet_rows(&parquet);
    assert_eq!(field(&rows[0], "item.year"), &Field::Long(1999));
    assert_eq!(
        field(&rows[1], "item.score"),
        &Field::Double(1.0),
        "int and float widen to double"
    );
    assert_eq!(floats(field(&rows[0], "vec.embedding")).len(), 8);
    assert_eq!(
        field(&rows[0], "ask.text"),
        &Field::Str(ask["text"].as_str().unwrap().into())
    );
    assert_eq!(
        field(&rows[0], "ask.completion_tokens"),
        &Field::Long(ask["usage"]["completion_tokens"].as_i64().unwrap())
    );

    let flat = s
        .sluice(&["export", &run_id, "--flat", "--include-item"])
        .output()
        .unwrap();
    let flat: Vec<Value> = String::from_utf8_lossy(&flat.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(flat[1]["item.title"], "Hills");
    assert_eq!(flat[1]["vec.embedding"].as_array().unwrap().len(), 8);
    assert_eq!(flat[0]["ask.text"], ask["text"]);
}

fn out_run_id(s: &Scratch) -> String {
    let runs = s.sluice(&["runs", "--json"]).output().unwrap();
    let runs: Value = serde_json::from_slice(&runs.stdout).unwrap();
    runs[0]["run"]["id"].as_str().unwrap().to_string()
}
