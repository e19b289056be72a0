//! examples/audio-pipeline: uploads to a GPU pool with one flaky host, four
//! stages on the host that took the upload, two LLM stages, a CMS record
//! only on success, a signed webhook per finished file.

use std::collections::{BTreeMap, BTreeSet};

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use super::{summary, Example};
use crate::util::*;

const SECRET: &str = "test-hook-secret";

/// The recordings the GPU hosts refuse: longer than their 16 KiB limit.
const TOO_LONG: [&str; 2] = ["call-007", "call-011"];

fn gpu(extra: &[&str]) -> Mock {
    let mut args = vec![
        "--latency-ms",
        "10",
        "--jitter-ms",
        "10",
        "--max-upload-bytes",
        "16384",
    ];
    args.extend_from_slice(extra);
    Mock::start(&args)
}

/// `route.statuses[status]` summed over the hosts.
fn answered(hosts: &[&Mock], route: &str, status: &str) -> u64 {
    hosts
        .iter()
        .map(|h| {
            h.stats()["routes"][route]["statuses"][status]
                .as_u64()
                .unwrap_or(0)
        })
        .sum()
}

#[test]
fn audio_pipeline_keeps_each_file_on_its_host_records_only_successes_and_signs_webhooks() {
    let ex = Example::copy("audio-pipeline");
    let (gpu1, gpu2) = (gpu(&[]), gpu(&[]));
    let flaky = gpu(&["--fail-rate", "0.3", "--seed", "3"]);
    let llm = Mock::start_with_env(
        &[
            "--latency-ms",
            "10",
            "--max-concurrency",
            "100",
            "--hook-secret-env",
            "HOOK_SECRET",
            "--journal",
            "1000",
        ],
        &[("HOOK_SECRET", SECRET)],
    );
    for (port, mock) in [(9201, &gpu1), (9202, &gpu2), (9203, &flaky), (9200, &llm)] {
        ex.point(port, mock);
    }
    let out = ex
        .command(&["--json"])
        .env("HOOK_SECRET", SECRET)
        .output()
        .unwrap();
    // Two files fail (exit 1); the batch goes on.
    let run = summary(&out, 1);
    let results = ex.results();
    assert_eq!(results.len(), 12);
    let hosts = [&gpu1, &gpu2, &flaky];

    // Success and failure counts are what the hosts did: each long file was
    // refused once (413, not retried); every other file got through speech
    // to text exactly once.
    let failed: Vec<&Value> = results.iter().filter(|r| r["status"] == "failed").collect();
    let done: BTreeSet<String> = results
        .iter()
        .filter(|r| r["status"] == "done")
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        answered(&hosts, "/stages/upload", "413"),
        failed.len() as u64
    );
    assert_eq!(
        answered(&hosts, "/stages/speech_to_text", "200"),
        done.len() as u64
    );
    assert_eq!(
        (
            run["recorded"]["done"].as_u64(),
            run["recorded"]["failed"].as_u64()
        ),
        (Some(10), Some(2))
    );
    let failed_ids: Vec<&str> = failed.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(failed_ids, TOO_LONG);
    for r in &failed {
        let message = r["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("step upload") && message.contains("413"),
            "{r}"
        );
        assert!(
            r["steps"].get("record").is_none(),
            "no record step for a failed file: {r}"
        );
    }
    // Every stage of a file ran on one host, the one that took its upload
    // (each answer names the host that gave it).
    let gpu_steps = ["upload", "denoise", "ivr", "language_id", "speech_to_text"];
    let mut homes: BTreeMap<String, u64> = BTreeMap::new();
    for r in results.iter().filter(|r| r["status"] == "done") {
        let hosts_used: BTreeSet<&str> = gpu_steps
            .iter()
            .map(|s| r["steps"][s]["json"]["host"].as_str().unwrap())
            .collect();
        assert_eq!(hosts_used.len(), 1, "one host for every stage: {r}");
        *homes
            .entry(hosts_used.first().unwrap().to_string())
            .or_default() += 1;
        assert_eq!(
            r["steps"]["upload"]["json"]["file"]["name"],
            format!("{}.wav", r["id"].as_str().unwrap())
        );
        assert!(r["steps"]["summary"]["text"]
            .as_str()
            .unwrap()
            .starts_with("mock reply"));
    }
    // What each host answered agrees: a host ran each stage once for each
    // file homed there, and nothing for the others' files.
    for host in hosts {
        let address = host.url("").trim_start_matches("http://").to_string();
        let files = homes.get(&address).copied().unwrap_or(0);
        for s in gpu_steps {
            let ok = host.stats()["routes"][format!("/stages/{s}")]["statuses"]["200"]
                .as_u64()
                .unwrap_or(0);
            assert_eq!(ok, files, "{address} {s}: {homes:?}");
        }
    }
    assert!(
        homes.len() >= 2,
        "the files spread over the pool: {homes:?}"
    );
    // The flaky host's 500s were all retried, on that host (its files are
    // there): none failed a file. A breaker that opened is the flaky host's
    // (and only it); its files waited for it, which costs no retries.
    let errors: u64 = hosts.iter().map(|h| u(&h.stats()["server_errors"])).sum();
    assert_eq!(u(&run["this_run"]["retries"]), errors, "{run}");
    assert_eq!(
        u(&flaky.stats()["server_errors"]),
        errors,
        "only the flaky host failed"
    );
    for b in run["breakers"].as_array().unwrap() {
        assert_eq!(b["url"], flaky.url(""), "{run}");
        assert_eq!(b["provider"], "gpu");
    }
    assert_eq!(
        u(&llm.stats()["ok"]),
        2 * done.len() as u64,
        "two LLM stages per success"
    );
    assert_eq!(llm.stats()["rate_limited"], 0, "at most 100 in flight");

    // A record only for each success, written once.
    let records = llm.get_json("/items/transcripts?limit=-1");
    let recorded: BTreeSet<String> = records["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(recorded, done);
    for r in records["data"].as_array().unwrap() {
        assert!(
            r["transcript"].as_str().is_some_and(|t| !t.is_empty()),
            "{r}"
        );
    }

    // One webhook per finished file, each signed with the secret.
    let hooks = llm.journal("/hooks/audio");
    assert_eq!(hooks.len(), 12);
    let mut notified = BTreeSet::new();
    for hook in &hooks {
        assert_eq!(hook["status"], 200, "the receiver accepted it: {hook}");
        let body = hook["body"].as_str().unwrap();
        let timestamp = hook["headers"]["x-sluice-timestamp"].as_str().unwrap();
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(format!("{timestamp}.{body}").as_bytes());
        let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(hook["headers"]["x-sluice-signature"], expected.as_str());
        let event: Value = serde_json::from_str(body).unwrap();
        let id = event["id"].as_str().unwrap().to_string();
        let status = if TOO_LONG.contains(&id.as_str()) {
            "failed"
        } else {
            "done"
        };
        assert_eq!(event["status"], status, "{event}");
        notified.insert(id);
        assert!(!body.contains(SECRET));
    }
    assert_eq!(notified.len(), 12, "each file notified once");
    assert_eq!(llm.stats()["hooks"]["verified"], 12);
}
