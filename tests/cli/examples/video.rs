//! examples/video-episodes: episodes × fan-outs (voice lines, scenes,
//! b-roll), one image rate shared by all episodes, placeholders on failure,
//! input order kept, and a strictly sequential mode by `--set`.

use std::path::Path;

use serde_json::Value;

use super::{most_in_window, summary, Example, STALLED};
use crate::util::*;

/// The fast stand-ins for the job's services: voice (transient 500s) and
/// images (refusing some prompts every time).
fn services() -> (Mock, Mock) {
    let voice = Mock::start(&[
        "--latency-ms",
        "10",
        "--fail-rate",
        "0.15",
        "--seed",
        "4",
        "--journal",
        "500",
    ]);
    let images = Mock::start(&[
        "--latency-ms",
        "10",
        "--jitter-ms",
        "10",
        "--reject-rate",
        "0.15",
        "--seed",
        "5",
        "--journal",
        "500",
    ]);
    (voice, images)
}

fn episodes(ex: &Example) -> Vec<Value> {
    read_jsonl(&ex.path("episodes.jsonl"))
}

/// The JSON a mock file carries after its magic line: what produced it.
fn produced_by(file: &Path) -> Value {
    let bytes = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let line = bytes.iter().position(|&b| b == b'\n').unwrap();
    let mut rest = &bytes[line + 1..];
    // The PNG signature holds a newline of its own.
    if bytes.starts_with(b"\x89PNG") {
        rest = &rest[rest.iter().position(|&b| b == b'\n').unwrap() + 1..];
    }
    serde_json::from_slice(rest).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

#[test]
fn video_episodes_share_one_image_rate_fall_back_to_marked_placeholders_and_keep_order() {
    let ex = Example::copy("video-episodes");
    let (voice, images) = services();
    ex.point(9301, &voice);
    ex.point(9302, &images);
    let out = ex.run(&["--set", "providers.images.rpm=1200", "--json"]);
    // No episode fails because one of its calls did.
    let run = summary(&out, 0);
    let results = ex.results();
    let input = episodes(&ex);
    assert_eq!(results.len(), input.len());
    let (mut placeholders, mut image_placeholders) = (0, 0);
    for (r, episode) in results.iter().zip(&input) {
        assert_eq!(r["id"], episode["id"], "input order");
        assert_eq!(r["status"], "done", "{r}");
        for (step, list, key, placeholder) in [
            ("voice", "lines", "line", "silence.wav"),
            ("scenes", "scenes", "scene", "scene.png"),
            ("broll", "broll", "cue", "broll.png"),
        ] {
            let outputs = r["steps"][step].as_array().unwrap();
            assert_eq!(
                outputs.len(),
                episode[list].as_array().unwrap().len(),
                "{step}"
            );
            for (k, o) in outputs.iter().enumerate() {
                let file = Path::new(o["file"].as_str().unwrap());
                assert!(file.exists(), "{step}[{k}]: {o}");
                if o.get("fallback").is_some() {
                    // Marked twice: sluice's reason, and the job's own flag.
                    assert_eq!(o["json"]["placeholder"], true, "{o}");
                    assert_eq!(file, ex.path("placeholders").join(placeholder));
                    placeholders += 1;
                    if step != "voice" {
                        image_placeholders += 1;
                    }
                    continue;
                }
                // A real asset, made for this episode and element: order kept.
                let made = produced_by(file);
                assert_eq!(made["input"]["episode"], episode["id"], "{step}[{k}]");
                assert_eq!(made["input"][key], k, "{step}[{k}]");
            }
        }
    }
    // Every image placeholder stands for a prompt the image service refused
    // (a 422 is final: one call each); voice errors were transient, retried.
    let stats = images.stats();
    assert!(image_placeholders > 0, "the seeded refusals happened");
    assert_eq!(image_placeholders, u(&stats["rejected"]), "{stats}");
    assert_eq!(u(&run["this_run"]["fallbacks"]), placeholders);
    assert!(u(&voice.stats()["server_errors"]) > 0);
    // One rate for all episodes: 1,200/min is 20 in any second (plus the
    // one request of burst, plus what a stall bunches), though three
    // episodes × four calls at 10 ms each could send far more; and the
    // episodes' requests interleaved.
    let journal = images.journal("/stages/");
    let most = most_in_window(&journal, 1_000);
    assert!(
        most <= 21 + STALLED,
        "{most} image requests within one second"
    );
    let sent: Vec<String> = journal
        .iter()
        .map(|e| {
            let body: Value = serde_json::from_str(e["body"].as_str().unwrap()).unwrap();
            body["episode"].as_str().unwrap().to_string()
        })
        .collect();
    let switches = sent.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(
        switches > input.len(),
        "episodes ran side by side: {sent:?}"
    );
}

#[test]
fn video_episodes_run_strictly_in_order_with_one_worker() {
    let ex = Example::copy("video-episodes");
    let (voice, images) = services();
    ex.point(9301, &voice);
    ex.point(9302, &images);
    let out = ex.run(&[
        "--set",
        "providers.images.rpm=6000",
        "--set",
        "concurrency=1",
        "--set",
        "max_in_flight=1",
        "--set",
        "steps.*.concurrency=1",
        "--json",
    ]);
    summary(&out, 0);
    // Every call of both services, by when it arrived: one episode after the
    // other, each step's elements in order (a retry repeats its element).
    let mut calls: Vec<(u64, String)> = Vec::new();
    for mock in [&voice, &images] {
        for e in mock.journal("/stages/") {
            let body: Value = serde_json::from_str(e["body"].as_str().unwrap()).unwrap();
            let k = ["line", "scene", "cue"]
                .iter()
                .find_map(|key| body.get(*key).map(|v| format!("{key} {v}")))
                .unwrap();
            calls.push((
                u(&e["unix_ms"]),
                format!("{} {k}", body["episode"].as_str().unwrap()),
            ));
        }
    }
    calls.sort_by_key(|(at, _)| *at);
    let mut order: Vec<String> = calls.into_iter().map(|(_, c)| c).collect();
    order.dedup();
    // One episode after the other; within one, its three kinds of asset take
    // turns (they need nothing of each other), each kind's elements in order.
    let mut expected = Vec::new();
    for episode in episodes(&ex) {
        let id = episode["id"].as_str().unwrap();
        let mut mine: Vec<String> = order
            .iter()
            .filter(|c| c.starts_with(&format!("{id} ")))
            .cloned()
            .collect();
        for (list, key) in [("lines", "line"), ("scenes", "scene"), ("broll", "cue")] {
            let kind: Vec<String> = mine
                .iter()
                .filter(|c| c.starts_with(&format!("{id} {key} ")))
                .cloned()
                .collect();
            let in_order: Vec<String> = (0..episode[list].as_array().unwrap().len())
                .map(|k| format!("{id} {key} {k}"))
                .collect();
            assert_eq!(kind, in_order, "{id} {key}s in order");
        }
        expected.append(&mut mine);
    }
    assert_eq!(order, expected, "one episode after the other");
    for mock in [&voice, &images] {
        assert_eq!(mock.stats()["max_in_flight"], 1);
    }
}

/// One episode at a time, 200 ms a call: an episode's voice lines, scenes
/// and b-roll start together, at most `max_in_flight` (5) calls at once — and
/// more without that cap.
#[test]
fn video_episodes_overlap_an_episodes_assets_under_its_max_in_flight() {
    let mut image_peaks = Vec::new();
    for cap in ["5", "12"] {
        let ex = Example::copy("video-episodes");
        let slow = |seed: &str| Mock::start(&["--latency-ms", "200", "--seed", seed]);
        let (voice, images) = (slow("4"), slow("5"));
        ex.point(9301, &voice);
        ex.point(9302, &images);
        let out = ex.run(&[
            "--set",
            "providers.images.rpm=60000",
            "--set",
            "concurrency=1",
            "--set",
            &format!("max_in_flight={cap}"),
            "--json",
        ]);
        summary(&out, 0);
        for r in ex.results() {
            let times = |step: &str, field: &str| -> Vec<String> {
                r["steps"][step]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|o| o[field].as_str().unwrap().to_owned())
                    .collect()
            };
            // Scenes and b-roll began before the voice lines were done (a
            // call takes at least 200 ms): the episode's assets overlapped.
            let voice_end = times("voice", "finished_at").into_iter().max().unwrap();
            for step in ["scenes", "broll"] {
                let start = times(step, "started_at").into_iter().min().unwrap();
                assert!(start < voice_end, "{step} waited for voice: {r}");
            }
        }
        let peak = u(&images.stats()["max_in_flight"]);
        assert!(
            u(&voice.stats()["max_in_flight"]) <= 4,
            "the voice step's own cap"
        );
        image_peaks.push(peak);
    }
    // With 5, the image service never saw more than one episode's 5; with
    // 12, the first episode's 4 scenes and 3 b-roll cues went out together.
    assert!(image_peaks[0] <= 5, "{image_peaks:?}");
    assert!(image_peaks[1] > 5, "{image_peaks:?}");
}
