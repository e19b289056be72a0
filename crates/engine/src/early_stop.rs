//! Early stop on a systematic failure: when the first answers of a run (of
//! each step, in a job) all fail the same way no retry can fix — a wrong key
//! (401), a key without access (403), a wrong URL or model (404), a request
//! the API refuses (400, 422, …) with the same message — the rest would fail
//! alike, and each of them would be paid for or counted against a quota. The
//! run stops sending at once and leaves the rest pending.
//!
//! The rule: the first [`WINDOW`] calls that end in this process decide.
//! If every one of them ended in a final 4xx (not 408, 409 or 429) with the
//! same status and the same message (compared as `errors::normalise` sees
//! it: request ids, numbers and quoted answers left out), the run halts; any other ending among
//! them (a success, a failure of another kind or message) clears the watch
//! for the rest of the run. A run of fewer calls is never stopped early.

use std::sync::Mutex;

use crate::error::Error;
use crate::progress::Snapshot;

/// Calls whose endings decide: enough that one bad line among good ones
/// never stops a run, few enough that a wrong key costs little.
pub(crate) const WINDOW: u32 = 20;

/// How one call ended, as far as the watch cares.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ending<'a> {
    /// An answer the caller can use.
    Success,
    /// A final failure: `status` when an HTTP answer came, `retryable`
    /// when retries ran out (then it is no systematic refusal), and the
    /// one-line message (`HTTP 401: …`).
    Failure {
        status: Option<u16>,
        retryable: bool,
        message: &'a str,
    },
}

/// The watch over the first calls of a run, or of one step of a job.
#[derive(Debug)]
pub(crate) struct FirstCalls {
    /// `Some(step)` for a step of a job, named in the message.
    step: Option<String>,
    state: Mutex<State>,
}

#[derive(Debug)]
enum State {
    /// `alike` calls so far ended with the refusal `first`: its status,
    /// its message as the cause compares, and as it came.
    Watching {
        alike: u32,
        first: Option<(u16, String, String)>,
    },
    /// Decided: cleared, or stopped once.
    Over,
}

impl FirstCalls {
    /// A watch; `enabled = false` (`--no-early-stop`) never stops anything.
    pub(crate) fn new(enabled: bool, step: Option<String>) -> FirstCalls {
        let state = if enabled {
            State::Watching {
                alike: 0,
                first: None,
            }
        } else {
            State::Over
        };
        FirstCalls {
            step,
            state: Mutex::new(state),
        }
    }

    /// Takes one call's ending; returns why the run must stop when this
    /// ending completes a window of identical refusals (once).
    pub(crate) fn observe(&self, ending: Ending<'_>) -> Option<String> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let State::Watching { alike, first } = &mut *state else {
            return None;
        };
        let refusal = match ending {
            Ending::Failure {
                status: Some(code),
                retryable: false,
                message,
            } if (400..500).contains(&code) => Some((code, message)),
            _ => None,
        };
        let Some((code, message)) = refusal else {
            *state = State::Over;
            return None;
        };
        // One refusal repeated, not one text: answers that differ only in a
        // request id or a number are the same refusal.
        let cause = crate::errors::normalise(message).cause;
        match first {
            Some((seen_code, seen, _)) if *seen_code != code || *seen != cause => {
                *state = State::Over;
                return None;
            }
            Some(_) => {}
            None => *first = Some((code, cause, message.to_owned())),
        }
        let message = first.as_ref().map_or(message, |(_, _, m)| m.as_str());
        *alike += 1;
        if *alike < WINDOW {
            return None;
        }
        let why = format!(
            "the first {WINDOW} answers{} were all the same refusal, {message} — {}",
            match &self.step {
                Some(step) => format!(" of step {step}"),
                None => String::new(),
            },
            hint(code)
        );
        *state = State::Over;
        Some(why)
    }
}

/// The error a run that stopped early ends with: why, what it sent
/// (`progress`, its counters at the end), what it left pending, what to do.
pub(crate) fn stopped(why: &str, run: &str, p: &Snapshot) -> Error {
    let remaining = p.remaining();
    Error::StoppedEarly(format!(
        "run {run} stopped early: {why}; {sent} sent in all and nothing else: {remaining} item{s} \
         stay pending (the failures are recorded: `sluice status {run}`). Fix it and run the \
         same command again to send them (--no-early-stop sends every item whatever the first \
         answers are)",
        sent = match p.attempts {
            1 => "1 call was".to_string(),
            n => format!("{n} calls were"),
        },
        s = if remaining == 1 { "" } else { "s" },
    ))
}

/// What to check for a refusal with this status.
fn hint(code: u16) -> &'static str {
    match code {
        401 => "check the API key (the variable --api-key-env or the provider's api_key_env names) and that it is valid for this endpoint",
        403 => "the key may not use this model or endpoint: check its permissions (organisation, project)",
        404 => "check the URL (--url, or the provider's base_url and the step's path) and the model name",
        _ => "the API refuses the request itself: check the request body (model, parameters) against the API's documentation",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(code: u16, message: &str) -> Ending<'_> {
        Ending::Failure {
            status: Some(code),
            retryable: false,
            message,
        }
    }

    #[test]
    fn the_same_refusal_for_the_whole_window_stops_once() {
        let watch = FirstCalls::new(true, None);
        for _ in 1..WINDOW {
            assert_eq!(watch.observe(refusal(401, "HTTP 401: bad key")), None);
        }
        let why = watch.observe(refusal(401, "HTTP 401: bad key")).unwrap();
        assert!(why.contains("first 20 answers were all the same refusal, HTTP 401: bad key"));
        assert!(why.contains("check the API key"), "{why}");
        assert_eq!(watch.observe(refusal(401, "HTTP 401: bad key")), None);
    }

    #[test]
    fn refusals_differing_only_in_a_request_id_are_the_same_refusal() {
        let watch = FirstCalls::new(true, None);
        let mut why = None;
        for i in 0..WINDOW {
            let message = format!("HTTP 401: bad key (request req_{i:08x}a)");
            why = watch.observe(refusal(401, &message));
        }
        let why = why.expect("one refusal, twenty ids");
        assert!(
            why.contains("HTTP 401: bad key (request req_00000000a)"),
            "{why}"
        );
    }

    #[test]
    fn a_step_is_named_and_each_status_has_its_hint() {
        let watch = FirstCalls::new(true, Some("ask".into()));
        let mut why = None;
        for _ in 0..WINDOW {
            why = watch.observe(refusal(404, "HTTP 404: no such model"));
        }
        let why = why.unwrap();
        assert!(why.contains("answers of step ask were"), "{why}");
        assert!(why.contains("model name"), "{why}");
    }

    #[test]
    fn anything_else_in_the_window_clears_the_watch() {
        let others = [
            Ending::Success,
            refusal(401, "HTTP 401: another message"),
            refusal(403, "HTTP 401: bad key"),
            Ending::Failure {
                status: Some(500),
                retryable: true,
                message: "HTTP 500: oops",
            },
            Ending::Failure {
                status: None,
                retryable: true,
                message: "timed out",
            },
        ];
        for other in others {
            let watch = FirstCalls::new(true, None);
            for _ in 0..WINDOW - 1 {
                assert_eq!(watch.observe(refusal(401, "HTTP 401: bad key")), None);
            }
            assert_eq!(watch.observe(other), None);
            for _ in 0..WINDOW * 2 {
                assert_eq!(watch.observe(refusal(401, "HTTP 401: bad key")), None);
            }
        }
    }

    #[test]
    fn a_retryable_status_or_a_disabled_watch_never_stops() {
        let watch = FirstCalls::new(true, None);
        for _ in 0..WINDOW * 2 {
            let throttled = Ending::Failure {
                status: Some(429),
                retryable: true,
                message: "HTTP 429: slow down",
            };
            assert_eq!(watch.observe(throttled), None);
        }
        let off = FirstCalls::new(false, None);
        for _ in 0..WINDOW * 2 {
            assert_eq!(off.observe(refusal(401, "HTTP 401: bad key")), None);
        }
    }
}
