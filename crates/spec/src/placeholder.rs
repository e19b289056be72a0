//! A stand-in for a value not known before the run (an earlier step's JSON
//! answer, a variable while a template is checked on its own): every field
//! and element exists and is another placeholder, iterating gives one
//! element, and it renders as `⟨path⟩`, so templates that read it render
//! without inventing an answer.

use std::fmt;
use std::sync::Arc;

use minijinja::value::{Enumerator, Object, ObjectRepr};
use minijinja::Value;

/// A value known only by where it comes from, e.g. `steps.plan.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholder {
    path: String,
}

impl Placeholder {
    /// A placeholder for the value at `path`, as a template value.
    pub fn value(path: impl Into<String>) -> Value {
        Value::from_object(Placeholder { path: path.into() })
    }

    /// Whether `value` is (or holds at its top) a placeholder.
    pub fn is(value: &Value) -> bool {
        value.downcast_object_ref::<Placeholder>().is_some()
    }

    /// The path it stands for.
    pub fn path(&self) -> &str {
        &self.path
    }
}

impl Object for Placeholder {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Seq
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let path = match (key.as_str(), key.as_i64()) {
            (Some(name), _) => format!("{}.{name}", self.path),
            (None, Some(i)) => format!("{}[{i}]", self.path),
            _ => format!("{}[{key}]", self.path),
        };
        Some(Placeholder::value(path))
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(vec![Placeholder::value(format!("{}[0]", self.path))])
    }

    fn is_true(self: &Arc<Self>) -> bool {
        true
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "⟨{}⟩", self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_and_element_is_another_placeholder() {
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        let ctx = minijinja::context! { plan => Placeholder::value("steps.plan.json") };
        let render = |source: &str| env.render_str(source, &ctx).unwrap();
        assert_eq!(render("{{ plan.scenes }}"), "⟨steps.plan.json.scenes⟩");
        assert_eq!(
            render("{{ plan.scenes[2].title }}"),
            "⟨steps.plan.json.scenes[2].title⟩"
        );
        assert_eq!(
            render("{% for s in plan.scenes %}[{{ s }}]{% endfor %}"),
            "[⟨steps.plan.json.scenes[0]⟩]"
        );
        assert_eq!(render("{{ plan.x | upper | length > 0 }}"), "True");
        assert_eq!(render("{% if plan.flag %}yes{% endif %}"), "yes");
    }
}
