//! `sluice serve`: the REST API, live events, /metrics and the dashboard.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use sluice_server::{AppState, ServerConfig};

use super::UsageError;
use crate::cli::ServeArgs;

pub(crate) fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let addr: SocketAddr = args.bind.parse().map_err(|_| {
        UsageError(format!(
            "--bind {:?} is not an address; give IP:PORT, e.g. 127.0.0.1:8080",
            args.bind
        ))
    })?;
    let token = match &args.token_env {
        Some(var) => match std::env::var(var) {
            Ok(t) if !t.trim().is_empty() => Some(t.trim().to_owned()),
            _ => {
                return Err(UsageError(format!(
                    "--token-env names {var}, which is not set; export {var}=<a long random token> first"
                ))
                .into())
            }
        },
        None => None,
    };
    if !addr.ip().is_loopback() && token.is_none() {
        return Err(UsageError(format!(
            "binding {addr} exposes the API beyond this machine; pass --token-env NAME (a variable holding the token clients must send)"
        ))
        .into());
    }
    // A store that cannot be opened stops the server now, not every request later.
    let location = args.store.here();
    drop(
        location
            .open()
            .with_context(|| format!("opening the store {location}"))?,
    );
    let mut config = ServerConfig::new(location.clone());
    config.token = token;
    config.max_submit_bytes = args.max_body;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the server's runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        // The first line on stdout is the address (tests and scripts read it).
        outln!("listening on {local}");
        eprintln!(
            "sluice serve: dashboard at http://{local}/ · API at http://{local}/v1/runs · store {location}"
        );
        let shutdown = async {
            stop_signal().await;
            eprintln!("sluice serve: stopping; running runs end interrupted (resume them later)");
        };
        sluice_server::serve(
            listener,
            AppState::new(config),
            shutdown,
            Duration::from_secs(2),
        )
        .await
        .context("serving")
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn stop_signal() {
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
