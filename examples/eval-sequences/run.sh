#!/bin/sh
# Starts the fake CMS + three model APIs on 127.0.0.1:9100-9102, runs the
# job, stops them. Extra arguments go to `sluice run` (e.g. --fresh).
cd "$(dirname "$0")"
. ../lib.sh
# 200–300 ms a call, 3% of calls fail with a 500, 429 beyond each provider's
# own limit: the CMS and an OpenAI-compatible API (16 at once) on 9100,
# Anthropic's Messages API (12) on 9101, the lab's 72B model (8) on 9102.
start_mock 9100 --cms cms --latency-ms 200 --jitter-ms 100 --completion-tokens 40 \
    --max-concurrency 16 --fail-rate 0.03 --seed 1
start_mock 9101 --latency-ms 200 --jitter-ms 100 --completion-tokens 40 \
    --max-concurrency 12 --fail-rate 0.03 --seed 2
start_mock 9102 --latency-ms 200 --jitter-ms 100 --completion-tokens 40 \
    --max-concurrency 8 --fail-rate 0.03 --seed 3
"$SLUICE" run job.toml "$@"
