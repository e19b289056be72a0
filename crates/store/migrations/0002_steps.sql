-- 0002_steps.sql: per-step outcomes of job-file pipelines, so a resumed run
-- continues each unit at its first unfinished step (or fan-out element, or
-- conversation turn).

CREATE TABLE steps (
    run_id            TEXT    NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    -- The unit: an input item × one matrix combination.
    unit_id           TEXT    NOT NULL,
    step              TEXT    NOT NULL,
    -- -1 for a whole step; the element of a fan-out or the turn of a conversation otherwise.
    part              INTEGER NOT NULL,
    -- Hash of the rendered request (u64 bit-cast): a changed request runs again.
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
    error             TEXT,
    -- JSON: the step's output ({text, json, file, status, usage}).
    output            TEXT,
    PRIMARY KEY (run_id, unit_id, step, part)
);
