//! Executor leases and input lists in PostgreSQL. Leases are measured by
//! the database clock, like the unit leases of shared runs.

use std::time::Duration;

use super::conn::{Conn, Handle};
use super::queue::db_now_ms;
use super::rows;
use super::store::{ensure_run, touch};
use crate::num::{self, hash_to_i64, output_columns, to_i64, to_u64};
use crate::{During, Error, InputCounts, InputRow, Lease, LeaseHolder, Output, Result, SinkError};

/// Input rows sent to the server per statement.
const CHUNK: usize = 2_000;

fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis())
        .unwrap_or(i64::MAX / 2)
        .max(1)
}

pub(super) fn acquire_lease(
    handle: &Handle,
    key: &str,
    holder: &LeaseHolder,
    ttl: Duration,
    replace: Option<&str>,
) -> Result<Option<Lease>> {
    // Granted when free, lapsed, already ours, or held by a process known to
    // be gone: the WHERE of the upsert decides, so one statement is the test
    // and the take, atomic under concurrent callers.
    const TAKE: &str = concat!(
        "INSERT INTO run_leases (source, holder, host, pid, machine, pid_start, \
         acquired_at, renewed_at, expires_at) SELECT $1::text, $2::text, $3::text, $4::int8, \
         $5::text, $6::int8, t.now, t.now, t.now + $7::int8 FROM (SELECT ",
        db_now_ms!(),
        " AS now) t ON CONFLICT (source) DO UPDATE SET holder = excluded.holder, \
         host = excluded.host, pid = excluded.pid, machine = excluded.machine, \
         pid_start = excluded.pid_start, \
         acquired_at = CASE WHEN run_leases.holder = excluded.holder \
             THEN run_leases.acquired_at ELSE excluded.acquired_at END, \
         renewed_at = excluded.renewed_at, expires_at = excluded.expires_at \
         WHERE run_leases.expires_at <= excluded.renewed_at \
            OR run_leases.holder = excluded.holder OR run_leases.holder = $8::text"
    );
    let (key, holder, replace) = (key.to_owned(), holder.clone(), replace.map(str::to_owned));
    let pid_start = holder
        .pid_start
        .map(|t| to_i64("process start", t))
        .transpose()?;
    let ttl = ttl_ms(ttl);
    handle.call(move |c| {
        let op = "take the run's lease";
        c.tx(op, |c| {
            let taken = c
                .execute(
                    TAKE,
                    &[
                        &key,
                        &holder.holder,
                        &holder.host,
                        &i64::from(holder.pid),
                        &holder.machine,
                        &pid_start,
                        &ttl,
                        &replace,
                    ],
                )
                .during(op)?;
            if taken == 1 {
                Ok(None)
            } else {
                read_lease(c, &key)
            }
        })
    })
}

pub(super) fn renew_lease(handle: &Handle, key: &str, holder: &str, ttl: Duration) -> Result<bool> {
    const SQL: &str = concat!(
        "UPDATE run_leases SET renewed_at = t.now, expires_at = t.now + $3::int8 FROM (SELECT ",
        db_now_ms!(),
        " AS now) t WHERE source = $1 AND holder = $2"
    );
    let (key, holder, ttl) = (key.to_owned(), holder.to_owned(), ttl_ms(ttl));
    handle.call(move |c| {
        let changed = c
            .execute(SQL, &[&key, &holder, &ttl])
            .during("renew the run's lease")?;
        Ok(changed == 1)
    })
}

pub(super) fn release_lease(handle: &Handle, key: &str, holder: &str) -> Result<()> {
    let (key, holder) = (key.to_owned(), holder.to_owned());
    handle.call(move |c| {
        c.execute(
            "DELETE FROM run_leases WHERE source = $1 AND holder = $2",
            &[&key, &holder],
        )
        .during("release the run's lease")?;
        Ok(())
    })
}

pub(super) fn lease(handle: &Handle, key: &str) -> Result<Option<Lease>> {
    let key = key.to_owned();
    handle.call(move |c| read_lease(c, &key))
}

fn read_lease(c: &mut Conn, key: &str) -> Result<Option<Lease>> {
    const SQL: &str = concat!(
        "SELECT holder, host, pid, machine, pid_start, acquired_at, renewed_at, expires_at, ",
        db_now_ms!(),
        " FROM run_leases WHERE source = $1"
    );
    let op = "read the run's lease";
    let Some(row) = c.query_opt(SQL, &[&key]).during(op)? else {
        return Ok(None);
    };
    let pid: i64 = row.try_get(2).during(op)?;
    let pid_start: Option<i64> = row.try_get(4).during(op)?;
    Ok(Some(Lease {
        key: key.to_owned(),
        holder: LeaseHolder {
            holder: row.try_get(0).during(op)?,
            host: row.try_get(1).during(op)?,
            pid: num::to_u32("lease pid", pid)?,
            machine: row.try_get(3).during(op)?,
            pid_start: pid_start.map(|t| t as u64),
        },
        acquired_at: row.try_get(5).during(op)?,
        renewed_at: row.try_get(6).during(op)?,
        expires_at: row.try_get(7).during(op)?,
        now: row.try_get(8).during(op)?,
    }))
}

/// Whether the run has an input list (exports and counts follow it).
pub(super) fn has_inputs(c: &mut Conn, run_id: &str) -> Result<bool> {
    Ok(
        c.query_opt("SELECT 1 FROM inputs WHERE run_id = $1 LIMIT 1", &[&run_id])
            .during("read the run's input list")?
            .is_some(),
    )
}

pub(super) fn replace_inputs(
    handle: &Handle,
    run_id: &str,
    rows: &mut dyn Iterator<Item = std::result::Result<InputRow, SinkError>>,
) -> Result<InputCounts> {
    let op = "record the run's input list";
    let id = run_id.to_owned();
    // One transaction over several calls on this connection (the rows come
    // from the caller's thread), always ended below. A connection made
    // again meanwhile lost the transaction: each call checks it is still on
    // the connection that began it, and the list fails rather than being
    // finished half on a new one.
    let generation = handle.call(move |c| {
        c.batch("BEGIN").during(op)?;
        let started = touch(c, &id).and_then(|()| {
            c.execute("DELETE FROM inputs WHERE run_id = $1", &[&id])
                .during(op)
        });
        if started.is_err() {
            let _ = c.batch("ROLLBACK");
        }
        started.map(|_| c.generation)
    })?;
    let result = fill(handle, run_id, rows, generation);
    let end = match &result {
        Ok(_) => handle.call(move |c| {
            same_connection(c, generation)?;
            c.batch("COMMIT").during(op)
        }),
        Err(_) => handle.call(|c| c.batch("ROLLBACK").during(op)),
    };
    let counts = result?;
    end?;
    Ok(counts)
}

/// Fails when the connection was made again since `generation`.
fn same_connection(c: &Conn, generation: u64) -> Result<()> {
    if c.generation == generation {
        return Ok(());
    }
    Err(Error::Unsupported(
        "the connection to PostgreSQL was lost while the run's input list was being \
         recorded (nothing was sent yet); run the same command again"
            .into(),
    ))
}

/// The inside of [`replace_inputs`]' transaction.
fn fill(
    handle: &Handle,
    run_id: &str,
    rows: &mut dyn Iterator<Item = std::result::Result<InputRow, SinkError>>,
    generation: u64,
) -> Result<InputCounts> {
    let op = "record the run's input list";
    let mut total = 0u64;
    loop {
        let mut ids = Vec::with_capacity(CHUNK);
        let mut idx = Vec::with_capacity(CHUNK);
        let mut hash = Vec::with_capacity(CHUNK);
        for row in (&mut *rows).take(CHUNK) {
            let row = row.map_err(Error::Callback)?;
            idx.push(to_i64("input idx", row.idx)?);
            hash.push(hash_to_i64(row.hash));
            ids.push(row.item_id);
        }
        if ids.is_empty() {
            break;
        }
        let id = run_id.to_owned();
        total += handle.call(move |c| {
            same_connection(c, generation)?;
            c.execute(
                "INSERT INTO inputs (run_id, item_id, idx, hash) \
                 SELECT $1, * FROM unnest($2::text[], $3::int8[], $4::int8[]) \
                 ON CONFLICT (run_id, item_id) DO NOTHING",
                &[&id, &ids, &idx, &hash],
            )
            .during(op)
        })?;
    }
    let id = run_id.to_owned();
    let done: i64 = handle.call(move |c| {
        same_connection(c, generation)?;
        // Earlier failures are sent again by the execution starting now:
        // until then they are pending, not their old error.
        c.execute(
            "DELETE FROM items WHERE run_id = $1 AND status = 'failed'",
            &[&id],
        )
        .during(op)?;
        c.query_opt(
            "SELECT COUNT(*) FROM inputs i JOIN items it ON it.run_id = i.run_id \
             AND it.item_id = i.item_id AND it.hash = i.hash \
             WHERE i.run_id = $1 AND it.status = 'done'",
            &[&id],
        )
        .during(op)?
        .map_or(Ok(0), |r| r.try_get(0).during(op))
    })?;
    Ok(InputCounts {
        total,
        done: to_u64("done count", done)?,
    })
}

/// Rows per page of [`for_each_output`].
const PAGE: i64 = 1_000;

pub(super) fn for_each_output(
    store: &mut super::PostgresStore,
    run_id: &str,
    f: &mut dyn FnMut(Output) -> std::result::Result<(), SinkError>,
) -> Result<()> {
    const FIRST: &str = concat!(
        "SELECT ",
        output_columns!(),
        " FROM inputs i LEFT JOIN items it ON it.run_id = i.run_id AND it.item_id = i.item_id \
         AND it.hash = i.hash WHERE i.run_id = $1 ORDER BY i.idx, i.item_id LIMIT $2"
    );
    const NEXT: &str = concat!(
        "SELECT ",
        output_columns!(),
        " FROM inputs i LEFT JOIN items it ON it.run_id = i.run_id AND it.item_id = i.item_id \
         AND it.hash = i.hash WHERE i.run_id = $1 AND (i.idx, i.item_id) > ($3, $4) \
         ORDER BY i.idx, i.item_id LIMIT $2"
    );
    let id = run_id.to_owned();
    let listed = store.handle.call(move |c| {
        ensure_run(c, &id)?;
        has_inputs(c, &id)
    })?;
    if !listed {
        return crate::Store::for_each_item(store, run_id, &mut |r| f(Output::Recorded(r)));
    }
    let id = run_id.to_owned();
    // Pages in one read-only snapshot, as `for_each_item` does.
    store.handle.call(move |c| {
        c.batch("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .during("read items")
    })?;
    let mut after: Option<(i64, String)> = None;
    let result = loop {
        let (id, from) = (id.clone(), after.clone());
        let page = store.handle.call(move |c| {
            let rows = match &from {
                None => c.query(FIRST, &[&id, &PAGE]),
                Some((idx, item)) => c.query(NEXT, &[&id, &PAGE, idx, item]),
            }
            .during("read items")?;
            rows::all(&rows, num::output_from)
        });
        let page = match page {
            Ok(page) => page,
            Err(e) => break Err(e),
        };
        let full = page.len() as i64 == PAGE;
        if let Some(last) = page.last() {
            let (item_id, idx) = match last {
                Output::Recorded(r) => (&r.item_id, r.idx),
                Output::Pending { item_id, idx } => (item_id, *idx),
            };
            match to_i64("input idx", idx) {
                Ok(i) => after = Some((i, item_id.clone())),
                Err(e) => break Err(e),
            }
        }
        if let Some(e) = page.into_iter().find_map(|o| f(o).err()) {
            break Err(Error::Callback(e));
        }
        if !full {
            break Ok(());
        }
    };
    let end = store
        .handle
        .call(|c| c.batch("COMMIT").during("read items"));
    result.and(end)
}
