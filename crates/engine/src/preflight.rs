//! Checks made before anything is sent: the API key's variable is set, and
//! the host takes connections (so a typo in a URL fails at once, not after
//! every item's retries).

use std::time::Duration;

use sluice_provider::Endpoint;

use crate::error::{Error, Result};

/// Fails fast, before anything is sent, when the host refuses connections.
pub(crate) async fn preflight(endpoint: &Endpoint) -> Result<()> {
    let host = endpoint.host_port();
    let connect = tokio::net::TcpStream::connect(host.clone());
    match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(Error::Unreachable {
            host,
            reason: e.to_string(),
        }),
        Err(_) => Err(Error::Unreachable {
            host,
            reason: "no answer within 10 s".into(),
        }),
    }
}

/// The API key in the variable `var` names (`--api-key-env`), as `(var, key)`;
/// an unset or empty variable is an error that says what to export.
pub(crate) fn read_api_key(var: Option<&str>) -> Result<Option<(String, String)>> {
    let Some(var) = var else { return Ok(None) };
    match std::env::var(var) {
        Ok(key) if !key.trim().is_empty() => Ok(Some((var.to_string(), key.trim().to_string()))),
        Ok(_) => Err(Error::Config(format!(
            "the environment variable {var} (from --api-key-env) is empty; set it to your API key"
        ))),
        Err(_) => Err(Error::Config(format!(
            "the environment variable {var} (from --api-key-env) is not set; export {var}=<your key> first"
        ))),
    }
}
