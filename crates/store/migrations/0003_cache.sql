-- 0003_cache.sql: step outputs keyed by the hash of their rendered request,
-- shared by every run in the store, so `cache = { ttl }` skips calls made
-- recently by any run.

CREATE TABLE cache (
    -- The request hash (u64 bit-cast), including the step kind and provider.
    key        INTEGER NOT NULL PRIMARY KEY,
    -- The step output as JSON text.
    output     TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);
