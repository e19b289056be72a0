//! The token: every route but /healthz answers 401 without it; a bearer
//! token or a Basic password (browsers) lets the request through.

use sluice_mock::MockConfig;

use crate::util::Setup;

#[tokio::test]
async fn without_the_token_every_route_but_healthz_is_401() {
    let s = Setup::with(MockConfig::default(), |c| {
        c.token = Some("s3cret-token".into())
    })
    .await;
    for (method, uri) in [
        ("GET", "/"),
        ("GET", "/v1/runs"),
        ("POST", "/v1/runs"),
        ("GET", "/v1/runs/x/events"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
        ("GET", "/nope"),
    ] {
        let r = s.call(method, uri, None).await;
        assert_eq!(r.status, 401, "{method} {uri}");
        assert_eq!(r.error_code(), "unauthorized");
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
    let ok = s
        .call_with(
            "GET",
            "/v1/runs",
            None,
            &[("authorization", "Bearer s3cret-token")],
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    // Basic with the token as password ("u:s3cret-token").
    let basic = s
        .call_with(
            "GET",
            "/",
            None,
            &[("authorization", "Basic dTpzM2NyZXQtdG9rZW4=")],
        )
        .await;
    assert_eq!(basic.status, 200);
    // A browser asking for a page is offered Basic auth (it prompts for the token).
    let page = s
        .call_with("GET", "/", None, &[("accept", "text/html")])
        .await;
    assert_eq!(page.headers["www-authenticate"], "Basic realm=\"sluice\"");
}
