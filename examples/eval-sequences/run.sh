#!/bin/sh
# Starts the fake CMS + model API on 127.0.0.1:9100, runs the job, stops them.
# Extra arguments go to `sluice run` (e.g. --fresh).
cd "$(dirname "$0")"
. ../lib.sh
# 200–300 ms a call, 3% of calls fail with a 500, 429 beyond 8 in flight.
start_mock 9100 --cms cms --latency-ms 200 --jitter-ms 100 --completion-tokens 40 \
    --max-concurrency 8 --fail-rate 0.03 --seed 1
"$SLUICE" run job.toml --set matrix.model=a,b --set matrix.run=1,2,3 "$@"
