//! Every template of a job: compiled into one environment while the job is
//! built, then bound to the shared `Arc<Environment>` and checked against the
//! variables its place may read (`item`, `matrix.KEY`, earlier `steps.NAME`, …).

use std::ops::Range;
use std::sync::Arc;

use minijinja::Environment;
use toml::Spanned;

use crate::diag::Diags;
use crate::model::{InputSource, Job, StepKind};
use crate::steps::StepRef;
use crate::template::{environment, TValue, Template};

/// The outputs a step exposes as `steps.NAME.<field>`.
pub(crate) const STEP_FIELDS: [&str; 6] = ["text", "json", "file", "status", "usage", "turns"];

/// Which variables a template may read, by where it is.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Scope {
    /// `[input] id`: per item, before any matrix or step.
    InputId,
    /// Headers of the input URL and of providers: rendered once per job.
    EnvOnly,
    /// Anything in step number `index` (0-based).
    Step {
        index: usize,
        /// Inside a `for_each` step (not its `for_each` itself): `each`, `each_index`.
        each: bool,
        /// A conversation's `turns`: `answers`.
        answers: bool,
    },
}

/// What the job defines, for the variable check.
pub(crate) struct Defined<'a> {
    pub(crate) matrix: Vec<&'a str>,
    pub(crate) env: &'a [String],
    /// Every `[[steps]]` entry by position.
    pub(crate) steps: &'a [StepRef],
}

struct Entry {
    place: String,
    source: String,
    span: Range<usize>,
    scope: Scope,
    compiled: bool,
}

/// Compiles templates while the job is built; see [`Templates::finish`].
pub(crate) struct Templates {
    env: Environment<'static>,
    /// What templates are bound to until the real environment exists.
    placeholder: Arc<Environment<'static>>,
    entries: Vec<Entry>,
}

impl Templates {
    /// Templates whose file functions read through `files`.
    pub(crate) fn new(files: &crate::FileScope) -> Self {
        let mut env = environment();
        files.register(&mut env);
        Templates {
            env,
            placeholder: Arc::new(environment()),
            entries: Vec::new(),
        }
    }

    /// Compiles `source` as `place`; a syntax error is reported at the string.
    pub(crate) fn add(
        &mut self,
        place: String,
        source: &Spanned<String>,
        scope: Scope,
        diags: &mut Diags,
    ) -> Template {
        let text = source.get_ref();
        let compiled = match Template::compile(&mut self.env, &place, text) {
            Ok(()) => true,
            Err(message) => {
                diags.at(
                    source.span(),
                    format!("template {place} does not compile: {message}; template: {text:?}"),
                );
                false
            }
        };
        let origin = diags.origin(&source.span(), text);
        let template = Template::bind(&self.placeholder, &place, text).at(Some(origin));
        self.entries.push(Entry {
            place,
            source: text.clone(),
            span: source.span(),
            scope,
            compiled,
        });
        template
    }

    /// Binds every template of `job` to one shared environment and checks the
    /// variables each one reads.
    pub(crate) fn finish(self, job: &mut Job, defined: &Defined<'_>, diags: &mut Diags) {
        let env = Arc::new(self.env);
        for t in templates_mut(job) {
            *t = Template::bind(&env, t.place(), t.source()).at(t.origin());
        }
        for entry in self.entries.iter().filter(|e| e.compiled) {
            let template = Template::bind(&env, &entry.place, &entry.source);
            let mut fine = true;
            for var in template.variables() {
                let root = var.split('.').next().unwrap_or_default();
                if env.globals().any(|(name, _)| name == root) {
                    continue; // range(), dict(), namespace() …
                }
                if let Err(problem) = check(&var, entry.scope, defined) {
                    let problem = match function_call(root, &entry.source) {
                        true => unknown_function(root, &env),
                        false => problem,
                    };
                    let (place, source) = (&entry.place, &entry.source);
                    let message = format!("{place}: {problem}; template: {source:?}");
                    diags.at(entry.span.clone(), message);
                    fine = false;
                }
            }
            if !fine {
                continue;
            }
            let unknown = crate::calls_check::unknown_call(&env, &template, roots(entry.scope));
            if let Some((message, range)) = unknown {
                let origin = diags.origin(&entry.span, &entry.source);
                let span = match range {
                    // Inside a string written as is: at the name itself.
                    Some(r) if origin.verbatim => {
                        entry.span.start + 1 + r.start..entry.span.start + 1 + r.end
                    }
                    _ => entry.span.clone(),
                };
                diags.at(span, message);
            }
        }
    }
}

/// Whether `name` is called in `source` (`name(`), not read as a variable.
fn function_call(name: &str, source: &str) -> bool {
    source.match_indices(name).any(|(at, _)| {
        let before = source[..at].chars().next_back();
        let after = source[at + name.len()..].trim_start();
        after.starts_with('(')
            && !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.')
    })
}

fn unknown_function(name: &str, env: &Environment<'static>) -> String {
    let functions: Vec<&str> = env.globals().map(|(n, _)| n).collect();
    let hint = crate::suggest::did_you_mean(name, functions.iter().copied());
    format!(
        "unknown function `{name}`{hint}; functions: {}",
        functions.join(", ")
    )
}

/// The variables templates at `scope` may read.
fn roots(scope: Scope) -> &'static [&'static str] {
    match scope {
        Scope::InputId => &["item", "index"],
        Scope::EnvOnly => &["env"],
        Scope::Step { each, answers, .. } => match (each, answers) {
            (true, true) => &[
                "item",
                "index",
                "matrix",
                "steps",
                "env",
                "each",
                "each_index",
                "answers",
            ],
            (true, false) => &[
                "item",
                "index",
                "matrix",
                "steps",
                "env",
                "each",
                "each_index",
            ],
            (false, true) => &["item", "index", "matrix", "steps", "env", "answers"],
            (false, false) => &["item", "index", "matrix", "steps", "env"],
        },
    }
}

/// Whether `var` (a dotted path) may be read in `scope`; else why not.
fn check(var: &str, scope: Scope, defined: &Defined<'_>) -> Result<(), String> {
    let mut parts = var.split('.');
    let root = parts.next().unwrap_or_default();
    let first = parts.next();
    let roots = roots(scope);
    if !roots.contains(&root) {
        return Err(unknown_root(root, scope, roots));
    }
    let Some(first) = first else {
        return Ok(());
    };
    match root {
        "matrix" if !defined.matrix.contains(&first) => Err(if defined.matrix.is_empty() {
            format!(
                "matrix.{first} is used but the job has no [matrix]; add [matrix] \
                 {first} = [...] or pass --set matrix.{first}=a,b"
            )
        } else {
            format!(
                "matrix key {first:?} is not defined; defined: {}",
                defined.matrix.join(", ")
            )
        }),
        "env" if !defined.env.iter().any(|e| e == first) => Err(format!(
            "env.{first} is not listed in `env`; add \"{first}\" to env = [...] at the top \
             of the job (listed: {})",
            list_or_none(defined.env.iter().map(String::as_str))
        )),
        "steps" => {
            let Scope::Step { index, .. } = scope else {
                return Ok(()); // other scopes do not allow `steps` at all
            };
            check_step(first, parts.next(), index, defined)
        }
        _ => Ok(()),
    }
}

fn check_step(
    name: &str,
    field: Option<&str>,
    index: usize,
    defined: &Defined<'_>,
) -> Result<(), String> {
    let earlier = list_or_none(
        defined.steps[..index]
            .iter()
            .filter_map(|s| s.name.as_deref()),
    );
    let position = defined
        .steps
        .iter()
        .position(|s| s.name.as_deref() == Some(name));
    let Some(p) = position else {
        return Err(format!(
            "step {name:?} does not exist; steps available here: {earlier}"
        ));
    };
    if p == index {
        return Err(format!(
            "step {name:?} cannot read its own output; steps available here: {earlier}"
        ));
    }
    if p > index {
        return Err(format!(
            "step {name:?} comes later in the job; a step can only read earlier \
             steps; available here: {earlier}"
        ));
    }
    if !defined.steps[index].upstream.contains(&p) {
        let needed = list_or_none(
            defined.steps[index]
                .upstream
                .iter()
                .filter_map(|&u| defined.steps[u].name.as_deref()),
        );
        return Err(format!(
            "step {name:?} is not among the steps this one needs, so it may not have run yet; add it to needs; steps available here: {needed}"
        ));
    }
    if let (Some(f), true) = (field, defined.steps[p].fans_out) {
        return Err(format!(
            "step {name:?} has for_each, so steps.{name} is a list of outputs; \
             use steps.{name}[0].{f} or {{% for x in steps.{name} %}}…{{{{ x.{f} }}}}"
        ));
    }
    match field {
        Some(f) if !STEP_FIELDS.contains(&f) => Err(format!(
            "steps.{name}.{f}: a step's output has no {f:?}; use one of: {}",
            STEP_FIELDS.join(", ")
        )),
        _ => Ok(()),
    }
}

fn unknown_root(root: &str, scope: Scope, roots: &[&str]) -> String {
    let allowed = roots.join(", ");
    match (root, scope) {
        ("each" | "each_index", Scope::Step { .. }) => format!(
            "{root} is only defined inside a step with for_each (and not in for_each \
             itself); variables here: {allowed}"
        ),
        ("answers", Scope::Step { .. }) => format!(
            "answers is only defined in a conversation step's turns; variables here: {allowed}"
        ),
        (_, Scope::InputId) => format!(
            "the input id is rendered per item before any step runs, so it can use only \
             item and index, not {root:?}"
        ),
        (_, Scope::EnvOnly) => format!(
            "these headers are rendered once per job, so they can use only env.NAME, \
             not {root:?}"
        ),
        _ => format!("unknown variable {root:?}; variables here: {allowed}"),
    }
}

fn list_or_none<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.collect();
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

/// Every template in `job`, to rebind them to the job's environment.
fn templates_mut(job: &mut Job) -> Vec<&mut Template> {
    let mut out: Vec<&mut Template> = Vec::new();
    out.extend(job.input.id.as_mut());
    if let InputSource::Url { headers, .. } = &mut job.input.source {
        out.extend(headers.iter_mut().map(|(_, t)| t));
    }
    for p in &mut job.providers {
        out.extend(p.headers.iter_mut().map(|(_, t)| t));
    }
    if let Some(hook) = &mut job.webhook {
        out.extend(hook.headers.iter_mut().map(|(_, t)| t));
    }
    for step in &mut job.steps {
        out.extend(step.for_each.as_mut());
        out.extend(step.affinity.as_mut());
        out.extend(step.provider_template.as_mut());
        match &mut step.kind {
            StepKind::Chat {
                model,
                messages,
                params,
                ..
            } => {
                out.push(model);
                for m in messages.iter_mut() {
                    out.extend(m.content.templates_mut());
                    out.extend(m.tool_call_id.as_mut());
                    if let Some(calls) = &mut m.tool_calls {
                        tvalue_mut(calls, &mut out);
                    }
                }
                tvalue_mut(params, &mut out);
            }
            StepKind::Embed {
                model,
                input,
                params,
                ..
            } => {
                out.push(model);
                tvalue_mut(input, &mut out);
                tvalue_mut(params, &mut out);
            }
            StepKind::Http {
                url,
                path,
                headers,
                json,
                body,
                upload,
                ..
            } => {
                out.extend(url.as_mut());
                out.extend(path.as_mut());
                out.extend(headers.iter_mut().map(|(_, t)| t));
                if let Some(json) = json {
                    tvalue_mut(json, &mut out);
                }
                out.extend(body.as_mut());
                if let Some(upload) = upload {
                    out.push(&mut upload.file);
                    out.extend(upload.fields.iter_mut().map(|(_, t)| t));
                }
            }
            StepKind::Command { argv, stdin } => {
                out.extend(argv.iter_mut());
                out.extend(stdin.as_mut());
            }
            StepKind::Conversation {
                model,
                system,
                turns,
                params,
                ..
            } => {
                out.push(model);
                out.extend(system.as_mut());
                for turn in turns.iter_mut() {
                    out.extend(turn.templates_mut());
                }
                tvalue_mut(params, &mut out);
            }
        }
    }
    out
}

fn tvalue_mut<'a>(value: &'a mut TValue, out: &mut Vec<&'a mut Template>) {
    match value {
        TValue::Literal(_) => {}
        TValue::Template(t) => out.push(t),
        TValue::Array(items) => items.iter_mut().for_each(|i| tvalue_mut(i, out)),
        TValue::Object(fields) => fields.iter_mut().for_each(|(_, v)| tvalue_mut(v, out)),
    }
}
