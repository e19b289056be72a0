//! Integration tests: the real `sluice` binary against a real `sluice mock`
//! process on 127.0.0.1.

mod fakehost;
mod pg;
mod util;
#[path = "../support/watchdog.rs"]
mod watchdog;

mod batches;
mod bench;
mod browser;
mod checks;
mod commands;
mod conformance;
mod control;
mod conventions;
mod dialects;
mod examples;
mod executors;
mod exports;
mod faults;
mod input;
mod jobs;
mod jobs_more;
mod limits;
mod plan;
mod resilience;
mod results;
mod resume;
mod run;
mod seeds;
mod serve;
mod serve_attacks;
mod serve_streams;
mod shared;
mod shell;
mod stops;
mod survive;
