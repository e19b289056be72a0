//! A Directus-style CMS: collections of JSON items under `/items/NAME`, read
//! page by page and written one item at a time, kept in memory.
//!
//! - `GET /items/NAME?limit=N&offset=K` → `{"data": [...]}` (default limit
//!   100, as Directus; `limit=-1` for all).
//! - `GET /items/NAME/ID` → `{"data": item}`.
//! - `POST /items/NAME` with an object → created (its `id`, else the next
//!   number); an `id` already taken is a 400.
//! - `PUT /items/NAME/ID` with an object → created or replaced: idempotent,
//!   so a pipeline that writes its record again after a resume does not
//!   duplicate it.
//!
//! Collections are loaded at start from `NAME.json` files of a directory
//! (an array, or `{"data": [...]}`); writes never touch the files.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use http::{Method, StatusCode};
use serde_json::{json, Value};

/// Page size when a request gives no `limit`.
const DEFAULT_LIMIT: usize = 100;

/// Every collection, by name; items in insertion order.
#[derive(Debug, Default)]
pub(crate) struct Cms {
    collections: Mutex<BTreeMap<String, Vec<Value>>>,
}

impl Cms {
    /// Loads every `*.json` of `dir` (none: an empty CMS).
    pub(crate) fn load(dir: Option<&Path>) -> io::Result<Cms> {
        let mut collections = BTreeMap::new();
        let Some(dir) = dir else {
            return Ok(Cms::default());
        };
        let entries = std::fs::read_dir(dir).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("reading the CMS directory {}: {e}", dir.display()),
            )
        })?;
        for entry in entries {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
            let text = std::fs::read_to_string(&path)?;
            let value: Value = serde_json::from_str(&text)
                .map_err(|e| invalid(format!("{}: not JSON: {e}", path.display())))?;
            let items = match value {
                Value::Array(items) => items,
                Value::Object(mut o) => match o.remove("data") {
                    Some(Value::Array(items)) => items,
                    _ => {
                        return Err(invalid(format!(
                            "{}: expected an array of items or {{\"data\": [...]}}",
                            path.display()
                        )))
                    }
                },
                _ => {
                    return Err(invalid(format!(
                        "{}: expected an array of items",
                        path.display()
                    )))
                }
            };
            collections.insert(name.to_owned(), items);
        }
        Ok(Cms {
            collections: Mutex::new(collections),
        })
    }

    /// Answers one `/items/...` request: the status and the JSON body.
    pub(crate) fn handle(
        &self,
        method: &Method,
        path: &str,
        query: &str,
        body: &[u8],
    ) -> (StatusCode, Value) {
        let rest = path.strip_prefix("/items/").unwrap_or("");
        let (name, id) = match rest.split_once('/') {
            Some((name, id)) => (name, Some(id)),
            None => (rest, None),
        };
        if name.is_empty() {
            return error(StatusCode::NOT_FOUND, "no collection named in the path");
        }
        let mut collections = self
            .collections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match (method, id) {
            (&Method::GET, None) => {
                let Some(items) = collections.get(name) else {
                    return missing(name);
                };
                let (limit, offset) = match paging(query) {
                    Ok(p) => p,
                    Err(m) => return error(StatusCode::BAD_REQUEST, &m),
                };
                let page: Vec<&Value> = items.iter().skip(offset).take(limit).collect();
                (StatusCode::OK, json!({ "data": page }))
            }
            (&Method::GET, Some(id)) => match collections.get(name).and_then(|c| find(c, id)) {
                Some(i) => (StatusCode::OK, json!({ "data": collections[name][i] })),
                None => error(StatusCode::NOT_FOUND, &format!("no item {id} in {name}")),
            },
            (&Method::POST, None) => {
                let mut item = match object(body) {
                    Ok(item) => item,
                    Err(m) => return error(StatusCode::BAD_REQUEST, &m),
                };
                let items = collections.entry(name.to_owned()).or_default();
                match item.get("id").cloned() {
                    Some(id) if find(items, &id_text(&id)).is_some() => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            &format!("an item with id {} exists in {name}; PUT /items/{name}/ID replaces it", id_text(&id)),
                        )
                    }
                    Some(_) => {}
                    None => {
                        item.insert("id".into(), json!(items.len() + 1));
                    }
                }
                let item = Value::Object(item);
                items.push(item.clone());
                (StatusCode::OK, json!({ "data": item }))
            }
            (&Method::PUT, Some(id)) => {
                let mut item = match object(body) {
                    Ok(item) => item,
                    Err(m) => return error(StatusCode::BAD_REQUEST, &m),
                };
                item.insert("id".into(), json!(id));
                let item = Value::Object(item);
                let items = collections.entry(name.to_owned()).or_default();
                match find(items, id) {
                    Some(i) => items[i] = item.clone(),
                    None => items.push(item.clone()),
                }
                (StatusCode::OK, json!({ "data": item }))
            }
            _ => error(
                StatusCode::METHOD_NOT_ALLOWED,
                &format!("{method} {path}: use GET /items/NAME, GET or PUT /items/NAME/ID, POST /items/NAME"),
            ),
        }
    }
}

fn missing(name: &str) -> (StatusCode, Value) {
    error(
        StatusCode::NOT_FOUND,
        &format!("no collection {name:?}: start the mock with --cms DIR holding {name}.json, or POST to it first"),
    )
}

/// The Directus error shape: `{"errors": [{"message": ...}]}`.
fn error(status: StatusCode, message: &str) -> (StatusCode, Value) {
    (status, json!({ "errors": [{ "message": message }] }))
}

fn find(items: &[Value], id: &str) -> Option<usize> {
    items
        .iter()
        .position(|item| item.get("id").is_some_and(|v| id_text(v) == id))
}

/// An id as it appears in a path: strings bare, numbers as written.
fn id_text(id: &Value) -> String {
    match id {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn object(body: &[u8]) -> Result<serde_json::Map<String, Value>, String> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err("the body must be a JSON object (one item)".into()),
        Err(e) => Err(format!("the body is not JSON: {e}")),
    }
}

/// `limit` and `offset` from the query string.
fn paging(query: &str) -> Result<(usize, usize), String> {
    let mut limit = DEFAULT_LIMIT;
    let mut offset = 0;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "limit" if value == "-1" => limit = usize::MAX,
            "limit" => limit = number(key, value)?,
            "offset" => offset = number(key, value)?,
            _ => {}
        }
    }
    Ok((limit, offset))
}

fn number(key: &str, value: &str) -> Result<usize, String> {
    value
        .parse()
        .map_err(|_| format!("{key}={value:?} is not a whole number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_creates_and_upserts() {
        let cms = Cms::default();
        let post = |body: &str| cms.handle(&Method::POST, "/items/notes", "", body.as_bytes());
        assert_eq!(post(r#"{"text":"a"}"#).1["data"]["id"], 1);
        assert_eq!(post(r#"{"id":"x","text":"b"}"#).0, StatusCode::OK);
        assert_eq!(post(r#"{"id":"x"}"#).0, StatusCode::BAD_REQUEST);
        let put = cms.handle(&Method::PUT, "/items/notes/x", "", br#"{"text":"c"}"#);
        assert_eq!(put.1["data"], json!({"id": "x", "text": "c"}));
        cms.handle(&Method::PUT, "/items/notes/y", "", br#"{"text":"d"}"#);
        let (status, page) = cms.handle(&Method::GET, "/items/notes", "limit=2&offset=1", b"");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            page["data"],
            json!([{"id": "x", "text": "c"}, {"id": "y", "text": "d"}])
        );
        let one = cms.handle(&Method::GET, "/items/notes/1", "", b"");
        assert_eq!(one.1["data"]["text"], "a");
        assert_eq!(
            cms.handle(&Method::GET, "/items/none", "", b"").0,
            StatusCode::NOT_FOUND
        );
        let bad = cms.handle(&Method::GET, "/items/notes", "limit=x", b"");
        assert_eq!(bad.0, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn loads_arrays_and_data_envelopes() {
        let dir = std::env::temp_dir().join(format!("sluice-cms-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.json"), r#"[{"id":1}]"#).unwrap();
        std::fs::write(dir.join("b.json"), r#"{"data":[{"id":2},{"id":3}]}"#).unwrap();
        std::fs::write(dir.join("notes.txt"), "ignored").unwrap();
        let cms = Cms::load(Some(&dir)).unwrap();
        let all = cms.handle(&Method::GET, "/items/b", "limit=-1", b"");
        assert_eq!(all.1["data"].as_array().unwrap().len(), 2);
        std::fs::write(dir.join("c.json"), "{").unwrap();
        let err = Cms::load(Some(&dir)).unwrap_err();
        assert!(err.to_string().contains("c.json"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
