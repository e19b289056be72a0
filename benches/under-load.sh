#!/usr/bin/env bash
# Runs a command while CPU hogs keep every core busy, as a loaded CI machine
# or a shared developer box does, to show which tests lean on timing luck.
#
#   benches/under-load.sh [--hogs N] [--times K] -- COMMAND...
#
# N busy loops (default: one per core) run at the same priority as the
# command; the command runs K times in a row (default 1), stopping at the
# first failure. The hogs are ended (by their own pids) when this script
# exits, however it exits. Example, the issue's "suite three times under
# load":
#
#   benches/under-load.sh --times 3 -- cargo test --test cli
set -euo pipefail

hogs=$(nproc)
times=1
while [ $# -gt 0 ]; do
    case "$1" in
        --hogs) hogs=$2; shift 2 ;;
        --times) times=$2; shift 2 ;;
        --) shift; break ;;
        *) echo "usage: $0 [--hogs N] [--times K] -- COMMAND..." >&2; exit 2 ;;
    esac
done
[ $# -gt 0 ] || { echo "usage: $0 [--hogs N] [--times K] -- COMMAND..." >&2; exit 2; }

pids=()
stop_hogs() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
}
trap stop_hogs EXIT INT TERM
for _ in $(seq "$hogs"); do
    ( while :; do :; done ) &
    pids+=($!)
done
echo "under-load: $hogs CPU hogs running (pids ${pids[*]})" >&2

for i in $(seq "$times"); do
    started=$(date +%s)
    if "$@"; then
        echo "under-load: run $i of $times passed in $(( $(date +%s) - started )) s" >&2
    else
        code=$?
        echo "under-load: run $i of $times FAILED (exit $code) after $(( $(date +%s) - started )) s" >&2
        exit "$code"
    fi
done
