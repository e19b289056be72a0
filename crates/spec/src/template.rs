//! Templates: minijinja with strict undefined, compiled once per job.
//!
//! A string that is exactly one `{{ expression }}` renders to the expression's
//! value with its type (a list for `for_each`, a number in a JSON body); any
//! other string renders to text.

use std::collections::BTreeSet;
use std::sync::Arc;

use minijinja::{Environment, UndefinedBehavior, Value};

/// A template failed for one unit: what, where, and the template's text.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{place}: {message} (template: {source_text:?})")]
pub struct RenderError {
    /// Where the template is in the job, e.g. `steps.summarise.messages[0].content`.
    pub place: String,
    /// minijinja's message, e.g. `undefined value`.
    pub message: String,
    /// The template text.
    pub source_text: String,
    /// What kind of failure, for checks that treat them differently.
    pub failure: Failure,
    /// The failing part of the template text (byte offsets), when known.
    pub range: Option<std::ops::Range<usize>>,
}

/// Kinds of template failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// A variable, field or element that is not there.
    Undefined,
    /// `| name` with no such filter.
    UnknownFilter,
    /// `is name` with no such test.
    UnknownTest,
    /// `name(...)` with no such function, or a method a value does not have.
    UnknownFunction,
    /// Anything else: a wrong type for an operation or a filter, a value
    /// that is not JSON, …
    Other,
}

impl Failure {
    fn of(kind: minijinja::ErrorKind) -> Failure {
        use minijinja::ErrorKind as K;
        match kind {
            K::UndefinedError => Failure::Undefined,
            K::UnknownFilter => Failure::UnknownFilter,
            K::UnknownTest => Failure::UnknownTest,
            K::UnknownFunction | K::UnknownMethod => Failure::UnknownFunction,
            _ => Failure::Other,
        }
    }
}

/// The environment every template of one job renders in.
pub(crate) fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // Jobs build prompts and JSON, not HTML: no auto-escaping.
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env
}

/// Where a template's string starts in the job file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// 1-based line of the string's opening quote.
    pub line: usize,
    /// 1-based column (in characters) of the opening quote.
    pub column: usize,
    /// The string is written on one line without escapes, so an offset in
    /// the template text is the same offset in the file after the quote.
    pub verbatim: bool,
}

impl Origin {
    /// Line and column of the character at `offset` (bytes) in `source`:
    /// exact for a verbatim string, else the string's start.
    pub fn at(&self, source: &str, offset: usize) -> (usize, usize) {
        match source.get(..offset) {
            Some(before) if self.verbatim => (self.line, self.column + 1 + before.chars().count()),
            _ => (self.line, self.column),
        }
    }
}

/// A compiled template with its place in the job.
#[derive(Clone)]
pub struct Template {
    env: Arc<Environment<'static>>,
    /// The template's name in the environment (its place).
    place: String,
    /// Where it is in the job file (none for templates built by hand).
    origin: Option<Origin>,
    source: String,
    /// The expression of a template that is exactly `{{ expr }}`.
    expression: Option<String>,
    /// No template syntax at all: renders to itself without touching minijinja.
    literal: bool,
}

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Template({:?} at {})", self.source, self.place)
    }
}

impl Template {
    /// Compiles `source` into `env` under the name `place`. Returns the
    /// compile error's message on failure.
    pub(crate) fn compile(
        env: &mut Environment<'static>,
        place: &str,
        source: &str,
    ) -> Result<(), String> {
        env.add_template_owned(place.to_string(), source.to_string())
            .map_err(|e| describe(&e))?;
        if let Some(expr) = single_expression(source) {
            env.compile_expression(expr).map_err(|e| describe(&e))?;
        }
        Ok(())
    }

    /// Wraps a template already compiled into `env` (see [`Template::compile`]).
    pub(crate) fn bind(env: &Arc<Environment<'static>>, place: &str, source: &str) -> Template {
        Template {
            env: env.clone(),
            place: place.to_string(),
            origin: None,
            source: source.to_string(),
            expression: single_expression(source).map(str::to_string),
            literal: !source.contains("{{") && !source.contains("{%") && !source.contains("{#"),
        }
    }

    /// A template in an environment of its own, for values built outside a job
    /// file (tests, callers assembling steps by hand). Returns the compile
    /// error's message on failure.
    pub fn standalone(place: &str, source: &str) -> Result<Template, String> {
        let mut env = environment();
        Template::compile(&mut env, place, source)?;
        Ok(Template::bind(&Arc::new(env), place, source))
    }

    /// The template text as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Where it is in the job.
    pub fn place(&self) -> &str {
        &self.place
    }

    /// Where its string starts in the job file, when it came from one.
    pub fn origin(&self) -> Option<Origin> {
        self.origin
    }

    /// The same template, placed at `origin` in the job file.
    pub(crate) fn at(mut self, origin: Option<Origin>) -> Template {
        self.origin = origin;
        self
    }

    /// Whether it has any template syntax (otherwise it renders to itself).
    pub fn is_literal(&self) -> bool {
        self.literal
    }

    /// The variables it reads, as dotted paths (`item.name`, `steps.plan.json`).
    pub fn variables(&self) -> BTreeSet<String> {
        match self.env.get_template(&self.place) {
            Ok(t) => t.undeclared_variables(true).into_iter().collect(),
            Err(_) => BTreeSet::new(),
        }
    }

    /// Renders to text.
    pub fn render(&self, ctx: &Value) -> Result<String, RenderError> {
        if self.literal {
            return Ok(self.source.clone());
        }
        let template = self
            .env
            .get_template(&self.place)
            .map_err(|e| self.error(&e))?;
        template.render(ctx).map_err(|e| self.error(&e))
    }

    /// Renders to a JSON value: the expression's own value for `{{ expr }}`,
    /// otherwise the rendered text as a string.
    pub fn render_value(&self, ctx: &Value) -> Result<serde_json::Value, RenderError> {
        if self.expression.is_none() {
            return self.render(ctx).map(serde_json::Value::String);
        }
        let value = self.eval(ctx)?;
        serde_json::to_value(&value).map_err(|e| RenderError {
            place: self.place.clone(),
            message: format!("cannot turn the value into JSON: {e}"),
            source_text: self.source.clone(),
            failure: Failure::Other,
            range: None,
        })
    }

    /// The value of a template that is exactly `{{ expr }}` (its text for
    /// any other template), as minijinja sees it; undefined is an error.
    pub fn eval(&self, ctx: &Value) -> Result<Value, RenderError> {
        let Some(expr) = &self.expression else {
            return self.render(ctx).map(Value::from);
        };
        // The expression's offsets, moved to the template text's.
        let shift = self.source.find(expr.as_str()).unwrap_or(0);
        let moved = |mut e: RenderError| {
            e.range = e.range.map(|r| r.start + shift..r.end + shift);
            e
        };
        let compiled = self
            .env
            .compile_expression(expr)
            .map_err(|e| moved(self.error(&e)))?;
        let value = compiled.eval(ctx).map_err(|e| moved(self.error(&e)))?;
        if value.is_undefined() {
            return Err(RenderError {
                place: self.place.clone(),
                message: "undefined value".into(),
                source_text: self.source.clone(),
                failure: Failure::Undefined,
                range: None,
            });
        }
        Ok(value)
    }

    fn error(&self, e: &minijinja::Error) -> RenderError {
        RenderError {
            place: self.place.clone(),
            message: describe(e),
            source_text: self.source.clone(),
            failure: Failure::of(e.kind()),
            range: e.range(),
        }
    }
}

/// minijinja's message without its debug dump.
fn describe(e: &minijinja::Error) -> String {
    let mut text = e.kind().to_string();
    if let Some(detail) = e.detail() {
        text = format!("{text}: {detail}");
    }
    text
}

/// `expr` when `source` is exactly `{{ expr }}` (whitespace around allowed).
fn single_expression(source: &str) -> Option<&str> {
    let inner = source.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    let inner = inner.trim_start_matches('-').trim_end_matches('-');
    (!inner.contains("{{") && !inner.contains("}}")).then(|| inner.trim())
}

/// A JSON value whose strings are templates (bodies, params).
#[derive(Debug, Clone)]
pub enum TValue {
    /// Copied as is.
    Literal(serde_json::Value),
    /// Rendered with [`Template::render_value`].
    Template(Template),
    /// Each element rendered.
    Array(Vec<TValue>),
    /// Each value rendered; keys as written.
    Object(Vec<(String, TValue)>),
}

impl TValue {
    /// Renders every template inside.
    pub fn render(&self, ctx: &Value) -> Result<serde_json::Value, RenderError> {
        Ok(match self {
            TValue::Literal(v) => v.clone(),
            TValue::Template(t) => t.render_value(ctx)?,
            TValue::Array(items) => serde_json::Value::Array(
                items
                    .iter()
                    .map(|i| i.render(ctx))
                    .collect::<Result<_, _>>()?,
            ),
            TValue::Object(fields) => {
                let mut map = serde_json::Map::new();
                for (k, v) in fields {
                    map.insert(k.clone(), v.render(ctx)?);
                }
                serde_json::Value::Object(map)
            }
        })
    }

    /// Every template inside, for validation.
    pub fn templates(&self) -> Vec<&Template> {
        match self {
            TValue::Literal(_) => Vec::new(),
            TValue::Template(t) => vec![t],
            TValue::Array(items) => items.iter().flat_map(TValue::templates).collect(),
            TValue::Object(fields) => fields.iter().flat_map(|(_, v)| v.templates()).collect(),
        }
    }

    /// Every template inside, to rebind.
    pub(crate) fn templates_mut(&mut self) -> Vec<&mut Template> {
        match self {
            TValue::Literal(_) => Vec::new(),
            TValue::Template(t) => vec![t],
            TValue::Array(items) => items.iter_mut().flat_map(TValue::templates_mut).collect(),
            TValue::Object(fields) => fields
                .iter_mut()
                .flat_map(|(_, v)| v.templates_mut())
                .collect(),
        }
    }

    /// An empty object.
    pub fn empty_object() -> TValue {
        TValue::Object(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    trait FromSerde {
        fn from_serde(v: serde_json::Value) -> Value;
    }
    impl FromSerde for Value {
        fn from_serde(v: serde_json::Value) -> Value {
            Value::from(minijinja::value::Serde(v))
        }
    }

    fn make(source: &str) -> Template {
        let mut env = environment();
        Template::compile(&mut env, "t", source).unwrap();
        Template::bind(&Arc::new(env), "t", source)
    }

    #[test]
    fn renders_text_and_values() {
        let ctx = Value::from_serde(serde_json::json!({"item": {"n": 3, "xs": [1, 2]}}));
        assert_eq!(make("n={{ item.n }}").render(&ctx).unwrap(), "n=3");
        assert_eq!(
            make("{{ item.xs }}").render_value(&ctx).unwrap(),
            serde_json::json!([1, 2])
        );
        assert_eq!(
            make(" {{ item.n }} ").render_value(&ctx).unwrap(),
            serde_json::json!(3)
        );
        assert_eq!(make("plain").render(&ctx).unwrap(), "plain");
        // No HTML escaping in prompts.
        let ctx = Value::from_serde(serde_json::json!({"item": {"q": "a<b & \"c\""}}));
        assert_eq!(make("{{ item.q }}").render(&ctx).unwrap(), "a<b & \"c\"");
    }

    #[test]
    fn undefined_is_an_error_naming_place_and_text() {
        let ctx = Value::from_serde(serde_json::json!({"item": {}}));
        let e = make("Hi {{ item.name }}").render(&ctx).unwrap_err();
        assert_eq!(e.place, "t");
        assert_eq!(e.source_text, "Hi {{ item.name }}");
        assert!(e.message.contains("undefined"), "{}", e.message);
        assert!(make("{{ item.name }}").render_value(&ctx).is_err());
    }

    #[test]
    fn variables_are_dotted_paths() {
        let t = make(
            "{{ item.a }} {{ steps.plan.json.x }} {% for s in item.list %}{{ s }}{% endfor %}",
        );
        let vars = t.variables();
        assert!(vars.contains("item.a"), "{vars:?}");
        assert!(vars.contains("steps.plan.json.x"), "{vars:?}");
        assert!(!vars.iter().any(|v| v == "s"), "{vars:?}");
    }

    #[test]
    fn compile_errors_are_reported() {
        let mut env = environment();
        let e = Template::compile(&mut env, "t", "{{ item.a ").unwrap_err();
        assert!(e.contains("syntax error"), "{e}");
    }
}
