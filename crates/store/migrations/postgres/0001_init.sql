-- 0001_init.sql: the first PostgreSQL schema of the sluice store: the SQLite
-- schema up to its version 4 (runs, item outcomes, step records, the cache,
-- worker heartbeats, named run state) in PostgreSQL's dialect.
-- Applied once by PostgresStore::open under an advisory lock; the table
-- sluice_schema records the version. Never edit a released migration: add
-- 0003_*.sql instead.

CREATE TABLE runs (
    -- `<name>-<seq>`, shown to users and typed back in `sluice status RUN`.
    id          TEXT COLLATE "C"    NOT NULL PRIMARY KEY,
    name        TEXT COLLATE "C"    NOT NULL,
    seq         BIGINT  NOT NULL,
    -- Resume key, e.g. the job file and its input.
    source      TEXT COLLATE "C"    NOT NULL,
    created_at  BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL,
    finished_at BIGINT,
    total       BIGINT,
    -- JSON text, never secrets.
    settings    TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    -- Insertion order: the tie-break SQLite gets from rowid.
    ord         BIGINT  GENERATED ALWAYS AS IDENTITY,
    UNIQUE (name, seq)
);

CREATE INDEX runs_by_source ON runs (source, created_at, seq);

-- One row per item that reached an outcome; an item without a row is pending.
CREATE TABLE items (
    run_id            TEXT COLLATE "C"    NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    item_id           TEXT COLLATE "C"    NOT NULL,
    idx               BIGINT  NOT NULL,
    -- The request's u64 hash bit-cast to i64.
    hash              BIGINT  NOT NULL,
    status            TEXT    NOT NULL CHECK (status IN ('done', 'failed')),
    attempts          BIGINT  NOT NULL,
    throttled         BIGINT  NOT NULL,
    status_code       BIGINT,
    prompt_tokens     BIGINT,
    completion_tokens BIGINT,
    latency_ms        BIGINT  NOT NULL,
    started_at        BIGINT  NOT NULL,
    finished_at       BIGINT  NOT NULL,
    custom_id         TEXT,
    error             TEXT,
    metadata          TEXT,
    response          TEXT,
    PRIMARY KEY (run_id, item_id)
);

-- Export order: input position, then id for items sharing one.
CREATE INDEX items_by_position ON items (run_id, idx, item_id);

CREATE TABLE steps (
    run_id            TEXT COLLATE "C"    NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    unit_id           TEXT COLLATE "C"    NOT NULL,
    step              TEXT COLLATE "C"    NOT NULL,
    -- -1 for a whole step; the element of a fan-out or the turn of a conversation otherwise.
    part              BIGINT  NOT NULL,
    hash              BIGINT  NOT NULL,
    status            TEXT    NOT NULL CHECK (status IN ('done', 'failed')),
    attempts          BIGINT  NOT NULL,
    throttled         BIGINT  NOT NULL,
    status_code       BIGINT,
    prompt_tokens     BIGINT,
    completion_tokens BIGINT,
    latency_ms        BIGINT  NOT NULL,
    started_at        BIGINT  NOT NULL,
    finished_at       BIGINT  NOT NULL,
    error             TEXT,
    output            TEXT,
    PRIMARY KEY (run_id, unit_id, step, part)
);

-- Step outputs by request hash, shared by every run in the store.
CREATE TABLE cache (
    key        BIGINT NOT NULL PRIMARY KEY,
    output     TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE workers (
    run_id     TEXT COLLATE "C"    NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    worker_id  TEXT COLLATE "C"    NOT NULL,
    host       TEXT    NOT NULL,
    pid        BIGINT  NOT NULL,
    started_at BIGINT  NOT NULL,
    beat_at    BIGINT  NOT NULL,
    state      TEXT    NOT NULL,
    in_flight  BIGINT  NOT NULL,
    live       TEXT    NOT NULL,
    PRIMARY KEY (run_id, worker_id)
);

CREATE TABLE run_state (
    run_id     TEXT COLLATE "C"    NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    key        TEXT COLLATE "C"    NOT NULL,
    value      TEXT    NOT NULL,
    updated_at BIGINT  NOT NULL,
    PRIMARY KEY (run_id, key)
);
