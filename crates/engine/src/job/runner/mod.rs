//! One unit through every step, in order: render, reuse a recorded output when
//! the request is unchanged, otherwise call (with fan-out and conversation
//! turns as parts), record each part, and finally the unit itself.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::stream::{FuturesUnordered, StreamExt};
use serde_json::{json, Map, Value as Json};
use sluice_spec::Job;
use sluice_store::{ItemRecord, ItemStatus, Store};
use tokio::sync::{mpsc, Semaphore};

use super::kinds::{self, Transport};
use super::lanes::Lanes;
use super::output::{StepOutput, Usage};
use crate::clock::now_ms;
use crate::item_error::ItemError;
use crate::progress::Progress;
use crate::writer::Message;

mod embed_batch;
mod failure;
mod model;
mod multi;
mod parts;
mod send;

use failure::{unit_error, PartError, StepFailure};
use multi::{conversation, fan_out};
use parts::part;

/// What every unit task of a run shares: the job, the lanes, the writer, the
/// run's control and counters.
pub(crate) struct UnitContext {
    pub(crate) job: Arc<Job>,
    pub(crate) lanes: Lanes,
    pub(crate) progress: Arc<Progress>,
    /// Shared with the batchers: set, it also wakes units waiting for a batch.
    pub(crate) stopping: Arc<crate::stopping::Stopping>,
    pub(crate) tx: mpsc::Sender<Message>,
    /// Step-wide caps (non-fan-out steps with `concurrency`), by step index.
    pub(crate) step_slots: Vec<Option<Arc<Semaphore>>>,
    /// Local programs in flight at most (default: the number of CPUs).
    pub(crate) command_slots: Arc<Semaphore>,
    pub(crate) output_dir: PathBuf,
    /// Where files named at run time may be read from (`None`: anywhere).
    pub(crate) files: Option<Arc<crate::FileAccess>>,
    /// `env` for templates: only the variables the job lists.
    pub(crate) env: Json,
    /// Reads earlier step records on resume and the cache; `None` for a new
    /// run without cached steps. Read off the dispatcher thread
    /// ([`UnitContext::read_store`]).
    pub(crate) reader: Option<Arc<Mutex<Box<dyn Store>>>>,
    /// Whether `reader` holds step records worth reading (a resumed run).
    pub(crate) resumed: bool,
    pub(crate) run_id: String,
    /// `budget = { usd }` in millionths of a USD.
    pub(crate) budget_micro_usd: Option<u64>,
    /// `[webhook] on = "item"`: notified per finished unit.
    pub(crate) item_hook: Option<crate::webhook::WebhookTarget>,
    /// Pause and cancel from outside (a server, or the store's control).
    pub(crate) control: Arc<crate::control::RunControl>,
    /// The batch API of each provider that sends through it.
    pub(crate) batches: super::batch::Batches,
    /// Per step (by index): the watch over its first calls' endings.
    pub(crate) first_calls: Vec<crate::early_stop::FirstCalls>,
    /// The writer's store calls: a hanging store holds new calls.
    pub(crate) recording: Arc<crate::recording::Recording>,
    /// Embed steps with `batch`: the units gathering for a shared request.
    pub(crate) embed_batches: embed_batch::Gatherings,
}

impl UnitContext {
    /// Runs `read` on the reader's store on a blocking thread, not the
    /// dispatcher's (a store call blocks: on PostgreSQL it is a round trip);
    /// `None` without a reader.
    async fn read_store<T: Send + 'static>(
        &self,
        read: impl FnOnce(&mut dyn Store) -> sluice_store::Result<T> + Send + 'static,
    ) -> Option<sluice_store::Result<T>> {
        let reader = self.reader.clone()?;
        let task = tokio::task::spawn_blocking(move || {
            let mut store = reader.lock().unwrap_or_else(|e| e.into_inner());
            read(&mut **store)
        });
        match task.await {
            Ok(result) => Some(result),
            Err(e) => {
                tracing::warn!("run {}: a store read did not finish ({e})", self.run_id);
                None
            }
        }
    }

    /// A cached output for `key` younger than `ttl`, if any.
    pub(crate) async fn cached(&self, key: u64, ttl: std::time::Duration) -> Option<StepOutput> {
        let since = now_ms() - ttl.as_millis().min(i64::MAX as u128) as i64;
        let text = match self.read_store(move |s| s.cache_get(key, since)).await? {
            Ok(text) => text?,
            Err(e) => {
                // Not "nothing cached": say so, then call as on a miss.
                tracing::warn!(
                    "run {}: cannot read the step cache ({e}); the step is sent again",
                    self.run_id
                );
                return None;
            }
        };
        serde_json::from_str(&text).ok()
    }

    /// Whether the budget is spent: no new call starts (and the run stops).
    pub(crate) fn over_budget(&self) -> bool {
        let Some(budget) = self.budget_micro_usd else {
            return false;
        };
        if self.progress.spent_micro_usd.load(Relaxed) < budget {
            return false;
        }
        if self.progress.budget_reached.swap(1, Relaxed) == 0 {
            tracing::warn!("budget reached: no new calls; rerun with a higher budget to continue");
        }
        self.stopping.set();
        true
    }

    /// Adds the price of `usage` on `lane` for `model` to the spend (at the
    /// batch prices when it came through the batch API).
    pub(crate) fn charge(
        &self,
        lane: &super::lanes::Lane,
        model: Option<&str>,
        usage: Option<Usage>,
        batched: bool,
    ) {
        let Some(u) = usage else { return };
        if let Some(usd) = lane.cost(model, u.prompt_tokens, u.completion_tokens, batched) {
            self.progress
                .spent_micro_usd
                .fetch_add((usd * 1e6).round() as u64, Relaxed);
        }
    }
}

/// An input item × one matrix combination.
pub(crate) struct Unit {
    pub(crate) id: String,
    pub(crate) item_id: String,
    /// Export order.
    pub(crate) idx: u64,
    pub(crate) index: u64,
    pub(crate) item: Json,
    pub(crate) matrix: Map<String, Json>,
    pub(crate) hash: u64,
    /// Look for step records of an earlier attempt at this unit even in a
    /// new run (a shared run's unit another worker had claimed before).
    pub(crate) resume: bool,
    /// Its place in the run (set when it starts): a unit waiting for a batch
    /// gives up its slot of the window.
    pub(crate) place: Option<Arc<super::place::Place>>,
    /// `max_in_flight`: its calls in flight at most, across the steps it runs
    /// at once and their fan-outs (set when it starts).
    pub(crate) in_flight: Option<Arc<Semaphore>>,
}

/// A part's end: its output, why it failed, or the run stopping.
// `Done` is the common case: boxing it would allocate on every part.
#[allow(clippy::large_enum_variant)]
enum PartEnd {
    Done(StepOutput),
    Failed(PartError),
    Stopped,
}

/// Totals over a unit's calls made in this run.
#[derive(Default)]
pub(super) struct UnitTally {
    attempts: u32,
    throttled: u32,
    usage: Usage,
}

/// Runs `unit` through the job; `None` when the run stopped first (the unit
/// stays pending, its finished steps recorded).
pub(crate) async fn run_unit(shared: &UnitContext, mut unit: Unit) -> Option<ItemRecord> {
    let started_at = now_ms();
    unit.in_flight = shared
        .job
        .max_in_flight
        .map(|n| Arc::new(Semaphore::new(n.max(1))));
    let clock = Instant::now();
    let recorded = recorded_parts(shared, &unit.id, unit.resume).await;
    let mut outputs = Map::new();
    let mut tally = UnitTally::default();
    let mut failure: Option<ItemError> = None;
    let steps = run_steps(
        shared,
        &unit,
        &recorded,
        &mut outputs,
        &mut tally,
        &mut failure,
    );
    match shared.job.unit_timeout {
        Some(limit) => match tokio::time::timeout(limit, steps).await {
            Ok(true) => {}
            Ok(false) => return None,
            Err(_) => {
                failure = Some(ItemError::new(
                    "deadline",
                    format!(
                        "the unit did not finish within unit_timeout ({}); calls in flight were cut",
                        humantime_like(limit)
                    ),
                ));
            }
        },
        None => {
            if !steps.await {
                return None;
            }
        }
    }
    let status = if failure.is_some() {
        ItemStatus::Failed
    } else {
        ItemStatus::Done
    };
    // The item is kept with its results so exports can carry its fields
    // (`--include-item`) without going back to an input that may be gone.
    let response = json!({
        "item_id": unit.item_id,
        "matrix": unit.matrix,
        "item": unit.item,
        "steps": outputs,
    });
    Some(ItemRecord {
        item_id: unit.id,
        idx: unit.idx,
        hash: unit.hash,
        status,
        attempts: tally.attempts,
        throttled: tally.throttled,
        status_code: None,
        response: Some(response.to_string()),
        error: failure.map(|e| e.to_string()),
        prompt_tokens: Some(tally.usage.prompt_tokens),
        completion_tokens: Some(tally.usage.completion_tokens),
        latency_ms: clock.elapsed().as_millis() as u64,
        started_at,
        finished_at: now_ms(),
        metadata: None,
        custom_id: Some(unit.item_id),
    })
}

/// Runs the steps, each as soon as the steps it needs are done (in file
/// order when each needs the one before, the default); `false` when the run
/// stopped first. After a failure no step starts; those running finish.
async fn run_steps(
    shared: &UnitContext,
    unit: &Unit,
    recorded: &RecordedParts,
    outputs: &mut Map<String, Json>,
    tally: &mut UnitTally,
    failure: &mut Option<ItemError>,
) -> bool {
    let steps = &shared.job.steps;
    let mut started = vec![false; steps.len()];
    let mut done = vec![false; steps.len()];
    let mut running = FuturesUnordered::new();
    loop {
        if failure.is_none() {
            for (i, step) in steps.iter().enumerate() {
                if !started[i] && step.needs.iter().all(|&j| done[j]) {
                    started[i] = true;
                    running.push(run_step(shared, unit, step, outputs.clone(), recorded));
                }
            }
        }
        let Some((i, end, t)) = running.next().await else {
            return true;
        };
        tally.add(&t);
        match end {
            Done(value) => {
                outputs.insert(steps[i].name.clone(), value);
                done[i] = true;
            }
            Failed(why) => {
                if failure.is_none() {
                    *failure = Some(unit_error(&steps[i].name, &why));
                }
            }
            Stopped => return false,
        }
    }
}

/// One step of a unit, with the outputs of the steps done when it started.
async fn run_step(
    shared: &UnitContext,
    unit: &Unit,
    step: &sluice_spec::Step,
    outputs: Map<String, Json>,
    recorded: &RecordedParts,
) -> (usize, StepEnd, UnitTally) {
    let mut tally = UnitTally::default();
    let ctx = context(shared, unit, &outputs, None);
    // `provider = "{{ matrix.… }}"` or `"{{ item.… }}"`: this unit's own
    // provider (every value was checked to name one before the run; a unit
    // the check did not see fails here, alone, instead of going nowhere).
    let resolved;
    let step = match &step.provider_template {
        Some(t) => match t.render(&ctx) {
            Ok(name) if shared.lanes.get(name.trim()).is_none() => {
                let message = format!(
                    "provider renders {:?}, which is not a defined provider (template: {:?})",
                    name.trim(),
                    t.source()
                );
                let why = StepFailure::whole(PartError::Template(message));
                return (step.index, Failed(why), tally);
            }
            Ok(name) => {
                let mut own = step.clone();
                own.provider = Some(name.trim().to_owned());
                resolved = own;
                &resolved
            }
            Err(e) => return (step.index, Failed(StepFailure::whole(e)), tally),
        },
        None => step,
    };
    let end = if let Some(for_each) = &step.for_each {
        fan_out(
            shared, unit, step, &outputs, &ctx, for_each, recorded, &mut tally,
        )
        .await
    } else if kinds::of(&step.kind).transport() == Transport::Turns {
        conversation(shared, unit, step, &ctx, recorded, &mut tally).await
    } else {
        let stem = kinds::http::safe_stem(&unit.id);
        part(shared, unit, step, &ctx, -1, &stem, recorded, &mut tally)
            .await
            .map_done(|o| o.to_value())
    };
    (step.index, end, tally)
}

fn humantime_like(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    if secs.is_multiple_of(60) && secs >= 60 {
        format!("{}m", secs / 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// A step's end with its output as JSON.
enum StepEnd {
    Done(Json),
    Failed(StepFailure),
    Stopped,
}
use StepEnd::{Done, Failed, Stopped};

impl PartEnd {
    fn map_done(self, f: impl FnOnce(StepOutput) -> Json) -> StepEnd {
        match self {
            PartEnd::Done(o) => Done(f(o)),
            PartEnd::Failed(e) => Failed(StepFailure::whole(e)),
            PartEnd::Stopped => Stopped,
        }
    }
}

/// A unit's parts recorded done by earlier runs: (step, part) → (request
/// hash, output).
pub(super) type RecordedParts = HashMap<(String, i64), (u64, StepOutput)>;

/// Done parts recorded by earlier runs of this unit: (step, part) → (hash, output).
async fn recorded_parts(shared: &UnitContext, unit_id: &str, resume: bool) -> RecordedParts {
    if !(shared.resumed || resume) {
        return RecordedParts::new();
    }
    let (run, unit) = (shared.run_id.clone(), unit_id.to_owned());
    let read = shared.read_store(move |s| s.unit_steps(&run, &unit));
    let records = match read.await {
        None => return RecordedParts::new(),
        Some(Ok(records)) => records,
        Some(Err(e)) => {
            // Not "no steps recorded": the steps are sent (and paid) again,
            // which the user must hear about.
            tracing::warn!(
                "run {}, unit {unit_id}: cannot read its recorded steps ({e}); \
                 its steps are sent again",
                shared.run_id
            );
            return RecordedParts::new();
        }
    };
    records
        .into_iter()
        .filter(|r| r.status == ItemStatus::Done)
        .filter_map(|r| {
            let output = serde_json::from_str(r.output.as_deref()?).ok()?;
            Some(((r.step, r.part), (r.hash, output)))
        })
        .collect()
}

/// The template variables of one unit (and fan-out element).
pub(super) fn context(
    shared: &UnitContext,
    unit: &Unit,
    steps: &Map<String, Json>,
    each: Option<(&Json, usize)>,
) -> minijinja::Value {
    let mut ctx = json!({
        "item": unit.item,
        "index": unit.index,
        "matrix": unit.matrix,
        "env": shared.env,
        "steps": steps,
    });
    if let Some((element, i)) = each {
        ctx["each"] = element.clone();
        ctx["each_index"] = json!(i);
    }
    minijinja::Value::from(minijinja::value::Serde(ctx))
}

impl UnitTally {
    pub(super) fn add(&mut self, other: &UnitTally) {
        self.attempts += other.attempts;
        self.throttled += other.throttled;
        self.usage.prompt_tokens += other.usage.prompt_tokens;
        self.usage.completion_tokens += other.usage.completion_tokens;
    }

    pub(super) fn add_usage(&mut self, usage: Option<Usage>) {
        if let Some(u) = usage {
            self.usage.prompt_tokens += u.prompt_tokens;
            self.usage.completion_tokens += u.completion_tokens;
        }
    }
}
