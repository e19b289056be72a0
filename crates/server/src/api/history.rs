//! `GET /v1/runs/{id}/history`: a run's story — every session's samples as
//! one series of points with rates computed here, the summary of its final
//! figures, and its budget — what the dashboard draws when it opens a run,
//! live or finished.

use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value};
use sluice_store::{RunMeta, Store};

use super::find;
use crate::error::ApiResult;
use crate::history;
use crate::state::AppState;

/// The history handler.
pub(crate) async fn history(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let st = state.clone();
    state
        .with_store(move |store| {
            let run = find(store, &id)?;
            let here = st.live(&run.id);
            let sessions = history::sessions(store, &run.id, here.as_deref())?;
            let budget = budget_usd(store, &run);
            Ok(Json(json!({
                "run_id": run.id,
                "points": history::points(&sessions),
                "summary": history::summary(&sessions),
                "budget_usd": budget,
            })))
        })
        .await
}

/// The run's budget (`budget = { usd }` of its job), when it can be read:
/// from the job kept at submission, else the job file it ran.
pub(crate) fn budget_usd(store: &mut dyn Store, run: &RunMeta) -> Option<f64> {
    // `--set budget.usd=N` wins over the file, as when the job was loaded.
    let set = run
        .settings
        .get("sets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .rev()
        .find_map(|s| s.as_str()?.strip_prefix("budget.usd=")?.trim().parse().ok());
    if set.is_some() {
        return set;
    }
    let text = match crate::runner::saved(store, &run.id).ok().flatten() {
        Some(saved) => saved.text,
        None => std::fs::read_to_string(run.settings.get("job")?.as_str()?).ok()?,
    };
    let job: toml::Value = toml::from_str(&text).ok()?;
    let usd = job.get("budget")?.get("usd")?;
    usd.as_float()
        .or_else(|| usd.as_integer().map(|i| i as f64))
}
