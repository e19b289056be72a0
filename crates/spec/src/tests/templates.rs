//! One test per template rule: syntax, and the variables each place may read.

use super::{assert_one, assert_one_with, job, job_with, BASE};

/// `BASE` with the user message's content replaced (it is on line 12,
/// column 40 is its opening quote).
fn content(template: &str) -> String {
    BASE.replace("Hi {{ item.name }}", template)
}

/// `BASE` plus a second step `second` whose content is `template`; the
/// first step's content is `first` (both on their `messages` line: 12 and 19).
fn two_steps(first: &str, second: &str) -> String {
    let step = BASE.split_once("[[steps]]").unwrap().1;
    let step = step
        .replace("\"first\"", "\"second\"")
        .replace("Hi {{ item.name }}", second);
    format!("{}\n[[steps]]{step}", content(first))
}

#[test]
fn template_syntax_error() {
    assert_one(
        &content("Hi {{ item.name "),
        12,
        40,
        &[
            "template steps.first.messages[0].content does not compile",
            "syntax error",
        ],
    );
}

#[test]
fn step_referencing_a_later_step() {
    assert_one(
        &two_steps("{{ steps.second.text }}", "ok"),
        12,
        40,
        &[
            "step \"second\" comes later in the job",
            "available here: none",
        ],
    );
}

#[test]
fn step_referencing_an_unknown_step() {
    assert_one(
        &two_steps("ok", "{{ steps.frist.text }}"),
        19,
        40,
        &["step \"frist\" does not exist; steps available here: first"],
    );
}

#[test]
fn step_referencing_itself() {
    assert_one(
        &content("{{ steps.first.text }}"),
        12,
        40,
        &["cannot read its own output"],
    );
}

#[test]
fn step_output_field_must_exist() {
    assert_one(
        &two_steps("ok", "{{ steps.first.answer }}"),
        19,
        40,
        &[
            "a step's output has no \"answer\"",
            "text, json, file, status, usage, turns",
        ],
    );
    // Anything below the field is free.
    job(&two_steps(
        "ok",
        "{{ steps.first.json.a.b }} {{ steps.first }}",
    ));
}

#[test]
fn undefined_matrix_key() {
    let text = format!(
        "{}\n[matrix]\nmodel = [\"a\"]\n",
        content("{{ matrix.modle }}")
    );
    assert_one(
        &text,
        12,
        40,
        &["matrix key \"modle\" is not defined; defined: model"],
    );
    assert_one(
        &content("{{ matrix.model }}"),
        12,
        40,
        &["the job has no [matrix]"],
    );
}

#[test]
fn set_matrix_defines_the_key() {
    let text = content("{{ matrix.model }}");
    let job = job_with(&text, &["matrix.model=a,b"]);
    assert_eq!(
        job.matrix[0].values,
        [serde_json::json!("a"), serde_json::json!("b")]
    );
}

#[test]
fn env_var_not_listed() {
    let text = format!("env = [\"A\"]\n{}", content("{{ env.TOKEN }}"));
    assert_one(
        &text,
        13,
        40,
        &[
            "env.TOKEN is not listed in `env`",
            "add \"TOKEN\"",
            "listed: A",
        ],
    );
    job(&format!(
        "env = [\"TOKEN\"]\n{}",
        content("{{ env.TOKEN }}")
    ));
}

#[test]
fn unknown_root_variable() {
    assert_one(
        &content("{{ items.name }}"),
        12,
        40,
        &["unknown variable \"items\"", "item, index"],
    );
}

#[test]
fn each_only_in_for_each_steps() {
    assert_one(
        &content("{{ each.x }}"),
        12,
        40,
        &["each is only defined inside a step with for_each"],
    );
    let text = BASE.replace(
        "name = \"first\"",
        "name = \"first\"\nfor_each = \"{{ item.list }}\"",
    );
    job(&text.replace("Hi {{ item.name }}", "{{ each.x }} {{ each_index }}"));
    let text = BASE.replace(
        "name = \"first\"",
        "name = \"first\"\nfor_each = \"{{ each }}\"",
    );
    assert_one(
        &text,
        9,
        12,
        &["each is only defined inside a step with for_each"],
    );
}

#[test]
fn answers_only_in_conversation_turns() {
    assert_one(
        &content("{{ answers[0] }}"),
        12,
        40,
        &["answers is only defined in a conversation"],
    );
}

#[test]
fn input_id_uses_only_item_and_index() {
    let text = BASE.replace(
        "path = \"items.jsonl\"",
        "path = \"a.jsonl\"\nid = \"{{ matrix.m }}\"",
    );
    assert_one(
        &text,
        3,
        6,
        &["input.id", "only item and index, not \"matrix\""],
    );
}

#[test]
fn headers_use_only_env() {
    let text = BASE.replace("/v1\"", "/v1\"\nheaders = { x = \"{{ item.k }}\" }");
    assert_one(
        &text,
        6,
        17,
        &["providers.openai.headers.x", "only env.NAME, not \"item\""],
    );
}

#[test]
fn loop_and_set_variables_and_functions_are_not_reported() {
    let template = "{% set greeting = 'Hi' %}{{ greeting }} {% for w in item.words %}{{ w }}\
                    {{ loop.index }}{% endfor %} {{ range(3) | join(',') }}";
    job(&content(template));
}

#[test]
fn set_matrix_replaces_an_axis_in_place() {
    let text = format!(
        "{}\n[matrix]\nmodel = [\"x\"]\nrun = [1]\n",
        content("{{ matrix.model }}")
    );
    let job = job_with(&text, &["matrix.model=a,b"]);
    let names: Vec<&str> = job.matrix.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["model", "run"]);
    assert_eq!(job.matrix[0].values.len(), 2);
    assert_one_with(&text, &["matrix.model="], 0, 0, &["empty value"]);
}

#[test]
fn fan_out_output_is_a_list() {
    let fan = "name = \"first\"\nfor_each = \"{{ item.xs }}\"";
    let text = two_steps("ok", "{{ steps.first.text }}").replacen("name = \"first\"", fan, 1);
    assert_one(
        &text,
        20,
        40,
        &["steps.first is a list of outputs", "steps.first[0].text"],
    );
    let text = two_steps("ok", "{{ steps.first[0].text }}").replacen("name = \"first\"", fan, 1);
    job(&text);
}

#[test]
fn unknown_filter_is_found_at_its_name_with_a_suggestion() {
    let text = BASE.replace("{{ item.name }}", "{{ item.name | uper }}");
    let line = text.lines().position(|l| l.contains("uper")).unwrap() + 1;
    let column = text.lines().nth(line - 1).unwrap().find("uper").unwrap() + 1;
    assert_one(
        &text,
        line,
        column,
        &[
            "unknown filter `uper`",
            "did you mean `upper`?",
            "filters: ",
        ],
    );
}

#[test]
fn unknown_function_is_named_as_a_function() {
    let text = BASE.replace("{{ item.name }}", "{{ shout(item.name) }}");
    let list = super::errors(&text, &[]);
    assert_eq!(list.len(), 1, "{list:?}");
    assert!(
        list[0].message.contains("unknown function `shout`"),
        "{}",
        list[0]
    );
    assert!(list[0].message.contains("range"), "{}", list[0]);
}

#[test]
fn a_provider_template_may_read_the_item_and_is_checked_against_the_input_later() {
    let text = BASE.replace("provider = \"openai\"", "provider = \"{{ item.vendor }}\"");
    let job = job(&text);
    let step = &job.steps[0];
    assert!(step.provider.is_none());
    assert_eq!(
        step.provider_template.as_ref().map(|t| t.source()),
        Some("{{ item.vendor }}")
    );
}

#[test]
fn a_provider_template_may_not_read_what_is_known_only_during_the_run() {
    let text = BASE.replace("provider = \"openai\"", "provider = \"{{ env.P }}\"");
    let found = super::errors(&text, &[]);
    assert!(
        found.iter().any(|d| d.to_string().contains(
            "job.toml:10:12: step \"first\": a templated provider may read only item, index and matrix values, so that each can be checked before the run; it reads `env`"
        )),
        "{found:?}"
    );
}
