# Sourced by each example's run.sh (after `cd` into the example): builds
# sluice once, starts fake services with `start_mock PORT FLAGS...` (and the
# server with `start_serve PORT FLAGS...`), and stops them when the script
# ends, however it ends. Set SLUICE=/path/to/sluice to
# skip the build.
set -eu
ROOT=$(cd ../.. && pwd)
if [ -z "${SLUICE:-}" ]; then
    (cd "$ROOT" && cargo build --release --quiet)
    SLUICE="$ROOT/target/release/sluice"
fi
MOCKS=""
LOGS=$(mktemp -d)
stop_mocks() {
    for pid in $MOCKS; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$LOGS"
}
trap stop_mocks EXIT
trap 'exit 130' INT TERM

# start_mock PORT [sluice mock flags...]: starts it and waits until it listens.
start_mock() {
    port=$1
    shift
    : >"$LOGS/$port.log"
    "$SLUICE" mock --port "$port" "$@" >"$LOGS/$port.log" 2>&1 &
    MOCKS="$MOCKS $!"
    wait_listening "$port"
}

# start_serve PORT [sluice serve flags...]: starts `sluice serve` on
# 127.0.0.1:PORT and waits until it listens (stopped like the mocks). Its
# token is $SLUICE_TOKEN, made up here when not set (clients read it there).
start_serve() {
    port=$1
    shift
    if [ -z "${SLUICE_TOKEN:-}" ]; then
        SLUICE_TOKEN=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
        export SLUICE_TOKEN
    fi
    : >"$LOGS/$port.log"
    "$SLUICE" serve --bind "127.0.0.1:$port" "$@" >"$LOGS/$port.log" 2>&1 &
    MOCKS="$MOCKS $!"
    wait_listening "$port"
}

wait_listening() {
    tries=0
    until grep -q "listening on" "$LOGS/$1.log"; do
        tries=$((tries + 1))
        if [ "$tries" -gt 100 ]; then
            echo "the process on port $1 did not start:" >&2
            cat "$LOGS/$1.log" >&2
            exit 1
        fi
        sleep 0.1
    done
}
