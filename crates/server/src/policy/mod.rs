//! What a job submitted over HTTP may do. It is data, not the operator's
//! own program: by default it runs no `command` step, reads no file but
//! those sent with it (and the items the server spooled for it), writes
//! nowhere but the store's directory, and names no environment variable.
//! The operator widens that per capability (`--allow-commands`,
//! `--allow-dir`, `--allow-env`); a job asking for more is refused as a
//! whole, each refusal naming its key, line and the flag that would allow
//! it. The same check runs again when a submitted run is resumed or retried.
//! The operator's `--default-concurrency` and `--max-concurrency` are
//! applied here too; a job asking for more is clamped and told so.

mod locate;
mod paths;

use std::path::{Path, PathBuf};

use axum::http::StatusCode;
use serde_json::json;
use sluice_spec::{InputSource, Job, StepKind};

use crate::error::ApiError;
use locate::{position, Key};

/// The run-state key of what the run's view tells about how the server
/// adjusted a submitted job (a clamped concurrency): a JSON list of texts.
pub(crate) const NOTICES: &str = "server.notices";

/// What a job submitted over HTTP may do (the default: nothing beyond its
/// own files and the network).
#[derive(Debug, Clone, Default)]
pub struct JobPolicy {
    /// `command` steps may run (`--allow-commands`).
    pub allow_commands: bool,
    /// Directories (canonical) a job may read and write besides its own
    /// files (`--allow-dir`); see [`JobPolicy::allow_dir`].
    pub allow_dirs: Vec<PathBuf>,
    /// Environment variables a job may name in `env`, `api_key_env` and
    /// `secret_env` (`--allow-env`).
    pub allow_env: Vec<String>,
    /// Units in progress for a job that sets no `concurrency`.
    pub default_concurrency: Option<usize>,
    /// Most units in progress a job may ask for; more is clamped to this.
    pub max_concurrency: Option<usize>,
}

impl JobPolicy {
    /// Lets submitted jobs use `dir` (canonicalised now: symlinks and `..`
    /// resolved, so the check compares real places); an error if it is not
    /// an existing directory.
    pub fn allow_dir(&mut self, dir: &Path) -> Result<(), String> {
        let canonical = std::fs::canonicalize(dir)
            .map_err(|e| format!("--allow-dir {}: {e}", dir.display()))?;
        if !canonical.is_dir() {
            return Err(format!("--allow-dir {}: not a directory", dir.display()));
        }
        self.allow_dirs.push(canonical);
        Ok(())
    }
}

/// Where a submitted job stands: its text (for positions) and its places.
pub(crate) struct Submission<'a> {
    /// The job file (TOML; a JSON submission's converted form).
    pub(crate) text: &'a str,
    /// Whether it came as JSON (positions then refer to `text`, sent back).
    pub(crate) json: bool,
    /// The files sent with it, if any: readable and writable.
    pub(crate) scratch: Option<&'a Path>,
    /// The items file the server spooled for it (inline `items`), if any.
    pub(crate) spooled: Option<&'a Path>,
    /// The store's directory: written by the server only (saved files of a
    /// job that names no `[output] dir` go to `outputs/` in it).
    pub(crate) store_dir: &'a Path,
    /// Prefixes cut from paths shown (the server's own directories).
    pub(crate) shown_from: &'a [PathBuf],
}

/// One thing a submitted job may not do.
#[derive(Debug, Clone)]
struct Refusal {
    path: Vec<String>,
    message: String,
    flag: Option<String>,
    at: (usize, usize),
}

/// Checks `job` against `policy`, and adjusts it: saved files of a job that
/// names no `[output] dir` stay in the store's directory, and the
/// concurrency is defaulted and clamped. Returns what the run's view should
/// tell (a clamped concurrency), or a 403 naming every refusal.
pub(crate) fn confine(
    policy: &JobPolicy,
    job: &mut Job,
    sub: &Submission<'_>,
) -> Result<Vec<String>, ApiError> {
    let mut refusals = Vec::new();
    let mut refuse = |path: &[Key<'_>], message: String, flag: Option<String>| {
        refusals.push(Refusal {
            path: path.iter().map(key_text).collect(),
            at: position(sub.text, path),
            message,
            flag,
        });
    };
    let shown = |p: &Path| paths::shown(p, sub.shown_from);
    let mut readable: Vec<PathBuf> = policy.allow_dirs.clone();
    readable.extend(sub.scratch.and_then(|s| std::fs::canonicalize(s).ok()));

    for (i, step) in job.steps.iter().enumerate() {
        if matches!(step.kind, StepKind::Command { .. }) && !policy.allow_commands {
            refuse(
                &[Key::Name("steps"), Key::Index(i), Key::Name("kind")],
                format!(
                    "step {:?} is a command step: it would run a program on the server, which a submitted job may not do",
                    step.name
                ),
                Some("--allow-commands".into()),
            );
        }
    }

    match &job.input.source {
        InputSource::Stdin { .. } => refuse(
            &[Key::Name("input"), Key::Name("path")],
            "[input] path = \"-\" would read the server's standard input; send the items inline (\"items\") or as a file with the job".into(),
            None,
        ),
        InputSource::File { path, .. } => {
            // Inline items the server spooled itself are the job's own.
            let own = sub.spooled == Some(path.as_path());
            if !own && !paths::inside(path, &readable) {
                refuse(
                    &[Key::Name("input"), Key::Name("path")],
                    format!(
                        "[input] path {} is not a file sent with the job; a submitted job reads only its own files (send them with it as multipart/form-data, or the items inline)",
                        shown(path)
                    ),
                    Some(paths::dir_flag(path, sub.shown_from)),
                );
            }
        }
        InputSource::Glob { pattern } => {
            let base = paths::glob_base(pattern);
            let escapes = Path::new(pattern)
                .components()
                .any(|c| c == std::path::Component::ParentDir);
            if escapes || !paths::inside(&base, &readable) {
                refuse(
                    &[Key::Name("input"), Key::Name("glob")],
                    format!(
                        "[input] glob {} reaches beyond the files sent with the job; a submitted job reads only its own files",
                        shown(Path::new(pattern))
                    ),
                    Some(paths::dir_flag(&base, sub.shown_from)),
                );
            }
        }
        InputSource::Url { .. } => {}
    }

    // Writing: the files sent with the job, or an allowed directory outside
    // the store's (the store itself is the server's).
    let store_dir = std::fs::canonicalize(sub.store_dir).unwrap_or(sub.store_dir.to_path_buf());
    let writable = |p: &Path| {
        sub.scratch
            .is_some_and(|s| paths::inside(p, &[s.to_path_buf()]))
            || (paths::inside(p, &policy.allow_dirs)
                && !paths::inside(p, std::slice::from_ref(&store_dir)))
    };
    if let Some(path) = &job.output.path {
        if !writable(path) {
            refuse(
                &[Key::Name("output"), Key::Name("path")],
                format!(
                    "[output] path {} is outside the places a submitted job may write; leave it out (results stay in the store: GET /v1/runs/ID/results)",
                    shown(path)
                ),
                Some(paths::dir_flag(path, sub.shown_from)),
            );
        }
    }
    if locate::exists(sub.text, &[Key::Name("output"), Key::Name("dir")]) {
        if !writable(&job.output.dir) {
            refuse(
                &[Key::Name("output"), Key::Name("dir")],
                format!(
                    "[output] dir {} is outside the places a submitted job may write; leave it out to keep saved files in the store's directory",
                    shown(&job.output.dir)
                ),
                Some(paths::dir_flag(&job.output.dir, sub.shown_from)),
            );
        }
    } else if sub.scratch.is_none() {
        job.output.dir = sub.store_dir.join("outputs");
    }

    let mut named: Vec<(Vec<Key<'_>>, &str)> = Vec::new();
    for (j, name) in job.env.iter().enumerate() {
        named.push((vec![Key::Name("env"), Key::Index(j)], name));
    }
    for p in &job.providers {
        if let Some(var) = &p.api_key_env {
            let path = vec![
                Key::Name("providers"),
                Key::Name(&p.name),
                Key::Name("api_key_env"),
            ];
            named.push((path, var));
        }
    }
    if let Some(var) = job.webhook.as_ref().and_then(|w| w.secret_env.as_ref()) {
        named.push((vec![Key::Name("webhook"), Key::Name("secret_env")], var));
    }
    for (path, var) in named {
        if !policy.allow_env.iter().any(|a| a == var) {
            refuse(
                &path,
                format!(
                    "{} names the environment variable {var}; a submitted job may read only those the server allows",
                    path.iter().map(key_text).collect::<Vec<_>>().join(".")
                ),
                Some(format!("--allow-env {var}")),
            );
        }
    }

    if !refusals.is_empty() {
        return Err(refused(refusals, sub));
    }
    Ok(clamp(policy, job))
}

/// Applies `--default-concurrency` and `--max-concurrency`; what the run's
/// view should say about it.
fn clamp(policy: &JobPolicy, job: &mut Job) -> Vec<String> {
    let mut notices = Vec::new();
    if !job.concurrency_set {
        if let Some(n) = policy.default_concurrency.or(policy.max_concurrency) {
            job.concurrency = n;
            // Fixed: it must not grow past the server's cap.
            job.concurrency_set = true;
        }
    }
    if let Some(max) = policy.max_concurrency {
        if job.concurrency > max {
            notices.push(format!(
                "concurrency {} asked, {max} allowed: this server runs at most {max} units of a submitted job at once (--max-concurrency)",
                job.concurrency
            ));
            job.concurrency = max;
        }
    }
    notices
}

fn key_text(key: &Key<'_>) -> String {
    match key {
        Key::Name(n) => (*n).to_owned(),
        Key::Index(i) => format!("[{i}]"),
    }
}

/// The 403: every refusal with its place, key and flag.
fn refused(refusals: Vec<Refusal>, sub: &Submission<'_>) -> ApiError {
    let mut message = String::new();
    for r in &refusals {
        let (line, column) = r.at;
        message.push_str(&format!("job.toml:{line}:{column}: {}", r.message));
        match &r.flag {
            Some(flag) => message.push_str(&format!(" (the server allows it with {flag})\n")),
            None => message.push('\n'),
        }
    }
    let n = refusals.len();
    message.push_str(&format!(
        "{n} thing{} a submitted job may not do; nothing was run",
        if n == 1 { "" } else { "s" }
    ));
    let problems: Vec<_> = refusals
        .iter()
        .map(|r| {
            json!({
                "line": r.at.0,
                "column": r.at.1,
                "key": r.path.join(".").replace(".[", "["),
                "flag": r.flag,
                "message": r.message,
            })
        })
        .collect();
    let details = if sub.json {
        json!({ "problems": problems, "job_toml": sub.text })
    } else {
        json!(problems)
    };
    ApiError::new(StatusCode::FORBIDDEN, "forbidden_job", message).with_details(details)
}

#[cfg(test)]
mod tests;
