//! An error message reduced to its cause, so that failures that differ only
//! in reply text, ids, counts and positions fall into one group: "600 × not
//! JSON" instead of 600 messages each quoting its own answer. Pure text work;
//! used to group a run's errors and usable wherever failures are compared.

/// A failure's cause: the step it happened in (job runs), its code
/// (`server_error`, `bad_response`, …) and the message with what varies
/// between items stripped.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct ErrorKey {
    /// The step (`step NAME:` in a job unit's error); none in quick mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The failure's code, or `error` for a message without one.
    pub code: String,
    /// The message with quoted answers, ids and numbers replaced.
    pub cause: String,
}

/// Quoted text longer than this is an answer or a body, not a name.
const LONG_QUOTE: usize = 48;

/// The cause of `message` (as recorded: `code: step NAME: text` for job
/// units, `code: text` in quick mode).
pub fn normalise(message: &str) -> ErrorKey {
    let (code, rest) = match crate::item_error::split(message) {
        Some((code, rest)) => (code.to_string(), rest),
        None => ("error".to_string(), message),
    };
    let (step, rest) = match rest.strip_prefix("step ").and_then(|r| r.split_once(": ")) {
        Some((name, rest)) if !name.contains(' ') => (Some(name.to_string()), rest),
        _ => (None, rest),
    };
    ErrorKey {
        step,
        code,
        cause: strip(rest),
    }
}

/// Replaces quoted answers with `"…"`, ids with `ID` and numbers with `N`
/// (an HTTP status stays: it is the cause).
fn strip(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            let end = closing_quote(&chars, i + 1);
            let inner: String = chars[i + 1..end.min(chars.len())].iter().collect();
            // A model's answer after "it starts:" is always the item's own.
            let answer = out.trim_end().ends_with("starts:");
            if answer || inner.chars().count() > LONG_QUOTE {
                out.push_str("\"…\"");
            } else {
                out.push('"');
                out.push_str(&strip(&inner));
                out.push('"');
            }
            i = end + 1;
            continue;
        }
        if c.is_alphanumeric() || c == '_' || c == '-' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '-')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            if word == "attempt" && out.ends_with("N ") {
                out.push_str("attempts"); // "1 attempt" and "3 attempts" alike
                continue;
            }
            out.push_str(&word_of(&word, out.trim_end().ends_with("HTTP")));
            continue;
        }
        out.push(c);
        i += 1;
    }
    out
}

/// Index of the quote closing one opened before `from` (escapes skipped);
/// the text's length when there is none.
fn closing_quote(chars: &[char], from: usize) -> usize {
    let mut i = from;
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 2,
            '"' => return i,
            _ => i += 1,
        }
    }
    chars.len()
}

/// A word as it counts for the cause.
fn word_of(word: &str, after_http: bool) -> String {
    let digits = word.chars().filter(char::is_ascii_digit).count();
    if digits == 0 {
        return word.to_string();
    }
    if after_http && word.len() == 3 && digits == 3 {
        return word.to_string(); // HTTP 429
    }
    if digits == word.len() {
        return "N".to_string();
    }
    // Ids: long mixes of letters and digits (chatcmpl-8f3k2…, uuids, hashes).
    if word.len() >= 8 {
        return "ID".to_string();
    }
    let mut out = String::new();
    let mut in_digits = false;
    for c in word.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('N');
            }
            in_digits = true;
        } else {
            out.push(c);
            in_digits = false;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_ids_and_numbers_do_not_split_a_cause() {
        let a = normalise(
            "bad_response: step grade: the answer is not the JSON the step's response_format \
             asks for; it starts: \"mock reply: alpha bravo\"",
        );
        let b = normalise(
            "bad_response: step grade: the answer is not the JSON the step's response_format \
             asks for; it starts: \"Sure! Here is the grade you asked for, in words\"",
        );
        assert_eq!(a, b);
        assert_eq!(a.step.as_deref(), Some("grade"));
        assert_eq!(a.code, "bad_response");
        assert!(a.cause.ends_with("it starts: \"…\""), "{}", a.cause);
        let x = normalise(
            "server_error: step s1: HTTP 500: overloaded req_8f3ka92b1 (after 3 attempts)",
        );
        let y = normalise(
            "server_error: step s1: HTTP 500: overloaded req_77ab12ccd (after 6 attempts)",
        );
        assert_eq!(x, y);
        assert_eq!(x.cause, "HTTP 500: overloaded ID (after N attempts)");
    }

    #[test]
    fn different_causes_stay_apart() {
        let a = normalise("server_error: step s1: HTTP 500: boom (after 1 attempt)");
        assert_ne!(
            a,
            normalise("server_error: step s2: HTTP 500: boom (after 1 attempt)")
        );
        assert_ne!(
            a,
            normalise("server_error: step s1: HTTP 503: boom (after 1 attempt)")
        );
        assert_ne!(
            a,
            normalise("timeout: step s1: HTTP 500: boom (after 1 attempt)")
        );
        // A short quoted name is part of the cause.
        let p = normalise(
            "request_error: HTTP 400: Unknown parameter: \"max_token\" (after 1 attempt)",
        );
        assert_eq!(p.step, None);
        assert_eq!(
            p.cause,
            "HTTP 400: Unknown parameter: \"max_token\" (after N attempts)"
        );
        let q = normalise("no code here 42");
        assert_eq!(
            (q.code.as_str(), q.cause.as_str()),
            ("error", "no code here N")
        );
        let l = normalise("invalid_input: line 17: invalid JSON at column 3");
        assert_eq!(l.cause, "line N: invalid JSON at column N");
    }
}
