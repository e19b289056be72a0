use super::*;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    h
}

#[test]
fn anthropic_input_and_output_tokens_are_held_apart() {
    let h = headers(&[
        ("anthropic-ratelimit-requests-limit", "50"),
        ("anthropic-ratelimit-requests-remaining", "0"),
        ("anthropic-ratelimit-requests-reset", "1970-01-01T00:00:12Z"),
        ("anthropic-ratelimit-tokens-limit", "96000"),
        ("anthropic-ratelimit-tokens-remaining", "95000"),
        ("anthropic-ratelimit-tokens-reset", "1970-01-01T00:00:11Z"),
        ("anthropic-ratelimit-input-tokens-limit", "80000"),
        ("anthropic-ratelimit-input-tokens-remaining", "79000"),
        (
            "anthropic-ratelimit-input-tokens-reset",
            "1970-01-01T00:00:10.5Z",
        ),
        ("anthropic-ratelimit-output-tokens-limit", "16000"),
        ("anthropic-ratelimit-output-tokens-remaining", "16000"),
        (
            "anthropic-ratelimit-output-tokens-reset",
            "1970-01-01T00:00:10Z",
        ),
    ]);
    let s = RateSignals::anthropic(&h, 10.0);
    assert_eq!(
        s.requests,
        Budget {
            limit: Some(50),
            remaining: Some(0),
            reset: Some(Duration::from_secs(2))
        }
    );
    assert_eq!(
        (s.input_tokens.limit, s.input_tokens.remaining),
        (Some(80_000), Some(79_000))
    );
    assert_eq!(s.input_tokens.reset, Some(Duration::from_millis(500)));
    assert_eq!(s.output_tokens.limit, Some(16_000));
    assert_eq!(s.output_tokens.reset, Some(Duration::ZERO));
    // The combined family adds nothing the separate ones do not say.
    assert_eq!(s.tokens, Budget::default());
    // A reset in the past is no wait at all.
    assert_eq!(
        RateSignals::anthropic(&h, 100.0).requests.reset,
        Some(Duration::ZERO)
    );
}

#[test]
fn anthropic_combined_tokens_are_read_when_alone_and_openai_headers_win() {
    let mut h = headers(&[
        ("anthropic-ratelimit-tokens-limit", "40000"),
        ("anthropic-ratelimit-tokens-remaining", "39000"),
    ]);
    let s = RateSignals::from_headers(&h);
    assert_eq!(
        (s.tokens.limit, s.tokens.remaining),
        (Some(40_000), Some(39_000))
    );
    h.insert("x-ratelimit-limit-requests", "7".parse().unwrap());
    let s = RateSignals::from_headers(&h);
    assert_eq!(s.requests.limit, Some(7));
    assert_eq!(s.tokens, Budget::default());
}

#[test]
fn retry_after_in_every_form() {
    let at = |pairs: &[(&str, &str)]| retry_after_at(&headers(pairs), 784_111_770.0);
    assert_eq!(at(&[("retry-after", "2")]), Some(Duration::from_secs(2)));
    assert_eq!(
        at(&[("retry-after", "1.5")]),
        Some(Duration::from_millis(1500))
    );
    // milliseconds win.
    assert_eq!(
        at(&[("retry-after", "2"), ("retry-after-ms", "150")]),
        Some(Duration::from_millis(150))
    );
    assert_eq!(
        at(&[("retry-after", "2"), ("retry-after-ms", "garbage")]),
        Some(Duration::from_secs(2))
    );
    // The HTTP-date form: seven seconds after "now".
    assert_eq!(
        at(&[("retry-after", "Sun, 06 Nov 1994 08:49:37 GMT")]),
        Some(Duration::from_secs(7))
    );
    // Zero and a date in the past ask for nothing: the backoff decides.
    assert_eq!(at(&[("retry-after", "0")]), None);
    assert_eq!(at(&[("retry-after-ms", "0")]), None);
    assert_eq!(
        at(&[("retry-after", "Sun, 06 Nov 1994 08:49:00 GMT")]),
        None
    );
    // A day is cut to the cap.
    assert_eq!(at(&[("retry-after", "86400")]), Some(RETRY_AFTER_CAP));
    assert_eq!(at(&[("retry-after", "soon")]), None);
}

#[test]
fn should_retry_is_true_false_or_no_word() {
    assert_eq!(
        should_retry(&headers(&[("x-should-retry", "true")])),
        Some(true)
    );
    assert_eq!(
        should_retry(&headers(&[("x-should-retry", "false")])),
        Some(false)
    );
    assert_eq!(should_retry(&headers(&[("x-should-retry", "maybe")])), None);
    assert_eq!(should_retry(&HeaderMap::new()), None);
}
