//! What a run was told, as kept with it in the store (`RunMeta::settings`):
//! one serde type per kind of run, tagged by `mode`, so every reader (export,
//! `status`, `retry`, the server) asks [`RunMode::of`] instead of looking up
//! the string `settings["mode"]` itself.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// The kind of a run: which front end started it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunMode {
    /// `sluice run FILE.jsonl --url URL`: one request per line, one URL.
    Quick,
    /// `sluice run JOB.toml`: units of steps over an input.
    Job,
}

impl RunMode {
    /// The mode recorded in a run's settings. Settings without one (or an
    /// unknown one) are a quick-mode run's: the first kind sluice kept.
    pub fn of(settings: &Json) -> RunMode {
        match settings.get("mode").and_then(Json::as_str) {
            Some("job") => RunMode::Job,
            _ => RunMode::Quick,
        }
    }

    /// `quick` or `job`, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            RunMode::Quick => "quick",
            RunMode::Job => "job",
        }
    }
}

/// A run's settings, by kind. Stored as one JSON object with `mode` beside
/// the kind's fields; later additions (`offload`, `spent_usd`) are written
/// into that object by the runs that own them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum RunSettings {
    /// A quick-mode run's.
    Quick(QuickSettings),
    /// A job run's.
    Job(JobSettings),
}

impl RunSettings {
    /// The settings as stored.
    pub fn to_json(&self) -> Json {
        serde_json::to_value(self).unwrap_or(Json::Null)
    }

    /// The run's kind.
    pub fn mode(&self) -> RunMode {
        match self {
            RunSettings::Quick(_) => RunMode::Quick,
            RunSettings::Job(_) => RunMode::Job,
        }
    }
}

/// What `sluice run FILE.jsonl --url URL` was told. The API key's variable
/// name is kept, never its value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuickSettings {
    /// The input file.
    pub input: String,
    /// The URL, without its credentials (shown by `status` and `runs`;
    /// `retry` then cannot reuse it and says to rerun with the URL).
    pub url: String,
    /// Whether `url` had credentials taken out.
    pub url_redacted: bool,
    /// `--concurrency`.
    pub concurrency: usize,
    /// `--rpm`.
    pub rpm: Option<u64>,
    /// `--tpm`.
    pub tpm: Option<u64>,
    /// `--retries`.
    pub retries: u32,
    /// `--timeout` in milliseconds.
    pub timeout_ms: u64,
    /// `--api-key-env`: the variable's name.
    pub api_key_env: Option<String>,
    /// `--skip-bad`.
    pub skip_bad: bool,
    /// `--limit`.
    pub limit: Option<u64>,
}

/// What `sluice run JOB.toml` was told, and the job's shape that exports
/// need without loading the job again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSettings {
    /// The job file.
    pub job: String,
    /// `--set KEY=VALUE` overrides, in order.
    pub sets: Vec<String>,
    /// The input's identity (its path or URL).
    pub input: String,
    /// `--skip-bad`.
    pub skip_bad: bool,
    /// `--limit`.
    pub limit: Option<u64>,
    /// The step names (columns of the CSV export).
    pub steps: Vec<String>,
    /// The matrix keys.
    pub matrix: Vec<String>,
    /// Steps whose outputs carry streaming figures (extra CSV columns).
    pub streamed: Vec<String>,
    /// Steps whose outputs are embeddings (a vector column instead of text).
    pub embeds: Vec<String>,
}

/// How a provider's model calls go out a run, as kept with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Offload {
    /// `live` or `batch`.
    pub mode: String,
    /// The job's `mode`: `live`, `batch` or `auto`.
    pub configured: String,
    /// Why, in a sentence.
    pub reason: String,
}

impl Offload {
    /// Whether calls go through the batch API.
    pub fn batched(&self) -> bool {
        self.mode == "batch"
    }
}

/// What runs write into their settings beside their kind's fields: the
/// job runner each provider's [`Offload`], every run its spend (kept across
/// resumes). Read leniently, each field alone: one missing or of another
/// shape reads as absent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeptWithRun {
    /// Per provider, live or batch and why (`settings.offload`).
    pub offload: Option<BTreeMap<String, Offload>>,
    /// USD spent on priced providers, over every session (`settings.spent_usd`).
    pub spent_usd: Option<f64>,
}

impl KeptWithRun {
    /// What `settings` keep.
    pub fn of(settings: &Json) -> KeptWithRun {
        KeptWithRun {
            offload: settings
                .get(OFFLOAD)
                .and_then(|v| serde_json::from_value(v.clone()).ok()),
            spent_usd: settings.get(SPENT_USD).and_then(Json::as_f64),
        }
    }

    /// Writes each provider's `offload` into `settings`.
    pub fn put_offload(settings: &mut Json, offload: &[(String, Offload)]) {
        let map: BTreeMap<&str, &Offload> = offload.iter().map(|(n, o)| (n.as_str(), o)).collect();
        settings[OFFLOAD] = serde_json::to_value(map).unwrap_or_default();
    }

    /// Writes the spend into `settings`.
    pub fn put_spent_usd(settings: &mut Json, usd: f64) {
        settings[SPENT_USD] = serde_json::json!(usd);
    }
}

const OFFLOAD: &str = "offload";
const SPENT_USD: &str = "spent_usd";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_stored_with_their_mode_and_read_back() {
        let quick = RunSettings::Quick(QuickSettings {
            input: "in.jsonl".into(),
            url: "http://h/v1".into(),
            url_redacted: false,
            concurrency: 8,
            rpm: Some(60),
            tpm: None,
            retries: 3,
            timeout_ms: 1_000,
            api_key_env: None,
            skip_bad: false,
            limit: None,
        });
        let json = quick.to_json();
        assert_eq!(json["mode"], "quick");
        // Absent limits are stored as null, as before there was a type.
        assert!(json["tpm"].is_null() && json.get("tpm").is_some());
        assert_eq!(RunMode::of(&json), RunMode::Quick);
        let back: RunSettings = serde_json::from_value(json).unwrap();
        assert_eq!(back, quick);

        let mut job = serde_json::to_value(RunSettings::Job(JobSettings {
            job: "j.toml".into(),
            sets: vec![],
            input: "items.csv".into(),
            skip_bad: true,
            limit: Some(2),
            steps: vec!["a".into()],
            matrix: vec![],
            streamed: vec![],
            embeds: vec![],
        }))
        .unwrap();
        assert_eq!(RunMode::of(&job), RunMode::Job);
        // Fields added later by the run (offload, spend) do not stop a read.
        job["spent_usd"] = serde_json::json!(0.5);
        let back: RunSettings = serde_json::from_value(job).unwrap();
        assert_eq!(back.mode(), RunMode::Job);
        assert_eq!(RunMode::of(&serde_json::json!({})), RunMode::Quick);
    }

    #[test]
    fn what_runs_keep_beside_their_settings_is_read_typed_and_written_back() {
        let mut settings = serde_json::json!({"mode": "job", "spent_usd": "lots"});
        // A field of another shape reads as absent; the others still read.
        assert_eq!(KeptWithRun::of(&settings), KeptWithRun::default());
        let batch = Offload {
            mode: "batch".into(),
            configured: "auto".into(),
            reason: "the deadline allows it".into(),
        };
        KeptWithRun::put_offload(&mut settings, &[("p".into(), batch.clone())]);
        KeptWithRun::put_spent_usd(&mut settings, 0.25);
        assert_eq!(settings["offload"]["p"]["configured"], "auto");
        let kept = KeptWithRun::of(&settings);
        assert_eq!(kept.spent_usd, Some(0.25));
        let offload = kept.offload.unwrap();
        assert!(offload["p"].batched());
        assert_eq!(offload["p"], batch);
        assert_eq!(RunMode::of(&settings), RunMode::Job);
    }

    #[test]
    fn a_run_keeps_its_settings_and_what_it_wrote_beside_them_across_a_rewrite() {
        let run = RunSettings::Job(JobSettings {
            job: "j.toml".into(),
            sets: vec!["a=1".into()],
            input: "items.csv".into(),
            skip_bad: false,
            limit: None,
            steps: vec!["a".into(), "b".into()],
            matrix: vec!["m".into()],
            streamed: vec![],
            embeds: vec!["b".into()],
        });
        let live = Offload {
            mode: "live".into(),
            configured: "auto".into(),
            reason: "the deadline is near".into(),
        };
        let batch = Offload {
            mode: "batch".into(),
            configured: "batch".into(),
            reason: "configured".into(),
        };
        // Started: the run's settings, then each provider's path.
        let mut first = run.to_json();
        KeptWithRun::put_offload(&mut first, &[("p".into(), live.clone())]);
        KeptWithRun::put_spent_usd(&mut first, 1.5);
        // Resumed: new settings carry the spend over; the paths are written again.
        let mut again = run.to_json();
        if let Some(spent) = KeptWithRun::of(&first).spent_usd {
            KeptWithRun::put_spent_usd(&mut again, spent);
        }
        let offload = [("p".into(), live.clone()), ("q".into(), batch.clone())];
        KeptWithRun::put_offload(&mut again, &offload);
        KeptWithRun::put_offload(&mut again, &offload);

        let back: RunSettings = serde_json::from_value(again.clone()).unwrap();
        assert_eq!(
            back, run,
            "the fields written beside the kind's do not stop a read"
        );
        let kept = KeptWithRun::of(&again);
        assert_eq!(kept.spent_usd, Some(1.5));
        let paths = kept.offload.unwrap();
        assert_eq!(paths.len(), 2);
        assert_eq!((&paths["p"], &paths["q"]), (&live, &batch));
        assert!(!paths["p"].batched() && paths["q"].batched());
        // As stored: one object per provider under `offload`, the spend a number.
        assert_eq!(again["offload"]["q"]["mode"], "batch");
        assert_eq!(again["spent_usd"], serde_json::json!(1.5));
    }
}
