//! What every handler shares: the store's location, the auth token, limits,
//! and the runs this server is executing now.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use sluice_store::{Store, StoreLocation};

use crate::error::{ApiError, ApiResult};
use crate::runner::LiveRun;
use crate::uploads::Uploads;

/// How the server was started.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where runs are kept (the same store the CLI uses).
    pub store: StoreLocation,
    /// Required as `Authorization: Bearer <token>` on every route but
    /// `/healthz`; `None` only on a loopback bind.
    pub token: Option<String>,
    /// Largest request body accepted when submitting a run, in bytes.
    pub max_submit_bytes: usize,
    /// Directory that relative input paths of submitted jobs resolve against.
    pub workdir: PathBuf,
    /// How often progress events are sent, in milliseconds.
    pub tick_ms: u64,
}

impl ServerConfig {
    /// Defaults for `store`: no token, 64 MiB submissions, the current
    /// directory, a progress event a second.
    pub fn new(store: StoreLocation) -> ServerConfig {
        ServerConfig {
            store,
            token: None,
            max_submit_bytes: 64 << 20,
            workdir: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
            tick_ms: 1_000,
        }
    }
}

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
}

impl AppState {
    /// State for a server with `config`.
    pub fn new(config: ServerConfig) -> AppState {
        AppState {
            inner: Arc::new(Inner {
                uploads: Uploads::new(&config.store.local_dir()),
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
