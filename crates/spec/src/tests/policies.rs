//! What happens around the calls: step `fallback` and `cache`, the job's
//! `unit_timeout`, `budget` and `[webhook]`; good paths and one test per rule.

use std::time::Duration;

use minijinja::Value;
use serde_json::json;

use super::{assert_one, assert_one_with, errors, job, job_with, BASE};
use crate::{Fallback, Retries, WebhookOn};

const POLICIES: &str = r#"
env = ["HOOK_TOKEN"]
unit_timeout = "10m"
budget = { usd = 50.0 }

[input]
path = "items.jsonl"

[providers.openai]
base_url = "http://127.0.0.1:8080/v1"
prices = { "*" = { input = 1, output = 2 } }

[providers.backup]
base_url = "http://backup/v1"

[[steps]]
name = "answer"
kind = "chat"
provider = "openai"
model = "m"
messages = [{ role = "user", content = "{{ item.q }}" }]
cache = { ttl = "168h" }
fallback = { provider = "backup" }

[[steps]]
name = "vectors"
kind = "embed"
provider = "openai"
model = "e"
input = "{{ steps.answer.text }}"
cache = { ttl = "1h" }
fallback = { value = [0.0, 0.0] }

[[steps]]
name = "render"
kind = "http"
provider = "openai"
path = "/render"
json = { text = "{{ steps.answer.text }}" }
cache = { ttl = "30m" }
fallback = { provider = "backup" }

[[steps]]
name = "tag"
kind = "command"
command = ["echo", "{{ item.q }}"]
fallback = { value = { tags = [], note = "{{ kept as written }}" } }

[[steps]]
name = "talk"
kind = "conversation"
provider = "openai"
model = "m"
turns = ["{{ item.q }}"]
fallback = { provider = "backup" }

[webhook]
url = "https://hooks.example/done"
on = "run"
secret_env = "HOOK_SECRET"
headers = { Authorization = "Bearer {{ env.HOOK_TOKEN }}" }
retries = { max = 2, cap = "10s" }
"#;

#[test]
fn fallbacks_and_caches_of_every_kind() {
    let job = job(POLICIES);
    let backup = Some(Fallback::Provider("backup".into()));
    let fallbacks: Vec<Option<Fallback>> = job.steps.iter().map(|s| s.fallback.clone()).collect();
    let expected = [
        backup.clone(),
        Some(Fallback::Value(json!([0.0, 0.0]))),
        backup.clone(),
        // A fallback value is data, not a template.
        Some(Fallback::Value(
            json!({"tags": [], "note": "{{ kept as written }}"}),
        )),
        backup,
    ];
    assert_eq!(fallbacks, expected);
    let hours = |h: u64| Some(Duration::from_secs(h * 3600));
    let ttls: Vec<Option<Duration>> = job.steps.iter().map(|s| s.cache_ttl).collect();
    assert_eq!(
        ttls,
        [
            hours(168),
            hours(1),
            Some(Duration::from_secs(1800)),
            None,
            None
        ]
    );
}

#[test]
fn unit_timeout_budget_and_webhook() {
    let job = job(POLICIES);
    assert_eq!(job.unit_timeout, Some(Duration::from_secs(600)));
    assert_eq!(job.budget_usd, Some(50.0));
    let hook = job.webhook.as_ref().unwrap();
    assert_eq!(hook.url, "https://hooks.example/done");
    assert_eq!(hook.on, WebhookOn::Run);
    assert_eq!(hook.secret_env.as_deref(), Some("HOOK_SECRET"));
    assert_eq!(hook.headers[0].0, "Authorization");
    assert_eq!(hook.headers[0].1.place(), "webhook.headers.Authorization");
    let ctx = Value::from(minijinja::value::Serde(json!({"env": {"HOOK_TOKEN": "t"}})));
    assert_eq!(hook.headers[0].1.render(&ctx).unwrap(), "Bearer t");
    let retries = Retries {
        max: 2,
        base: Duration::from_millis(500),
        cap: Duration::from_secs(10),
    };
    assert_eq!(hook.retries, retries);
}

#[test]
fn defaults_and_a_minimal_webhook() {
    let job = job(BASE);
    assert_eq!(
        (job.unit_timeout, job.budget_usd, job.webhook.is_none()),
        (None, None, true)
    );
    assert_eq!(
        (job.steps[0].fallback.clone(), job.steps[0].cache_ttl),
        (None, None)
    );
    let job = self::job(&format!(
        "{BASE}\n[webhook]\nurl = \"http://127.0.0.1:9/hook\"\n"
    ));
    let hook = job.webhook.unwrap();
    assert_eq!(
        (hook.on, hook.secret_env, hook.headers.len()),
        (WebhookOn::Item, None, 0)
    );
    let retries = Retries {
        max: 5,
        base: Duration::from_millis(500),
        cap: Duration::from_secs(30),
    };
    assert_eq!(hook.retries, retries);
}

#[test]
fn set_budget() {
    assert_eq!(
        job_with(POLICIES, &["budget.usd=7.5"]).budget_usd,
        Some(7.5)
    );
    let priced = BASE.replace("/v1\"", "/v1\"\nprices = { m = { input = 1, output = 1 } }");
    assert_eq!(job_with(&priced, &["budget.usd=3"]).budget_usd, Some(3.0));
    assert_one_with(
        BASE,
        &["budget.usd=3"],
        0,
        0,
        &[
            "\"budget.usd=3\": a budget needs prices",
            "no provider has any",
        ],
    );
    assert_one_with(BASE, &["budget.usd=-1"], 0, 0, &["greater than 0"]);
}

/// `BASE` with a second provider `backup` (lines 7–8) and its step replaced
/// by `step`, whose lines start on line 12.
fn with_step(step: &str) -> String {
    let head = BASE.split("[[steps]]").next().unwrap();
    format!(
        "{head}[providers.backup]\nbase_url = \"http://b/v1\"\n\n[[steps]]\nname = \"s\"\n{step}\n"
    )
}

/// A chat step (lines 12–15) followed by `line` on line 16.
fn chat_plus(line: &str) -> String {
    with_step(&format!(
        "kind = \"chat\"\nprovider = \"openai\"\nmodel = \"m\"\n\
         messages = [{{ role = \"user\", content = \"q\" }}]\n{line}"
    ))
}

#[test]
fn fallback_is_one_of_value_and_provider() {
    assert_one(
        &chat_plus("fallback = { value = 1, provider = \"backup\" }"),
        16,
        36,
        &["step \"s\": fallback has both value and provider; keep one"],
    );
    assert_one(
        &chat_plus("fallback = {}"),
        16,
        12,
        &["fallback needs value = ... (the step's output when it fails) or provider"],
    );
    assert_one(
        &chat_plus("fallback = { text = \"n/a\" }"),
        16,
        14,
        &["unknown key `text`", "`value` or `provider`"],
    );
    assert_one(
        &chat_plus("fallback = \"n/a\""),
        16,
        12,
        &["`fallback` must be a table like { value = \"unavailable\" }"],
    );
}

#[test]
fn fallback_provider_rules() {
    assert_one(
        &chat_plus("fallback = { provider = \"spare\" }"),
        16,
        25,
        &["fallback provider \"spare\" is not defined; defined: openai, backup"],
    );
    assert_one(
        &chat_plus("fallback = { provider = \"openai\" }"),
        16,
        25,
        &["fallback provider \"openai\" is the step's own provider"],
    );
    let command = "kind = \"command\"\ncommand = [\"ls\"]\nfallback = { provider = \"backup\" }";
    assert_one(
        &with_step(command),
        14,
        25,
        &[
            "a command step calls no provider",
            "fallback = { value = ... }",
        ],
    );
    let http = "kind = \"http\"\nurl = \"http://x/y\"\nfallback = { provider = \"backup\" }";
    assert_one(
        &with_step(http),
        14,
        25,
        &["this http step needs path = \"/...\" instead of url"],
    );
    let http = "kind = \"http\"\nprovider = \"openai\"\npath = \"/y\"\nfallback = { provider = \"backup\" }";
    assert!(job(&with_step(http)).steps[0].fallback.is_some());
}

#[test]
fn cache_rules() {
    let command = "kind = \"command\"\ncommand = [\"ls\"]\ncache = { ttl = \"1h\" }";
    assert_one(
        &with_step(command),
        14,
        9,
        &["command steps cannot be cached", "side effects"],
    );
    let conversation = "kind = \"conversation\"\nprovider = \"openai\"\nmodel = \"m\"\n\
                        turns = [\"q\"]\ncache = { ttl = \"1h\" }";
    assert_one(
        &with_step(conversation),
        16,
        9,
        &[
            "conversation steps cannot be cached",
            "turns depend on each other",
        ],
    );
    assert_one(
        &chat_plus("cache = {}"),
        16,
        9,
        &["cache needs ttl = \"168h\""],
    );
    assert_one(
        &chat_plus("cache = { ttl = \"0s\" }"),
        16,
        17,
        &["cache.ttl must be longer than 0s"],
    );
    assert_one(
        &chat_plus("cache = { ttl = \"a week\" }"),
        16,
        17,
        &["cache.ttl \"a week\" is not a duration"],
    );
    // Chat steps list `cache` among their keys.
    let list = errors(&chat_plus("turns = [\"q\"]"), &[]);
    assert!(
        list[0]
            .message
            .contains("fallback, assume_latency, needs, provider"),
        "{}",
        list[0]
    );
    assert!(list[0].message.contains("path, cache"), "{}", list[0]);
}

#[test]
fn unit_timeout_is_a_positive_duration() {
    assert_one(
        &format!("unit_timeout = \"0s\"\n{BASE}"),
        1,
        16,
        &["unit_timeout must be longer than 0s"],
    );
    assert_one(
        &format!("unit_timeout = 600\n{BASE}"),
        1,
        16,
        &["`unit_timeout` must be a string, not integer `600`"],
    );
}

#[test]
fn budget_rules() {
    assert_one(
        &format!("budget = {{ usd = 5 }}\n{BASE}"),
        1,
        10,
        &["a budget needs prices to count spend", "prices = {"],
    );
    let priced = BASE.replace("/v1\"", "/v1\"\nprices = { m = { input = 1, output = 1 } }");
    assert_one(
        &format!("budget = {{ usd = 0 }}\n{priced}"),
        1,
        18,
        &["budget.usd must be more than 0 (USD), not 0"],
    );
    assert_one(
        &format!("budget = {{}}\n{priced}"),
        1,
        10,
        &["budget needs usd = AMOUNT"],
    );
    assert_one(
        &format!("budget = {{ eur = 5 }}\n{priced}"),
        1,
        12,
        &["unknown key `eur`"],
    );
}

/// `BASE` with a `[webhook]` table holding `lines` (header on line 14).
fn webhook(lines: &str) -> String {
    format!("{BASE}\n[webhook]\n{lines}\n")
}

#[test]
fn webhook_rules() {
    assert_one(
        &webhook("on = \"run\""),
        14,
        1,
        &["[webhook] needs url = \"https://...\""],
    );
    let url = "url = \"hooks.example/x\"";
    assert_one(
        &webhook(url),
        15,
        7,
        &["must be an absolute http:// or https:// URL"],
    );
    let url = "url = \"http://h/{{ item.id }}\"";
    assert_one(
        &webhook(url),
        15,
        7,
        &["[webhook] url is one fixed URL, not a template"],
    );
    let on = "url = \"http://h\"\non = \"unit\"";
    assert_one(
        &webhook(on),
        16,
        6,
        &["on \"unit\" must be \"item\"", "\"run\""],
    );
    let secret = "url = \"http://h\"\nsecret_env = \"s3cr3t!\"";
    assert_one(
        &webhook(secret),
        16,
        14,
        &["secret_env names the environment variable"],
    );
    let headers = "url = \"http://h\"\nheaders = { x = \"{{ item.id }}\" }";
    assert_one(
        &webhook(headers),
        16,
        17,
        &["webhook.headers.x", "can use only env.NAME"],
    );
    let retries = "url = \"http://h\"\nretries = { base = \"1m\" }";
    assert_one(
        &webhook(retries),
        16,
        11,
        &["base (1m) is longer than cap (30s)"],
    );
    let unknown = "url = \"http://h\"\nevents = [\"done\"]";
    assert_one(
        &webhook(unknown),
        16,
        1,
        &["[webhook]: unknown key `events`"],
    );
}

#[test]
fn unknown_top_level_key_lists_the_new_keys() {
    assert_one(
        &format!("budjet = 1\n{BASE}"),
        1,
        1,
        &["unit_timeout, budget, input", "output, webhook"],
    );
}
