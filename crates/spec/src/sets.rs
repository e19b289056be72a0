//! `--set KEY=VALUE` overrides: parsed here, applied while the job is built
//! (before validation, so templates are checked against the final matrix).

use crate::diag::Diags;
use crate::model::MAX_CONCURRENCY;

/// The forms `--set` accepts, for messages.
const FORMS: &str =
    "matrix.KEY=a,b,c, concurrency=N, max_in_flight=N, steps.NAME.concurrency=N (NAME * for \
                     every step), \
                     providers.NAME.LIMIT=N (LIMIT: concurrency, url_concurrency, rps, rpm, \
                     rph, rpd, tpm, tpd), providers.NAME.api=openai|anthropic, \
                     providers.NAME.mode=live|batch|auto, providers.NAME.deadline=DURATION, \
                     budget.usd=X";

/// A provider limit `--set` may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    Rps,
    Rpm,
    Rph,
    Rpd,
    Tpm,
    Tpd,
    Concurrency,
    UrlConcurrency,
}

/// All overrides, in command-line order (a later one wins).
#[derive(Debug, Default)]
pub(crate) struct Sets {
    /// Replaced or added matrix axes.
    pub(crate) matrix: Vec<(String, Vec<serde_json::Value>)>,
    pub(crate) concurrency: Option<u64>,
    /// `max_in_flight`, replacing (or adding) the job's.
    pub(crate) max_in_flight: Option<u64>,
    /// `steps.NAME.concurrency`, with the override as written.
    pub(crate) steps: Vec<(String, u64, String)>,
    /// `providers.NAME.<limit>`, with the override as written.
    pub(crate) providers: Vec<(String, Limit, u64, String)>,
    /// `budget.usd`, replacing (or adding) the job's budget.
    pub(crate) budget_usd: Option<f64>,
    /// `providers.NAME.{api,mode,deadline}`: (provider, key, checked value, override as written).
    pub(crate) words: Vec<(String, &'static str, String, String)>,
}

impl Sets {
    /// Parses every override; a bad one is reported and skipped.
    pub(crate) fn parse(sets: &[String], diags: &mut Diags) -> Sets {
        let mut out = Sets::default();
        for set in sets {
            if let Err(problem) = out.parse_one(set) {
                diags.set(format!("{set:?}: {problem}"));
            }
        }
        out
    }

    fn parse_one(&mut self, set: &str) -> Result<(), String> {
        let Some((key, value)) = set.split_once('=') else {
            return Err(format!("expected KEY=VALUE; accepted forms: {FORMS}"));
        };
        let key = key.trim();
        let parts: Vec<&str> = key.split('.').collect();
        match parts.as_slice() {
            ["matrix", axis] => {
                if !crate::ctx::is_identifier(axis) {
                    return Err(format!(
                        "matrix key {axis:?} is not a name (letters, digits, _; not starting \
                         with a digit)"
                    ));
                }
                let values = matrix_values(value)?;
                self.matrix.retain(|(name, _)| name != axis);
                self.matrix.push((axis.to_string(), values));
            }
            ["concurrency"] => self.concurrency = Some(calls(value)?),
            ["max_in_flight"] => self.max_in_flight = Some(calls(value)?),
            ["steps", name, "concurrency"] => {
                self.steps
                    .push((name.to_string(), calls(value)?, set.to_string()));
            }
            ["providers", name, key @ ("api" | "mode" | "deadline")] => {
                let (key, value) = word(key, value.trim())?;
                self.words
                    .push((name.to_string(), key, value, set.to_string()));
            }
            ["providers", name, limit] => {
                let limit = match *limit {
                    "rps" => Limit::Rps,
                    "rpm" => Limit::Rpm,
                    "rph" => Limit::Rph,
                    "rpd" => Limit::Rpd,
                    "tpm" => Limit::Tpm,
                    "tpd" => Limit::Tpd,
                    "concurrency" => Limit::Concurrency,
                    "url_concurrency" => Limit::UrlConcurrency,
                    _ => return Err(unknown(key)),
                };
                let n = match limit {
                    Limit::Concurrency | Limit::UrlConcurrency => calls(value)?,
                    _ => positive(value)?,
                };
                self.providers
                    .push((name.to_string(), limit, n, set.to_string()));
            }
            ["budget", "usd"] => self.budget_usd = Some(usd(value)?),
            _ => return Err(unknown(key)),
        }
        Ok(())
    }

    /// The override of step `name`'s concurrency, if any; `steps.*` covers
    /// every step, and the later of two overrides wins.
    pub(crate) fn step(&self, name: &str) -> Option<u64> {
        self.steps
            .iter()
            .rev()
            .find(|(n, _, _)| n == name || n == "*")
            .map(|(_, v, _)| *v)
    }

    /// The override of provider `name`'s `limit`, if any.
    pub(crate) fn provider(&self, name: &str, limit: Limit) -> Option<u64> {
        self.providers
            .iter()
            .rev()
            .find(|(n, l, _, _)| n == name && *l == limit)
            .map(|(_, _, v, _)| *v)
    }

    /// The override of provider `name`'s `api`, `mode` or `deadline`, if any.
    pub(crate) fn word(&self, name: &str, key: &str) -> Option<&str> {
        self.words
            .iter()
            .rev()
            .find(|(n, k, _, _)| n == name && *k == key)
            .map(|(_, _, v, _)| v.as_str())
    }

    /// Reports overrides naming steps or providers the job does not define.
    pub(crate) fn check_names(&self, steps: &[&str], providers: &[&str], diags: &mut Diags) {
        for (name, _, set) in &self.steps {
            if name != "*" && !steps.contains(&name.as_str()) {
                diags.set(format!(
                    "{set:?}: the job has no step {name:?}; steps: {}",
                    steps.join(", ")
                ));
            }
        }
        let named = self.providers.iter().map(|(n, _, _, s)| (n, s));
        for (name, set) in named.chain(self.words.iter().map(|(n, _, _, s)| (n, s))) {
            if !providers.contains(&name.as_str()) {
                let defined = if providers.is_empty() {
                    "none".to_string()
                } else {
                    providers.join(", ")
                };
                diags.set(format!(
                    "{set:?}: the job has no provider {name:?}; providers: {defined}"
                ));
            }
        }
    }
}

fn unknown(key: &str) -> String {
    format!("{key:?} cannot be set; accepted forms: {FORMS}")
}

/// A checked `api`, `mode` or `deadline` value.
fn word(key: &str, value: &str) -> Result<(&'static str, String), String> {
    let ok = |k: &'static str| Ok((k, value.to_string()));
    match key {
        "api" if matches!(value, "openai" | "anthropic") => ok("api"),
        "api" => Err(format!(
            "api {value:?} is not known; use openai or anthropic"
        )),
        "mode" if matches!(value, "live" | "batch" | "auto") => ok("mode"),
        "mode" => Err(format!(
            "mode {value:?} is not known; use live, batch or auto"
        )),
        _ => match humantime::parse_duration(value) {
            Ok(d) if !d.is_zero() => ok("deadline"),
            _ => Err(format!(
                "deadline {value:?} is not a duration longer than 0s; write e.g. 6h or 90m"
            )),
        },
    }
}

fn positive(value: &str) -> Result<u64, String> {
    match value.trim().parse::<u64>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{value:?} is not a whole number of at least 1")),
    }
}

/// A number of calls in flight: 1 to [`MAX_CONCURRENCY`], as in a job file.
fn calls(value: &str) -> Result<u64, String> {
    let n = positive(value)?;
    if n > MAX_CONCURRENCY as u64 {
        return Err(format!(
            "{value:?} is above the most calls in progress sluice allows \
             ({MAX_CONCURRENCY}); give a number from 1 to {MAX_CONCURRENCY}"
        ));
    }
    Ok(n)
}

fn usd(value: &str) -> Result<f64, String> {
    match value.trim().parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        _ => Err(format!(
            "{value:?} is not an amount of USD greater than 0, e.g. 25 or 12.5"
        )),
    }
}

/// `a,b,c` → values: integers, floats and booleans as such, else strings.
fn matrix_values(value: &str) -> Result<Vec<serde_json::Value>, String> {
    let mut out = Vec::new();
    for raw in value.split(',') {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err("empty value; write the values separated by commas, e.g. a,b,c".into());
        }
        let v = if let Ok(i) = raw.parse::<i64>() {
            serde_json::Value::from(i)
        } else if let Some(f) = raw
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
        {
            serde_json::Value::Number(f)
        } else if raw == "true" || raw == "false" {
            serde_json::Value::Bool(raw == "true")
        } else {
            serde_json::Value::String(raw.to_string())
        };
        out.push(v);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn matrix_values_are_typed() {
        let v = matrix_values("gpt-4o, 3,2.5,true,false").unwrap();
        assert_eq!(
            v,
            vec![
                json!("gpt-4o"),
                json!(3),
                json!(2.5),
                json!(true),
                json!(false)
            ]
        );
        assert!(matrix_values("a,,b").is_err());
    }

    #[test]
    fn later_overrides_win() {
        let mut sets = Sets::default();
        sets.parse_one("steps.a.concurrency=2").unwrap();
        sets.parse_one("steps.a.concurrency=5").unwrap();
        sets.parse_one("providers.p.rpm=60").unwrap();
        sets.parse_one("providers.p.rpd=900").unwrap();
        sets.parse_one("budget.usd=2.5").unwrap();
        sets.parse_one("matrix.m=a").unwrap();
        sets.parse_one("matrix.m=b,c").unwrap();
        assert_eq!(sets.step("a"), Some(5));
        assert_eq!(sets.step("b"), None);
        sets.parse_one("steps.*.concurrency=1").unwrap();
        assert_eq!((sets.step("a"), sets.step("b")), (Some(1), Some(1)));
        sets.parse_one("steps.b.concurrency=3").unwrap();
        assert_eq!((sets.step("a"), sets.step("b")), (Some(1), Some(3)));
        assert_eq!(sets.provider("p", Limit::Rpm), Some(60));
        assert_eq!(sets.provider("p", Limit::Tpm), None);
        assert_eq!(sets.provider("p", Limit::Rpd), Some(900));
        assert_eq!(sets.budget_usd, Some(2.5));
        assert!(sets.parse_one("budget.usd=0").is_err());
        assert!(sets.parse_one("budget.usd=nan").is_err());
        assert_eq!(
            sets.matrix,
            vec![("m".to_string(), vec![json!("b"), json!("c")])]
        );
    }
}
