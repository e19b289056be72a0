//! `sluice bench`: the quick suite runs every scenario and loses nothing.
//! Speed is never checked here (the figures of a debug build on a loaded CI
//! machine mean nothing); correctness is.

use std::time::Duration;

use serde_json::Value;

use crate::util::*;

const SCENARIOS: [&str; 13] = [
    "latency",
    "rpm",
    "tpm",
    "overhead",
    "memory",
    "pipeline",
    "crash-resume",
    "scale-out",
    "faults",
    "unknown-rpm",
    "allowance-full",
    "allowance-binds",
    "server",
];

#[test]
fn the_quick_suite_runs_every_scenario_and_every_check_holds() {
    let s = Scratch::new();
    let output = s
        .sluice(&["bench", "--quick", "--json"])
        .timeout(Duration::from_secs(600))
        .output()
        .unwrap();
    let report = json_stdout(&output);
    let scenarios = report["scenarios"].as_array().expect("a list of scenarios");
    let names: Vec<&str> = scenarios
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, SCENARIOS, "{}", stderr(&output));
    for scenario in scenarios {
        let name = &scenario["name"];
        match scenario["status"].as_str().unwrap() {
            "ran" => {
                let checks = scenario["checks"].as_array().unwrap();
                assert!(!checks.is_empty(), "{name} checked nothing");
                for check in checks {
                    assert_eq!(check["ok"], true, "{name}: {}", check["what"]);
                }
                assert_eq!(scenario["correct"], true, "{name}");
                let figures = scenario["figures"].as_array().unwrap();
                assert!(!figures.is_empty(), "{name} measured nothing");
                for f in figures {
                    assert!(
                        f["measured"].as_f64().is_some_and(f64::is_finite),
                        "{name}: {f}"
                    );
                    let ratio = &f["ratio"];
                    assert!(
                        ratio.is_null() || ratio.as_f64().is_some_and(|r| r > 0.0),
                        "{name}: {f}"
                    );
                }
            }
            // Scale-out needs `sluice worker`, PostgreSQL and `psql`; it must
            // say so, and where they are required (CI:
            // SLUICE_REQUIRE_POSTGRES=1) a skip is a failure, not a pass.
            "skipped" => {
                assert_eq!(name, "scale-out");
                let reason = scenario["reason"].as_str().unwrap_or("");
                assert!(reason.contains("needs"), "{reason}");
                assert!(
                    std::env::var("SLUICE_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                    "scale-out was skipped but PostgreSQL and its tools are required \
                     (SLUICE_REQUIRE_POSTGRES=1): {reason}"
                );
            }
            other => panic!("{name} {other}: {}", scenario["reason"]),
        }
    }
    assert_eq!(report["quick"], true);
    assert_eq!(report["passed"], true);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}

#[test]
fn only_runs_the_named_scenarios_and_an_unknown_name_is_refused() {
    let s = Scratch::new();
    let output = s
        .sluice(&["bench", "--quick", "--only", "scale-out"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let table = String::from_utf8_lossy(&output.stdout);
    // Skipped without PostgreSQL; with it (issue 7), run with every check holding.
    assert!(
        table.contains("scale-out  skipped: needs")
            || (table.contains("scale-out  checks: all") && table.contains("hold")),
        "{table}"
    );
    assert!(!table.lines().any(|l| l.starts_with("latency")), "{table}");

    let output = s
        .sluice(&["bench", "--only", "latency", "nonsense"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(err.contains("--only nonsense: no such scenario"), "{err}");
    assert!(err.contains("crash-resume"), "{err}");
    assert!(output.stdout.is_empty());
}

/// The JSON carries each figure's bound and measured value, and the suite's time.
#[test]
fn a_json_report_carries_bounds_measurements_and_timing() {
    let s = Scratch::new();
    let output = s
        .sluice(&["bench", "--quick", "--json", "--only", "rpm"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let report: Value = json_stdout(&output);
    assert_eq!(report["scenarios"].as_array().unwrap().len(), 1);
    let rpm = &report["scenarios"][0];
    let wall = &rpm["figures"][0];
    assert_eq!(wall["what"], "wall time");
    // 40 calls at 1,200/min: the bound is 2 s. The mock admits the 40th
    // request no sooner than 39 × 50 ms after the first, less its slack
    // (100 ms in --quick), so no client (and no clock) can measure under
    // 1.85 s.
    assert_eq!(wall["bound"], 2.0);
    assert!(wall["measured"].as_f64().unwrap() >= 1.85, "{wall}");
    assert!(report["seconds"].as_f64().unwrap() >= 1.85);
}
