//! The connection thread behind a [`super::PostgresStore`]: it owns a
//! tokio-postgres client and a runtime of its own, and runs each store call
//! sent to it as a closure.
//!
//! Why a thread: the `Store` trait is synchronous and is called both from
//! plain threads (the engine's writer) and from inside async tasks of a
//! current-thread runtime (resume look-ups, step records). Blocking on a
//! runtime from inside another one panics; blocking on a channel to a thread
//! that has its own runtime works everywhere.

use std::collections::HashMap;
use std::sync::mpsc;
use std::thread::JoinHandle;

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Statement};

use crate::{During, Error, Result};

/// Parameters of one statement.
pub(super) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// A driver result.
pub(super) type PgResult<T> = std::result::Result<T, tokio_postgres::Error>;

/// Work for the connection thread.
type Task = Box<dyn FnOnce(&mut Conn) + Send>;

/// One connection, used only on its own thread.
pub(super) struct Conn {
    rt: tokio::runtime::Runtime,
    client: Client,
    /// Prepared once per connection, by SQL text.
    prepared: HashMap<&'static str, Statement>,
}

impl Conn {
    fn statement(&mut self, sql: &'static str) -> PgResult<Statement> {
        if let Some(s) = self.prepared.get(sql) {
            return Ok(s.clone());
        }
        let s = self.rt.block_on(self.client.prepare(sql))?;
        self.prepared.insert(sql, s.clone());
        Ok(s)
    }

    /// Runs a prepared statement and returns its rows.
    pub(super) fn query(&mut self, sql: &'static str, params: Params<'_>) -> PgResult<Vec<Row>> {
        let s = self.statement(sql)?;
        self.rt.block_on(self.client.query(&s, params))
    }

    /// Runs a prepared statement and returns its row, if any.
    pub(super) fn query_opt(
        &mut self,
        sql: &'static str,
        params: Params<'_>,
    ) -> PgResult<Option<Row>> {
        let s = self.statement(sql)?;
        self.rt.block_on(self.client.query_opt(&s, params))
    }

    /// Runs a prepared statement and returns the rows it changed.
    pub(super) fn execute(&mut self, sql: &'static str, params: Params<'_>) -> PgResult<u64> {
        let s = self.statement(sql)?;
        self.rt.block_on(self.client.execute(&s, params))
    }

    /// Runs SQL text (several statements, no parameters).
    pub(super) fn batch(&mut self, sql: &str) -> PgResult<()> {
        self.rt.block_on(self.client.batch_execute(sql))
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

    /// Runs `f` on the connection thread and waits for its result.
    pub(super) fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Conn) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (reply, answer) = mpsc::sync_channel(1);
        let task: Task = Box::new(move |conn| {
            let _ = reply.send(f(conn));
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
            (Box::new(e) as _, hint)
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
        prepared: HashMap::new(),
    })
}
