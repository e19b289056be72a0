//! What every handler shares: the store's location, the auth token, limits,
//! and the runs this server is executing now.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use sluice_store::{Store, StoreLocation};

use crate::access::rules::Hosts;
use crate::error::{ApiError, ApiResult};
use crate::live_run::LiveRun;
use crate::policy::JobPolicy;
use crate::uploads::Uploads;

/// How the server was started.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where runs are kept (the same store the CLI uses).
    pub store: StoreLocation,
    /// Required on every route but `/healthz` (a bearer header, a Basic
    /// password, or the dashboard's cookie); `None` only on a loopback bind
    /// (`sluice serve --no-token`).
    pub token: Option<String>,
    /// Largest request body accepted when submitting a run, in bytes.
    pub max_submit_bytes: usize,
    /// Directory that relative input paths of submitted jobs resolve against.
    pub workdir: PathBuf,
    /// How often progress events are sent, in milliseconds.
    pub tick_ms: u64,
    /// The address the server listens on: the `Host` it answers to, and the
    /// name of the dashboard's cookie (`None` when driven without a socket).
    pub bound: Option<SocketAddr>,
    /// Host names it answers to besides loopback names and `bound`
    /// (`--allow-host`, lower case, no port).
    pub allow_hosts: Vec<String>,
    /// Origins of other sites whose pages may call it, with CORS
    /// (`--allow-origin`, as [`crate::parse_origin`] gives them).
    pub allow_origins: Vec<String>,
    /// What a job submitted over HTTP may do.
    pub jobs: JobPolicy,
    /// Runs executing here at once at most; one more is answered 429.
    pub max_runs: usize,
}

impl ServerConfig {
    /// Defaults for `store`: no token, 64 MiB submissions, the current
    /// directory, a progress event a second, no extra hosts or origins,
    /// submitted jobs confined (see [`JobPolicy`]), 8 runs at once.
    pub fn new(store: StoreLocation) -> ServerConfig {
        ServerConfig {
            store,
            token: None,
            max_submit_bytes: 64 << 20,
            workdir: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
            tick_ms: 1_000,
            bound: None,
            allow_hosts: Vec::new(),
            allow_origins: Vec::new(),
            jobs: JobPolicy::default(),
            max_runs: DEFAULT_MAX_RUNS,
        }
    }

    /// The dashboard's cookie: named after the port, since browsers send a
    /// host's cookies to all its ports (two servers must not share one).
    pub(crate) fn cookie_name(&self) -> String {
        match self.bound {
            Some(addr) => format!("sluice_token_{}", addr.port()),
            None => "sluice_token".into(),
        }
    }
}

/// Runs executing at once in one server by default.
pub const DEFAULT_MAX_RUNS: usize = 8;

/// Largest body of any other request (control calls carry none or little).
pub(crate) const MAX_OTHER_BYTES: usize = 64 << 10;

/// The handlers' shared state (cheap to clone).
#[derive(Clone)]
pub struct AppState {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: ServerConfig,
    /// Runs executing in this process, by run id (kept after they end, so
    /// their final live detail stays available).
    pub(crate) runs: Mutex<HashMap<String, Arc<LiveRun>>>,
    /// Files sent with submissions, one scratch directory per run.
    pub(crate) uploads: Uploads,
    /// The `Host`s it answers to.
    pub(crate) hosts: Hosts,
    /// One place per run it may execute (`max_runs`).
    pub(crate) run_slots: Arc<tokio::sync::Semaphore>,
    /// The progress feeds of `/v1/runs/{id}/events`, one per run watched.
    pub(crate) feeds: crate::feeds::Feeds,
    /// The engine its runs belong to: they share providers (limits, pools)
    /// and count into its totals (`/metrics`).
    pub(crate) engine: sluice_engine::Engine,
}

impl AppState {
    /// State for a server with `config`.
    pub fn new(config: ServerConfig) -> AppState {
        AppState {
            inner: Arc::new(Inner {
                uploads: Uploads::new(&config.store.local_dir()),
                hosts: Hosts {
                    bound: config.bound,
                    allowed: config.allow_hosts.clone(),
                },
                run_slots: Arc::new(tokio::sync::Semaphore::new(config.max_runs.max(1))),
                feeds: crate::feeds::Feeds::default(),
                engine: sluice_engine::Engine::new(),
                config,
                runs: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub(crate) fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    /// The run executed here with this id, if any.
    pub(crate) fn live(&self, id: &str) -> Option<Arc<LiveRun>> {
        self.runs().get(id).cloned()
    }

    pub(crate) fn runs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<LiveRun>>> {
        self.inner.runs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every run executed here that has not ended.
    pub fn active_runs(&self) -> Vec<Arc<LiveRun>> {
        self.runs()
            .values()
            .filter(|r| !r.is_finished())
            .cloned()
            .collect()
    }

    /// Runs `f` with a store connection on a blocking thread (the store is
    /// synchronous).
    pub(crate) async fn with_store<T, F>(&self, f: F) -> ApiResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn Store) -> ApiResult<T> + Send + 'static,
    {
        let location = self.config().store.clone();
        tokio::task::spawn_blocking(move || {
            let mut store = location.open().map_err(ApiError::from)?;
            f(&mut *store)
        })
        .await?
    }
}
