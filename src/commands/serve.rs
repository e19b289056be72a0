//! `sluice serve`: the REST API, live events, /metrics and the dashboard.
//! Safe by default: a token on every bind (generated and printed once in
//! the dashboard URL when none is given), and submitted jobs confined to
//! their own files; each flag that widens that is the operator's choice.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use sluice_server::{AppState, JobPolicy, ServerConfig};
use sluice_store::StoreLocation;

use super::UsageError;
use crate::cli::ServeArgs;

/// Where the token is read from when `--token-env` is not given.
const TOKEN_ENV: &str = "SLUICE_TOKEN";

/// The blocking threads the server may use for store reads: bounded, so
/// many clients queue instead of each costing a thread.
const BLOCKING_THREADS: usize = 8;

/// The token, and whether it was generated here (then it is printed).
struct Token {
    value: Option<String>,
    generated: bool,
}

pub(crate) fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let addr: SocketAddr = args.bind.parse().map_err(|_| {
        UsageError(format!(
            "--bind {:?} is not an address; give IP:PORT, e.g. 127.0.0.1:8080",
            args.bind
        ))
    })?;
    let token = token(&args, addr)?;
    let location = args.store.here();
    let mut config = ServerConfig::new(location.clone());
    config.token = token.value.clone();
    config.max_submit_bytes = args.max_body;
    config.jobs = policy(&args)?;
    config.max_runs = positive(args.max_runs, "--max-runs")?;
    for host in &args.allow_hosts {
        let host =
            sluice_server::parse_host(host).map_err(|e| UsageError(format!("--allow-host {e}")))?;
        config.allow_hosts.push(host);
    }
    for origin in &args.allow_origins {
        let origin = sluice_server::parse_origin(origin)
            .map_err(|e| UsageError(format!("--allow-origin {e}")))?;
        config.allow_origins.push(origin);
    }
    // A store that cannot be opened stops the server now, not every request later.
    drop(
        location
            .open()
            .with_context(|| format!("opening the store {location}"))?,
    );
    raise_open_files_limit();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
        .context("starting the server's runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        config.bound = Some(local);
        // The first line on stdout is the address (tests and scripts read it).
        outln!("listening on {local}");
        announce(local, &token, &args, &location);
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

/// The token from `--token-env` (or SLUICE_TOKEN), a generated one, or none
/// with `--no-token` on loopback.
fn token(args: &ServeArgs, addr: SocketAddr) -> anyhow::Result<Token> {
    if args.no_token {
        if !addr.ip().is_loopback() {
            return Err(UsageError(format!(
                "--no-token is for loopback binds only: binding {addr} without a token would let anyone who reaches it run jobs; drop --no-token (a token is generated and printed)"
            ))
            .into());
        }
        return Ok(Token {
            value: None,
            generated: false,
        });
    }
    let var = args.token_env.as_deref().unwrap_or(TOKEN_ENV);
    match std::env::var(var) {
        Ok(t) if !t.trim().is_empty() => Ok(Token {
            value: Some(t.trim().to_owned()),
            generated: false,
        }),
        _ if args.token_env.is_some() => Err(UsageError(format!(
            "--token-env names {var}, which is not set; export {var}=<a long random token> first, or leave --token-env out to have one generated"
        ))
        .into()),
        _ => Ok(Token {
            value: Some(sluice_server::new_token().context("generating the server's token")?),
            generated: true,
        }),
    }
}

/// What submitted jobs may do, from the `--allow-*` and concurrency flags.
fn policy(args: &ServeArgs) -> anyhow::Result<JobPolicy> {
    let mut policy = JobPolicy {
        allow_commands: args.allow_commands,
        allow_env: args.allow_env.clone(),
        default_concurrency: args
            .default_concurrency
            .map(|n| positive(n, "--default-concurrency"))
            .transpose()?,
        max_concurrency: args
            .max_concurrency
            .map(|n| positive(n, "--max-concurrency"))
            .transpose()?,
        ..JobPolicy::default()
    };
    if let (Some(d), Some(m)) = (policy.default_concurrency, policy.max_concurrency) {
        if d > m {
            return Err(UsageError(format!(
                "--default-concurrency {d} is above --max-concurrency {m}; lower it or raise the cap"
            ))
            .into());
        }
    }
    for dir in &args.allow_dirs {
        policy.allow_dir(dir).map_err(UsageError)?;
    }
    Ok(policy)
}

fn positive(n: usize, flag: &str) -> anyhow::Result<usize> {
    if n == 0 {
        return Err(UsageError(format!("{flag} must be at least 1")).into());
    }
    Ok(n)
}

/// Where the dashboard and the API are, on stderr: a generated token is
/// shown once, in the dashboard's URL (the page then keeps it in a cookie
/// and drops it from the address bar); one from the environment is not.
fn announce(local: SocketAddr, token: &Token, args: &ServeArgs, store: &StoreLocation) {
    match (&token.value, token.generated) {
        (Some(t), true) => eprintln!(
            "sluice serve: dashboard at http://{local}/?token={t}\n  (open it once: the page keeps the token in a cookie; API clients send Authorization: Bearer <that token>, or start the server with {TOKEN_ENV} set to one of yours)"
        ),
        (Some(_), false) => {
            let var = args.token_env.as_deref().unwrap_or(TOKEN_ENV);
            eprintln!(
                "sluice serve: dashboard at http://{local}/ (it asks for the token in ${var} once; API clients send Authorization: Bearer <token>)"
            );
        }
        (None, _) => {
            eprintln!("sluice serve: dashboard at http://{local}/");
            eprintln!(
                "sluice serve: warning: --no-token: every program and user of this machine can use the API and run jobs as you (web pages still cannot: Host and Origin are checked)"
            );
        }
    }
    if !local.ip().is_loopback() {
        eprintln!(
            "sluice serve: warning: listening beyond this machine over plain HTTP: the token crosses the network in clear; put a TLS proxy in front"
        );
    }
    eprintln!("sluice serve: API at http://{local}/v1/runs · store {store}");
}

/// Lets the server hold as many connections (event streams) as the system
/// allows this process, not the low default soft limit.
fn raise_open_files_limit() {
    #[cfg(unix)]
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        let mut limit = std::mem::zeroed::<libc::rlimit>();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
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
