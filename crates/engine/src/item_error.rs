//! A failed item's error: a code (`server_error`, `timeout`, `template_error`,
//! …) that exports and error groups key on, and the message. It is recorded
//! as the text `code: message` — what the store, exports and webhooks hold —
//! and that text is read back here only, by one rule.

use std::fmt;

/// A failed item's (or step's) error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemError {
    /// Lowercase letters and `_`: `server_error`, `bad_response`, …
    pub code: String,
    /// What went wrong, for a person.
    pub message: String,
}

impl ItemError {
    /// The error `code` with `message`.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> ItemError {
        ItemError {
            code: code.into(),
            message: message.into(),
        }
    }

    /// Reads a recorded error: its code and message when it starts with a
    /// code, else `fallback` as the code and the whole text as the message.
    pub fn parse(text: &str, fallback: &str) -> ItemError {
        match split(text) {
            Some((code, message)) => ItemError::new(code, message),
            None => ItemError::new(fallback, text),
        }
    }
}

impl fmt::Display for ItemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// `(code, message)` of a recorded `code: message`, borrowed; `None` when
/// the text does not start with a code (a word of lowercase letters and `_`
/// before the first `": "`).
pub(crate) fn split(text: &str) -> Option<(&str, &str)> {
    text.split_once(": ").filter(|(code, _)| is_code(code))
}

fn is_code(word: &str) -> bool {
    !word.is_empty() && word.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_is_recorded_as_code_and_message_and_read_back() {
        let e = ItemError::new("server_error", "HTTP 500: oops (after 3 attempts)");
        let text = e.to_string();
        assert_eq!(text, "server_error: HTTP 500: oops (after 3 attempts)");
        assert_eq!(ItemError::parse(&text, "error"), e);
        // Text without a code keeps all of it as the message.
        for uncoded in ["HTTP 500: oops", "Boom: x", ": x", "no colon"] {
            assert_eq!(
                ItemError::parse(uncoded, "error"),
                ItemError::new("error", uncoded)
            );
        }
    }
}
