//! The OpenAPI document against the routes: every documented operation
//! exists, every route is documented, and real answers match the documented
//! schemas (a small validator: $ref, type, nullable, required, properties,
//! items, enum).

use serde_json::{json, Value};
use sluice_mock::MockConfig;

use crate::util::Setup;

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let pointer = r.trim_start_matches('#');
            resolve(
                doc,
                doc.pointer(pointer)
                    .unwrap_or_else(|| panic!("dangling {r}")),
            )
        }
        None => schema,
    }
}

/// A request: method, URI, body (content type, text).
type Call = (String, String, Option<(&'static str, String)>);

/// Problems of `value` against `schema`, with their JSON pointers.
fn check(doc: &Value, schema: &Value, value: &Value, at: &str, problems: &mut Vec<String>) {
    let schema = resolve(doc, schema);
    if value.is_null() {
        if schema.get("nullable") != Some(&json!(true)) && schema.get("type").is_some() {
            problems.push(format!("{at}: null but not nullable"));
        }
        return;
    }
    if let Some(t) = schema.get("type").and_then(Value::as_str) {
        let ok = match t {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            _ => true,
        };
        if !ok {
            problems.push(format!("{at}: expected {t}, got {value}"));
            return;
        }
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        if !options.contains(value) {
            problems.push(format!("{at}: {value} not in {options:?}"));
        }
    }
    for key in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = key.as_str().unwrap();
        if value.get(key).is_none() {
            problems.push(format!("{at}: missing required {key}"));
        }
    }
    if let (Some(props), Some(obj)) = (
        schema.get("properties").and_then(Value::as_object),
        value.as_object(),
    ) {
        for (k, s) in props {
            if let Some(v) = obj.get(k) {
                check(doc, s, v, &format!("{at}/{k}"), problems);
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), value.as_array()) {
        for (i, v) in arr.iter().enumerate() {
            check(doc, items, v, &format!("{at}/{i}"), problems);
        }
    }
}

/// Asserts `body` matches the documented response of `path`/`method`/`status`.
pub(crate) fn conforms(
    doc: &Value,
    path: &str,
    method: &str,
    status: u16,
    content_type: &str,
    body: &str,
) {
    let op = &doc["paths"][path][method];
    let response = resolve(doc, &op["responses"][status.to_string()]);
    assert!(
        !response.is_null(),
        "{method} {path} answered {status}, which is not documented"
    );
    let media = content_type.split(';').next().unwrap().trim();
    let content = &response["content"][media];
    assert!(
        !content.is_null(),
        "{method} {path} {status}: {media} not documented"
    );
    if media == "application/json" {
        let value: Value = serde_json::from_str(body).unwrap();
        let mut problems = Vec::new();
        check(doc, &content["schema"], &value, "", &mut problems);
        assert!(
            problems.is_empty(),
            "{method} {path} {status}: {problems:?}\n{value}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_answers_as_documented() {
    let s = Setup::new(MockConfig::default()).await;
    let doc: Value = serde_json::from_str(sluice_server::OPENAPI).unwrap();
    let served = s.call("GET", "/openapi.json", None).await;
    assert_eq!(served.json(), doc);

    // A finished run, one failed item and a second run to exercise every route.
    let id = s.submit(&s.job(12, json!({"concurrency": 4}))).await;
    s.wait_for(&id, |v| v["state"] == "finished").await;
    let item = "i0003";
    let mut calls: Vec<Call> = Vec::new();
    let paths = doc["paths"].as_object().unwrap();
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            let uri = path.replace("{id}", &id).replace("{item}", item);
            let body = (path == "/v1/runs" && method == "post")
                .then(|| ("application/json", s.job(3, json!({})).to_string()));
            calls.push((method.clone(), uri, body));
        }
    }
    // The control routes on a finished run answer documented errors (409),
    // the others documented successes; none is a 404 or 405.
    for (method, uri, body) in calls {
        let path = paths
            .keys()
            .find(|p| {
                let re = p.replace("{id}", &id).replace("{item}", item);
                re == uri
            })
            .unwrap()
            .clone();
        let r = s.call(&method.to_uppercase(), &uri, body).await;
        assert!(
            r.status != 404 && r.status != 405,
            "{method} {uri}: {}",
            r.status
        );
        let content_type = r
            .headers
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        if content_type.starts_with("text/event-stream") {
            continue;
        }
        conforms(
            &doc,
            &path,
            &method,
            r.status.as_u16(),
            &content_type,
            &r.text,
        );
    }
    // Errors are documented too.
    let r = s.call("GET", "/v1/runs/nope", None).await;
    conforms(
        &doc,
        "/v1/runs/{id}",
        "get",
        404,
        "application/json",
        &r.text,
    );
}

#[tokio::test]
async fn every_route_is_documented() {
    let doc: Value = serde_json::from_str(sluice_server::OPENAPI).unwrap();
    // The router's routes, as lib.rs declares them.
    let source = include_str!("../../src/lib.rs");
    let mut routes = 0;
    for line in source.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix(".route(\"") {
            let path = rest.split('"').next().unwrap();
            assert!(
                doc["paths"].get(path).is_some(),
                "route {path} is not in openapi.json"
            );
            routes += 1;
        }
    }
    // `.route(` on its own line is followed by the path on the next one.
    let mut lines = source.lines();
    while let Some(line) = lines.next() {
        if line.trim() == ".route(" {
            let path = lines
                .next()
                .unwrap()
                .trim()
                .trim_end_matches(',')
                .trim_matches('"');
            assert!(
                doc["paths"].get(path).is_some(),
                "route {path} is not in openapi.json"
            );
            routes += 1;
        }
    }
    assert_eq!(
        routes,
        doc["paths"].as_object().unwrap().len(),
        "routes and documented paths differ in number"
    );
}
