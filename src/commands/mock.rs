//! `sluice mock`: the built-in OpenAI-compatible fake API in the foreground.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use sluice_mock::MockConfig;

use super::UsageError;
use crate::cli::MockArgs;

pub(crate) fn mock(args: MockArgs) -> anyhow::Result<ExitCode> {
    for (name, rate) in [
        ("--fail-rate", args.fail_rate),
        ("--reset-rate", args.reset_rate),
        ("--hang-rate", args.hang_rate),
        ("--truncate-rate", args.truncate_rate),
        ("--reject-rate", args.reject_rate),
        ("--batch-error-rate", args.batch_error_rate),
        ("--batch-expire-rate", args.batch_expire_rate),
        ("--batch-invalid-rate", args.batch_invalid_rate),
        ("--json-invalid-rate", args.json_invalid_rate),
    ] {
        if !(0.0..=1.0).contains(&rate) {
            return Err(UsageError(format!("{name} must be between 0 and 1, not {rate}")).into());
        }
    }
    let secret = |flag: &str, var: &Option<String>| -> anyhow::Result<Option<String>> {
        match var {
            Some(var) => match std::env::var(var) {
                Ok(v) if !v.is_empty() => Ok(Some(v)),
                _ => Err(UsageError(format!(
                    "the environment variable {var} (from {flag}) is not set; export {var}=... first"
                ))
                .into()),
            },
            None => Ok(None),
        }
    };
    let api_key = secret("--api-key-env", &args.api_key_env)?;
    let hook_secret = secret("--hook-secret-env", &args.hook_secret_env)?;
    let config = MockConfig {
        latency_ms: args.latency_ms,
        jitter_ms: args.jitter_ms,
        rpm: args.rpm,
        tpm: args.tpm,
        slack_ms: args.slack_ms,
        allowance: args.allowance,
        max_concurrency: args.max_concurrency,
        fail_rate: args.fail_rate,
        reset_rate: args.reset_rate,
        hang_rate: args.hang_rate,
        truncate_rate: args.truncate_rate,
        seed: args.seed,
        api_key,
        completion_tokens: args.completion_tokens,
        reject_rate: args.reject_rate,
        models: args.models.clone(),
        max_upload_bytes: args.max_upload_bytes,
        cms_dir: args.cms.clone(),
        journal: args.journal,
        hook_secret: hook_secret.map(String::into_bytes),
        stream_interval_ms: args.stream_interval_ms,
        batch_delay_ms: args.batch_delay_ms,
        batch_error_rate: args.batch_error_rate,
        batch_expire_rate: args.batch_expire_rate,
        batch_enqueued_limit: args.batch_enqueued_limit,
        batch_invalid_rate: args.batch_invalid_rate,
        batch_create_hangs: args.batch_create_hangs,
        batch_result_pad_bytes: args.batch_result_pad_bytes,
        json_invalid_rate: args.json_invalid_rate,
    };
    // Before binding, so a bad --cms stops here with exit code 2.
    config
        .validate()
        .map_err(|e| UsageError(format!("--cms: {e}")))?;
    if config.tpm.is_some() {
        // Before "listening" is printed, so no request waits for the tables.
        sluice_mock::warm_tokenizers();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
            .await
            .with_context(|| {
                format!(
                    "cannot listen on 127.0.0.1:{}; is the port in use? try --port 0",
                    args.port
                )
            })?;
        let addr = listener.local_addr().context("reading the bound address")?;
        {
            // Scripts wait for this line to learn the port.
            let mut out = std::io::stdout().lock();
            writeln!(out, "listening on {addr}").context("writing to stdout")?;
            out.flush().context("writing to stdout")?;
        }
        tokio::select! {
            served = sluice_mock::serve(listener, config) => served.context("serving"),
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })?;
    Ok(ExitCode::SUCCESS)
}
