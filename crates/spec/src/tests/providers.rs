//! Provider limits beyond concurrency/rpm/tpm: adaptive concurrency, request
//! and token rates over several windows, per-URL caps, the circuit breaker,
//! connect time-outs and prices; good paths and one test per rule.

use std::time::Duration;

use super::{assert_one, assert_one_with, job, job_with, BASE};
use crate::{BreakerSpec, Price, Provider};

/// `BASE` with `lines` added to `[providers.openai]`, starting on line 6.
fn provider_plus(lines: &str) -> String {
    BASE.replace("/v1\"", &format!("/v1\"\n{lines}"))
}

#[test]
fn every_provider_key() {
    let text = provider_plus(
        r#"concurrency = "auto"
max_concurrency = 64
url_concurrency = 4
rps = 5
rpm = 200
rph = 5000
rpd = 100000
tpm = 90000
tpd = 9000000
connect_timeout = "3s"
circuit_breaker = { failures = 10, cooldown = "1m", window = 20, rate = 0.25 }
prices = { "gpt-4o" = { input = 2.5, output = 10.0 }, "*" = { input = 1, output = 0 } }"#,
    );
    let job = job(&text);
    let p = &job.providers[0];
    assert_eq!(
        (p.concurrency, p.adaptive, p.url_concurrency),
        (None, Some(64), Some(4))
    );
    assert_eq!(
        (p.rps, p.rpm, p.rph, p.rpd, p.tpm, p.tpd),
        (
            Some(5),
            Some(200),
            Some(5000),
            Some(100_000),
            Some(90_000),
            Some(9_000_000)
        )
    );
    assert_eq!(p.connect_timeout, Duration::from_secs(3));
    let breaker = BreakerSpec {
        failures: 10,
        cooldown: Duration::from_secs(60),
        window: 20,
        rate: 0.25,
    };
    assert_eq!(p.breaker, Some(breaker));
    let gpt = Price {
        model: "gpt-4o".into(),
        input_per_mtok: 2.5,
        output_per_mtok: 10.0,
        batch_input_per_mtok: 1.25,
        batch_output_per_mtok: 5.0,
    };
    let any = Price {
        model: "*".into(),
        input_per_mtok: 1.0,
        output_per_mtok: 0.0,
        batch_input_per_mtok: 0.5,
        batch_output_per_mtok: 0.0,
    };
    assert_eq!(p.prices, [gpt.clone(), any.clone()]);
    assert_eq!(p.price("gpt-4o"), Some(&gpt));
    assert_eq!(p.price("gpt-4o-mini"), Some(&any));
}

#[test]
fn provider_defaults() {
    let job = job(BASE);
    let p = &job.providers[0];
    assert_eq!(
        (p.concurrency, p.adaptive, p.url_concurrency),
        (None, None, None)
    );
    assert_eq!(
        (p.rps, p.rpm, p.rph, p.rpd, p.tpm, p.tpd),
        (None, None, None, None, None, None)
    );
    let breaker = BreakerSpec {
        failures: 5,
        cooldown: Duration::from_secs(30),
        window: 0,
        rate: 0.5,
    };
    assert_eq!(p.breaker, Some(breaker));
    assert_eq!(BreakerSpec::default(), breaker);
    assert_eq!(p.connect_timeout, Duration::from_secs(10));
    assert_eq!(p.timeout, Duration::from_secs(60));
    assert!(p.prices.is_empty());
    assert_eq!(p.price("m"), None);
    // `Provider::default()` is what a table leaves out.
    let d = Provider::default();
    assert_eq!(
        (d.breaker, d.connect_timeout, d.timeout, d.retries),
        (p.breaker, p.connect_timeout, p.timeout, p.retries)
    );
    assert_eq!((d.concurrency, d.adaptive, d.rpm), (None, None, None));
}

#[test]
fn auto_concurrency_and_breaker_forms() {
    let p = |lines: &str| job(&provider_plus(lines)).providers[0].clone();
    let auto = p("concurrency = \"auto\"");
    assert_eq!((auto.concurrency, auto.adaptive), (None, Some(256)));
    assert_eq!(p("circuit_breaker = false").breaker, None);
    assert_eq!(
        p("circuit_breaker = true").breaker,
        Some(BreakerSpec::default())
    );
    let partial = p("circuit_breaker = { cooldown = \"5s\" }")
        .breaker
        .unwrap();
    assert_eq!(
        partial,
        BreakerSpec {
            cooldown: Duration::from_secs(5),
            ..BreakerSpec::default()
        }
    );
    // A window as large as `failures` is fine; only smaller ones are refused.
    let window = p("circuit_breaker = { failures = 3, window = 3 }").breaker;
    assert_eq!(window.map(|b| (b.failures, b.window)), Some((3, 3)));
    assert!(p("prices = {}").prices.is_empty());
}

#[test]
fn set_overrides_every_limit() {
    let text = provider_plus("concurrency = \"auto\"\nrps = 9");
    let sets = [
        "providers.openai.rps=2",
        "providers.openai.rph=3",
        "providers.openai.rpd=4",
        "providers.openai.tpd=5",
        "providers.openai.url_concurrency=6",
        "providers.openai.concurrency=7",
    ];
    let job = job_with(&text, &sets);
    let p = &job.providers[0];
    assert_eq!(
        (p.rps, p.rph, p.rpd, p.tpd),
        (Some(2), Some(3), Some(4), Some(5))
    );
    assert_eq!(p.url_concurrency, Some(6));
    // A fixed cap from the command line replaces "auto".
    assert_eq!((p.concurrency, p.adaptive), (Some(7), None));
    assert_one_with(
        BASE,
        &["providers.openai.rps=0"],
        0,
        0,
        &["not a whole number of at least 1"],
    );
    assert_one_with(
        BASE,
        &["providers.openai.rpw=1"],
        0,
        0,
        &["cannot be set", "rps, rpm, rph, rpd, tpm, tpd"],
    );
}

#[test]
fn concurrency_is_a_count_or_auto() {
    assert_one(
        &provider_plus("concurrency = \"max\""),
        6,
        15,
        &[
            "[providers.openai] concurrency \"max\" is not valid",
            "\"auto\"",
        ],
    );
    assert_one(
        &provider_plus("concurrency = 1.5"),
        6,
        15,
        &["`concurrency` must be a whole number or \"auto\", not floating point `1.5`"],
    );
    assert_one(
        &provider_plus("concurrency = -2"),
        6,
        15,
        &["`concurrency` must be a whole number or \"auto\", not integer `-2`"],
    );
    assert_one(
        &provider_plus("concurrency = 0"),
        6,
        15,
        &["concurrency must be at least 1"],
    );
}

#[test]
fn max_concurrency_needs_auto() {
    assert_one(
        &provider_plus("concurrency = 8\nmax_concurrency = 64"),
        7,
        19,
        &["max_concurrency only applies with concurrency = \"auto\""],
    );
    assert_one(
        &provider_plus("max_concurrency = 64"),
        6,
        19,
        &["max_concurrency only applies"],
    );
    assert_one(
        &provider_plus("concurrency = \"auto\"\nmax_concurrency = 0"),
        7,
        19,
        &["max_concurrency must be at least 1"],
    );
}

#[test]
fn rates_and_url_concurrency_are_at_least_one() {
    for key in ["rps", "rph", "rpd", "tpd", "url_concurrency"] {
        let column = key.len() + 4;
        assert_one(
            &provider_plus(&format!("{key} = 0")),
            6,
            column,
            &[&format!("[providers.openai] {key} must be at least 1")],
        );
    }
}

#[test]
fn connect_timeout_is_a_positive_duration() {
    assert_one(
        &provider_plus("connect_timeout = \"0s\""),
        6,
        19,
        &["connect_timeout must be longer than 0s"],
    );
    assert_one(
        &provider_plus("connect_timeout = \"fast\""),
        6,
        19,
        &["connect_timeout \"fast\" is not a duration"],
    );
}

#[test]
fn circuit_breaker_rules() {
    let breaker = |t: &str| provider_plus(&format!("circuit_breaker = {t}"));
    assert_one(
        &breaker("{ failures = 0 }"),
        6,
        32,
        &[
            "circuit_breaker.failures must be at least 1",
            "circuit_breaker = false",
        ],
    );
    assert_one(
        &breaker("{ cooldown = \"0s\" }"),
        6,
        32,
        &["circuit_breaker.cooldown must be longer than 0s"],
    );
    assert_one(
        &breaker("{ window = 3 }"),
        6,
        30,
        &[
            "circuit_breaker.window (3) is smaller than failures (5)",
            "or 0",
        ],
    );
    assert_one(
        &breaker("{ window = 10, rate = 1.5 }"),
        6,
        41,
        &["circuit_breaker.rate must be", "at most 1", "not 1.5"],
    );
    assert_one(&breaker("{ window = 10, rate = 0 }"), 6, 41, &["above 0"]);
    assert_one(
        &breaker("{ rate = 0.2 }"),
        6,
        28,
        &["rate only applies with window = N"],
    );
    assert_one(
        &breaker("{ fails = 3 }"),
        6,
        21,
        &[
            "unknown key `fails`",
            "`failures`, `cooldown`, `window`, `rate`",
        ],
    );
    assert_one(
        &breaker("\"off\""),
        6,
        19,
        &[
            "`circuit_breaker` must be false or a table",
            "not string \"off\"",
        ],
    );
}

#[test]
fn prices_rules() {
    let prices = |t: &str| provider_plus(&format!("prices = {t}"));
    assert_one(
        &prices("{ m = { input = -1, output = 2 } }"),
        6,
        26,
        &["prices.m.input must be a non-negative number", "not -1"],
    );
    assert_one(
        &prices("{ m = { input = nan, output = 2 } }"),
        6,
        26,
        &["prices.m.input must be a non-negative number"],
    );
    assert_one(
        &prices("{ m = { input = 1 } }"),
        6,
        16,
        &[
            "prices.m needs output = USD per million output tokens",
            "0 when",
        ],
    );
    assert_one(
        &prices("{ m = 3 }"),
        6,
        16,
        &["`prices.m` must be a table like { input = 2.5, output = 10 }"],
    );
    assert_one(
        &prices("{ m = { input = 1, output = 2, cached = 0.5 } }"),
        6,
        41,
        &["unknown key `cached`", "`input`, `output`, `batch_input`"],
    );
    assert_one(
        &prices("{ \"\" = { input = 1, output = 2 } }"),
        6,
        17,
        &["a key must be a model name, or \"*\""],
    );
}
