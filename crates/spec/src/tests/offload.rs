//! Provider dialects and batch offload: `api`, `mode`, `deadline`, `batch`,
//! batch prices, `stream`, their `--set` forms, and one test per rule.

use std::time::Duration;

use super::{assert_one, assert_one_with, errors, job, job_with, BASE};
use crate::{BatchRetry, BatchSpec, Dialect, Mode};

/// `BASE` with `lines` added to `[providers.openai]`, starting on line 6.
fn provider_plus(lines: &str) -> String {
    BASE.replace("/v1\"", &format!("/v1\"\n{lines}"))
}

#[test]
fn defaults_are_openai_live_with_the_default_batch_settings() {
    let job = job(BASE);
    let p = &job.providers[0];
    assert_eq!((p.api, p.mode), (Dialect::OpenAi, Mode::Live));
    assert_eq!(p.batch, BatchSpec::default());
    assert_eq!(p.batch.size, 10_000);
    assert_eq!(p.batch.completion_window, Duration::from_secs(86_400));
    assert!(!job.steps[0].stream);
}

#[test]
fn every_offload_key() {
    let text = provider_plus(
        r#"api = "anthropic"
mode = "auto"
deadline = "6h"
batch = { size = 500, window = "2s", poll = "250ms", waiting = 900, retry = "live", completion_window = "1day", max_enqueued_tokens = 90000 }
prices = { "m" = { input = 3, output = 15, batch_output = 6 } }"#,
    );
    let job = job(&text);
    let p = &job.providers[0];
    assert_eq!(p.api, Dialect::Anthropic);
    assert_eq!(
        p.mode,
        Mode::Auto {
            deadline: Duration::from_secs(6 * 3600)
        }
    );
    let expected = BatchSpec {
        size: 500,
        window: Duration::from_secs(2),
        poll: Duration::from_millis(250),
        waiting: 900,
        retry: BatchRetry::Live,
        completion_window: Duration::from_secs(24 * 3600),
        max_enqueued_tokens: Some(90_000),
    };
    assert_eq!(p.batch, expected);
    // batch_input defaults to half the live price; batch_output was given.
    let price = p.price("m").unwrap();
    assert_eq!(
        (price.batch_input_per_mtok, price.batch_output_per_mtok),
        (1.5, 6.0)
    );
}

#[test]
fn set_overrides_switch_dialect_and_mode() {
    let text = provider_plus("mode = \"batch\"");
    let job = job_with(
        &text,
        &[
            "providers.openai.api=anthropic",
            "providers.openai.mode=auto",
            "providers.openai.deadline=90m",
        ],
    );
    let p = &job.providers[0];
    assert_eq!(p.api, Dialect::Anthropic);
    assert_eq!(
        p.mode,
        Mode::Auto {
            deadline: Duration::from_secs(5400)
        }
    );
    // A file's mode = "auto" with its deadline may be switched to live.
    let auto = provider_plus("mode = \"auto\"\ndeadline = \"6h\"");
    let live = job_with(&auto, &["providers.openai.mode=live"]);
    assert_eq!(live.providers[0].mode, Mode::Live);
}

#[test]
fn bad_set_values_name_the_accepted_ones() {
    for (set, fragment) in [
        ("providers.openai.api=gemini", "openai or anthropic"),
        ("providers.openai.mode=later", "live, batch or auto"),
        ("providers.openai.deadline=soon", "e.g. 6h"),
        ("providers.nope.mode=batch", "no provider \"nope\""),
    ] {
        let list = errors(BASE, &[set]);
        assert_eq!(list.len(), 1, "{set}: {list:?}");
        assert_eq!(list[0].line, 0);
        assert!(list[0].message.contains(fragment), "{set}: {}", list[0]);
    }
}

#[test]
fn unknown_api_is_reported_at_its_value() {
    assert_one(
        &provider_plus("api = \"gemini\""),
        6,
        7,
        &["api \"gemini\" is not known", "\"anthropic\""],
    );
}

#[test]
fn unknown_mode_is_reported_at_its_value() {
    assert_one(
        &provider_plus("mode = \"later\""),
        6,
        8,
        &["mode \"later\"", "\"batch\""],
    );
}

#[test]
fn auto_needs_a_deadline() {
    assert_one(
        &provider_plus("mode = \"auto\""),
        6,
        8,
        &["needs deadline = \"6h\""],
    );
    let list = errors(BASE, &["providers.openai.mode=auto"]);
    assert_eq!(list.len(), 1, "{list:?}");
    assert!(list[0].message.contains("needs deadline"), "{}", list[0]);
}

#[test]
fn a_deadline_without_auto_is_an_error() {
    assert_one(
        &provider_plus("mode = \"batch\"\ndeadline = \"6h\""),
        7,
        12,
        &["deadline only applies with mode = \"auto\""],
    );
}

#[test]
fn batch_settings_are_checked() {
    assert_one(
        &provider_plus("batch = { retry = \"never\" }"),
        6,
        19,
        &["batch.retry \"never\"", "\"live\""],
    );
    assert_one(
        &provider_plus("batch = { size = 0 }"),
        6,
        18,
        &["batch.size must be at least 1"],
    );
    assert_one(
        &provider_plus("batch = { poll = \"0s\" }"),
        6,
        18,
        &["batch.poll must be longer than 0s"],
    );
    assert_one(
        &provider_plus("batch = { max_enqueued_tokens = 0 }"),
        6,
        33,
        &["batch.max_enqueued_tokens must be at least 1"],
    );
}

#[test]
fn a_completion_window_other_than_24h_is_refused_where_it_is_written() {
    // OpenAI: "Currently only `24h` is supported" (API reference, Create
    // batch); Anthropic batches "expire if processing does not complete
    // within 24 hours" (Batch processing guide).
    for window in ["12h", "48h", "7d"] {
        assert_one(
            &provider_plus(&format!("batch = {{ completion_window = \"{window}\" }}")),
            6,
            31,
            &[
                &format!("batch.completion_window \"{window}\" is not offered"),
                "only \"24h\"",
            ],
        );
    }
}

#[test]
fn embeddings_need_an_openai_compatible_provider() {
    let text = provider_plus("api = \"anthropic\"").replace(
        "kind = \"chat\"\nprovider = \"openai\"\nmodel = \"m\"\nmessages = [{ role = \"user\", content = \"Hi {{ item.name }}\" }]",
        "kind = \"embed\"\nprovider = \"openai\"\nmodel = \"m\"\ninput = \"{{ item.name }}\"",
    );
    assert_one(
        &text,
        11,
        12,
        &["embed steps need an OpenAI-compatible provider"],
    );
}

#[test]
fn streaming_is_for_live_chat_and_conversation_steps() {
    let streamed = format!("{BASE}stream = true\n");
    assert!(job(&streamed).steps[0].stream);
    assert_one_with(
        &streamed,
        &["providers.openai.mode=batch"],
        13,
        10,
        &["stream = true", "mode = \"batch\""],
    );
    let embed = BASE
        .replace(
            "messages = [{ role = \"user\", content = \"Hi {{ item.name }}\" }]",
            "input = \"x\"\nstream = true",
        )
        .replace("kind = \"chat\"", "kind = \"embed\"");
    let list = errors(&embed, &[]);
    assert_eq!(list.len(), 1, "{list:?}");
    assert!(
        list[0]
            .message
            .contains("`stream` is not used by embed steps"),
        "{}",
        list[0]
    );
}

#[test]
fn anthropic_refuses_parameters_without_an_equivalent_at_their_position() {
    let anthropic = provider_plus("api = \"anthropic\"");
    // Line 13 is the step's params (BASE has 12 lines, one added above).
    let with = |params: &str| format!("{anthropic}params = {params}\n");
    assert_one(
        &with("{ reasoning_effort = \"high\" }"),
        14,
        31,
        &[
            "step \"first\"",
            "params.reasoning_effort",
            "provider \"openai\"",
            "thinking",
        ],
    );
    assert_one(
        &with("{ temperature = 1.4 }"),
        14,
        26,
        &["params.temperature", "outside Anthropic's range 0–1"],
    );
    assert_one(
        &with("{ metadata = { user_id = \"u\", batch = \"b7\" } }"),
        14,
        23,
        &["params.metadata", "only user_id", "\"batch\""],
    );
    // Translated, dropped, within range, or templated (judged once rendered):
    // all accepted.
    job(&with(
        "{ temperature = 1, tools = [], tool_choice = \"required\", seed = 4, n = 1, top_k = 5, \
         presence_penalty = \"{{ item.p }}\" }",
    ));
    // The same parameters are OpenAI's own: nothing to refuse there.
    job(&format!(
        "{BASE}params = {{ reasoning_effort = \"high\", temperature = 1.4 }}\n"
    ));
}

#[test]
fn tool_calls_and_tool_messages_can_be_written_and_are_checked() {
    let turns = r#"messages = [
  { role = "developer", content = "Use the tools." },
  { role = "user", content = "Weather in {{ item.name }}?" },
  { role = "assistant", content = "", tool_calls = [{ id = "call_1", type = "function", function = { name = "get_weather", arguments = "{\"city\":\"{{ item.name }}\"}" } }] },
  { role = "tool", tool_call_id = "call_1", content = "18C" },
]
"#;
    let text = BASE.replace(
        "messages = [{ role = \"user\", content = \"Hi {{ item.name }}\" }]\n",
        turns,
    );
    let job = job(&text);
    let crate::StepKind::Chat { messages, .. } = &job.steps[0].kind else {
        panic!("a chat step");
    };
    assert_eq!(messages[3].role, "tool");
    assert!(messages[3].tool_call_id.is_some() && messages[2].tool_calls.is_some());
    // Each field on its own role only, and a tool message answers a call.
    let misplaced = text.replace(
        r#"{ role = "tool", tool_call_id = "call_1", content = "18C" }"#,
        r#"{ role = "user", tool_call_id = "call_1", content = "18C" }"#,
    );
    assert_one(
        &misplaced,
        16,
        35,
        &["tool_call_id belongs on a role = \"tool\""],
    );
    let unanswered = text.replace(r#"tool_call_id = "call_1", "#, "");
    assert_one(&unanswered, 16, 3, &["needs tool_call_id"]);
}
