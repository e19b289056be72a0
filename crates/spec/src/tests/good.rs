//! Valid jobs: full examples of every step kind and input, checked field by field.

use std::path::PathBuf;
use std::time::Duration;

use minijinja::Value;
use serde_json::json;

use super::{job, job_with, BASE};
use crate::{InputFormat, InputSource, Retries, StepKind, TValue};

const FULL: &str = r#"
name = "eval"
env = ["CMS_TOKEN", "TEAM"]
concurrency = 8

[input]
url = "http://cms/items/prompts"
pointer = "/data"
page_size = 100
limit_param = "take"
headers = { Authorization = "Bearer {{ env.CMS_TOKEN }}" }
id = "{{ item.poster_id }}-{{ index }}"

[matrix]
model = ["a", "b"]
run = [1, 2, 3]

[providers.openai]
base_url = "http://127.0.0.1:8080/v1/"
api_key_env = "OPENAI_API_KEY"
concurrency = 100
rpm = 120
tpm = 400000
timeout = "30s"
retries = { max = 6, base = "250ms", cap = "10s" }
headers = { "x-team" = "{{ env.TEAM }}" }

[providers.gpu]
urls = ["http://h1:9000", "http://h2:9000/"]

[[steps]]
name = "plan"
kind = "chat"
provider = "openai"
model = "{{ matrix.model }}"
messages = [
  { role = "system", content = "You plan." },
  { role = "user", content = "Describe {{ item.url }} (run {{ matrix.run }})" },
]
params = { temperature = 0, max_tokens = 200, stop = ["END"], meta = { id = "{{ item.poster_id }}" } }
response_format = { type = "json_object" }
concurrency = 50
retries = { max = 2 }

[[steps]]
name = "vectors"
kind = "embed"
provider = "openai"
model = "text-embedding-3-small"
input = ["{{ steps.plan.text }}", "{{ item.title }}"]
params = { dimensions = 256 }

[[steps]]
name = "denoise"
kind = "http"
provider = "gpu"
method = "put"
path = "/denoise"
headers = { "x-item" = "{{ index }}" }
upload = { file = "{{ item.path }}", fields = { lang = "en" } }
save = "file"
timeout = "2m"

[[steps]]
name = "scenes"
kind = "http"
url = "https://img.example/render"
for_each = "{{ steps.plan.json.scenes }}"
json = { prompt = "{{ each.text }}", n = 1, position = "{{ each_index }}" }
concurrency = 4

[[steps]]
name = "probe"
kind = "command"
command = ["ffprobe", "-i", "{{ steps.denoise.file }}"]
stdin = "{% for s in steps.scenes %}{{ s.status }} {% endfor %}"

[[steps]]
name = "dialogue"
kind = "conversation"
provider = "openai"
model = "{{ matrix.model }}"
system = "Be brief."
turns = ["{{ item.q1 }}", "You said {{ answers[0] }}. {{ item.q2 }}"]
params = { temperature = 0.7 }

[output]
path = "results.csv"
dir = "files"
"#;

fn ctx() -> Value {
    Value::from(minijinja::value::Serde(json!({
        "item": {"poster_id": "p7", "url": "u", "title": "T", "path": "/a.wav", "q1": "Q1", "q2": "Q2"},
        "index": 3,
        "matrix": {"model": "b", "run": 2},
        "env": {"CMS_TOKEN": "tok", "TEAM": "ml"},
        "steps": {"plan": {"text": "P", "json": {"scenes": [{"text": "s0"}]}},
                  "denoise": {"file": "/out/x.wav"},
                  "scenes": [{"status": 200}, {"status": 201}]},
        "each": {"text": "s0"}, "each_index": 0, "answers": ["A0"],
    })))
}

#[test]
fn full_job_top_level_input_matrix_providers_output() {
    let job = job(FULL);
    let c = ctx();
    assert_eq!(job.name, "eval");
    assert_eq!(job.path, PathBuf::from("/jobs/job.toml"));
    assert_eq!(job.env, ["CMS_TOKEN", "TEAM"]);
    assert_eq!(job.concurrency, 8);
    let InputSource::Url {
        url,
        pointer,
        page_size,
        limit_param,
        offset_param,
        headers,
    } = &job.input.source
    else {
        panic!("{:?}", job.input.source)
    };
    assert_eq!(url, "http://cms/items/prompts");
    assert_eq!(pointer.as_deref(), Some("/data"));
    assert_eq!(*page_size, Some(100));
    assert_eq!(
        (limit_param.as_str(), offset_param.as_str()),
        ("take", "offset")
    );
    assert_eq!(headers[0].0, "Authorization");
    assert_eq!(headers[0].1.render(&c).unwrap(), "Bearer tok");
    assert_eq!(headers[0].1.place(), "input.headers.Authorization");
    assert_eq!(job.input.id.as_ref().unwrap().render(&c).unwrap(), "p7-3");

    assert_eq!(job.matrix[0].name, "model");
    assert_eq!(job.matrix[0].values, [json!("a"), json!("b")]);
    assert_eq!(job.matrix[1].values, [json!(1), json!(2), json!(3)]);
    assert_eq!(job.combinations(), 6);

    let openai = job.provider("openai").unwrap();
    assert_eq!(openai.base_urls, ["http://127.0.0.1:8080/v1"]);
    assert_eq!(openai.api_key_env.as_deref(), Some("OPENAI_API_KEY"));
    assert_eq!(
        (openai.concurrency, openai.rpm, openai.tpm),
        (Some(100), Some(120), Some(400_000))
    );
    assert_eq!(openai.timeout, Duration::from_secs(30));
    let retries = Retries {
        max: 6,
        base: Duration::from_millis(250),
        cap: Duration::from_secs(10),
    };
    assert_eq!(openai.retries, retries);
    assert_eq!(openai.headers[0].0, "x-team");
    assert_eq!(
        openai.headers[0].1.place(),
        "providers.openai.headers.x-team"
    );
    assert_eq!(openai.headers[0].1.render(&c).unwrap(), "ml");
    let gpu = job.provider("gpu").unwrap();
    assert_eq!(gpu.base_urls, ["http://h1:9000", "http://h2:9000"]);
    assert_eq!(
        (gpu.timeout, gpu.retries),
        (Duration::from_secs(60), Retries::default())
    );
    assert_eq!(
        job.providers.iter().map(|p| &p.name).collect::<Vec<_>>(),
        ["openai", "gpu"]
    );

    assert_eq!(job.output.path, Some(PathBuf::from("/jobs/results.csv")));
    assert_eq!(job.output.dir, PathBuf::from("/jobs/files"));
}

#[test]
fn full_job_chat_and_embed_steps() {
    let job = job(FULL);
    let c = ctx();
    let names: Vec<&str> = job.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["plan", "vectors", "denoise", "scenes", "probe", "dialogue"]
    );
    let plan = &job.steps[0];
    assert_eq!((plan.index, plan.provider.as_deref()), (0, Some("openai")));
    assert_eq!(plan.concurrency, Some(50));
    // Missing retry fields come from the provider's policy.
    let retries = Retries {
        max: 2,
        base: Duration::from_millis(250),
        cap: Duration::from_secs(10),
    };
    assert_eq!(plan.retries, Some(retries));
    let StepKind::Chat {
        model,
        messages,
        params,
        response_format,
        path,
    } = &plan.kind
    else {
        panic!("{:?}", plan.kind)
    };
    assert_eq!(model.render(&c).unwrap(), "b");
    assert_eq!(messages[0].role, "system");
    assert_eq!(
        messages[1].content.as_text().unwrap().place(),
        "steps.plan.messages[1].content"
    );
    assert_eq!(
        messages[1].content.render(&c).unwrap(),
        json!("Describe u (run 2)")
    );
    // Keys keep their order; non-strings stay literal.
    let expected =
        json!({"temperature": 0, "max_tokens": 200, "stop": ["END"], "meta": {"id": "p7"}});
    assert_eq!(params.render(&c).unwrap(), expected);
    let TValue::Object(fields) = params else {
        panic!()
    };
    let keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["temperature", "max_tokens", "stop", "meta"]);
    assert!(matches!(fields[0].1, TValue::Literal(_)));
    assert_eq!(response_format, &Some(json!({"type": "json_object"})));
    assert_eq!(path, "/chat/completions");

    let StepKind::Embed {
        model,
        input,
        params,
        path,
    } = &job.steps[1].kind
    else {
        panic!()
    };
    assert_eq!(model.source(), "text-embedding-3-small");
    assert_eq!(input.render(&c).unwrap(), json!(["P", "T"]));
    assert_eq!(params.render(&c).unwrap(), json!({"dimensions": 256}));
    assert_eq!(path, "/embeddings");
    assert_eq!(job.steps[1].retries, None);
}

#[test]
fn full_job_http_command_and_conversation_steps() {
    let job = job(FULL);
    let c = ctx();
    let denoise = &job.steps[2];
    assert_eq!(denoise.timeout, Some(Duration::from_secs(120)));
    let StepKind::Http {
        method,
        url,
        path,
        headers,
        json,
        body,
        upload,
        save,
    } = &denoise.kind
    else {
        panic!()
    };
    assert_eq!(method, "PUT");
    assert!(url.is_none() && json.is_none() && body.is_none() && *save);
    assert_eq!(path.as_ref().unwrap().render(&c).unwrap(), "/denoise");
    assert_eq!(headers[0].1.render(&c).unwrap(), "3");
    let upload = upload.as_ref().unwrap();
    assert_eq!(upload.field, "file");
    assert_eq!(upload.file.render(&c).unwrap(), "/a.wav");
    assert_eq!(upload.fields[0].0, "lang");

    let scenes = &job.steps[3];
    assert_eq!(scenes.provider, None);
    assert_eq!(scenes.concurrency, Some(4));
    let for_each = scenes.for_each.as_ref().unwrap();
    assert_eq!(for_each.render_value(&c).unwrap(), json!([{"text": "s0"}]));
    let StepKind::Http {
        method,
        url,
        json,
        save,
        ..
    } = &scenes.kind
    else {
        panic!()
    };
    assert_eq!((method.as_str(), *save), ("POST", false));
    assert_eq!(url.as_ref().unwrap().source(), "https://img.example/render");
    let rendered = json.as_ref().unwrap().render(&c).unwrap();
    assert_eq!(rendered, json!({"prompt": "s0", "n": 1, "position": 0}));

    let StepKind::Command { argv, stdin } = &job.steps[4].kind else {
        panic!()
    };
    let argv: Vec<String> = argv.iter().map(|a| a.render(&c).unwrap()).collect();
    assert_eq!(argv, ["ffprobe", "-i", "/out/x.wav"]);
    assert_eq!(stdin.as_ref().unwrap().render(&c).unwrap(), "200 201 ");

    let StepKind::Conversation {
        model,
        system,
        turns,
        params,
        path,
    } = &job.steps[5].kind
    else {
        panic!()
    };
    assert_eq!(model.render(&c).unwrap(), "b");
    assert_eq!(system.as_ref().unwrap().source(), "Be brief.");
    assert_eq!(turns[1].render(&c).unwrap(), "You said A0. Q2");
    assert_eq!(
        turns[1].as_text().unwrap().place(),
        "steps.dialogue.turns[1]"
    );
    assert_eq!(params.render(&c).unwrap(), json!({"temperature": 0.7}));
    assert_eq!(path, "/chat/completions");
}

#[test]
fn defaults_of_a_minimal_job() {
    let job = job(BASE);
    assert_eq!(job.name, "job");
    assert_eq!(job.concurrency, 64);
    assert!(job.env.is_empty() && job.matrix.is_empty());
    assert_eq!(job.combinations(), 1);
    let InputSource::File { path, format } = &job.input.source else {
        panic!()
    };
    assert_eq!(
        (path, *format),
        (&PathBuf::from("/jobs/items.jsonl"), InputFormat::Jsonl)
    );
    assert!(job.input.id.is_none());
    assert_eq!(job.output.path, None);
    assert_eq!(job.output.dir, PathBuf::from("/jobs/output"));
    let step = &job.steps[0];
    assert_eq!(
        (step.concurrency, step.timeout, step.retries),
        (None, None, None)
    );
    assert!(step.for_each.is_none());
}

#[test]
fn file_stdin_and_glob_inputs() {
    let with_input = |input: &str| job(&BASE.replace("path = \"items.jsonl\"", input));
    let source = |input: &str| with_input(input).input.source;
    let format_of = |input: &str| match source(input) {
        InputSource::File { format, .. } | InputSource::Stdin { format } => format,
        other => panic!("{other:?}"),
    };
    assert_eq!(format_of("path = \"a.csv\""), InputFormat::Csv);
    assert_eq!(format_of("path = \"a.json\""), InputFormat::Json);
    assert_eq!(
        format_of("path = \"a.txt\"\nformat = \"csv\""),
        InputFormat::Csv
    );
    assert_eq!(format_of("path = \"-\""), InputFormat::Jsonl);
    assert_eq!(
        format_of("path = \"-\"\nformat = \"json\""),
        InputFormat::Json
    );
    let InputSource::File { path, .. } = source("path = \"/data/x.jsonl\"") else {
        panic!()
    };
    assert_eq!(path, PathBuf::from("/data/x.jsonl"));
    let InputSource::Glob { pattern } = source("glob = \"audio/**/*.wav\"") else {
        panic!()
    };
    assert_eq!(pattern, "/jobs/audio/**/*.wav");
}

#[test]
fn set_overrides_apply_before_validation() {
    let text = format!("{BASE}\n[matrix]\nmodel = [\"x\"]\n");
    let text = text.replace(
        "model = \"m\"",
        "model = \"{{ matrix.model }} {{ matrix.extra }}\"",
    );
    let sets = [
        "matrix.model=a,b",
        "matrix.extra=1,2.5,true",
        "concurrency=3",
        "steps.first.concurrency=7",
        "providers.openai.rpm=60",
        "providers.openai.tpm=1000",
        "providers.openai.concurrency=9",
    ];
    let job = job_with(&text, &sets);
    assert_eq!(job.matrix[0].values, [json!("a"), json!("b")]);
    assert_eq!(job.matrix[1].name, "extra");
    assert_eq!(job.matrix[1].values, [json!(1), json!(2.5), json!(true)]);
    assert_eq!(job.concurrency, 3);
    assert_eq!(job.steps[0].concurrency, Some(7));
    let p = &job.providers[0];
    assert_eq!(
        (p.rpm, p.tpm, p.concurrency),
        (Some(60), Some(1000), Some(9))
    );
}

#[test]
fn loads_from_disk_relative_to_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("poster.toml");
    std::fs::write(&file, BASE).unwrap();
    let job = crate::load(&file, &[]).unwrap();
    assert_eq!(job.name, "poster");
    let InputSource::File { path, .. } = &job.input.source else {
        panic!()
    };
    assert_eq!(path, &dir.path().join("items.jsonl"));
    let missing = crate::load(&dir.path().join("nope.toml"), &[]).unwrap_err();
    assert!(
        matches!(missing, crate::SpecError::Read { .. }),
        "{missing}"
    );
    assert!(missing.to_string().contains("nope.toml"), "{missing}");
}
