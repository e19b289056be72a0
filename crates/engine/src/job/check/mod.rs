//! Before anything is sent: every step's templates rendered for every unit
//! against the real items, earlier steps' outputs standing in as typed
//! placeholders, so that a field the items do not have, a filter that does
//! not exist or a list that is not one is found by `plan` and before `run`
//! sends its first call — each distinct problem once, with its place in the
//! job file, the name missing, the names there are, a suggestion and how
//! many items it affects. Fan-out lists found in the data are counted too.

mod outputs;
mod report;
mod shape;

use std::collections::{BTreeMap, HashSet};

use minijinja::Value;
use serde_json::{Map, Value as Json};
use sluice_spec::{Failure, Job, Placeholder, RenderError, Step, Template};

use super::kinds;
use super::units::Combos;
pub(crate) use outputs::typed as typed_output;
pub use report::{CheckReport, TemplateProblem};

/// Checks the units of `prepared` (the first `limit` units, or all) and
/// returns what was found and what the data says about fan-outs.
/// `skip_seen_shapes`: render one item per shape (quick enough before every
/// run); otherwise every item.
pub(crate) fn whole_input(
    job: &Job,
    prepared: &crate::inputs::Prepared,
    env: &Map<String, Json>,
    skip_seen_shapes: bool,
    limit: Option<u64>,
) -> crate::error::Result<(CheckReport, Vec<FanOut>)> {
    let combos = Combos::new(job);
    let mut checker = Checker::new(job, env, skip_seen_shapes);
    let items = prepared
        .items()
        .map_err(|e| crate::error::Error::Input(e.to_string()))?;
    let mut units = 0u64;
    for item in items.flatten() {
        if limit.is_some_and(|l| units >= l) {
            break;
        }
        checker.item(&item.value, item.position, &combos);
        units += combos.len() as u64;
    }
    let fan_outs = checker.fan_outs().to_vec();
    Ok((checker.finish(), fan_outs))
}

/// Elements a fan-out is checked with per unit (all are counted).
const CHECKED_ELEMENTS: usize = 64;

/// What the data says about one `for_each` step's lists.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FanOut {
    /// Elements of the lists found in the data (over every unit).
    pub(crate) elements: u64,
    /// Units whose list depends on an earlier step's answer (size unknown).
    pub(crate) unknown_units: u64,
}

/// Renders units and gathers their problems.
pub(crate) struct Checker<'a> {
    job: &'a Job,
    env: Value,
    /// Roots whose values are placeholders, so a failure that is not a
    /// missing name may come from the stand-in, not from the job.
    uncertain_env: bool,
    problems: report::Problems,
    items: u64,
    fan_outs: Vec<FanOut>,
    /// With a shape cache (`run`): shapes of items all of whose units
    /// rendered; an item of the same shape is not rendered again.
    fine_shapes: Option<HashSet<u64>>,
}

impl<'a> Checker<'a> {
    /// A checker for `job` with the values of its `env` variables (a missing
    /// one stands in as a placeholder). `skip_seen_shapes`: render only the
    /// first item of each shape (keys and value types), for a check that
    /// must be quick on a large input.
    pub(crate) fn new(job: &'a Job, env: &Map<String, Json>, skip_seen_shapes: bool) -> Self {
        let mut values: BTreeMap<String, Value> = BTreeMap::new();
        let mut uncertain_env = false;
        for name in &job.env {
            let value = match env.get(name) {
                Some(v) => Value::from(minijinja::value::Serde(v.clone())),
                None => {
                    uncertain_env = true;
                    Value::from(format!("⟨env.{name}⟩"))
                }
            };
            values.insert(name.clone(), value);
        }
        Checker {
            job,
            env: Value::from(values),
            uncertain_env,
            problems: report::Problems::default(),
            items: 0,
            fan_outs: vec![FanOut::default(); job.steps.len()],
            fine_shapes: skip_seen_shapes.then(HashSet::new),
        }
    }

    /// Checks every unit of the item at `position`.
    pub(crate) fn item(&mut self, item: &Json, position: u64, combos: &Combos) {
        self.items += 1;
        let shape = self.fine_shapes.as_ref().map(|_| shape::of(item));
        let item_value = Value::from(minijinja::value::Serde(item.clone()));
        if let (Some(shapes), Some(shape)) = (&self.fine_shapes, shape) {
            if shapes.contains(&shape) {
                // A provider chosen per item is checked for every item even
                // so: its value, not the item's shape, decides (and it is cheap).
                for combo in combos.iter() {
                    let ctx = self.unit_ctx(&item_value, position, combo);
                    self.providers(&ctx, position);
                }
                return;
            }
        }
        let before = self.problems.hits();
        for combo in combos.iter() {
            self.unit(&item_value, position, combo);
        }
        if let (Some(shapes), Some(shape)) = (&mut self.fine_shapes, shape) {
            if self.problems.hits() == before {
                shapes.insert(shape);
            }
        }
    }

    /// Per `for_each` step (by index): what the data says about its lists.
    pub(crate) fn fan_outs(&self) -> &[FanOut] {
        &self.fan_outs
    }

    /// Every problem found, by position in the job file.
    pub(crate) fn finish(self) -> CheckReport {
        self.problems.finish(self.job, self.items)
    }

    /// A unit's values before any step has run.
    fn unit_ctx(
        &self,
        item: &Value,
        position: u64,
        combo: &Map<String, Json>,
    ) -> BTreeMap<String, Value> {
        let mut ctx: BTreeMap<String, Value> = BTreeMap::new();
        ctx.insert("item".into(), item.clone());
        ctx.insert("index".into(), Value::from(position));
        ctx.insert(
            "matrix".into(),
            Value::from(minijinja::value::Serde(combo.clone())),
        );
        ctx.insert("env".into(), self.env.clone());
        ctx
    }

    /// `provider = "{{ … }}"`: the provider each templated step chooses for
    /// this unit must be a declared one.
    fn providers(&mut self, ctx: &BTreeMap<String, Value>, position: u64) {
        let value = Value::from(ctx.clone());
        for step in &self.job.steps {
            let Some(template) = &step.provider_template else {
                continue;
            };
            match template.render(&value) {
                Ok(name) => {
                    let name = name.trim();
                    match self.job.provider(name) {
                        None => self
                            .problems
                            .unknown_provider(template, name, self.job, position),
                        // What the load checks for a fixed provider, for
                        // the one this unit chose.
                        Some(p) => {
                            if let Some(message) = unfit(step, p) {
                                self.problems.other(template, &message, None, position);
                            }
                        }
                    }
                }
                Err(e) => self.render_failed(template, &e, ctx, position, false),
            }
        }
    }

    fn unit(&mut self, item: &Value, position: u64, combo: &Map<String, Json>) {
        let mut ctx = self.unit_ctx(item, position, combo);
        self.providers(&ctx, position);
        let mut steps: BTreeMap<String, Value> = BTreeMap::new();
        for step in &self.job.steps {
            ctx.insert("steps".into(), Value::from(steps.clone()));
            let path = format!("steps.{}", step.name);
            let output = match &step.for_each {
                Some(for_each) => {
                    let n = self.fan_out(step, for_each, &ctx, position);
                    Value::from(
                        (0..n.max(1))
                            .map(|i| outputs::typed(step, &format!("{path}[{i}]")))
                            .collect::<Vec<_>>(),
                    )
                }
                None => {
                    self.step(step, &ctx, position, false);
                    outputs::typed(step, &path)
                }
            };
            steps.insert(step.name.clone(), output);
        }
    }

    /// Checks a fan-out step over its list; returns the list's length when
    /// the data gives it (0 when it depends on an earlier answer).
    fn fan_out(
        &mut self,
        step: &Step,
        for_each: &Template,
        ctx: &BTreeMap<String, Value>,
        position: u64,
    ) -> usize {
        let list = match for_each.eval(&Value::from(ctx.clone())) {
            Err(e) => {
                self.render_failed(for_each, &e, ctx, position, false);
                self.fan_outs[step.index].unknown_units += 1;
                return 0;
            }
            Ok(v) if Placeholder::is(&v) => {
                self.fan_outs[step.index].unknown_units += 1;
                let mut each = ctx.clone();
                each.insert("each".into(), Placeholder::value("each"));
                each.insert("each_index".into(), Value::from(0));
                self.step(step, &each, position, true);
                return 0;
            }
            Ok(v) if v.kind() == minijinja::value::ValueKind::Seq => v,
            Ok(other) => {
                let message = format!(
                    "for_each must render to a list, got {} {other:?}",
                    other.kind()
                );
                self.problems.other(for_each, &message, None, position);
                self.fan_outs[step.index].unknown_units += 1;
                return 0;
            }
        };
        let n = list.len().unwrap_or(0);
        self.fan_outs[step.index].elements += n as u64;
        if let Ok(elements) = list.try_iter() {
            for (i, element) in elements.take(CHECKED_ELEMENTS).enumerate() {
                let mut each = ctx.clone();
                each.insert("each".into(), element);
                each.insert("each_index".into(), Value::from(i));
                self.step(step, &each, position, false);
            }
        }
        n
    }

    /// Renders every template of one call of `step` in `ctx`.
    fn step(
        &mut self,
        step: &Step,
        ctx: &BTreeMap<String, Value>,
        position: u64,
        each_uncertain: bool,
    ) {
        let value = Value::from(ctx.clone());
        for template in templates(step) {
            if let Err(e) = template.render(&value) {
                self.render_failed(template, &e, ctx, position, each_uncertain);
            }
        }
        for (k, turn) in kinds::of(&step.kind).turns().iter().enumerate() {
            let mut turn_ctx = ctx.clone();
            let answers: Vec<Value> = (0..k)
                .map(|i| Value::from(format!("⟨answers[{i}]⟩")))
                .collect();
            turn_ctx.insert("answers".into(), Value::from(answers));
            let value = Value::from(turn_ctx.clone());
            for template in turn.templates() {
                if let Err(e) = template.render(&value) {
                    self.render_failed(template, &e, &turn_ctx, position, each_uncertain);
                }
            }
        }
    }

    /// Records why `template` did not render, unless it may be the
    /// placeholders' doing.
    fn render_failed(
        &mut self,
        template: &Template,
        e: &RenderError,
        ctx: &BTreeMap<String, Value>,
        position: u64,
        each_uncertain: bool,
    ) {
        let value = Value::from(ctx.clone());
        if e.failure == Failure::Undefined {
            let missing = report::missing(template, &value);
            if !missing.is_empty() {
                for m in missing {
                    self.problems.missing(template, m, position);
                }
                return;
            }
        }
        let reads_stand_ins = template.variables().iter().any(|v| {
            let root = v.split('.').next().unwrap_or_default();
            matches!(root, "steps" | "answers")
                || (root == "env" && self.uncertain_env)
                || (root == "each" && each_uncertain)
        });
        let certain = matches!(
            e.failure,
            Failure::UnknownFilter | Failure::UnknownTest | Failure::UnknownFunction
        );
        if reads_stand_ins && !certain {
            return; // an earlier answer's real value may well render
        }
        self.problems
            .other(template, &e.message, e.range.clone(), position);
    }
}

/// Why `step` cannot go to `provider`, as the job loader says for a step
/// naming it outright (embeddings at an Anthropic API, streaming through a
/// batch API).
fn unfit(step: &Step, provider: &sluice_spec::Provider) -> Option<String> {
    let name = &provider.name;
    if let Some(why) = kinds::of(&step.kind).unfit_for(provider.api, name) {
        return Some(why);
    }
    if step.stream && provider.mode.may_batch() {
        return Some(format!(
            "stream = true reads a live answer as it is generated, but provider {name:?} has mode = {:?} (its calls may go through the batch API, which does not stream); remove stream or use mode = \"live\"",
            provider.mode.name()
        ));
    }
    None
}

/// Every template of one call of `step` but its `for_each` and a
/// conversation's turns (rendered with `answers`).
fn templates(step: &Step) -> Vec<&Template> {
    kinds::of(&step.kind).templates()
}

#[cfg(test)]
mod tests;
