//! The three request shapes, parsed just far enough to price and answer them.
//!
//! Token counts are taken while parsing, from borrowed text where the JSON has
//! no escapes, so pricing a request allocates little more than its parse.

use std::borrow::Cow;
use std::fmt;

use crate::count::Counter;
use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

/// Which API a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    Chat,
    Completions,
    Embeddings,
}

/// Largest `dimensions` an embeddings request may ask for.
const MAX_DIMENSIONS: u64 = 4_096;
/// Vector length when the request does not say.
const DEFAULT_DIMENSIONS: usize = 8;

/// A valid request: what it costs and what its answer needs.
#[derive(Debug)]
pub(crate) struct Parsed<'a> {
    pub(crate) model: Cow<'a, str>,
    pub(crate) prompt_tokens: u64,
    pub(crate) body: ParsedBody<'a>,
    /// Chat: a hash of what the model reads (model, roles, texts), so the
    /// reply is the same whichever API shape carried the conversation.
    pub(crate) conversation: Option<u64>,
    /// Chat with `stream: true`: answer as server-sent events; the flag is
    /// `stream_options.include_usage` (a final usage chunk).
    pub(crate) stream: Option<bool>,
    /// Chat with a JSON `response_format`: answer with JSON.
    pub(crate) json: Option<crate::json_reply::JsonReply>,
    /// Chat: the images its messages carry.
    pub(crate) images: crate::media::Images,
}

/// The part of a request that differs by API.
#[derive(Debug)]
pub(crate) enum ParsedBody<'a> {
    /// Chat or text completion: the reply length, fixed before admission.
    Completion {
        completion_tokens: u64,
        /// `max_tokens` cut the reply short: finish reason "length".
        cut_short: bool,
    },
    Embeddings {
        inputs: Vec<Cow<'a, str>>,
        dims: usize,
        base64: bool,
    },
}

impl Parsed<'_> {
    /// Completion tokens the reply will have (none for embeddings).
    pub(crate) fn completion_tokens(&self) -> u64 {
        match self.body {
            ParsedBody::Completion {
                completion_tokens, ..
            } => completion_tokens,
            ParsedBody::Embeddings { .. } => 0,
        }
    }
}

/// Parses `body` as a request to `api`; `Err` is the 400's message.
/// `default_completion` is the reply length when `max_tokens` is absent.
pub(crate) fn parse(api: Api, body: &[u8], default_completion: u64) -> Result<Parsed<'_>, String> {
    let invalid = |e: serde_json::Error| format!("Invalid request body: {e}.");
    match api {
        Api::Chat => {
            let raw: RawChat<'_> = serde_json::from_slice(body).map_err(invalid)?;
            if raw.messages.is_empty() {
                return Err("`messages` must contain at least one message.".to_owned());
            }
            let max = raw.max_completion_tokens.or(raw.max_tokens);
            let conversation = crate::convo::hash(
                &raw.model,
                raw.messages
                    .iter()
                    .map(|m| (m.role.as_deref().unwrap_or("user"), m.content.hash())),
            );
            let counter = Counter::for_model(&raw.model);
            let prompt_tokens = raw.messages.iter().map(|m| m.content.tokens(counter)).sum();
            Ok(Parsed {
                model: raw.model,
                prompt_tokens,
                body: completion(max, default_completion),
                conversation: Some(conversation),
                stream: raw
                    .stream
                    .unwrap_or(false)
                    .then(|| raw.stream_options.is_some_and(|o| o.include_usage)),
                json: raw
                    .response_format
                    .as_ref()
                    .and_then(crate::json_reply::JsonReply::of),
                images: raw
                    .messages
                    .iter()
                    .fold(Default::default(), |a, m| a.plus(m.content.images)),
            })
        }
        Api::Completions => {
            let raw: RawCompletion<'_> = serde_json::from_slice(body).map_err(invalid)?;
            refuse_stream(raw.stream)?;
            let prompt_tokens = non_empty(&raw.prompt, "prompt", Counter::for_model(&raw.model))?;
            Ok(Parsed {
                model: raw.model,
                prompt_tokens,
                body: completion(raw.max_tokens, default_completion),
                conversation: None,
                stream: None,
                json: None,
                images: Default::default(),
            })
        }
        Api::Embeddings => {
            let raw: RawEmbeddings<'_> = serde_json::from_slice(body).map_err(invalid)?;
            let prompt_tokens = non_empty(&raw.input, "input", Counter::for_model(&raw.model))?;
            let dims = match raw.dimensions {
                None => DEFAULT_DIMENSIONS,
                Some(d @ 1..=MAX_DIMENSIONS) => d as usize,
                Some(d) => {
                    return Err(format!(
                        "`dimensions` must be 1 to {MAX_DIMENSIONS}, not {d}."
                    ))
                }
            };
            let base64 = match raw.encoding_format.as_deref() {
                None | Some("float") => false,
                Some("base64") => true,
                Some(other) => {
                    return Err(format!(
                        "`encoding_format` must be \"float\" or \"base64\", not {other:?}."
                    ))
                }
            };
            Ok(Parsed {
                model: raw.model,
                prompt_tokens,
                body: ParsedBody::Embeddings {
                    inputs: raw.input.0,
                    dims,
                    base64,
                },
                conversation: None,
                stream: None,
                json: None,
                images: Default::default(),
            })
        }
    }
}

pub(crate) fn completion(max_tokens: Option<u64>, default: u64) -> ParsedBody<'static> {
    ParsedBody::Completion {
        completion_tokens: max_tokens.map_or(default, |m| m.min(default)),
        cut_short: max_tokens.is_some_and(|m| m < default),
    }
}

fn refuse_stream(stream: Option<bool>) -> Result<(), String> {
    match stream {
        Some(true) => Err(
            "`stream: true` is supported by the mock for chat completions only; omit it here."
                .to_owned(),
        ),
        _ => Ok(()),
    }
}

/// The tokens of `texts`, which must not be an empty list.
fn non_empty(texts: &Texts<'_>, field: &str, counter: Counter) -> Result<u64, String> {
    if texts.0.is_empty() {
        return Err(format!("`{field}` must not be an empty array."));
    }
    Ok(texts.0.iter().map(|t| counter.tokens(t)).sum())
}

#[derive(Deserialize)]
struct RawChat<'a> {
    #[serde(borrow)]
    model: Cow<'a, str>,
    #[serde(borrow)]
    messages: Vec<Message<'a>>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    response_format: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow, default)]
    role: Option<Cow<'a, str>>,
    /// Absent or null for e.g. an assistant turn that only called tools.
    #[serde(borrow, default)]
    content: Content<'a>,
}

#[derive(Deserialize)]
struct RawCompletion<'a> {
    #[serde(borrow)]
    model: Cow<'a, str>,
    #[serde(borrow)]
    prompt: Texts<'a>,
    max_tokens: Option<u64>,
    stream: Option<bool>,
}

#[derive(Deserialize)]
struct RawEmbeddings<'a> {
    #[serde(borrow)]
    model: Cow<'a, str>,
    #[serde(borrow)]
    input: Texts<'a>,
    dimensions: Option<u64>,
    #[serde(borrow)]
    encoding_format: Option<Cow<'a, str>>,
}

/// A message's `content` (a string, or an array of parts), read for what
/// it costs and what the model reads: its texts, the tokens of its images
/// (by the tile rule), and the images themselves. Texts are kept, not
/// counted, since the model (which decides how) may come later in the body.
#[derive(Default)]
pub(crate) struct Content<'a> {
    pub(crate) texts: Vec<Cow<'a, str>>,
    pub(crate) image_tokens: u64,
    pub(crate) images: crate::media::Images,
}

impl Content<'_> {
    /// Its tokens: the texts as `counter` counts them, and the images.
    pub(crate) fn tokens(&self, counter: Counter) -> u64 {
        self.texts.iter().map(|t| counter.tokens(t)).sum::<u64>() + self.image_tokens
    }

    /// A hash of its texts (see [`crate::convo`]).
    pub(crate) fn hash(&self) -> u64 {
        crate::convo::text_hash(self.texts.iter().map(|t| &**t))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Content<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Content<'a>, D::Error> {
        d.deserialize_any(ContentVisitor(std::marker::PhantomData))
    }
}

struct ContentVisitor<'a>(std::marker::PhantomData<&'a str>);

impl<'de: 'a, 'a> Visitor<'de> for ContentVisitor<'a> {
    type Value = Content<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, an array of content parts, or null")
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Content<'a>, E> {
        Ok(Content {
            texts: vec![Cow::Borrowed(s)],
            ..Content::default()
        })
    }

    fn visit_str<E>(self, s: &str) -> Result<Content<'a>, E> {
        Ok(Content {
            texts: vec![Cow::Owned(s.to_owned())],
            ..Content::default()
        })
    }

    fn visit_unit<E>(self) -> Result<Content<'a>, E> {
        Ok(Content::default())
    }

    fn visit_none<E>(self) -> Result<Content<'a>, E> {
        Ok(Content::default())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Content<'a>, A::Error> {
        let mut content = Content::default();
        while let Some(part) = seq.next_element::<Part<'a>>()? {
            if part.kind == "text" {
                if let Some(Text(t)) = part.text {
                    content.texts.push(t);
                }
            } else if let Some(image) = crate::media::of_part(&part.kind, &part.rest) {
                // An image that is not one is the client's error: a 400.
                content.image_tokens +=
                    content.images.add(image.map_err(serde::de::Error::custom)?);
            }
        }
        Ok(content)
    }
}

/// One content part: text, or an image (`image_url`, Anthropic's `image`)
/// checked and counted; other parts carry no tokens here.
#[derive(Deserialize)]
struct Part<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    text: Option<Text<'a>>,
    /// The rest of the part (`image_url`, `source`, …).
    #[serde(flatten)]
    rest: serde_json::Map<String, serde_json::Value>,
}

/// A string or an array of strings (`prompt`, `input`).
struct Texts<'a>(Vec<Cow<'a, str>>);

#[derive(Deserialize)]
pub(crate) struct Text<'a>(#[serde(borrow)] pub(crate) Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Texts<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Texts<'a>, D::Error> {
        d.deserialize_any(TextsVisitor(std::marker::PhantomData))
    }
}

struct TextsVisitor<'a>(std::marker::PhantomData<&'a str>);

impl<'de: 'a, 'a> Visitor<'de> for TextsVisitor<'a> {
    type Value = Texts<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or an array of strings")
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Texts<'a>, E> {
        Ok(Texts(vec![Cow::Borrowed(s)]))
    }

    fn visit_str<E>(self, s: &str) -> Result<Texts<'a>, E> {
        Ok(Texts(vec![Cow::Owned(s.to_owned())]))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Texts<'a>, A::Error> {
        let mut texts = Vec::with_capacity(seq.size_hint().unwrap_or(1));
        while let Some(Text(t)) = seq.next_element::<Text<'a>>()? {
            texts.push(t);
        }
        Ok(Texts(texts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tokens_of(api: Api, body: &str) -> Result<(u64, u64), String> {
        parse(api, body.as_bytes(), 16).map(|p| (p.prompt_tokens, p.completion_tokens()))
    }

    #[test]
    fn chat_counts_string_and_text_part_content() {
        let body = r#"{"model":"m","messages":[
            {"role":"system","content":"abcde"},
            {"role":"user","content":[{"type":"text","text":"abcd"},
                {"type":"image_url","image_url":{"url":"https://x.test/poster.png"}},
                {"text":"a\"bcd\u00e9","type":"text"}]},
            {"role":"assistant","content":null,"tool_calls":[]}],"temperature":0}"#;
        // 2 + 1 + 2 (six characters once unescaped), and an image by URL at
        // the tile rule's 1024 × 1024 answer.
        assert_eq!(tokens_of(Api::Chat, body), Ok((5 + 765, 16)));
        let parsed = parse(Api::Chat, body.as_bytes(), 16).unwrap();
        assert_eq!(parsed.images.count, 1);
        let bad = body.replace(
            "https://x.test/poster.png",
            "data:image/png;base64,aGVsbG8=",
        );
        let e = tokens_of(Api::Chat, &bad).unwrap_err();
        assert!(e.contains("not a PNG, JPEG, GIF or WebP"), "{e}");
    }

    #[test]
    fn openai_models_are_charged_by_their_tokenizer_others_by_characters() {
        // "The quick brown fox jumps over the lazy dog. Ünïcödé: 東京, ∑"
        // is 19 tokens in o200k_base, 24 in cl100k_base, 15 at chars ÷ 4
        // (see count.rs).
        let text = "The quick brown fox jumps over the lazy dog. Ünïcödé: 東京, ∑";
        let chat = |model: &str| {
            // The model after the messages: it is read first, counted after.
            let body = json!({"messages": [{"role": "user", "content": text},
                {"role": "user", "content": [{"type": "text", "text": text}]}], "model": model});
            tokens_of(Api::Chat, &body.to_string()).map(|t| t.0)
        };
        assert_eq!(chat("gpt-4o-mini"), Ok(2 * 19));
        assert_eq!(chat("gpt-3.5-turbo"), Ok(2 * 24));
        assert_eq!(chat("llama-3"), Ok(2 * 15));
        let body = json!({"model": "gpt-4.1", "prompt": [text, text]});
        assert_eq!(
            tokens_of(Api::Completions, &body.to_string()).map(|t| t.0),
            Ok(2 * 19)
        );
        let body = json!({"model": "text-embedding-3-small", "input": text});
        assert_eq!(
            tokens_of(Api::Embeddings, &body.to_string()).map(|t| t.0),
            Ok(24)
        );
    }

    #[test]
    fn max_tokens_caps_the_reply_and_marks_it_cut_short() {
        let p = parse(
            Api::Chat,
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":5}"#,
            16,
        );
        let Ok(Parsed {
            body:
                ParsedBody::Completion {
                    completion_tokens,
                    cut_short,
                },
            ..
        }) = p
        else {
            panic!("{p:?}");
        };
        assert_eq!((completion_tokens, cut_short), (5, true));
        let body = r#"{"model":"m","messages":[{"content":"hi"}],"max_completion_tokens":99}"#;
        assert_eq!(tokens_of(Api::Chat, body), Ok((1, 16)));
    }

    #[test]
    fn prompts_and_inputs_may_be_one_string_or_many() {
        assert_eq!(
            tokens_of(Api::Completions, r#"{"model":"m","prompt":"abcdefgh"}"#),
            Ok((2, 16))
        );
        let many = r#"{"model":"m","prompt":["abc","abcde"],"max_tokens":3}"#;
        assert_eq!(tokens_of(Api::Completions, many), Ok((3, 3)));
        let p = parse(
            Api::Embeddings,
            br#"{"model":"e","input":["ab","c\nd"],"dimensions":3}"#,
            16,
        );
        let Ok(Parsed {
            prompt_tokens: 2,
            body:
                ParsedBody::Embeddings {
                    inputs,
                    dims: 3,
                    base64: false,
                },
            ..
        }) = p
        else {
            panic!("{p:?}");
        };
        assert_eq!(inputs, ["ab", "c\nd"]);
    }

    #[test]
    fn malformed_requests_are_refused_with_a_reason() {
        let cases = [
            (Api::Chat, "not json", "Invalid request body"),
            (
                Api::Chat,
                r#"{"messages":[{"content":"x"}]}"#,
                "missing field `model`",
            ),
            (Api::Chat, r#"{"model":"m","messages":[]}"#, "`messages`"),
            (
                Api::Chat,
                r#"{"model":"m","messages":[{"content":1}]}"#,
                "Invalid request body",
            ),
            (
                Api::Completions,
                r#"{"model":"m","prompt":"x","stream":true}"#,
                "stream",
            ),
            (Api::Completions, r#"{"model":"m","prompt":[]}"#, "`prompt`"),
            (Api::Embeddings, r#"{"model":"m"}"#, "missing field `input`"),
            (
                Api::Embeddings,
                r#"{"model":"m","input":"x","dimensions":0}"#,
                "`dimensions`",
            ),
            (
                Api::Embeddings,
                r#"{"model":"m","input":"x","encoding_format":"hex"}"#,
                "hex",
            ),
        ];
        for (api, body, expected) in cases {
            let err = tokens_of(api, body).expect_err(body);
            assert!(err.contains(expected), "{body}: {err}");
        }
    }
}
