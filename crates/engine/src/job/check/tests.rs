use serde_json::{json, Map};

use super::*;

const HEAD: &str = r#"[input]
path = "items.jsonl"
[providers.p]
base_url = "http://127.0.0.1:9"
"#;

fn job(steps: &str) -> Job {
    let text = format!("{HEAD}{steps}");
    sluice_spec::parse_str(&text, std::path::Path::new("/jobs/job.toml"), &[])
        .unwrap_or_else(|e| panic!("{e}"))
}

fn check(job: &Job, items: &[Json], shapes: bool) -> (CheckReport, Vec<FanOut>) {
    let combos = Combos::new(job);
    let mut checker = Checker::new(job, &Map::new(), shapes);
    for (i, item) in items.iter().enumerate() {
        checker.item(item, i as u64, &combos);
    }
    let fan_outs = checker.fan_outs().to_vec();
    (checker.finish(), fan_outs)
}

fn chat(name: &str, content: &str) -> String {
    format!(
        "[[steps]]\nname = \"{name}\"\nkind = \"chat\"\nprovider = \"p\"\nmodel = \"m\"\n\
         messages = [{{ role = \"user\", content = \"{content}\" }}]\n"
    )
}

fn items() -> Vec<Json> {
    (0..3)
        .map(|i| json!({"id": i, "prompt": "p", "topic": "t"}))
        .collect()
}

#[test]
fn a_missing_field_is_reported_once_with_the_fields_there_are() {
    let job = job(&chat("answer", "Q: {{ item.question }}"));
    let (report, _) = check(&job, &items(), false);
    assert_eq!(report.problems.len(), 1, "{report}");
    let p = &report.problems[0];
    assert!(
        p.message
            .contains("item has no field `question` (3 of 3 items)"),
        "{report}"
    );
    assert!(
        p.message.contains("item has: id, prompt, topic"),
        "{report}"
    );
    assert!(
        !p.message.contains("did you mean"),
        "nothing close: {report}"
    );
    // Line 10 of the job; the column of `question` in the content string.
    assert_eq!(p.line, 10, "{report}");
    let line = format!("{HEAD}{}", chat("answer", "Q: {{ item.question }}"))
        .lines()
        .nth(9)
        .unwrap()
        .to_string();
    assert_eq!(p.column, line.find("question").unwrap() + 1, "{line}");
    assert!(report.to_string().ends_with("nothing was sent"), "{report}");
}

#[test]
fn a_typo_gets_a_suggestion_and_only_affected_items_count() {
    let job = job(&chat("answer", "{{ item.promt }}"));
    let mut list = items();
    list[1] = json!({"id": 1, "promt": "fine"});
    let (report, _) = check(&job, &list, false);
    assert_eq!(report.problems.len(), 1, "{report}");
    assert!(
        report.problems[0]
            .message
            .contains("did you mean `prompt`?"),
        "{report}"
    );
    assert!(
        report.problems[0].message.contains("(2 of 3 items)"),
        "{report}"
    );
}

#[test]
fn earlier_steps_have_the_fields_of_their_kind() {
    let steps = chat("ask", "hi") + &chat("grade", "{{ steps.ask.status }}");
    let (report, _) = check(&job(&steps), &items(), false);
    assert_eq!(report.problems.len(), 1, "{report}");
    let m = &report.problems[0].message;
    assert!(m.contains("steps.ask has no field `status`"), "{m}");
    assert!(m.contains("steps.ask has: json, text, usage"), "{m}");
    // What an answer holds is not known: any use of it renders.
    let steps = chat("ask", "hi")
        + &chat(
            "grade",
            "{{ steps.ask.json.score + 1 }} {{ steps.ask.text | upper }}",
        );
    let (report, _) = check(&job(&steps), &items(), false);
    assert!(report.is_clean(), "{report}");
}

#[test]
fn fan_outs_over_the_data_are_counted_and_their_elements_checked() {
    let steps = "[[steps]]\nname = \"each_tag\"\nkind = \"chat\"\nprovider = \"p\"\n\
                 model = \"m\"\nfor_each = \"{{ item.tags }}\"\n\
                 messages = [{ role = \"user\", content = \"{{ each.label }}\" }]\n";
    let list = vec![
        json!({"tags": [{"label": "a"}, {"label": "b"}]}),
        json!({"tags": [{"label": "c"}, {"name": "d"}, {"label": "e"}]}),
    ];
    let (report, fan_outs) = check(&job(steps), &list, false);
    assert_eq!(fan_outs[0].elements, 5);
    assert_eq!(fan_outs[0].unknown_units, 0);
    assert_eq!(report.problems.len(), 1, "{report}");
    assert!(
        report.problems[0]
            .message
            .contains("each has no field `label` (1 of 2 items); each has: name"),
        "{report}"
    );
}

#[test]
fn a_value_that_is_not_a_list_cannot_be_fanned_out() {
    let steps = "[[steps]]\nname = \"e\"\nkind = \"chat\"\nprovider = \"p\"\n\
                 model = \"m\"\nfor_each = \"{{ item.tags }}\"\n\
                 messages = [{ role = \"user\", content = \"{{ each }}\" }]\n";
    let (report, _) = check(&job(steps), &[json!({"tags": "a,b"})], false);
    assert_eq!(report.problems.len(), 1, "{report}");
    assert!(
        report.problems[0]
            .message
            .contains("for_each must render to a list"),
        "{report}"
    );
}

#[test]
fn the_shape_cache_renders_one_item_per_shape_and_still_finds_others() {
    let job = job(&chat("answer", "{{ item.prompt }}"));
    let mut list = items();
    list.push(json!({"id": 9, "topic": "no prompt"}));
    let (report, _) = check(&job, &list, true);
    assert_eq!(report.problems.len(), 1, "{report}");
    assert!(
        report.problems[0].message.contains("(1 of 4 items)"),
        "{report}"
    );
}
