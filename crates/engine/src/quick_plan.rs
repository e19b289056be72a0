//! `sluice plan FILE.jsonl --url …`: quick mode checked and estimated before
//! anything is sent — every line validated (the first bad one is the error,
//! as `run` would report it), requests and tokens counted, the cost at the
//! prices given, and the wall time under the flags' limits against the same
//! requests sent one after another.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;
use serde_json::Value as Json;

use crate::error::{Error, Result};
use crate::input::{parse_line, survey, LineReader};
use crate::job::{Bound, Estimate, ShownRequest, StepLatency};

/// What `plan` was told for a JSONL input.
#[derive(Debug, Clone)]
pub struct QuickPlanConfig {
    /// The requests file.
    pub input: PathBuf,
    /// The endpoint.
    pub url: String,
    /// `--concurrency` (64 when unset).
    pub concurrency: Option<usize>,
    /// `--rpm`.
    pub rpm: Option<u64>,
    /// `--tpm`.
    pub tpm: Option<u64>,
    /// The API key's variable (shown masked).
    pub api_key_env: Option<String>,
    /// Seconds per call and where that comes from (`--probe`,
    /// `--assume-latency`); else a default by endpoint.
    pub latency: Option<(f64, String)>,
    /// USD per million prompt and completion tokens.
    pub prices: Option<(f64, f64)>,
    /// Only the first N lines (as `run --limit N`).
    pub limit: Option<u64>,
    /// Show the first N requests as they would be sent.
    pub show: usize,
}

/// Quick mode's plan.
#[derive(Debug, Clone, Serialize)]
pub struct QuickPlan {
    /// The file.
    pub input: String,
    /// Requests that would be sent (the first `limit`).
    pub requests: u64,
    /// Requests by API path.
    pub paths: BTreeMap<String, u64>,
    /// Tokens: prompt estimates (chars ÷ 4) plus completion caps.
    pub tokens: u64,
    /// Of which completion caps.
    pub completion_tokens: u64,
    /// At `--prices`.
    pub cost_usd: Option<f64>,
    /// Wall time, one after another, speedup.
    pub estimate: Option<Estimate>,
    /// `--show N`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shown: Vec<ShownRequest>,
}

/// Default latency of one request to `path` when nothing better is known.
fn default_latency(path: &str) -> f64 {
    if path.contains("embeddings") {
        0.3
    } else {
        2.0
    }
}

/// Reads and checks the file and estimates; sends nothing.
pub fn quick_plan(cfg: &QuickPlanConfig) -> Result<QuickPlan> {
    let base_url = crate::shape::is_base_url(&cfg.url);
    let found = survey(&cfg.input, base_url)?;
    if found.bad_count > 0 {
        let first = &found.bad[0];
        return Err(Error::BadLine {
            path: cfg.input.display().to_string(),
            line: first.line,
            message: first.message.clone(),
            others: found.bad_count - 1,
        });
    }
    let base = sluice_provider::Endpoint::parse(&cfg.url, http::Method::POST)
        .map_err(|e| Error::Config(e.to_string()))?;
    let mut reader = LineReader::open(&cfg.input)?;
    let mut plan = QuickPlan {
        input: cfg.input.display().to_string(),
        requests: 0,
        paths: BTreeMap::new(),
        tokens: 0,
        completion_tokens: 0,
        cost_usd: None,
        estimate: None,
        shown: Vec::new(),
    };
    while let Some((line, text)) = reader.next_line()? {
        if cfg.limit.is_some_and(|n| plan.requests >= n) {
            break;
        }
        let Ok(request) = text.and_then(|text| parse_line(text, line)) else {
            continue; // the survey found none
        };
        plan.requests += 1;
        // Where quick mode sends it: the line's url, else under a base URL
        // the endpoint its shape implies, else the URL's own path.
        let path = match (&request.path, request.shape) {
            (Some(p), _) => p.clone(),
            (None, Some(shape)) if base_url => crate::shape::join(base.uri.path(), shape),
            (None, _) => base.uri.path().to_string(),
        };
        *plan.paths.entry(path.clone()).or_default() += 1;
        let exact = crate::input::exact_estimate(&request.body).total();
        let body: Json = serde_json::from_slice(&request.body).unwrap_or(Json::Null);
        let cap = if body.get("input").is_some() && body.get("messages").is_none() {
            0
        } else {
            body.get("max_completion_tokens")
                .or_else(|| body.get("max_tokens"))
                .and_then(Json::as_u64)
                .unwrap_or(sluice_limit::DEFAULT_COMPLETION_ESTIMATE)
        };
        plan.tokens += exact;
        plan.completion_tokens += cap.min(exact);
        if plan.shown.len() < cfg.show {
            plan.shown
                .push(shown(cfg, &base, &request.item_id, &path, body));
        }
    }
    if let Some((input, output)) = cfg.prices {
        let prompt = plan.tokens - plan.completion_tokens;
        plan.cost_usd =
            Some(prompt as f64 * input / 1e6 + plan.completion_tokens as f64 * output / 1e6);
    }
    plan.estimate = estimate(cfg, &plan);
    Ok(plan)
}

/// `plan --probe N`: sends the first `n` requests one at a time (real,
/// paid for, not recorded) and returns their median latency.
pub fn probe_quick(cfg: &QuickPlanConfig, n: usize) -> Result<(f64, String)> {
    let key = crate::preflight::read_api_key(cfg.api_key_env.as_deref())?;
    let client =
        sluice_provider::Client::new(1, key.as_ref().map(|(var, k)| (var.as_str(), k.as_str())))
            .map_err(|e| Error::Config(e.to_string()))?;
    let base = sluice_provider::Endpoint::parse(&cfg.url, http::Method::POST)
        .map_err(|e| Error::Config(e.to_string()))?;
    let runtime = crate::job::new_runtime()?;
    let mut reader = LineReader::open(&cfg.input)?;
    let mut times = Vec::new();
    while let Some((line, text)) = reader.next_line()? {
        if times.len() >= n {
            break;
        }
        let request = text
            .and_then(|text| parse_line(text, line))
            .map_err(|bad| Error::BadLine {
                path: cfg.input.display().to_string(),
                line: bad.line,
                message: bad.message,
                others: 0,
            })?;
        let endpoint = match &request.path {
            Some(path) => base
                .with_path(path)
                .map_err(|e| Error::Config(e.to_string()))?,
            None => base.clone(),
        };
        let sent = runtime.block_on(client.send_json(
            &endpoint,
            request.body.clone(),
            std::time::Duration::from_secs(60),
        ));
        match sent {
            sluice_provider::Attempt::Ok(success) => times.push(success.latency),
            sluice_provider::Attempt::Failed(f) => {
                return Err(Error::Config(format!(
                "--probe: line {line} failed ({}); fix it before running, or plan without --probe",
                f.message
            )))
            }
        }
    }
    times.sort();
    let median = times
        .get(times.len() / 2)
        .ok_or_else(|| Error::Config("--probe: the input has no requests".into()))?;
    Ok((
        median.as_secs_f64(),
        format!(
            "probe ({} call{})",
            times.len(),
            if times.len() == 1 { "" } else { "s" }
        ),
    ))
}

fn shown(
    cfg: &QuickPlanConfig,
    base: &sluice_provider::Endpoint,
    id: &str,
    path: &str,
    body: Json,
) -> ShownRequest {
    let mut headers = Vec::new();
    if cfg.api_key_env.is_some() {
        headers.push(("Authorization".to_string(), "Bearer ****".to_string()));
    }
    headers.push(("Content-Type".to_string(), "application/json".to_string()));
    let url = base
        .with_path(path)
        .map(|e| e.uri.to_string())
        .unwrap_or_else(|_| cfg.url.clone());
    ShownRequest {
        unit: id.to_string(),
        step: "request".into(),
        part: None,
        method: "POST".into(),
        url: sluice_store::redact_url(&url),
        headers,
        body,
        note: None,
    }
}

fn estimate(cfg: &QuickPlanConfig, plan: &QuickPlan) -> Option<Estimate> {
    if plan.requests == 0 {
        return None;
    }
    let (latency, source) = cfg.latency.clone().unwrap_or_else(|| {
        let busiest = plan
            .paths
            .iter()
            .max_by_key(|(_, n)| **n)
            .map_or("", |(p, _)| p.as_str());
        (
            default_latency(busiest),
            format!("default for {busiest} requests"),
        )
    });
    let n = plan.requests as f64;
    let mut bounds = Vec::new();
    let concurrency = cfg.concurrency.unwrap_or(64);
    // With --rpm and no --concurrency the workers grow to what the rate needs.
    if cfg.concurrency.is_some() || cfg.rpm.is_none() {
        bounds.push(Bound {
            limit: format!("--concurrency ({concurrency})"),
            seconds: n * latency / concurrency as f64,
        });
    }
    let mut rate_floor: f64 = 0.0;
    if let Some(rpm) = cfg.rpm {
        let s = n / rpm as f64 * 60.0;
        rate_floor = rate_floor.max(s);
        bounds.push(Bound {
            limit: format!("--rpm ({rpm})"),
            seconds: s,
        });
    }
    if let Some(tpm) = cfg.tpm {
        let s = plan.tokens as f64 / tpm as f64 * 60.0;
        rate_floor = rate_floor.max(s);
        bounds.push(Bound {
            limit: format!("--tpm ({tpm})"),
            seconds: s,
        });
    }
    bounds.push(Bound {
        limit: "one request".into(),
        seconds: latency,
    });
    bounds.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    let top = bounds.first()?.clone();
    let sequential = (n * latency).max(rate_floor);
    Some(Estimate {
        seconds: top.seconds,
        binding: top.limit,
        bounds,
        sequential_seconds: sequential,
        speedup: sequential / top.seconds,
        latencies: vec![StepLatency {
            step: "request".into(),
            seconds: latency,
            source,
        }],
        batch_note: None,
    })
}
