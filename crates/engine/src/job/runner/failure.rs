//! Why a step part, and so a step, failed: a typed value from where it
//! happens to the unit's error, which [`unit_error`] alone writes as text.

use std::fmt;

use crate::item_error::ItemError;
use crate::job::kinds::http::StepError;

/// Why a part (a step's call, a fan-out element, a conversation turn) failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum PartError {
    /// A failure with its own code: a call's (`server_error`, `timeout`, …),
    /// an answer that cannot be read (`bad_response`), a command's
    /// (`command_error`), a request no API takes (`request_error`).
    Coded(ItemError),
    /// A template that did not render for this unit; the text names the
    /// template (`… (template: "…")`).
    Template(String),
    /// Any other failure, recorded without a code of its own (a step with no
    /// provider, a rendered value that cannot be used, a response that
    /// cannot be saved).
    Uncoded(String),
    /// The step's fallback provider failed too, after `first`.
    Fallback {
        first: Box<PartError>,
        provider: String,
        then: Box<PartError>,
    },
}

impl PartError {
    /// The unit's error code for this failure: its own, else
    /// `template_error` when a template did not render, else `step_failed`.
    fn code(&self) -> &str {
        self.leading_code().unwrap_or(if self.names_template() {
            "template_error"
        } else {
            "step_failed"
        })
    }

    /// The code its recorded text starts with, if any.
    fn leading_code(&self) -> Option<&str> {
        match self {
            PartError::Coded(e) => Some(&e.code),
            PartError::Fallback { first, .. } => first.leading_code(),
            PartError::Template(_) | PartError::Uncoded(_) => None,
        }
    }

    /// Whether a template that did not render is (part of) the failure.
    fn names_template(&self) -> bool {
        match self {
            PartError::Template(_) => true,
            PartError::Fallback { first, then, .. } => {
                first.names_template() || then.names_template()
            }
            PartError::Coded(_) | PartError::Uncoded(_) => false,
        }
    }

    /// The recorded text without its leading code.
    fn message(&self) -> String {
        match self {
            PartError::Coded(e) => e.message.clone(),
            PartError::Template(m) | PartError::Uncoded(m) => m.clone(),
            PartError::Fallback {
                first,
                provider,
                then,
            } => format!("{}; fallback provider {provider}: {then}", first.message()),
        }
    }
}

/// The text a step record (and the run's recent errors) holds: `code:
/// message` for a coded failure, the message alone otherwise.
impl fmt::Display for PartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartError::Coded(e) => e.fmt(f),
            PartError::Template(m) | PartError::Uncoded(m) => f.write_str(m),
            PartError::Fallback {
                first,
                provider,
                then,
            } => write!(f, "{first}; fallback provider {provider}: {then}"),
        }
    }
}

impl From<ItemError> for PartError {
    fn from(e: ItemError) -> PartError {
        PartError::Coded(e)
    }
}

impl From<sluice_spec::RenderError> for PartError {
    fn from(e: sluice_spec::RenderError) -> PartError {
        PartError::Template(e.to_string())
    }
}

impl From<StepError> for PartError {
    fn from(e: StepError) -> PartError {
        match e {
            StepError::Render(e) => e.into(),
            other => PartError::Uncoded(other.to_string()),
        }
    }
}

/// Which part of a step with several failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Within {
    /// A fan-out's element, from 0.
    Element(usize),
    /// A conversation's turn, from 1.
    Turn(usize),
}

impl fmt::Display for Within {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Within::Element(i) => write!(f, "element {i}"),
            Within::Turn(n) => write!(f, "turn {n}"),
        }
    }
}

/// Why a step failed: a part's error, and which part when the step has several.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct StepFailure {
    pub(super) within: Option<Within>,
    pub(super) error: PartError,
}

impl StepFailure {
    /// The step's own failure (a plain step's part, or the step as a whole).
    pub(super) fn whole(error: impl Into<PartError>) -> StepFailure {
        StepFailure {
            within: None,
            error: error.into(),
        }
    }

    /// A failure of one part of the step.
    pub(super) fn within(within: Within, error: PartError) -> StepFailure {
        StepFailure {
            within: Some(within),
            error,
        }
    }
}

/// The unit's error for step `step`'s failure: `code: step NAME: message`,
/// the failure's own code first (`server_error`, `timeout`, …;
/// `template_error` for a template that did not render) so exports can
/// group by it, then the step. A fan-out element's or conversation turn's
/// failure is `step_failed` (`template_error` for a template), its own code
/// kept in the message after `element N:` / `turn N:`.
pub(super) fn unit_error(step: &str, failure: &StepFailure) -> ItemError {
    let error = &failure.error;
    match failure.within {
        None => ItemError::new(error.code(), format!("step {step}: {}", error.message())),
        Some(within) => {
            let code = if error.names_template() {
                "template_error"
            } else {
                "step_failed"
            };
            ItemError::new(code, format!("step {step}: {within}: {error}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(step: &str, failure: StepFailure) -> String {
        unit_error(step, &failure).to_string()
    }

    fn template() -> PartError {
        PartError::Template("steps.b.json.x: undefined value (template: \"{{ item.x }}\")".into())
    }

    fn server_error() -> PartError {
        ItemError::new("server_error", "HTTP 500 (after 1 attempt)").into()
    }

    #[test]
    fn unit_errors_lead_with_the_failure_code() {
        assert_eq!(
            text("a", StepFailure::whole(server_error())),
            "server_error: step a: HTTP 500 (after 1 attempt)"
        );
        assert_eq!(
            text("b", StepFailure::whole(template())),
            "template_error: step b: steps.b.json.x: undefined value (template: \"{{ item.x }}\")"
        );
        assert_eq!(
            text(
                "c",
                StepFailure::whole(PartError::Uncoded("the step has no provider".into()))
            ),
            "step_failed: step c: the step has no provider"
        );
    }

    #[test]
    fn an_element_or_turn_failure_names_its_part_after_the_step() {
        let boom = PartError::Uncoded("boom".into());
        assert_eq!(
            text("c", StepFailure::within(Within::Element(2), boom)),
            "step_failed: step c: element 2: boom"
        );
        assert_eq!(
            text("c", StepFailure::within(Within::Element(0), server_error())),
            "step_failed: step c: element 0: server_error: HTTP 500 (after 1 attempt)"
        );
        assert_eq!(
            text("t", StepFailure::within(Within::Turn(3), server_error())),
            "step_failed: step t: turn 3: server_error: HTTP 500 (after 1 attempt)"
        );
        assert_eq!(
            text("t", StepFailure::within(Within::Turn(1), template())),
            "template_error: step t: turn 1: steps.b.json.x: undefined value (template: \"{{ item.x }}\")"
        );
    }

    #[test]
    fn a_failed_fallback_keeps_the_first_failure_code() {
        let after = |first: PartError| PartError::Fallback {
            first: Box::new(first),
            provider: "spare".into(),
            then: Box::new(ItemError::new("timeout", "no answer in 5s").into()),
        };
        let recorded = after(server_error()).to_string();
        assert_eq!(
            recorded,
            "server_error: HTTP 500 (after 1 attempt); fallback provider spare: timeout: no answer in 5s"
        );
        assert_eq!(
            text("a", StepFailure::whole(after(server_error()))),
            "server_error: step a: HTTP 500 (after 1 attempt); fallback provider spare: timeout: no answer in 5s"
        );
        assert_eq!(
            text("a", StepFailure::whole(after(template()))),
            "template_error: step a: steps.b.json.x: undefined value (template: \"{{ item.x }}\"); \
             fallback provider spare: timeout: no answer in 5s"
        );
        let uncoded = after(PartError::Uncoded("x".into()));
        assert_eq!(
            text("a", StepFailure::whole(uncoded)),
            "step_failed: step a: x; fallback provider spare: timeout: no answer in 5s"
        );
    }

    #[test]
    fn a_template_that_did_not_render_is_a_template_error_wherever_it_comes_from() {
        let t = sluice_spec::Template::standalone("steps.h.url", "{{ item.missing }}").unwrap();
        let ctx = minijinja::Value::from(minijinja::value::Serde(serde_json::json!({"item": {}})));
        let render = t.render(&ctx).unwrap_err();
        let recorded = render.to_string();
        let from_render = PartError::from(render.clone());
        let from_http = PartError::from(StepError::Render(render));
        assert_eq!(from_render, PartError::Template(recorded.clone()));
        assert_eq!(from_http, from_render);
        assert_eq!(
            text("h", StepFailure::whole(from_http)),
            format!("template_error: step h: {recorded}")
        );
        // A rendered value that cannot be used is the step's own failure.
        let input = PartError::from(StepError::Input("the step has neither url nor path".into()));
        assert_eq!(
            text("h", StepFailure::whole(input)),
            "step_failed: step h: the step has neither url nor path"
        );
    }

    /// How the unit's error was made before it was typed: the step's text
    /// (`element N: ` before a part's) read back for a leading code.
    fn read_back(step: &str, failure: &StepFailure) -> String {
        let message = match failure.within {
            Some(within) => format!("{within}: {}", failure.error),
            None => failure.error.to_string(),
        };
        let fallback = if message.contains("(template: ") {
            "template_error"
        } else {
            "step_failed"
        };
        let ItemError { code, message } = ItemError::parse(&message, fallback);
        ItemError::new(code, format!("step {step}: {message}")).to_string()
    }

    // They differ only for a text without a code that starts like one
    // (`word: …`), which no uncoded failure's text does.
    #[test]
    fn the_unit_error_reads_as_the_recorded_text_read_back_did() {
        let errors = [
            server_error(),
            template(),
            PartError::Uncoded("the step has no provider".into()),
            ItemError::new(
                "command_error",
                "\"x\" failed (exit status: 2); its stderr ends: \"a: b\"",
            )
            .into(),
            PartError::Fallback {
                first: Box::new(server_error()),
                provider: "spare".into(),
                then: Box::new(template()),
            },
            PartError::Fallback {
                first: Box::new(PartError::Uncoded(
                    "cannot save the response to out/a: denied; check [output] dir".into(),
                )),
                provider: "spare".into(),
                then: Box::new(server_error()),
            },
        ];
        for error in errors {
            for within in [None, Some(Within::Element(3)), Some(Within::Turn(2))] {
                let failure = StepFailure {
                    within,
                    error: error.clone(),
                };
                assert_eq!(text("s", failure.clone()), read_back("s", &failure));
            }
        }
    }

    #[test]
    fn a_part_without_a_code_is_recorded_without_one() {
        assert_eq!(
            template().to_string(),
            "steps.b.json.x: undefined value (template: \"{{ item.x }}\")"
        );
        assert_eq!(
            server_error().to_string(),
            "server_error: HTTP 500 (after 1 attempt)"
        );
    }
}
