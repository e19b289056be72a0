//! Who may talk to the server: the token (bearer, Basic password, or the
//! dashboard's cookie got from the printed URL or the 401 page's form), the
//! Host (421), the Origin (403; listed origins get CORS and preflights), the
//! declared body size (413 before the body), the submission's type (415),
//! the headers every answer carries, and `max_runs` (429 + retry-after).

use serde_json::json;
use sluice_mock::MockConfig;

use crate::util::Setup;

const TOKEN: &str = "s3cret-token";

async fn with_token() -> Setup {
    Setup::with(MockConfig::default(), |c| {
        c.token = Some(TOKEN.into());
        c.bound = Some("127.0.0.1:8080".parse().unwrap());
    })
    .await
}

#[tokio::test]
async fn without_the_token_every_route_but_healthz_is_401() {
    let s = with_token().await;
    for (method, uri) in [
        ("GET", "/"),
        ("GET", "/v1/runs"),
        ("POST", "/v1/runs"),
        ("GET", "/v1/runs/x/events"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
        ("GET", "/assets/app.js"),
        ("GET", "/nope"),
    ] {
        let r = s.call(method, uri, None).await;
        assert_eq!(r.status, 401, "{method} {uri}");
        assert_eq!(r.error_code(), "unauthorized");
        assert_eq!(r.headers["www-authenticate"], "Bearer");
        assert!(!r.text.contains("s3cret"), "the token must not leak");
    }
    let wrong = s
        .call_with(
            "GET",
            "/v1/runs",
            None,
            &[("authorization", "Bearer s3cret-tokeN")],
        )
        .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(s.call("GET", "/healthz", None).await.status, 200);
    for presented in [
        ("authorization", "Bearer s3cret-token"),
        // Basic with the token as password ("u:s3cret-token").
        ("authorization", "Basic dTpzM2NyZXQtdG9rZW4="),
        ("cookie", "theme=dark; sluice_token_8080=s3cret-token"),
    ] {
        let ok = s.call_with("GET", "/v1/runs", None, &[presented]).await;
        assert_eq!(ok.status, 200, "{presented:?}: {}", ok.text);
    }
    // Another server's cookie (another port) is not this one's.
    let other = s
        .call_with(
            "GET",
            "/v1/runs",
            None,
            &[("cookie", "sluice_token_9090=s3cret-token")],
        )
        .await;
    assert_eq!(other.status, 401);
}

#[tokio::test]
async fn the_printed_url_sets_the_cookie_and_leaves_the_token_out_of_the_address() {
    let s = with_token().await;
    let r = s.call("GET", &format!("/?token={TOKEN}"), None).await;
    assert_eq!(r.status, 303, "{}", r.text);
    assert_eq!(
        r.headers["location"], "/",
        "the address bar drops the token"
    );
    let cookie = r.headers["set-cookie"].to_str().unwrap();
    assert!(
        cookie.starts_with(&format!("sluice_token_8080={TOKEN};")),
        "{cookie}"
    );
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    // The page with the cookie works; without it a browser gets a page that
    // says how to get in, with a form.
    let page = s
        .call_with(
            "GET",
            "/",
            None,
            &[("cookie", &format!("sluice_token_8080={TOKEN}"))],
        )
        .await;
    assert_eq!(page.status, 200);
    let refused = s
        .call_with("GET", "/", None, &[("accept", "text/html")])
        .await;
    assert_eq!(refused.status, 401);
    assert!(
        refused.text.contains("action=\"/login\""),
        "{}",
        refused.text
    );
    assert!(refused.headers["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("frame-ancestors 'none'"));
    // A wrong token in the URL: 401, no cookie.
    let wrong = s.call_with("GET", "/?token=guess", None, &[]).await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.headers.get("set-cookie").is_none());
    assert!(wrong.text.contains("not this server"), "{}", wrong.text);
    // The form posts it.
    let form = s
        .call(
            "POST",
            "/login",
            Some((
                "application/x-www-form-urlencoded",
                format!("token={TOKEN}"),
            )),
        )
        .await;
    assert_eq!(form.status, 303);
    assert!(form.headers["set-cookie"]
        .to_str()
        .unwrap()
        .contains("HttpOnly"));
    let bad = s
        .call(
            "POST",
            "/login",
            Some(("application/x-www-form-urlencoded", "token=nope".into())),
        )
        .await;
    assert_eq!(bad.status, 401);
}

#[tokio::test]
async fn foreign_hosts_are_misdirected_and_foreign_origins_forbidden() {
    let s = with_token().await;
    let auth = ("authorization", "Bearer s3cret-token");
    for host in [
        "evil.example:8080",
        "rebind.attacker.example",
        "10.1.2.3:8080",
    ] {
        let r = s
            .call_with("GET", "/v1/runs", None, &[auth, ("host", host)])
            .await;
        assert_eq!(r.status, 421, "{host}");
        assert_eq!(r.error_code(), "unknown_host");
        assert!(r.text.contains("--allow-host"), "{}", r.text);
    }
    for host in ["127.0.0.1:8080", "localhost:8080", "[::1]:8080"] {
        let r = s
            .call_with("GET", "/v1/runs", None, &[auth, ("host", host)])
            .await;
        assert_eq!(r.status, 200, "{host}");
    }
    // A page of another site, even with the token: 403, nothing runs.
    let r = s
        .call_with(
            "POST",
            "/v1/runs",
            Some(("text/plain", "name = \"x\"".into())),
            &[
                auth,
                ("host", "127.0.0.1:8080"),
                ("origin", "http://evil.example"),
            ],
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.error_code(), "forbidden_origin");
    assert!(r.headers.get("access-control-allow-origin").is_none());
    let null = s
        .call_with("GET", "/v1/runs", None, &[auth, ("origin", "null")])
        .await;
    assert_eq!(null.status, 403);
    // The server's own page.
    let own = s
        .call_with(
            "GET",
            "/v1/runs",
            None,
            &[
                auth,
                ("host", "localhost:8080"),
                ("origin", "http://localhost:8080"),
            ],
        )
        .await;
    assert_eq!(own.status, 200);
    // healthz answers anyone.
    let health = s
        .call_with(
            "GET",
            "/healthz",
            None,
            &[("host", "evil.example"), ("origin", "http://evil.example")],
        )
        .await;
    assert_eq!(health.status, 200);
}

#[tokio::test]
async fn a_listed_origin_passes_with_cors_and_its_preflight_is_answered() {
    let s = Setup::with(MockConfig::default(), |c| {
        c.token = Some(TOKEN.into());
        c.allow_origins = vec![sluice_server::parse_origin("http://localhost:3000").unwrap()];
    })
    .await;
    let origin = ("origin", "http://localhost:3000");
    let preflight = s
        .call_with(
            "OPTIONS",
            "/v1/runs",
            None,
            &[
                origin,
                ("access-control-request-method", "POST"),
                (
                    "access-control-request-headers",
                    "authorization, content-type",
                ),
            ],
        )
        .await;
    assert_eq!(preflight.status, 204, "no token on a preflight");
    assert_eq!(
        preflight.headers["access-control-allow-origin"],
        "http://localhost:3000"
    );
    assert!(preflight.headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .contains("authorization"));
    assert!(preflight
        .headers
        .get("access-control-allow-credentials")
        .is_none());
    let r = s
        .call_with(
            "GET",
            "/v1/runs",
            None,
            &[origin, ("authorization", "Bearer s3cret-token")],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.headers["access-control-allow-origin"],
        "http://localhost:3000"
    );
    assert_eq!(r.headers["vary"], "origin");
    // The listed origin still needs the token; others get no preflight.
    let r = s.call_with("GET", "/v1/runs", None, &[origin]).await;
    assert_eq!(r.status, 401);
    let other = s
        .call_with(
            "OPTIONS",
            "/v1/runs",
            None,
            &[
                ("origin", "http://localhost:3001"),
                ("access-control-request-method", "POST"),
            ],
        )
        .await;
    assert_eq!(other.status, 403);
}

#[tokio::test]
async fn sizes_types_and_headers_are_checked_before_the_body() {
    let s = Setup::with(MockConfig::default(), |c| c.max_submit_bytes = 1_000).await;
    // Declared too large: 413 from the headers (the body here is empty,
    // as a client that waits for the answer before sending would have it).
    let r = s
        .call_with(
            "POST",
            "/v1/runs",
            None,
            &[
                ("content-type", "application/toml"),
                ("content-length", "1000000000"),
            ],
        )
        .await;
    assert_eq!(r.status, 413);
    assert_eq!(r.error_code(), "too_large");
    assert_eq!(r.headers["connection"], "close");
    let r = s
        .call_with(
            "POST",
            "/v1/runs/x/pause",
            None,
            &[("content-length", "100000")],
        )
        .await;
    assert_eq!(r.status, 413, "other routes: 64 KiB");
    for kind in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/xml",
    ] {
        let r = s
            .call("POST", "/v1/runs", Some((kind, "name = \"x\"".into())))
            .await;
        assert_eq!(r.status, 415, "{kind}");
        assert_eq!(r.error_code(), "unsupported_media_type");
        assert!(r.text.contains("application/toml"), "{}", r.text);
    }
    let r = s
        .call_with("POST", "/v1/runs", None, &[("content-length", "0")])
        .await;
    assert_eq!(r.status, 415, "no type at all");
    let r = s.call("GET", "/v1/runs", None).await;
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("cross-origin-resource-policy", "same-origin"),
        ("referrer-policy", "no-referrer"),
    ] {
        assert_eq!(r.headers[name], value, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_runs_a_submission_is_429_with_retry_after() {
    let s = Setup::with(
        MockConfig {
            latency_ms: 50,
            ..MockConfig::default()
        },
        |c| c.max_runs = 1,
    )
    .await;
    let first = s.submit(&s.job(200, json!({"concurrency": 1}))).await;
    let r = s
        .call(
            "POST",
            "/v1/runs",
            Some(("application/json", s.job(1, json!({})).to_string())),
        )
        .await;
    assert_eq!(r.status, 429, "{}", r.text);
    assert_eq!(r.error_code(), "too_many_runs");
    assert_eq!(r.headers["retry-after"], "5");
    assert!(r.text.contains("--max-runs"), "{}", r.text);
    // Once the first has ended, the place is free again.
    s.call("POST", &format!("/v1/runs/{first}/cancel"), None)
        .await;
    s.wait_for(&first, |v| {
        v["state"] == "interrupted" && v["executed_here"] == false
    })
    .await;
    let again = s.submit(&s.job(1, json!({}))).await;
    s.wait_for(&again, |v| v["state"] == "finished").await;
}
