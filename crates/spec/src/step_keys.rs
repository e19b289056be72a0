//! The keys each step kind takes: read by the document (to set unknown keys
//! aside) and by the step builder (to report them with their kind's keys).

/// Keys every step kind takes.
pub(crate) const COMMON: [&str; 9] = [
    "name",
    "kind",
    "concurrency",
    "for_each",
    "timeout",
    "retries",
    "fallback",
    "assume_latency",
    "needs",
];

/// The step kinds and the keys each takes besides [`COMMON`].
pub(crate) const KINDS: [(&str, &[&str]); 5] = [
    (
        "chat",
        &[
            "provider",
            "model",
            "messages",
            "params",
            "response_format",
            "path",
            "cache",
            "stream",
            "affinity",
            "affinity_failover",
        ],
    ),
    (
        "embed",
        &[
            "provider", "model", "input", "params", "path", "cache", "batch",
        ],
    ),
    (
        "http",
        &[
            "provider",
            "method",
            "url",
            "path",
            "headers",
            "json",
            "body",
            "upload",
            "save",
            "cache",
            "affinity",
            "affinity_failover",
        ],
    ),
    ("command", &["command", "stdin"]),
    (
        "conversation",
        &[
            "provider", "model", "system", "turns", "params", "path", "stream",
        ],
    ),
];

/// Whether `key` is a key of some step kind (unknown keys are reported by
/// [`steps`] with the keys of the step's own kind).
pub(crate) fn is_step_key(key: &str) -> bool {
    COMMON.contains(&key) || KINDS.iter().any(|(_, fields)| fields.contains(&key))
}

/// The keys a step of `kind` takes, in the order the docs list them.
pub(crate) fn kind_keys(kind: &str) -> Option<Vec<&'static str>> {
    let (_, fields) = KINDS.iter().find(|(k, _)| *k == kind)?;
    Some(COMMON.iter().chain(fields.iter()).copied().collect())
}
