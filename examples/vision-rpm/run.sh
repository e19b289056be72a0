#!/bin/sh
# Starts a fake vision API on 127.0.0.1:9400 that enforces 60 requests/minute
# and takes 1–3 s a call (2% fail with a 500), runs the job, stops it. The run
# takes about 8.5 minutes; Ctrl-C stops it (state saved) and running this
# script again continues. Extra arguments go to `sluice run` (e.g. --fresh).
cd "$(dirname "$0")"
. ../lib.sh
start_mock 9400 --rpm 60 --latency-ms 1000 --jitter-ms 2000 --completion-tokens 120 \
    --fail-rate 0.02 --seed 9
"$SLUICE" run job.toml "$@"
