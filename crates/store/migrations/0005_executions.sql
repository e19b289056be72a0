-- 0005_executions.sql: who executes a run (one process at a time, under a lease
-- renewed by its heartbeat) and which items the run's current input holds (so
-- exports and counts follow the input: deleted lines gone, pending lines shown).

-- One row per resume key (a run's `source`): the process executing it. Keyed by
-- the source rather than the run, so two processes starting the same input at
-- once cannot both create a run for it.
CREATE TABLE run_leases (
    source      TEXT    NOT NULL PRIMARY KEY,
    -- Unique per execution: `<host>:<pid>:<started_at>#<n>`.
    holder      TEXT    NOT NULL,
    host        TEXT    NOT NULL,
    pid         INTEGER NOT NULL,
    -- Boot id and pid namespace of the holder: where `pid` names that process,
    -- so a process there can tell at once that the holder is gone.
    machine     TEXT    NOT NULL,
    -- The holder's start time in clock ticks since boot (a reused pid differs).
    pid_start   INTEGER,
    acquired_at INTEGER NOT NULL,
    renewed_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);

-- The items of a run's input as its latest execution read them: id, position
-- and request hash. An item's record counts for the run only when its hash
-- matches (an edited line is pending until sent again).
CREATE TABLE inputs (
    run_id  TEXT    NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    item_id TEXT    NOT NULL,
    idx     INTEGER NOT NULL,
    hash    INTEGER NOT NULL,
    PRIMARY KEY (run_id, item_id)
) WITHOUT ROWID;

CREATE INDEX inputs_by_position ON inputs (run_id, idx, item_id);
