-- 0001_init.sql: the first SQLite schema of the sluice store (runs and item outcomes).
-- Applied once by SqliteStore::open inside one transaction; PRAGMA user_version
-- records that it ran. Never edit a released migration: add 0002_*.sql instead.

CREATE TABLE runs (
    -- `<name>-<seq>`, shown to users and typed back in `sluice status RUN`.
    id          TEXT    NOT NULL PRIMARY KEY,
    name        TEXT    NOT NULL,
    -- Counts runs of one name from 1; kept apart from `id` so ordering is numeric.
    seq         INTEGER NOT NULL,
    -- Resume key, e.g. the canonical input path.
    source      TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    finished_at INTEGER,
    total       INTEGER,
    -- JSON text, never secrets.
    settings    TEXT    NOT NULL,
    state       TEXT    NOT NULL,
    UNIQUE (name, seq)
);

CREATE INDEX runs_by_source ON runs (source, created_at, seq);

-- One row per item that reached an outcome; an item without a row is pending.
-- Small fixed-size columns come first and the large texts last, so aggregates
-- (counts, lookups) never read a response body's overflow pages.
CREATE TABLE items (
    run_id            TEXT    NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    item_id           TEXT    NOT NULL,
    idx               INTEGER NOT NULL,
    -- The request's u64 hash bit-cast to i64.
    hash              INTEGER NOT NULL,
    status            TEXT    NOT NULL CHECK (status IN ('done', 'failed')),
    attempts          INTEGER NOT NULL,
    throttled         INTEGER NOT NULL,
    status_code       INTEGER,
    prompt_tokens     INTEGER,
    completion_tokens INTEGER,
    latency_ms        INTEGER NOT NULL,
    started_at        INTEGER NOT NULL,
    finished_at       INTEGER NOT NULL,
    custom_id         TEXT,
    error             TEXT,
    metadata          TEXT,
    response          TEXT,
    PRIMARY KEY (run_id, item_id)
);

-- Export order: input position, then id for items sharing one (matrix expansions).
CREATE INDEX items_by_position ON items (run_id, idx, item_id);
