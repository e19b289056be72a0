-- 0004_workers.sql: live state of the processes working on a run (one row per
-- process and run, rewritten by its heartbeat), and named pieces of run state
-- kept with the run (e.g. submitted provider batches, spend).

CREATE TABLE workers (
    run_id     TEXT    NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    worker_id  TEXT    NOT NULL,
    host       TEXT    NOT NULL,
    pid        INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    beat_at    INTEGER NOT NULL,
    state      TEXT    NOT NULL,
    in_flight  INTEGER NOT NULL,
    -- The engine's live counters as JSON text.
    live       TEXT    NOT NULL,
    PRIMARY KEY (run_id, worker_id)
);

CREATE TABLE run_state (
    run_id     TEXT    NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    key        TEXT    NOT NULL,
    -- JSON text.
    value      TEXT    NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (run_id, key)
);
