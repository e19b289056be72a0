//! OpenAI's conventions in quick mode: without `--url`, `OPENAI_BASE_URL`
//! (else the OpenAI API) is the base URL; without `--api-key-env`,
//! `OPENAI_API_KEY` is the key when it is set. Each default taken is
//! announced on the start line, so nothing happens implicitly.

use super::UsageError;
use crate::cli::RunArgs;

/// The OpenAI API's base URL, used when neither --url nor OPENAI_BASE_URL is given.
pub(crate) const OPENAI_API: &str = "https://api.openai.com/v1";
const BASE_URL_VAR: &str = "OPENAI_BASE_URL";
const KEY_VAR: &str = "OPENAI_API_KEY";

/// Where quick mode sends and with which key, and which of it was a default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Conventions {
    pub(crate) url: String,
    pub(crate) api_key_env: Option<String>,
    /// Set when the URL was not given: where it came from.
    url_from: Option<&'static str>,
    /// The key variable was taken by convention, not from --api-key-env.
    key_by_default: bool,
    /// The URL is a base URL: bare bodies are routed by their shape.
    base_url: bool,
}

impl Conventions {
    /// Reads the flags and, where they are silent, the environment.
    pub(crate) fn resolve(args: &RunArgs) -> anyhow::Result<Conventions> {
        Conventions::from_env(args, |name| std::env::var(name).ok())
    }

    fn from_env(
        args: &RunArgs,
        env: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Conventions> {
        let set = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let (url, url_from) = match (&args.url, set(BASE_URL_VAR)) {
            (Some(url), _) => (url.clone(), None),
            (None, Some(base)) => (base.trim().to_string(), Some(BASE_URL_VAR)),
            (None, None) => (OPENAI_API.to_string(), Some("the OpenAI API")),
        };
        let (api_key_env, key_by_default) = match (&args.api_key_env, args.no_api_key) {
            (Some(var), _) => (Some(var.clone()), false),
            (None, true) => (None, false),
            (None, false) => match set(KEY_VAR) {
                Some(_) => (Some(KEY_VAR.to_string()), true),
                None => (None, false),
            },
        };
        if url_from.is_some() && api_key_env.is_none() && !args.no_api_key && url == OPENAI_API {
            return Err(UsageError(format!(
                "no --url and no {BASE_URL_VAR}: the requests would go to the OpenAI API ({OPENAI_API}) without a key; export {KEY_VAR}=<your key>, or give --url (e.g. http://127.0.0.1:8080/v1 for a local server)"
            ))
            .into());
        }
        Ok(Conventions {
            base_url: sluice_engine::is_base_url(&url),
            url,
            api_key_env,
            url_from,
            key_by_default,
        })
    }

    /// The start line's account of the defaults taken (`None` when the
    /// flags said everything). Credentials in the URL are masked.
    pub(crate) fn announcement(&self) -> Option<String> {
        let url = sluice_store::redact_url(&self.url);
        let mut parts = Vec::new();
        match self.url_from {
            Some(BASE_URL_VAR) => parts.push(format!("url {url} from ${BASE_URL_VAR} (no --url)")),
            Some(from) => parts.push(format!("url {url} ({from}; no --url, no ${BASE_URL_VAR})")),
            None => {}
        }
        if self.base_url && (self.url_from.is_some() || self.key_by_default) {
            parts.push(
                "bare bodies go to /chat/completions, /embeddings or /completions by their shape"
                    .into(),
            );
        } else if self.base_url {
            return Some(format!(
                "sluice: {url} is a base URL: bare bodies go to /chat/completions, /embeddings or /completions by their shape"
            ));
        }
        if self.key_by_default {
            parts.push(format!(
                "key from ${KEY_VAR} (no --api-key-env; --no-api-key sends none)"
            ));
        }
        (!parts.is_empty()).then(|| format!("sluice: {}", parts.join(" · ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(flags: &[&str]) -> RunArgs {
        let mut argv = vec!["sluice", "run", "in.jsonl"];
        argv.extend_from_slice(flags);
        match crate::cli::Cli::parse_from(argv).command {
            crate::cli::Command::Run(args) => args,
            _ => unreachable!("a run command line"),
        }
    }

    fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_environment_fills_what_the_flags_leave_out_and_says_so() {
        let c = Conventions::from_env(
            &args(&[]),
            env(&[
                ("OPENAI_BASE_URL", "http://127.0.0.1:9/v1"),
                ("OPENAI_API_KEY", "k"),
            ]),
        )
        .unwrap();
        assert_eq!(c.url, "http://127.0.0.1:9/v1");
        assert_eq!(c.api_key_env.as_deref(), Some("OPENAI_API_KEY"));
        let line = c.announcement().unwrap();
        assert!(line.contains("from $OPENAI_BASE_URL"), "{line}");
        assert!(line.contains("key from $OPENAI_API_KEY"), "{line}");
        assert!(line.contains("by their shape"), "{line}");
        let secret = Conventions::from_env(
            &args(&[]),
            env(&[
                ("OPENAI_BASE_URL", "https://me:hunter2@h/v1"),
                ("OPENAI_API_KEY", "k"),
            ]),
        )
        .unwrap();
        let line = secret.announcement().unwrap();
        assert!(!line.contains("hunter2"), "{line}");
    }

    #[test]
    fn without_a_base_url_the_openai_api_is_used_and_named() {
        let c = Conventions::from_env(&args(&[]), env(&[("OPENAI_API_KEY", "k")])).unwrap();
        assert_eq!(c.url, OPENAI_API);
        assert!(c.announcement().unwrap().contains("the OpenAI API"));
        // Without a key nothing would succeed there: refused before sending.
        let e = Conventions::from_env(&args(&[]), env(&[])).unwrap_err();
        assert!(e.to_string().contains("export OPENAI_API_KEY"), "{e}");
    }

    #[test]
    fn flags_win_and_leave_nothing_to_announce() {
        let c = Conventions::from_env(
            &args(&[
                "--url",
                "http://h/v1/chat/completions",
                "--api-key-env",
                "MINE",
            ]),
            env(&[("OPENAI_BASE_URL", "http://x/v1"), ("OPENAI_API_KEY", "k")]),
        )
        .unwrap();
        assert_eq!(c.url, "http://h/v1/chat/completions");
        assert_eq!(c.api_key_env.as_deref(), Some("MINE"));
        assert_eq!(c.announcement(), None);
        let none = Conventions::from_env(
            &args(&["--url", "http://h/v1/embeddings", "--no-api-key"]),
            env(&[("OPENAI_API_KEY", "k")]),
        )
        .unwrap();
        assert_eq!(none.api_key_env, None);
    }
}
