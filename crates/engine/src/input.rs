//! Reading a JSONL batch: one request per line, as an OpenAI Batch API line
//! (`{"custom_id","method","url","body"}`) or a bare request body, streamed so a
//! file of any size is never loaded whole.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use sluice_limit::{
    estimate_text_tokens, Cost, DEFAULT_COMPLETION_ESTIMATE, MESSAGE_OVERHEAD, REPLY_PRIMING,
};

use crate::error::{Error, Result};

/// Where a quick-mode batch comes from (a job's input is `sluice_spec::InputSource`).
#[derive(Debug, Clone)]
pub enum QuickInput {
    /// A JSONL file.
    Path(PathBuf),
    /// Standard input, spooled to a file under the store's directory first, so
    /// it can be validated before sending and resumed by piping the same data.
    Stdin,
}

/// One request parsed from a line.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    /// The item's id: `custom_id`, else `line-N`.
    pub(crate) item_id: String,
    /// The `custom_id` as given, if any.
    pub(crate) custom_id: Option<String>,
    /// 1-based line number (the input position).
    pub(crate) line: u64,
    /// A batch line's `url` (a path such as `/v1/embeddings`), if any.
    pub(crate) path: Option<String>,
    /// The JSON body to send.
    pub(crate) body: Bytes,
    /// `metadata` passed through to the results.
    pub(crate) metadata: Option<String>,
    /// Tokens reserved before sending: the prompt's estimate and `max_tokens`.
    pub(crate) estimate: Cost,
    /// The endpoint the body's shape implies under a base URL
    /// (`chat/completions`, `embeddings`, `completions`), if any.
    pub(crate) shape: Option<&'static str>,
    /// Hash of path + body: a changed request is sent again on resume.
    pub(crate) hash: u64,
}

/// A line that is not a valid request.
#[derive(Debug, Clone)]
pub(crate) struct BadLine {
    pub(crate) line: u64,
    pub(crate) custom_id: Option<String>,
    pub(crate) message: String,
}

/// The keys that tell a Batch API line from a bare body, read without
/// building the rest of the line.
#[derive(Deserialize)]
struct LineKeys<'a> {
    #[serde(borrow, default)]
    custom_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    body: Option<&'a RawValue>,
    #[serde(borrow, default)]
    metadata: Option<&'a RawValue>,
    #[serde(borrow, default)]
    method: Option<&'a RawValue>,
    #[serde(borrow, default)]
    url: Option<&'a RawValue>,
}

/// A Batch API request line; unknown keys are rejected so a typo is not ignored.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchLine<'a> {
    #[serde(borrow)]
    custom_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow)]
    url: Option<Cow<'a, str>>,
    #[serde(borrow)]
    body: &'a RawValue,
    #[serde(borrow)]
    metadata: Option<&'a RawValue>,
}

/// The parts of a request body that decide its token estimate.
#[derive(Deserialize)]
struct EstimateView<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    messages: Option<Vec<MessageView<'a>>>,
    #[serde(borrow, default)]
    prompt: Option<TextOrList<'a>>,
    #[serde(borrow, default)]
    input: Option<TextOrList<'a>>,
    #[serde(borrow, default)]
    system: Option<TextOrList<'a>>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct MessageView<'a> {
    #[serde(borrow, default)]
    content: Option<Content<'a>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Content<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    Parts(#[serde(borrow)] Vec<Part<'a>>),
    Other(serde::de::IgnoredAny),
}

#[derive(Deserialize)]
struct Part<'a> {
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    image_url: Option<ImageView<'a>>,
}

#[derive(Deserialize)]
struct ImageView<'a> {
    #[serde(borrow, default)]
    url: Cow<'a, str>,
    #[serde(borrow, default)]
    detail: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum TextOrList<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    List(#[serde(borrow)] Vec<Cow<'a, str>>),
    Other(serde::de::IgnoredAny),
}

impl TextOrList<'_> {
    fn tokens(&self, count: &dyn Fn(&str) -> u64) -> u64 {
        match self {
            TextOrList::Text(t) => count(t),
            TextOrList::List(l) => l.iter().map(|t| count(t)).sum(),
            TextOrList::Other(_) => 0,
        }
    }
}

/// Tokens to reserve for `body` counted as chars ÷ 4 (cheap: every line gets
/// one, limited or not), and the endpoint its shape implies.
fn estimate(body: &str) -> std::result::Result<(Cost, Option<&'static str>), String> {
    estimate_with(body, false)
}

/// The same with the model's own tokenizer when it has one (see `tokens`);
/// used when a tokens/minute limit makes the estimate matter.
pub(crate) fn exact_estimate(body: &[u8]) -> Cost {
    std::str::from_utf8(body)
        .ok()
        .and_then(|b| estimate_with(b, true).ok())
        .map_or_else(Cost::default, |(tokens, _)| tokens)
}

/// The models named by the first `lines` requests of `path` (sorted, each
/// once): which tokenizer tables a run over it will need, to build them
/// before dispatch ([`crate::tokens::warm_up`]). A model first named further
/// down has its tables built when first counted.
pub(crate) fn models_named(path: &Path, lines: u64) -> Vec<String> {
    #[derive(Deserialize)]
    struct ModelOnly {
        #[serde(default)]
        model: Option<String>,
    }
    let mut models = Vec::new();
    let Ok(mut reader) = LineReader::open(path) else {
        return models; // the survey reports it
    };
    while let Ok(Some((line, text))) = reader.next_line() {
        if line > lines {
            break;
        }
        let model = text
            .and_then(|text| parse_line(text, line))
            .ok()
            .and_then(|r| serde_json::from_slice::<ModelOnly>(&r.body).ok())
            .and_then(|m| m.model);
        if let Some(model) = model {
            if !models.contains(&model) {
                models.push(model);
            }
        }
    }
    models.sort();
    models
}

/// Tokens to reserve for `body`: the prompt's estimate (a few tokens per chat
/// message for its framing, images by the tile rule) and the completion cap
/// (chat and completions; embeddings have no completion); and the endpoint
/// its shape implies.
fn estimate_with(
    body: &str,
    exact: bool,
) -> std::result::Result<(Cost, Option<&'static str>), String> {
    let view: EstimateView = serde_json::from_str(body)
        .map_err(|e| format!("the request body is not a JSON object: {e}"))?;
    let model = view.model.as_deref();
    let count = |text: &str| {
        if exact {
            crate::tokens::estimate(model, text)
        } else {
            estimate_text_tokens(text)
        }
    };
    let mut prompt = 0;
    if let Some(messages) = &view.messages {
        prompt += REPLY_PRIMING;
        for m in messages {
            prompt += MESSAGE_OVERHEAD;
            prompt += match &m.content {
                Some(Content::Text(t)) => count(t),
                Some(Content::Parts(parts)) => parts
                    .iter()
                    .map(|p| match (&p.text, &p.image_url) {
                        (Some(text), _) => count(text),
                        (None, Some(image)) => {
                            crate::tokens::image_estimate(&image.url, image.detail.as_deref())
                        }
                        (None, None) => 0,
                    })
                    .sum(),
                _ => 0,
            };
        }
    }
    for field in [&view.prompt, &view.input, &view.system]
        .into_iter()
        .flatten()
    {
        prompt += field.tokens(&count);
    }
    let completion = if view.input.is_some() && view.messages.is_none() && view.prompt.is_none() {
        0
    } else {
        view.max_completion_tokens
            .or(view.max_tokens)
            .unwrap_or(DEFAULT_COMPLETION_ESTIMATE)
    };
    let shape = crate::shape::endpoint_for(
        view.messages.is_some(),
        view.input.is_some(),
        view.prompt.is_some(),
    );
    Ok((
        Cost {
            input: prompt,
            output: completion,
        },
        shape,
    ))
}

/// Parses one input line (already known to be non-blank).
pub(crate) fn parse_line(text: &str, line: u64) -> std::result::Result<Request, BadLine> {
    let bad = |custom_id: Option<String>, message: String| BadLine {
        line,
        custom_id,
        message,
    };
    let trimmed = text.trim();
    if !trimmed.starts_with('{') {
        return Err(bad(None, "expected a JSON object on this line".into()));
    }
    if let Some(path) = crate::nul::in_line(trimmed) {
        return Err(bad(None, crate::nul::message(&path)));
    }
    let keys: LineKeys =
        serde_json::from_str(trimmed).map_err(|e| bad(None, format!("invalid JSON: {e}")))?;
    let batch = keys.body.is_some();
    if !batch && (keys.method.is_some() || keys.url.is_some()) {
        // A Batch API line without its body would be sent as a bare body:
        // the line itself, `url` and `method` included.
        let key = if keys.url.is_some() { "url" } else { "method" };
        return Err(bad(
            None,
            format!(
                "a Batch API line (it has \"{key}\") needs a \"body\" holding the request; \
                 add it, or remove \"url\" and \"method\" to send the line itself"
            ),
        ));
    }
    let ours = keys.custom_id.is_some() || keys.metadata.is_some();
    let (custom_id, path, body, metadata) = if batch {
        let parsed: BatchLine = serde_json::from_str(trimmed)
            .map_err(|e| bad(None, format!("invalid Batch API line: {e}")))?;
        let custom_id = parsed.custom_id.map(Cow::into_owned);
        if let Some(method) = &parsed.method {
            if !method.eq_ignore_ascii_case("POST") {
                return Err(bad(
                    custom_id,
                    format!("method {method:?} is not supported; Batch API lines use POST"),
                ));
            }
        }
        if let Some(url) = &parsed.url {
            if !url.starts_with('/') {
                return Err(bad(
                    custom_id,
                    format!("url {url:?} must be a path such as /v1/chat/completions"),
                ));
            }
        }
        (
            custom_id,
            parsed.url.map(Cow::into_owned),
            parsed.body.get().to_string(),
            parsed.metadata.map(|m| m.get().to_string()),
        )
    } else if !ours {
        (None, None, trimmed.to_string(), None)
    } else {
        // A bare body: `custom_id` and `metadata` are ours, not the API's, so
        // they are taken out before sending.
        let mut obj: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(trimmed).map_err(|e| bad(None, format!("invalid JSON: {e}")))?;
        let custom_id = match obj.remove("custom_id") {
            None => None,
            Some(serde_json::Value::String(s)) => Some(s),
            Some(other) => {
                return Err(bad(
                    None,
                    format!("custom_id must be a string, not {other}"),
                ))
            }
        };
        let metadata = obj.remove("metadata").map(|m| m.to_string());
        (
            custom_id,
            None,
            serde_json::Value::Object(obj).to_string(),
            metadata,
        )
    };
    if let Some(id) = &custom_id {
        if id.is_empty() {
            return Err(bad(custom_id.clone(), "custom_id is empty".into()));
        }
    }
    let (estimate, shape) = estimate(&body).map_err(|m| bad(custom_id.clone(), m))?;
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(path.as_deref().unwrap_or("").as_bytes());
    hasher.update(b"\n");
    hasher.update(body.as_bytes());
    Ok(Request {
        item_id: custom_id.clone().unwrap_or_else(|| format!("line-{line}")),
        custom_id,
        line,
        path,
        body: Bytes::from(body),
        metadata,
        estimate,
        shape,
        hash: hasher.digest(),
    })
}

/// Reads non-blank lines with their 1-based numbers.
pub(crate) struct LineReader {
    reader: BufReader<File>,
    line: u64,
    buf: Vec<u8>,
    path: PathBuf,
}

/// A UTF-8 byte order mark, which some editors put at the start of a file.
const BOM: &[u8] = b"\xEF\xBB\xBF";

impl LineReader {
    pub(crate) fn open(path: &Path) -> Result<LineReader> {
        let file = File::open(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(LineReader {
            reader: BufReader::with_capacity(256 * 1024, file),
            line: 0,
            buf: Vec::new(),
            path: path.to_path_buf(),
        })
    }

    /// The next non-blank line and its number, or `None` at the end. A line
    /// that is not UTF-8 is a bad line (with its number), not the end of
    /// the file; a byte order mark before the first line is skipped.
    pub(crate) fn next_line(
        &mut self,
    ) -> Result<Option<(u64, std::result::Result<&str, BadLine>)>> {
        let start = loop {
            self.buf.clear();
            let n = self
                .reader
                .read_until(b'\n', &mut self.buf)
                .map_err(|source| Error::Read {
                    path: self.path.clone(),
                    source,
                })?;
            if n == 0 {
                return Ok(None);
            }
            self.line += 1;
            let start = if self.line == 1 && self.buf.starts_with(BOM) {
                BOM.len()
            } else {
                0
            };
            let blank = std::str::from_utf8(&self.buf[start..]).is_ok_and(|t| t.trim().is_empty());
            if !blank {
                break start;
            }
        };
        match std::str::from_utf8(&self.buf[start..]) {
            Ok(text) => Ok(Some((self.line, Ok(text)))),
            Err(e) => {
                let bad = BadLine {
                    line: self.line,
                    custom_id: None,
                    message: format!(
                        "not valid UTF-8 (at byte {} of the line); save the file as UTF-8",
                        e.valid_up_to() + 1
                    ),
                };
                Ok(Some((self.line, Err(bad))))
            }
        }
    }

    /// The next non-blank line as a request, or why it cannot be one
    /// (including a repeated id: `duplicates` holds those lines, sorted).
    pub(crate) fn next_entry(
        &mut self,
        duplicates: &[u64],
        base_url: bool,
    ) -> Result<Option<std::result::Result<Request, BadLine>>> {
        let Some((line, text)) = self.next_line()? else {
            return Ok(None);
        };
        Ok(Some(
            text.and_then(|text| parse_line(text, line))
                .and_then(|r| routable(r, base_url))
                .and_then(|r| {
                    if duplicates.binary_search(&line).is_ok() {
                        Err(BadLine {
                            line,
                            custom_id: r.custom_id,
                            message: format!("custom_id {:?} repeats an earlier line", r.item_id),
                        })
                    } else {
                        Ok(r)
                    }
                }),
        ))
    }
}

/// What the validation pass found.
#[derive(Debug, Default)]
pub(crate) struct Survey {
    /// Non-blank lines.
    pub(crate) total: u64,
    /// Bad lines (first few kept in full).
    pub(crate) bad: Vec<BadLine>,
    pub(crate) bad_count: u64,
    /// Line numbers whose id repeats an earlier line's.
    pub(crate) duplicate_lines: Vec<u64>,
    /// A hash of every non-blank line with its number: the same for the same
    /// input, so an unchanged file's input list need not be written again.
    pub(crate) fingerprint: u64,
    /// The URL is a base URL: bodies go where their shape says
    /// ([`routable`]).
    pub(crate) base_url: bool,
}

/// Reads the whole input once before anything is sent: counts items, finds
/// malformed lines and repeated ids. Keeps only a 64-bit hash per id (about
/// 16 MB per million items, freed when the pass ends).
///
/// Under a base URL (`base_url`), a line that names no endpoint and whose
/// body's shape implies none is bad: there is nowhere to send it.
pub(crate) fn survey(path: &Path, base_url: bool) -> Result<Survey> {
    let mut reader = LineReader::open(path)?;
    let mut survey = Survey::default();
    let mut seen = std::collections::HashSet::<u64>::new();
    let mut fingerprint = xxhash_rust::xxh3::Xxh3::new();
    while let Some((line, text)) = reader.next_line()? {
        survey.total += 1;
        fingerprint.update(&line.to_le_bytes());
        match &text {
            Ok(text) => fingerprint.update(text.as_bytes()),
            Err(bad) => fingerprint.update(bad.message.as_bytes()),
        }
        match text
            .and_then(|text| parse_line(text, line))
            .and_then(|r| routable(r, base_url))
        {
            Ok(request) => {
                if !seen.insert(xxhash_rust::xxh3::xxh3_64(request.item_id.as_bytes())) {
                    survey.duplicate_lines.push(line);
                    survey.bad_count += 1;
                    if survey.bad.len() < 5 {
                        let first = first_line_with_id(path, &request.item_id, line)?;
                        survey.bad.push(BadLine {
                            line,
                            custom_id: request.custom_id,
                            message: format!(
                                "custom_id {:?} repeats line {first}; every line needs its own id",
                                request.item_id
                            ),
                        });
                    }
                }
            }
            Err(bad) => {
                survey.bad_count += 1;
                if survey.bad.len() < 5 {
                    survey.bad.push(bad);
                }
            }
        }
    }
    // Routing by shape decides which lines can be sent at all.
    fingerprint.update(&[u8::from(base_url)]);
    survey.fingerprint = fingerprint.digest();
    survey.base_url = base_url;
    Ok(survey)
}

/// `request` if it has somewhere to go: under a base URL, a batch line's
/// `url` or a body shaped like a chat, embeddings or completions request.
pub(crate) fn routable(request: Request, base_url: bool) -> std::result::Result<Request, BadLine> {
    if !base_url || request.path.is_some() || request.shape.is_some() {
        return Ok(request);
    }
    Err(BadLine {
        line: request.line,
        custom_id: request.custom_id,
        message: "the URL is a base URL and this body has no `messages`, `input` or `prompt` to tell its endpoint; give the endpoint in --url (e.g. .../v1/chat/completions) or as a Batch API line's \"url\"".into(),
    })
}

fn first_line_with_id(path: &Path, id: &str, before: u64) -> Result<u64> {
    let mut reader = LineReader::open(path)?;
    while let Some((line, text)) = reader.next_line()? {
        if line >= before {
            break;
        }
        if let Ok(r) = text.and_then(|text| parse_line(text, line)) {
            if r.item_id == id {
                return Ok(line);
            }
        }
    }
    Ok(before)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_line_keeps_custom_id_path_body_and_metadata() {
        let line = r#"{"custom_id":"a1","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[{"role":"user","content":"abcdefgh"}],"max_tokens":10},"metadata":{"k":1}}"#;
        let r = parse_line(line, 3).unwrap();
        assert_eq!(r.item_id, "a1");
        assert_eq!(r.path.as_deref(), Some("/v1/chat/completions"));
        assert_eq!(r.metadata.as_deref(), Some(r#"{"k":1}"#));
        // 2 of text, 3 for the message's framing, 3 for the reply's.
        assert_eq!(
            r.estimate,
            Cost {
                input: 2 + MESSAGE_OVERHEAD + REPLY_PRIMING,
                output: 10
            }
        );
        assert!(std::str::from_utf8(&r.body)
            .unwrap()
            .starts_with(r#"{"model":"m""#));
    }

    #[test]
    fn bare_body_is_sent_without_our_fields() {
        let line =
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"metadata":{"row":7}}"#;
        let r = parse_line(line, 9).unwrap();
        assert_eq!(r.item_id, "line-9");
        assert_eq!(r.custom_id, None);
        assert_eq!(r.metadata.as_deref(), Some(r#"{"row":7}"#));
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert!(body.get("metadata").is_none());
        assert_eq!(r.estimate.input, 1 + MESSAGE_OVERHEAD + REPLY_PRIMING);
        assert_eq!(r.estimate.output, DEFAULT_COMPLETION_ESTIMATE);
    }

    #[test]
    fn embeddings_reserve_no_completion() {
        let r = parse_line(r#"{"model":"e","input":["abcd","abcdefgh"]}"#, 1).unwrap();
        assert_eq!(r.estimate, Cost::from(3));
    }

    #[test]
    fn content_parts_count_their_text_and_images() {
        let line = r#"{"messages":[{"role":"user","content":[{"type":"text","text":"abcdabcd"},{"type":"image_url","image_url":{"url":"x","detail":"low"}}]}],"max_tokens":1}"#;
        let framing = MESSAGE_OVERHEAD + REPLY_PRIMING;
        assert_eq!(
            parse_line(line, 1).unwrap().estimate.input,
            2 + 85 + framing
        );
        let line = line.replace(r#","detail":"low""#, "");
        assert_eq!(
            parse_line(&line, 1).unwrap().estimate.input,
            2 + sluice_limit::UNKNOWN_IMAGE_TOKENS + framing
        );
    }

    #[test]
    fn hash_changes_with_the_body_not_the_metadata() {
        let a = parse_line(
            r#"{"custom_id":"x","body":{"input":"a"},"metadata":{"v":1}}"#,
            1,
        )
        .unwrap();
        let b = parse_line(
            r#"{"custom_id":"x","body":{"input":"a"},"metadata":{"v":2}}"#,
            1,
        )
        .unwrap();
        let c = parse_line(r#"{"custom_id":"x","body":{"input":"b"}}"#, 1).unwrap();
        assert_eq!(a.hash, b.hash);
        assert_ne!(a.hash, c.hash);
    }

    #[test]
    fn malformed_lines_say_what_is_wrong() {
        let e = parse_line(r#"{"model":"m","messages":[}"#, 4).unwrap_err();
        assert_eq!(e.line, 4);
        assert!(e.message.starts_with("invalid JSON"), "{}", e.message);
        let e = parse_line("[1,2]", 5).unwrap_err();
        assert!(e.message.contains("JSON object"));
        let e = parse_line(r#"{"custom_id":"a","body":{},"extra":1}"#, 6).unwrap_err();
        assert!(e.message.contains("unknown field `extra`"), "{}", e.message);
        let e = parse_line(r#"{"custom_id":"a","method":"GET","body":{}}"#, 7).unwrap_err();
        assert!(e.message.contains("GET"));
        assert_eq!(e.custom_id.as_deref(), Some("a"));
    }

    #[test]
    fn a_batch_line_without_a_body_is_invalid() {
        let e = parse_line(
            r#"{"custom_id":"a","method":"POST","url":"/v1/chat/completions"}"#,
            2,
        )
        .unwrap_err();
        assert!(e.message.contains("needs a \"body\""), "{}", e.message);
        let e = parse_line(r#"{"model":"m","url":"/v1/x"}"#, 3).unwrap_err();
        assert!(e.message.contains("\"url\""), "{}", e.message);
    }

    #[test]
    fn a_bom_is_skipped_and_invalid_utf8_is_a_bad_line_with_its_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        let mut bytes = b"\xEF\xBB\xBF{\"custom_id\":\"a\",\"body\":{}}\n".to_vec();
        bytes.extend_from_slice(b"{\"custom_id\":\"b\",\"body\":{\"x\":\"\xff\"}}\n");
        bytes.extend_from_slice(b"{\"custom_id\":\"c\",\"body\":{}}\n");
        std::fs::write(&path, bytes).unwrap();
        let s = survey(&path, false).unwrap();
        assert_eq!(s.total, 3);
        assert_eq!(s.bad_count, 1);
        assert_eq!(s.bad[0].line, 2);
        assert!(s.bad[0].message.contains("UTF-8"), "{}", s.bad[0].message);
    }

    #[test]
    fn survey_finds_duplicates_and_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        std::fs::write(
            &path,
            "{\"custom_id\":\"a\",\"body\":{}}\n\n{\"custom_id\":\"b\",\"body\":{}}\nnot json\n{\"custom_id\":\"a\",\"body\":{}}\n",
        )
        .unwrap();
        let s = survey(&path, false).unwrap();
        assert_eq!(s.total, 4);
        assert_eq!(s.bad_count, 2);
        assert_eq!(s.bad[0].line, 4);
        assert_eq!(s.duplicate_lines, vec![5]);
        assert!(
            s.bad[1].message.contains("repeats line 1"),
            "{}",
            s.bad[1].message
        );
    }
}
