//! The entry points: read a job file, parse it, build and check the [`Job`],
//! and report every problem found at once.

use std::path::{Path, PathBuf};

use crate::build;
use crate::ctx::Ctx;
use crate::diag::{Diags, SpecError};
use crate::model::Job;
use crate::sets::Sets;
use crate::templates_check::{Defined, Templates};

/// Loads and validates a job file. `sets` are `--set KEY=VALUE` overrides:
/// `matrix.KEY=a,b,c`, `concurrency=N`, `steps.NAME.concurrency=N`,
/// `providers.NAME.LIMIT=N` (`concurrency`, `url_concurrency`, `rps`, `rpm`,
/// `rph`, `rpd`, `tpm`, `tpd`), `budget.usd=X`.
pub fn load(path: &Path, sets: &[String]) -> Result<Job, SpecError> {
    let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_str(&text, path, sets)
}

/// Same as [`load`] from text (tests, stdin); `path` is used in messages and
/// to resolve relative paths (against its directory).
pub fn parse_str(text: &str, path: &Path, sets: &[String]) -> Result<Job, SpecError> {
    let mut diags = Diags::new(path, text);
    let sets = Sets::parse(sets, &mut diags);
    let Some(raw) = crate::document::parse(text, &mut diags) else {
        return Err(SpecError::Invalid(diags.finish()));
    };
    let absolute = absolute(path);
    let dir = absolute
        .parent()
        .map_or_else(PathBuf::new, Path::to_path_buf);
    let files = crate::FileScope::new(dir.clone());
    let mut ctx = Ctx {
        diags,
        templates: Templates::new(&files),
        dir,
        sets,
    };
    let (mut job, step_refs) = build::job(raw, absolute, &mut ctx);
    let Ctx {
        mut diags,
        templates,
        sets,
        ..
    } = ctx;
    let steps: Vec<&str> = step_refs.iter().filter_map(|s| s.name.as_deref()).collect();
    let providers: Vec<&str> = job.providers.iter().map(|p| p.name.as_str()).collect();
    sets.check_names(&steps, &providers, &mut diags);
    let matrix: Vec<String> = job.matrix.iter().map(|a| a.name.clone()).collect();
    let env = job.env.clone();
    let defined = Defined {
        matrix: matrix.iter().map(String::as_str).collect(),
        env: &env,
        steps: &step_refs,
    };
    templates.finish(&mut job, &defined, &mut diags);
    job.files = files;
    job.warnings = diags.take_warnings();
    if diags.is_empty() {
        Ok(job)
    } else {
        Err(SpecError::Invalid(diags.finish()))
    }
}

/// `path` made absolute against the current directory (not canonicalized:
/// the file need not exist for [`parse_str`]).
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}
