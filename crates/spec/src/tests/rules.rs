//! One test per structural rule: TOML, keys and types, input, matrix,
//! providers, steps and `--set`; each with its exact position.

use super::{assert_one, assert_one_with, errors, BASE};

/// `BASE` with a line of text added to its step (becomes line 13).
fn step_plus(line: &str) -> String {
    format!("{BASE}{line}\n")
}

#[test]
fn toml_syntax_error() {
    assert_one(
        "name = \"x\"\nconcurrency = \n",
        2,
        15,
        &["TOML syntax error"],
    );
}

#[test]
fn unknown_top_level_key() {
    let text = format!("concurrenc = 4\n{BASE}");
    assert_one(
        &text,
        1,
        1,
        &["unknown top-level key `concurrenc`", "concurrency"],
    );
}

#[test]
fn unknown_key_inside_a_step() {
    assert_one(
        &step_plus("temprature = 0"),
        13,
        1,
        &[
            "step \"first\"",
            "unknown key `temprature`",
            "did you mean `temperature`",
            "params = { temperature = ... }",
        ],
    );
}

#[test]
fn unknown_key_is_suggested_among_its_kinds_keys_only() {
    let list = errors(
        &step_plus("respone_format = { type = \"json_object\" }"),
        &[],
    );
    assert_eq!(list.len(), 1, "{list:?}");
    let message = &list[0].message;
    assert!(
        message.contains("did you mean `response_format`?"),
        "{message}"
    );
    assert!(message.contains("chat steps take: name, kind"), "{message}");
    assert!(!message.contains("turns"), "only chat keys: {message}");
    assert!(!message.contains("command"), "only chat keys: {message}");
}

#[test]
fn wrong_type() {
    let d = &errors(&step_plus("concurrency = \"5\""), &[])[0];
    assert_eq!((d.line, d.column), (13, 15), "{d}");
    assert_eq!(
        d.message,
        "step \"first\": `concurrency` must be a non-negative whole number, not string \"5\""
    );
}

#[test]
fn wrong_type_nested_names_the_key_path() {
    let text = BASE.replace("role = \"user\"", "role = 1");
    assert_one(
        &text,
        12,
        22,
        &["`messages[0].role` must be a string, not integer `1`"],
    );
}

#[test]
fn step_uses_an_undefined_provider() {
    let text = BASE.replace("provider = \"openai\"", "provider = \"opnai\"");
    assert_one(
        &text,
        10,
        12,
        &["step \"first\" uses provider \"opnai\", which is not defined; defined: openai"],
    );
}

#[test]
fn chat_step_without_provider() {
    let text = BASE.replace("provider = \"openai\"\n", "");
    assert_one(
        &text,
        7,
        1,
        &[
            "chat step and needs provider = \"NAME\"",
            "defined providers: openai",
        ],
    );
}

#[test]
fn input_missing() {
    let text = BASE.replace("[input]\npath = \"items.jsonl\"\n", "");
    assert_one(&text, 1, 1, &["the job has no [input]"]);
}

#[test]
fn input_needs_exactly_one_source() {
    let text = BASE.replace(
        "path = \"items.jsonl\"",
        "path = \"a.jsonl\"\nurl = \"http://cms/x\"",
    );
    assert_one(
        &text,
        3,
        7,
        &["both path and url", "exactly one of path, glob, url"],
    );
    let text = BASE.replace("path = \"items.jsonl\"", "id = \"{{ item.id }}\"");
    assert_one(&text, 1, 1, &["[input] needs one of path, glob or url"]);
}

#[test]
fn input_url_only_keys_and_format() {
    let text = BASE.replace(
        "path = \"items.jsonl\"",
        "path = \"a.jsonl\"\npointer = \"/data\"",
    );
    assert_one(&text, 3, 11, &["`pointer` only applies to url inputs"]);
    let text = BASE.replace(
        "path = \"items.jsonl\"",
        "path = \"a.jsonl\"\nformat = \"xml\"",
    );
    assert_one(
        &text,
        3,
        10,
        &["unknown format \"xml\"", "\"jsonl\", \"csv\" or \"json\""],
    );
    let text = BASE.replace("path = \"items.jsonl\"", "path = \"a.txt\"");
    assert_one(
        &text,
        2,
        8,
        &["cannot tell the format of \"a.txt\"", "add format"],
    );
    let text = BASE.replace(
        "path = \"items.jsonl\"",
        "url = \"http://cms/x\"\npointer = \"data\"",
    );
    assert_one(
        &text,
        3,
        11,
        &["must be a JSON pointer starting with \"/\""],
    );
}

#[test]
fn matrix_rules() {
    let matrix = |body: &str| format!("{BASE}\n[matrix]\n{body}\n");
    assert_one(&matrix("model = []"), 15, 9, &["matrix.model is empty"]);
    assert_one(
        &matrix("model = \"a\""),
        15,
        9,
        &["must be an array of values", "a string"],
    );
    assert_one(
        &matrix("model = [\"a\", [1]]"),
        15,
        15,
        &["strings, numbers or booleans, not an array"],
    );
    assert_one(
        &matrix("\"my-model\" = [\"a\"]"),
        15,
        1,
        &["matrix key \"my-model\" must be a name"],
    );
}

#[test]
fn provider_needs_exactly_one_of_base_url_and_urls() {
    let text = BASE.replace(
        "base_url = \"http://127.0.0.1:8080/v1\"",
        "api_key_env = \"K\"",
    );
    assert_one(&text, 4, 12, &["[providers.openai] needs base_url"]);
    let text = BASE.replace("/v1\"", "/v1\"\nurls = [\"http://h2/v1\"]");
    assert_one(&text, 6, 8, &["has both base_url and urls"]);
    let text = BASE
        .replace("/v1\"", "/v1\"\nurls = []")
        .replace("base_url = \"http://127.0.0.1:8080/v1\"\n", "");
    assert_one(&text, 5, 8, &["urls is empty"]);
}

#[test]
fn provider_values() {
    let with = |line: &str| BASE.replace("/v1\"", &format!("/v1\"\n{line}"));
    let text = BASE.replace("http://127.0.0.1:8080/v1", "127.0.0.1:8080");
    assert_one(&text, 5, 12, &["must start with http:// or https://"]);
    assert_one(
        &with("concurrency = 0"),
        6,
        15,
        &["concurrency must be at least 1"],
    );
    assert_one(&with("rpm = 0"), 6, 7, &["rpm must be at least 1"]);
    assert_one(
        &with("timeout = \"60\""),
        6,
        11,
        &["timeout \"60\" is not a duration", "\"30s\""],
    );
    assert_one(
        &with("retries = { cap = \"soon\" }"),
        6,
        19,
        &["retries.cap \"soon\""],
    );
    assert_one(
        &with("retries = { base = \"2m\" }"),
        6,
        11,
        &["base (2m) is longer than cap (1m)"],
    );
    assert_one(
        &with("api_key_env = \"sk-abc\""),
        6,
        15,
        &["names the environment variable"],
    );
    assert_one(
        &with("headers = { \"x y\" = \"1\" }"),
        6,
        21,
        &["not a valid HTTP header name"],
    );
}

#[test]
fn steps_are_required() {
    let text = BASE.split("[[steps]]").next().unwrap();
    assert_one(text, 1, 1, &["the job has no steps"]);
}

#[test]
fn step_names_are_identifiers_and_unique() {
    let text = BASE.replace("name = \"first\"", "name = \"first step\"");
    assert_one(
        &text,
        8,
        8,
        &["step name \"first step\" must be letters, digits and _"],
    );
    let second = BASE.split_once("[[steps]]").unwrap().1;
    let text = format!("{BASE}\n[[steps]]{second}");
    assert_one(
        &text,
        15,
        8,
        &["step name \"first\" is already used by step 1"],
    );
}

#[test]
fn step_kind_must_be_known() {
    let text = BASE.replace("kind = \"chat\"", "kind = \"chatt\"");
    assert_one(
        &text,
        9,
        8,
        &[
            "unknown step kind \"chatt\"",
            "chat, embed, http, command, conversation",
        ],
    );
}

#[test]
fn field_of_another_kind() {
    assert_one(
        &step_plus("turns = [\"q\"]"),
        13,
        1,
        &[
            "`turns` is not used by chat steps",
            "chat steps take: name, kind, concurrency",
        ],
    );
}

#[test]
fn chat_needs_model_and_valid_roles() {
    let text = BASE.replace("model = \"m\"\n", "");
    assert_one(
        &text,
        7,
        1,
        &["step \"first\" is a chat step and needs model"],
    );
    let text = BASE.replace("role = \"user\"", "role = \"human\"");
    assert_one(
        &text,
        12,
        22,
        &["role \"human\" is not one of: system, developer, user, assistant, tool"],
    );
    assert_one(
        &step_plus("params = { model = \"x\" }"),
        13,
        20,
        &["params.model would replace"],
    );
}

/// `BASE` with its step replaced by `step`, the step starting on line 7.
fn with_step(step: &str) -> String {
    let head = BASE.split("[[steps]]").next().unwrap();
    format!("{head}[[steps]]\nname = \"s\"\n{step}\n")
}

#[test]
fn http_with_both_url_and_path() {
    let text =
        with_step("kind = \"http\"\nprovider = \"openai\"\nurl = \"http://x/y\"\npath = \"/y\"");
    assert_one(&text, 12, 8, &["step \"s\" has both url and path"]);
}

#[test]
fn http_rules() {
    let text = with_step("kind = \"http\"\npath = \"/y\"");
    assert_one(&text, 10, 8, &["path \"/y\" needs a provider", "use url ="]);
    let text = with_step("kind = \"http\"\nurl = \"x/y\"");
    assert_one(&text, 10, 7, &["must be absolute"]);
    let text = with_step("kind = \"http\"\nurl = \"http://x\"\njson = {}\nbody = \"b\"");
    assert_one(&text, 12, 8, &["at most one body", "both json and body"]);
    let text = with_step("kind = \"http\"\nurl = \"http://x\"\nsave = \"body\"");
    assert_one(&text, 11, 8, &["the only value is save = \"file\""]);
    let text = with_step("kind = \"http\"\nurl = \"http://x\"\nmethod = \"FETCH\"");
    assert_one(&text, 11, 10, &["method \"FETCH\" is not one of"]);
}

#[test]
fn command_and_conversation_rules() {
    assert_one(
        &with_step("kind = \"command\"\ncommand = []"),
        10,
        11,
        &["command is empty"],
    );
    let text = with_step("kind = \"command\"\ncommand = [\"ls\"]\nprovider = \"openai\"");
    assert_one(&text, 11, 1, &["`provider` is not used by command steps"]);
    let text =
        with_step("kind = \"conversation\"\nprovider = \"openai\"\nmodel = \"m\"\nturns = []");
    assert_one(&text, 12, 9, &["turns is empty"]);
    let text = with_step("kind = \"embed\"\nprovider = \"openai\"\nmodel = \"m\"\ninput = [1]");
    assert_one(
        &text,
        12,
        10,
        &["input list must hold strings, not a number"],
    );
}

#[test]
fn bad_set_override() {
    assert_one_with(
        BASE,
        &["model=a"],
        0,
        0,
        &["\"model\" cannot be set", "matrix.KEY=a,b,c"],
    );
    let d = &errors(BASE, &["concurrency=0"])[0];
    assert_eq!((d.path.to_str(), d.line), (Some("--set"), 0));
    assert!(
        d.message.contains("not a whole number of at least 1"),
        "{d}"
    );
    assert_one_with(
        BASE,
        &["steps.nope.concurrency=2"],
        0,
        0,
        &["no step \"nope\"; steps: first"],
    );
    assert_one_with(
        BASE,
        &["providers.x.rpm=2"],
        0,
        0,
        &["no provider \"x\"; providers: openai"],
    );
    assert_one_with(BASE, &["matrix.m"], 0, 0, &["expected KEY=VALUE"]);
}

#[test]
fn every_problem_is_reported_in_order() {
    let text = BASE
        .replace("kind = \"chat\"", "kind = \"chat\"\nturns = [\"q\"]")
        .replace(
            "base_url = \"http://127.0.0.1:8080/v1\"",
            "base_url = \"x\"\nrpm = 0",
        )
        .replace("name = \"first\"", "name = \"first\"\nconcurrency = -1");
    let list = errors(&text, &["bogus=1"]);
    let positions: Vec<(usize, usize)> = list.iter().map(|d| (d.line, d.column)).collect();
    assert_eq!(positions, [(0, 0), (5, 12), (6, 7), (10, 15)], "{list:#?}");
}

#[test]
fn for_each_is_one_expression() {
    let text = BASE.replace("name = \"first\"", "name = \"first\"\nfor_each = \"a, b\"");
    assert_one(
        &text,
        9,
        12,
        &[
            "for_each \"a, b\" must be a single expression",
            "{{ steps.plan",
        ],
    );
}

#[test]
fn near_misses_in_params_are_warnings_at_their_key() {
    let text = BASE.replace(
        "messages = [",
        "params = { max_token = 60, repetition_penalty = 1.1 }\nmessages = [",
    );
    let job = super::job(&text);
    assert_eq!(job.warnings.len(), 1, "{:?}", job.warnings);
    let w = &job.warnings[0];
    let line = text.lines().position(|l| l.starts_with("params")).unwrap() + 1;
    assert_eq!((w.line, w.column), (line, 24), "{w}");
    assert!(w.message.contains("params.max_token"), "{w}");
    assert!(w.message.contains("did you mean `max_tokens`?"), "{w}");
}

#[test]
fn templates_know_where_they_are_in_the_file() {
    let job = super::job(BASE);
    let sluice_spec_step = &job.steps[0];
    let crate::StepKind::Chat { messages, .. } = &sluice_spec_step.kind else {
        panic!("a chat step");
    };
    let t = messages[0].content.as_text().expect("text content");
    let origin = t.origin().expect("from the file");
    let line = BASE.lines().position(|l| l.contains("messages")).unwrap() + 1;
    assert_eq!(origin.line, line);
    assert!(origin.verbatim);
    let offset = t.source().find("item").unwrap();
    let (l, c) = origin.at(t.source(), offset);
    let text_line = BASE.lines().nth(l - 1).unwrap();
    let found: String = text_line.chars().skip(c - 1).take(4).collect();
    assert_eq!(found, "item", "{text_line:?} at column {c}");
}

#[test]
fn a_name_that_is_not_a_plain_word_is_refused_at_its_place() {
    let text = format!("name = \"../../srv/x/TRAV\"\n{BASE}");
    assert_one(
        &text,
        1,
        8,
        &["name \"../../srv/x/TRAV\"", "'/'", "letters, digits"],
    );
    assert_one(&format!("name = \"a\\nb\"\n{BASE}"), 1, 8, &["'\\n'"]);
    assert_one(&format!("name = \"..\"\n{BASE}"), 1, 8, &["only dots"]);
}

#[test]
fn a_name_from_the_file_stem_is_made_to_fit() {
    let job = crate::parse_str(BASE, std::path::Path::new("/jobs/my batch (2).toml"), &[]).unwrap();
    assert_eq!(job.name, "my_batch__2_");
}

/// Every `concurrency` a job sets is bounded like `--concurrency` (1 to
/// 100,000): a typo of a few zeros is an error at its place, not a run that
/// opens a million sockets.
#[test]
fn concurrency_is_bounded_like_the_flag() {
    let too_many = crate::MAX_CONCURRENCY + 1;
    let top = format!("concurrency = {too_many}\n{BASE}");
    assert_one(&top, 1, 15, &["concurrency 100001 is above", "1 to 100000"]);
    let top = format!("max_in_flight = {too_many}\n{BASE}");
    assert_one(&top, 1, 17, &["max_in_flight 100001 is above"]);
    assert_one(
        &step_plus(&format!("concurrency = {too_many}")),
        13,
        15,
        &["concurrency 100001 is above"],
    );
    let provider = |line: String| BASE.replace("/v1\"", &format!("/v1\"\n{line}"));
    assert_one(
        &provider(format!("concurrency = {too_many}")),
        6,
        15,
        &["[providers.openai] concurrency 100001 is above"],
    );
    assert_one(
        &provider(format!("url_concurrency = {too_many}")),
        6,
        19,
        &["url_concurrency 100001 is above"],
    );
    assert_one(
        &provider(format!(
            "concurrency = \"auto\"\nmax_concurrency = {too_many}"
        )),
        7,
        19,
        &["max_concurrency 100001 is above"],
    );
    // The bound itself is allowed.
    let job = super::job(&format!("concurrency = {}\n{BASE}", crate::MAX_CONCURRENCY));
    assert_eq!(job.concurrency, crate::MAX_CONCURRENCY);
    // --set is bounded the same way.
    for set in [
        "concurrency=100001",
        "max_in_flight=100001",
        "steps.first.concurrency=100001",
        "providers.openai.concurrency=100001",
        "providers.openai.url_concurrency=100001",
    ] {
        let d = &errors(BASE, &[set])[0];
        assert_eq!((d.path.to_str(), d.line), (Some("--set"), 0), "{set}");
        assert!(d.message.contains("1 to 100000"), "{set}: {d}");
    }
}
