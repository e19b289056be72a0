-- 0003_executions.sql: who executes a run that one process works at a time
-- (quick mode), under a lease renewed by its heartbeat, and which items the
-- run's current input holds (exports and counts follow the input). The SQLite
-- schema's version 5, in PostgreSQL's dialect.

-- One row per resume key (a run's `source`): the process executing it.
CREATE TABLE run_leases (
    source      TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    -- Unique per execution: `<host>:<pid>:<started_at>#<n>`.
    holder      TEXT    NOT NULL,
    host        TEXT    NOT NULL,
    pid         BIGINT  NOT NULL,
    -- Boot id and pid namespace of the holder (see the SQLite migration).
    machine     TEXT    NOT NULL,
    pid_start   BIGINT,
    -- Database clock, unix ms.
    acquired_at BIGINT  NOT NULL,
    renewed_at  BIGINT  NOT NULL,
    expires_at  BIGINT  NOT NULL
);

-- The items of a run's input as its latest execution read them.
CREATE TABLE inputs (
    run_id  TEXT COLLATE "C" NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    item_id TEXT COLLATE "C" NOT NULL,
    idx     BIGINT  NOT NULL,
    hash    BIGINT  NOT NULL,
    PRIMARY KEY (run_id, item_id)
);

CREATE INDEX inputs_by_position ON inputs (run_id, idx, item_id);
