#!/bin/sh
# Starts a fake image model on 127.0.0.1:9500 (300–900 ms an image) and
# `sluice serve` on 127.0.0.1:9501 (store: .sluice/ here), submits the 12
# images both ways with compare.py, shows that the run's temporary files are
# gone, and stops both. Extra arguments go to compare.py (e.g. --json).
cd "$(dirname "$0")"
. ../lib.sh
start_mock 9500 --latency-ms 300 --jitter-ms 600 --seed 8
# WORKERS: images of a batch at the model at once (the seed's MAX_WORKERS).
start_serve 9501 --store .sluice/sluice.db \
    --default-concurrency "${WORKERS:-4}" --max-concurrency "${WORKERS:-4}"
python3 compare.py --server http://127.0.0.1:9501 "$@"
left=$(find .sluice/uploads -mindepth 2 -type d 2>/dev/null | wc -l)
echo "temporary upload directories left: $left"
