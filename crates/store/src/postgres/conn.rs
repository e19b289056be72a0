//! The connection thread behind a [`super::PostgresStore`]: it owns a
//! tokio-postgres client and a runtime of its own, and runs each store call
//! sent to it as a closure.
//!
//! A lost connection (a terminated backend, a database failover, a restarted
//! pooler, a network cut) is reconnected with backoff and the call run again
//! on the new connection: each call is one transaction (rolled back by the
//! server when its connection died) or a read, and the writes are upserts or
//! fenced by lease tokens, so running it again is safe. Only a database that
//! stays away past [`reconnect_limit`] fails the call, with the server's own
//! error.
//!
//! Why a thread: the `Store` trait is synchronous and is called both from
//! plain threads (the engine's writer) and from inside async tasks of a
//! current-thread runtime (resume look-ups, step records). Blocking on a
//! runtime from inside another one panics; blocking on a channel to a thread
//! that has its own runtime works everywhere.

use std::collections::HashMap;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Statement};

use crate::{During, Error, Result};

/// Parameters of one statement.
pub(super) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// A driver result.
pub(super) type PgResult<T> = std::result::Result<T, tokio_postgres::Error>;

/// Work for the connection thread.
type Task = Box<dyn FnOnce(&mut Conn) + Send>;

/// How long a lost connection is tried again before a store call fails:
/// `SLUICE_PG_RECONNECT_SECS` (seconds), default 60 — a failover or a
/// restarted pooler takes seconds; a database gone for longer needs a person.
pub(super) fn reconnect_limit() -> Duration {
    std::env::var("SLUICE_PG_RECONNECT_SECS")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map_or(Duration::from_secs(60), Duration::from_secs_f64)
}

/// First and longest wait between reconnection attempts.
const RECONNECT_FIRST: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// One connection, used only on its own thread.
pub(super) struct Conn {
    rt: tokio::runtime::Runtime,
    client: Client,
    config: tokio_postgres::Config,
    /// Prepared once per connection, by SQL text.
    prepared: HashMap<&'static str, Statement>,
    /// The connection was lost during the current call: how (the server's
    /// error, when it said one).
    lost: Option<String>,
    /// Connections made so far: a transaction spanning several calls (an
    /// input list) checks it did not change under it.
    pub(super) generation: u64,
}

impl Conn {
    /// Notes a lost connection behind `result`'s error, if it is one.
    fn watch<T>(&mut self, result: PgResult<T>) -> PgResult<T> {
        if let Err(e) = &result {
            if self.lost.is_none() && (connection_lost(e) || self.client.is_closed()) {
                self.lost = Some(describe(e));
            }
        }
        result
    }

    fn statement(&mut self, sql: &'static str) -> PgResult<Statement> {
        if let Some(s) = self.prepared.get(sql) {
            return Ok(s.clone());
        }
        let prepared = self.rt.block_on(self.client.prepare(sql));
        let s = self.watch(prepared)?;
        self.prepared.insert(sql, s.clone());
        Ok(s)
    }

    /// Runs a prepared statement and returns its rows.
    pub(super) fn query(&mut self, sql: &'static str, params: Params<'_>) -> PgResult<Vec<Row>> {
        let s = self.statement(sql)?;
        let rows = self.rt.block_on(self.client.query(&s, params));
        self.watch(rows)
    }

    /// Runs a prepared statement and returns its row, if any.
    pub(super) fn query_opt(
        &mut self,
        sql: &'static str,
        params: Params<'_>,
    ) -> PgResult<Option<Row>> {
        let s = self.statement(sql)?;
        let row = self.rt.block_on(self.client.query_opt(&s, params));
        self.watch(row)
    }

    /// Runs a prepared statement and returns the rows it changed.
    pub(super) fn execute(&mut self, sql: &'static str, params: Params<'_>) -> PgResult<u64> {
        let s = self.statement(sql)?;
        let changed = self.rt.block_on(self.client.execute(&s, params));
        self.watch(changed)
    }

    /// Runs SQL text (several statements, no parameters).
    pub(super) fn batch(&mut self, sql: &str) -> PgResult<()> {
        let done = self.rt.block_on(self.client.batch_execute(sql));
        self.watch(done)
    }

    /// Connects again, with backoff, until `deadline`; the error of the
    /// last attempt when the database stays away.
    fn reconnect(&mut self, deadline: Instant) -> std::result::Result<(), String> {
        let mut wait = RECONNECT_FIRST;
        loop {
            let (client, connection) =
                match self.rt.block_on(self.config.connect(tokio_postgres::NoTls)) {
                    Ok(connected) => connected,
                    Err(e) => {
                        let now = Instant::now();
                        if now >= deadline {
                            return Err(describe(&e));
                        }
                        std::thread::sleep(wait.min(deadline - now));
                        wait = (wait * 2).min(RECONNECT_MAX);
                        continue;
                    }
                };
            self.rt.spawn(async move {
                let _ = connection.await;
            });
            self.client = client;
            self.prepared.clear();
            self.generation += 1;
            return Ok(());
        }
    }

    /// Runs `f` in one transaction: committed if it returns `Ok`, rolled
    /// back otherwise.
    pub(super) fn tx<T>(
        &mut self,
        op: &'static str,
        f: impl FnOnce(&mut Conn) -> Result<T>,
    ) -> Result<T> {
        self.batch("BEGIN").during(op)?;
        match f(self) {
            Ok(value) => {
                self.batch("COMMIT").during(op)?;
                Ok(value)
            }
            Err(e) => {
                let _ = self.batch("ROLLBACK");
                Err(e)
            }
        }
    }
}

/// The handle the store keeps: a queue of tasks to the connection thread.
pub(super) struct Handle {
    tasks: Option<mpsc::Sender<Task>>,
    thread: Option<JoinHandle<()>>,
}

impl Handle {
    /// Connects on a new thread and runs `setup` (migrations) there before
    /// anything else; fails with what connecting or `setup` failed with.
    pub(super) fn start(
        config: tokio_postgres::Config,
        open_error: impl Fn(Box<dyn std::error::Error + Send + Sync>, &'static str) -> Error
            + Send
            + 'static,
        setup: impl FnOnce(&mut Conn) -> Result<()> + Send + 'static,
    ) -> Result<Handle> {
        let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<()>>(1);
        let (tasks, inbox) = mpsc::channel::<Task>();
        let thread = std::thread::Builder::new()
            .name("sluice-postgres".into())
            .spawn(move || {
                let connected = connect(&config).map_err(|(e, hint)| open_error(e, hint));
                let mut conn = match connected {
                    Ok(conn) => conn,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                if let Err(e) = setup(&mut conn) {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
                let _ = ready_tx.send(Ok(()));
                while let Ok(task) = inbox.recv() {
                    task(&mut conn);
                }
            })
            .map_err(|e| {
                Error::Unsupported(format!(
                    "cannot start the PostgreSQL connection thread: {e}"
                ))
            })?;
        let handle = Handle {
            tasks: Some(tasks),
            thread: Some(thread),
        };
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(handle),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(gone()),
        }
    }

    /// Runs `f` on the connection thread and waits for its result; a lost
    /// connection is made again and `f` run again on it (see the module).
    pub(super) fn call<T: Send + 'static>(
        &self,
        mut f: impl FnMut(&mut Conn) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (reply, answer) = mpsc::sync_channel(1);
        let task: Task = Box::new(move |conn| {
            let _ = reply.send(with_reconnect(conn, &mut f));
        });
        self.tasks
            .as_ref()
            .ok_or_else(gone)?
            .send(task)
            .map_err(|_| gone())?;
        answer.recv().map_err(|_| gone())?
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // Closing the queue ends the thread's loop; joining closes the
        // connection before the store value is gone.
        drop(self.tasks.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Runs `f`, reconnecting and running it again while the connection is
/// lost, until the database has stayed away for [`reconnect_limit`].
fn with_reconnect<T>(conn: &mut Conn, f: &mut impl FnMut(&mut Conn) -> Result<T>) -> Result<T> {
    let mut deadline = None;
    loop {
        conn.lost = None;
        let result = f(conn);
        let Some(how) = conn.lost.take() else {
            return result;
        };
        let limit = reconnect_limit();
        let deadline = *deadline.get_or_insert_with(|| Instant::now() + limit);
        let gave_up = |last: &str| {
            Error::Unsupported(format!(
                "lost the connection to PostgreSQL ({how}) and could not work again within \
                 {} s: {last} (is the database up? SLUICE_PG_RECONNECT_SECS sets how long to \
                 keep trying)",
                limit.as_secs_f64()
            ))
        };
        if Instant::now() >= deadline {
            // Connections come back but keep being lost.
            return Err(gave_up(&how));
        }
        tracing::warn!("the PostgreSQL connection was lost ({how}); reconnecting");
        match conn.reconnect(deadline) {
            Ok(()) => tracing::info!("reconnected to PostgreSQL"),
            Err(last) => return Err(gave_up(&last)),
        }
    }
}

/// Whether `e` means the connection is gone (not that the statement failed).
fn connection_lost(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(code) = e.code() {
        // 08: connection exception; 57P01-03: the server shut the backend
        // down (pg_terminate_backend, a shutdown, a restart).
        let code = code.code();
        return code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03");
    }
    std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
}

/// A driver error as the server said it: severity, message, SQLSTATE,
/// detail and hint of a database error (the driver's own text is only "db
/// error"), else the driver's text with its cause.
pub(super) fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut text = format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        );
        if let Some(detail) = db.detail() {
            text += &format!("; detail: {detail}");
        }
        if let Some(hint) = db.hint() {
            text += &format!("; hint: {hint}");
        }
        return text;
    }
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

/// A driver error kept as its description (so `{}` shows what the server
/// said), for the store's boxed causes.
#[derive(Debug)]
pub(super) struct PgError(String);

impl PgError {
    pub(super) fn boxed(e: &tokio_postgres::Error) -> Box<dyn std::error::Error + Send + Sync> {
        Box::new(PgError(describe(e)))
    }
}

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PgError {}

fn gone() -> Error {
    Error::Unsupported(
        "the PostgreSQL connection thread stopped (a panic in the store; see the log above)".into(),
    )
}

type ConnectError = (Box<dyn std::error::Error + Send + Sync>, &'static str);

fn connect(config: &tokio_postgres::Config) -> std::result::Result<Conn, ConnectError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| (Box::new(e) as _, " (cannot start the connection's runtime)"))?;
    let (client, connection) = rt
        .block_on(config.connect(tokio_postgres::NoTls))
        .map_err(|e| {
            let hint = super::hint(&e);
            (PgError::boxed(&e), hint)
        })?;
    // Driven whenever the thread blocks on a query; between calls nothing
    // arrives that needs an answer. A lost connection shows up as the next
    // call's error.
    rt.spawn(async move {
        let _ = connection.await;
    });
    Ok(Conn {
        rt,
        client,
        config: config.clone(),
        prepared: HashMap::new(),
        lost: None,
        generation: 0,
    })
}
