//! What a run was told, as kept with it in the store (`RunMeta::settings`):
//! one serde type per kind of run, tagged by `mode`, so every reader (export,
//! `status`, `retry`, the server) asks [`RunMode::of`] instead of looking up
//! the string `settings["mode"]` itself.

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
}
