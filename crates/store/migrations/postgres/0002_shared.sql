-- 0002_shared.sql: what several processes need to work one run together:
-- the job definition kept with the run, its units as a queue with leases, and
-- shared limiter state.

-- The job a shared run executes, so `sluice worker` can rebuild it without
-- the job file. Never secrets: keys are read from each worker's environment.
CREATE TABLE run_jobs (
    run_id     TEXT COLLATE "C"    NOT NULL PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,
    -- The job file's path where the run was created (messages, relative paths).
    path       TEXT    NOT NULL,
    -- The job file's text.
    body       TEXT    NOT NULL,
    -- The `--set` overrides, a JSON array of strings.
    sets       TEXT    NOT NULL,
    -- False while the creator is still enqueueing units: a worker that finds
    -- the queue empty must not call the run finished yet.
    ready      BOOLEAN NOT NULL,
    updated_at BIGINT  NOT NULL
);

-- Every unit of a shared run: queued, leased to one worker, or done (has an
-- item record). A lease is lost once past `lease_expires` with its worker's
-- heartbeat (workers.seen_at) older than `lease_ms`.
CREATE TABLE units (
    run_id        TEXT COLLATE "C"    NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    unit_id       TEXT COLLATE "C"    NOT NULL,
    idx           BIGINT  NOT NULL,
    hash          BIGINT  NOT NULL,
    -- JSON: what a worker needs to run the unit (item, matrix values, ...).
    body          TEXT    NOT NULL,
    state         TEXT    NOT NULL CHECK (state IN ('queued', 'leased', 'done')),
    lease_owner   TEXT,
    -- Fencing token: a fresh number per claim; a result is accepted only
    -- with the token of the unit's current lease.
    lease_token   BIGINT,
    -- Database clock, unix ms.
    lease_expires BIGINT,
    lease_ms      BIGINT,
    -- Times the unit was claimed (more than 1: a lease was lost or released).
    claims        BIGINT  NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, unit_id)
);

-- A unit's lease also holds while its worker beats: `seen_at` is the
-- database clock at the worker's last heartbeat (one row a second renews
-- every unit the worker holds).
ALTER TABLE workers ADD COLUMN seen_at BIGINT NOT NULL DEFAULT 0;

-- Claims take queued units in input order, and look at leased ones (for
-- lost leases) only when the queue runs short.
CREATE INDEX units_queued ON units (run_id, idx) WHERE state = 'queued';
CREATE INDEX units_leased ON units (run_id, idx) WHERE state = 'leased';
-- Release by worker.
CREATE INDEX units_by_owner ON units (run_id, lease_owner) WHERE state = 'leased';
-- Fencing: results find their leases by token.
CREATE INDEX units_by_token ON units (lease_token) WHERE state = 'leased';

CREATE SEQUENCE lease_tokens;

-- Limiter state shared by every worker (rate schedule, pauses, announced
-- limits, breakers, concurrency shares), one JSON value per key, changed
-- only under the row's lock.
CREATE TABLE shared_state (
    key        TEXT COLLATE "C"   NOT NULL PRIMARY KEY,
    value      TEXT   NOT NULL,
    updated_at BIGINT NOT NULL
);
