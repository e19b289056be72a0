//! Executor leases and input lists in SQLite.

use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::rows;
use super::SqliteStore;
use crate::num::output_columns;
use crate::{During, Error, InputCounts, InputRow, Lease, LeaseHolder, Output, Result, SinkError};

fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis())
        .unwrap_or(i64::MAX / 2)
        .max(1)
}

pub(super) fn acquire_lease(
    store: &mut SqliteStore,
    key: &str,
    holder: &LeaseHolder,
    ttl: Duration,
    replace: Option<&str>,
) -> Result<Option<Lease>> {
    // Granted when free, lapsed, already ours, or held by a process known to
    // be gone; the WHERE of the upsert decides, so one statement is the test
    // and the take.
    const TAKE: &str = "INSERT INTO run_leases (source, holder, host, pid, machine, pid_start, \
         acquired_at, renewed_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8) \
         ON CONFLICT (source) DO UPDATE SET holder = excluded.holder, host = excluded.host, \
         pid = excluded.pid, machine = excluded.machine, pid_start = excluded.pid_start, \
         acquired_at = CASE WHEN run_leases.holder = excluded.holder \
             THEN run_leases.acquired_at ELSE excluded.acquired_at END, \
         renewed_at = excluded.renewed_at, expires_at = excluded.expires_at \
         WHERE run_leases.expires_at <= excluded.renewed_at \
            OR run_leases.holder = excluded.holder OR run_leases.holder = ?9";
    let op = "take the run's lease";
    let tx = store
        .conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .during(op)?;
    let now = rows::now_ms();
    let pid_start = holder
        .pid_start
        .map(|t| rows::to_i64("process start", t))
        .transpose()?;
    let taken = tx
        .prepare_cached(TAKE)
        .and_then(|mut s| {
            s.execute(params![
                key,
                holder.holder,
                holder.host,
                holder.pid,
                holder.machine,
                pid_start,
                now,
                now.saturating_add(ttl_ms(ttl)),
                replace,
            ])
        })
        .during(op)?;
    let held = if taken == 1 {
        None
    } else {
        read_lease(&tx, key, now)?
    };
    tx.commit().during(op)?;
    Ok(held)
}

pub(super) fn renew_lease(
    store: &mut SqliteStore,
    key: &str,
    holder: &str,
    ttl: Duration,
) -> Result<bool> {
    let now = rows::now_ms();
    let changed = store
        .conn
        .prepare_cached(
            "UPDATE run_leases SET renewed_at = ?3, expires_at = ?4 \
             WHERE source = ?1 AND holder = ?2",
        )
        .and_then(|mut s| s.execute(params![key, holder, now, now.saturating_add(ttl_ms(ttl))]))
        .during("renew the run's lease")?;
    Ok(changed == 1)
}

pub(super) fn release_lease(store: &mut SqliteStore, key: &str, holder: &str) -> Result<()> {
    store
        .conn
        .prepare_cached("DELETE FROM run_leases WHERE source = ?1 AND holder = ?2")
        .and_then(|mut s| s.execute(params![key, holder]))
        .during("release the run's lease")?;
    Ok(())
}

pub(super) fn lease(store: &mut SqliteStore, key: &str) -> Result<Option<Lease>> {
    read_lease(&store.conn, key, rows::now_ms())
}

fn read_lease(conn: &Connection, key: &str, now: i64) -> Result<Option<Lease>> {
    let op = "read the run's lease";
    let row = conn
        .prepare_cached(
            "SELECT holder, host, pid, machine, pid_start, acquired_at, renewed_at, expires_at \
             FROM run_leases WHERE source = ?1",
        )
        .and_then(|mut s| {
            s.query_row([key], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                    [r.get::<_, i64>(5)?, r.get(6)?, r.get(7)?],
                ))
            })
            .optional()
        })
        .during(op)?;
    let Some((id, host, pid, machine, pid_start, [acquired_at, renewed_at, expires_at])) = row
    else {
        return Ok(None);
    };
    Ok(Some(Lease {
        key: key.to_owned(),
        holder: LeaseHolder {
            holder: id,
            host,
            pid: crate::num::to_u32("lease pid", pid)?,
            machine,
            pid_start: pid_start.map(|t| t as u64),
        },
        acquired_at,
        renewed_at,
        expires_at,
        now,
    }))
}

/// Whether the run has an input list (exports and counts follow it).
pub(super) fn has_inputs(conn: &Connection, run_id: &str) -> Result<bool> {
    conn.prepare_cached("SELECT 1 FROM inputs WHERE run_id = ?1 LIMIT 1")
        .and_then(|mut s| s.exists([run_id]))
        .during("read the run's input list")
}

pub(super) fn replace_inputs(
    store: &mut SqliteStore,
    run_id: &str,
    rows: &mut dyn Iterator<Item = std::result::Result<InputRow, SinkError>>,
) -> Result<InputCounts> {
    let op = "record the run's input list";
    let tx = store
        .conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .during(op)?;
    SqliteStore::touch(&tx, run_id)?;
    tx.execute("DELETE FROM inputs WHERE run_id = ?1", [run_id])
        .during(op)?;
    let mut total = 0u64;
    {
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO inputs (run_id, item_id, idx, hash) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (run_id, item_id) DO NOTHING",
            )
            .during(op)?;
        for row in rows {
            // Dropping `tx` on this error rolls everything back.
            let row = row.map_err(Error::Callback)?;
            total += insert
                .execute(params![
                    run_id,
                    row.item_id,
                    rows::to_i64("input idx", row.idx)?,
                    rows::hash_to_i64(row.hash),
                ])
                .during(op)? as u64;
        }
    }
    // Earlier failures are sent again by the execution starting now: until
    // then they are pending, not their old error.
    tx.execute(
        "DELETE FROM items WHERE run_id = ?1 AND status = 'failed'",
        [run_id],
    )
    .during(op)?;
    let done: i64 = tx
        .query_row(
            "SELECT COUNT(*) FROM inputs i JOIN items it ON it.run_id = i.run_id \
             AND it.item_id = i.item_id AND it.hash = i.hash \
             WHERE i.run_id = ?1 AND it.status = 'done'",
            [run_id],
            |r| r.get(0),
        )
        .during(op)?;
    tx.commit().during(op)?;
    Ok(InputCounts {
        total,
        done: rows::to_u64("done count", done)?,
    })
}

pub(super) fn for_each_output(
    store: &mut SqliteStore,
    run_id: &str,
    f: &mut dyn FnMut(Output) -> std::result::Result<(), SinkError>,
) -> Result<()> {
    const SQL: &str = concat!(
        "SELECT ",
        output_columns!(),
        " FROM inputs i LEFT JOIN items it ON it.run_id = i.run_id AND it.item_id = i.item_id \
         AND it.hash = i.hash WHERE i.run_id = ?1 ORDER BY i.idx, i.item_id"
    );
    store.ensure_run(run_id)?;
    if !has_inputs(&store.conn, run_id)? {
        return crate::Store::for_each_item(store, run_id, &mut |r| f(Output::Recorded(r)));
    }
    let op = "read items";
    let mut stmt = store.conn.prepare_cached(SQL).during(op)?;
    let mut rows = stmt.query([run_id]).during(op)?;
    while let Some(row) = rows.next().during(op)? {
        f(crate::num::output_from(row)?).map_err(Error::Callback)?;
    }
    Ok(())
}
