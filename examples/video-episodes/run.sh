#!/bin/sh
# Starts a fake TTS service (9301; 15% of calls fail, transiently) and a
# fake image service (9302; enforces 60 requests/minute and refuses 15% of
# prompts outright), runs the job, stops them. Extra arguments go to
# `sluice run`, e.g. --set concurrency=1 --set max_in_flight=1 --set 'steps.*.concurrency=1'.
cd "$(dirname "$0")"
. ../lib.sh
start_mock 9301 --latency-ms 300 --jitter-ms 200 --fail-rate 0.15 --seed 4
start_mock 9302 --latency-ms 800 --jitter-ms 400 --rpm 60 --reject-rate 0.15 --seed 5
"$SLUICE" run job.toml "$@"
