//! The PostgreSQL store: one connection per `PostgresStore` value, for runs
//! that several processes (on several machines) work on together.
//!
//! Durability: every call returns after its transaction committed with the
//! server's default `synchronous_commit = on`, so a result survives the
//! worker and the database server crashing. Schema changes are versioned
//! migrations (`migrations/postgres/`), applied under an advisory lock so
//! workers starting at the same moment migrate once.

mod conn;
mod executions;
mod heartbeats;
mod queue;
mod rows;
mod steps;
mod store;

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use conn::{Conn, Handle};

use crate::{During, Error, Result};

/// The schema, one step per version: entry `i` migrates version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/postgres/0001_init.sql"),
    include_str!("../../migrations/postgres/0002_shared.sql"),
    include_str!("../../migrations/postgres/0003_executions.sql"),
];

/// A connection to a PostgreSQL store.
///
/// Open one per thread that needs it, as with SQLite. Each value owns a
/// connection and a small thread that talks to the server (see `conn.rs`).
pub struct PostgresStore {
    handle: Handle,
    /// The URL without credentials, for messages.
    shown: String,
    /// Per run, the input position after the last unit this connection
    /// claimed: the next claim looks from there first, so it does not walk
    /// the index entries of every unit claimed before (dead until vacuumed).
    claim_from: std::collections::HashMap<String, i64>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("url", &self.shown)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user@host:port/db`, libpq URL
    /// parameters such as `options=-csearch_path%3Dname` allowed) and
    /// migrates the schema to the newest version.
    pub fn open(url: &str) -> Result<PostgresStore> {
        PostgresStore::open_at(url, MIGRATIONS.len())
    }

    /// Connects and migrates up to `version` only (tests of migrations).
    pub(crate) fn open_at(url: &str, version: usize) -> Result<PostgresStore> {
        let shown = crate::redact_url(url);
        let path = PathBuf::from(&shown);
        let mut config = tokio_postgres::Config::from_str(url).map_err(|e| Error::Open {
            path: path.clone(),
            hint: " (expected postgres://USER@HOST:PORT/DATABASE)",
            cause: conn::PgError::boxed(&e),
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        if config.get_application_name().is_none() {
            // A URL's own `application_name` wins: operators tell processes apart by it.
            config.application_name("sluice");
        }
        let open_path = path.clone();
        let open_error = move |cause, hint| Error::Open {
            path: open_path.clone(),
            hint,
            cause,
        };
        let handle = Handle::start(config, open_error, move |conn| {
            migrate(conn, &path, version)
        })?;
        Ok(PostgresStore {
            handle,
            shown,
            claim_from: std::collections::HashMap::new(),
        })
    }
}

/// Brings the schema to `target`. The fast path reads the version without a
/// lock; otherwise one transaction holds an advisory lock (per schema), so
/// concurrent openers wait and then find the work done.
fn migrate(conn: &mut Conn, path: &std::path::Path, target: usize) -> Result<()> {
    let known = MIGRATIONS.len() as i64;
    let open_err = |e: tokio_postgres::Error| Error::Open {
        path: path.to_path_buf(),
        hint: hint(&e),
        cause: conn::PgError::boxed(&e),
    };
    let too_new = |found| Error::TooNew {
        path: path.to_path_buf(),
        found,
        known,
    };
    let version = |conn: &mut Conn| -> std::result::Result<Option<i64>, tokio_postgres::Error> {
        let exists = conn
            .query_opt("SELECT to_regclass('sluice_schema') IS NOT NULL", &[])?
            .is_some_and(|r| r.get::<_, bool>(0));
        if !exists {
            return Ok(None);
        }
        Ok(conn
            .query_opt("SELECT version FROM sluice_schema", &[])?
            .map(|r| r.get::<_, i64>(0)))
    };
    let target = target as i64;
    match version(conn).map_err(open_err)? {
        Some(v) if v > known => return Err(too_new(v)),
        Some(v) if v >= target => return Ok(()),
        _ => {}
    }
    conn.batch("BEGIN").map_err(open_err)?;
    let result = (|| {
        conn.batch(
            "SELECT pg_advisory_xact_lock(hashtext('sluice-migrate:' || current_schema())); \
             CREATE TABLE IF NOT EXISTS sluice_schema (version BIGINT NOT NULL)",
        )
        .map_err(open_err)?;
        let current = match version(conn).map_err(open_err)? {
            Some(v) => v,
            None => {
                conn.batch("INSERT INTO sluice_schema (version) VALUES (0)")
                    .map_err(open_err)?;
                0
            }
        };
        if current > known {
            return Err(too_new(current));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate() {
            let to = i as i64 + 1;
            if to <= current || to > target {
                continue;
            }
            conn.batch(sql).map_err(open_err)?;
            conn.batch(&format!("UPDATE sluice_schema SET version = {to}"))
                .map_err(open_err)?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => conn.batch("COMMIT").map_err(open_err),
        Err(e) => {
            let _ = conn.batch("ROLLBACK");
            Err(e)
        }
    }
}

impl<T> During<T> for std::result::Result<T, tokio_postgres::Error> {
    fn during(self, op: &'static str) -> Result<T> {
        self.map_err(|e| Error::Db {
            op,
            hint: hint(&e),
            cause: conn::PgError::boxed(&e),
        })
    }
}

/// What to try, for the PostgreSQL errors a user can do something about.
fn hint(e: &tokio_postgres::Error) -> &'static str {
    use tokio_postgres::error::SqlState;
    if let Some(code) = e.code() {
        return match code {
            c if *c == SqlState::INVALID_CATALOG_NAME => {
                " (the database does not exist: create it with `createdb NAME`)"
            }
            c if *c == SqlState::INVALID_PASSWORD
                || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION =>
            {
                " (check the user and password in the URL)"
            }
            c if *c == SqlState::INSUFFICIENT_PRIVILEGE => {
                " (the user may not create tables here: grant it, or use another schema)"
            }
            c if *c == SqlState::TOO_MANY_CONNECTIONS => {
                " (the server has no free connections: raise max_connections or run fewer workers)"
            }
            c if *c == SqlState::DISK_FULL => " (the database server's disk is full)",
            _ => "",
        };
    }
    let text = e.to_string();
    if e.is_closed() || text.contains("connect") || text.contains("timed out") {
        " (is PostgreSQL running and reachable at that address?)"
    } else if text.contains("TLS") || text.contains("tls") {
        " (this build connects without TLS: use sslmode=disable, or reach the server over a tunnel)"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests;
