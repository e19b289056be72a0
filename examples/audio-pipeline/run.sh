#!/bin/sh
# Starts three fake GPU hosts (9201–9203; 9203 fails 30% of its calls), the
# fake LLM API + CMS + webhook receiver (9200), runs the job, stops them.
# Extra arguments go to `sluice run` (e.g. --fresh).
cd "$(dirname "$0")"
. ../lib.sh
export HOOK_SECRET="${HOOK_SECRET:-audio-demo-secret}"
for port in 9201 9202; do
    start_mock "$port" --latency-ms 80 --jitter-ms 40 --max-upload-bytes 16384
done
start_mock 9203 --latency-ms 80 --jitter-ms 40 --max-upload-bytes 16384 --fail-rate 0.3 --seed 3
start_mock 9200 --latency-ms 150 --jitter-ms 100 --completion-tokens 60 \
    --max-concurrency 100 --hook-secret-env HOOK_SECRET
"$SLUICE" run job.toml "$@"
