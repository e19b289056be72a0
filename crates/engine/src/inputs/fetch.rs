//! A url input: GET a JSON API page by page (`?limit=N&offset=K`) and spool
//! the listed items as JSONL, so the run reads (and resumes from) a file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use sluice_provider::{Attempt, CallOptions, Client, Endpoint};

use super::files::{bare_message, json_kind};
use super::{spool, InputError};

/// One page request's time-out.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Retries of a page after a 429, 5xx or connection error.
const RETRIES: u32 = 5;
/// The first retry's wait; doubled each time.
const BACKOFF: Duration = Duration::from_millis(250);
/// Longest wait before a retry, whatever the server's `Retry-After` says.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// How the list is found and paged.
#[derive(Debug, Clone, Copy)]
pub(super) struct Paging<'a> {
    /// JSON pointer to the list in each page; none = the page is the list.
    pub(super) pointer: Option<&'a str>,
    /// Items per page (never 0); none = one request.
    pub(super) page_size: Option<u64>,
    /// Query parameter carrying the page size.
    pub(super) limit_param: &'a str,
    /// Query parameter carrying the offset.
    pub(super) offset_param: &'a str,
    /// Fetch only the first page (`plan`: a look at the data, not all of it).
    pub(super) first_only: bool,
}

/// Fetches every page of `url` (only the first with `first_only`) into
/// `dir/url-<hash of url>.jsonl` and returns that path, and whether pages
/// were left unread. The file is replaced atomically, so a run reading an
/// older spool of the same URL is not disturbed.
pub(super) async fn spool_url(
    client: &Client,
    url: &str,
    paging: &Paging<'_>,
    headers: &[(String, String)],
    dir: &Path,
) -> Result<(PathBuf, bool), InputError> {
    let tmp = spool::temp_path(dir, "url");
    let more = match write_pages(client, url, paging, headers, &tmp).await {
        Ok(more) => more,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    let path = dir.join(format!(
        "url-{:016x}.jsonl",
        xxhash_rust::xxh3::xxh3_64(url.as_bytes())
    ));
    spool::commit(&tmp, &path)?;
    Ok((path, more))
}

async fn write_pages(
    client: &Client,
    url: &str,
    paging: &Paging<'_>,
    headers: &[(String, String)],
    tmp: &Path,
) -> Result<bool, InputError> {
    let mut out = spool::create(tmp)?;
    let write_err = |source| InputError::Write {
        path: tmp.to_path_buf(),
        source,
    };
    let mut offset = 0u64;
    let mut previous: Option<u64> = None;
    loop {
        let page_url = match paging.page_size {
            Some(size) => with_query(
                url,
                &[(paging.limit_param, size), (paging.offset_param, offset)],
            ),
            None => url.to_string(),
        };
        let body = get(client, &page_url, headers).await?;
        let fetch_err = |message: String| InputError::Fetch {
            url: sluice_store::redact_url(&page_url),
            message,
        };
        // A server that ignores the offset would be paged forever.
        let hash = xxhash_rust::xxh3::xxh3_64(&body);
        if previous == Some(hash) {
            return Err(fetch_err(format!(
                "the page is the same as the previous one; check that the API pages with \
                 {:?} and {:?} (set [input] limit_param and offset_param)",
                paging.limit_param, paging.offset_param
            )));
        }
        previous = Some(hash);
        let list = list_at(&body, paging.pointer).map_err(fetch_err)?;
        for element in &list {
            serde_json::to_writer(&mut out, element).map_err(|e| write_err(e.into()))?;
            out.write_all(b"\n").map_err(write_err)?;
        }
        match paging.page_size {
            Some(size) if list.len() as u64 >= size && paging.first_only => {
                out.flush().map_err(write_err)?;
                return Ok(true);
            }
            Some(size) if list.len() as u64 >= size => offset += list.len() as u64,
            _ => break,
        }
    }
    out.flush().map_err(write_err)?;
    Ok(false)
}

/// The list in a page: at `pointer`, or the page itself.
fn list_at(body: &[u8], pointer: Option<&str>) -> Result<Vec<Value>, String> {
    let mut page: Value = serde_json::from_slice(body).map_err(|e| {
        format!(
            "the response is not JSON ({}); it starts: {}",
            bare_message(&e),
            preview(body)
        )
    })?;
    let at = pointer.unwrap_or("");
    match page.pointer_mut(at).map(Value::take) {
        Some(Value::Array(list)) => Ok(list),
        Some(other) if pointer.is_some() => Err(format!(
            "the value at pointer {at:?} is {}, not a list; set [input] pointer to the list's JSON pointer, e.g. \"/data\"",
            json_kind(&other)
        )),
        Some(other) => Err(format!(
            "the response is {}, not a list; set [input] pointer to the list inside it, e.g. \"/data\"",
            json_kind(&other)
        )),
        None => Err(format!(
            "the response has nothing at pointer {at:?}; check [input] pointer (it starts with \"/\", e.g. \"/data\")"
        )),
    }
}

/// GETs one page, retrying what may pass on a second try.
async fn get(
    client: &Client,
    url: &str,
    headers: &[(String, String)],
) -> Result<Bytes, InputError> {
    let fetch_err = |message: String| InputError::Fetch {
        url: sluice_store::redact_url(url),
        message,
    };
    let endpoint = Endpoint::parse(url, http::Method::GET).map_err(|e| fetch_err(e.to_string()))?;
    let options = CallOptions {
        headers,
        content_type: None,
        expect_json: true,
    };
    let mut retries = 0;
    loop {
        match client
            .send(&endpoint, Bytes::new(), TIMEOUT, &options)
            .await
        {
            Attempt::Ok(success) => return Ok(success.body),
            Attempt::Failed(f) if f.is_retryable() && retries < RETRIES => {
                let backoff = BACKOFF * 2u32.pow(retries);
                tokio::time::sleep(f.retry_after.unwrap_or(backoff).min(MAX_WAIT)).await;
                retries += 1;
            }
            Attempt::Failed(f) => {
                let tries = if retries > 0 {
                    format!(" (after {} attempts)", retries + 1)
                } else {
                    String::new()
                };
                return Err(fetch_err(format!(
                    "{}{tries}; check the URL, that the API is up, and the [input] headers",
                    f.message
                )));
            }
        }
    }
}

/// `url` with `params` appended to its query.
fn with_query(url: &str, params: &[(&str, u64)]) -> String {
    let mut out = url.to_string();
    let mut sep = if url.contains('?') { '&' } else { '?' };
    for (name, value) in params {
        out.push(sep);
        out.push_str(name);
        out.push('=');
        out.push_str(&value.to_string());
        sep = '&';
    }
    out
}

/// The first 120 characters of a body, for messages.
fn preview(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(480)]);
    let short: String = text.chars().take(120).collect();
    format!("{short:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_is_appended_with_the_right_separator() {
        assert_eq!(
            with_query("http://h/items", &[("limit", 2), ("offset", 4)]),
            "http://h/items?limit=2&offset=4"
        );
        assert_eq!(
            with_query("http://h/items?kind=a", &[("n", 1)]),
            "http://h/items?kind=a&n=1"
        );
    }

    #[test]
    fn list_is_found_at_the_pointer() {
        let body = br#"{"data":[{"a":1},{"a":2}],"next":null}"#;
        assert_eq!(list_at(body, Some("/data")).unwrap().len(), 2);
        assert_eq!(list_at(b"[1,2,3]", None).unwrap().len(), 3);
        let e = list_at(body, None).unwrap_err();
        assert!(e.contains("an object, not a list"), "{e}");
        let e = list_at(body, Some("/items")).unwrap_err();
        assert!(e.contains("nothing at pointer \"/items\""), "{e}");
        let e = list_at(b"<html>", None).unwrap_err();
        assert!(e.contains("not JSON") && e.contains("<html>"), "{e}");
    }
}
