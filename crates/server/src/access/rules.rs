//! Which `Host` and `Origin` a request may carry. A `Host` that is neither
//! the bound address, a loopback name nor an operator's `--allow-host` is a
//! DNS-rebinding page (a name of the attacker's that now resolves to this
//! machine); an `Origin` other than the server's own or an operator's
//! `--allow-origin` is a page of another site. Pure functions: the middleware
//! in `access` applies them.

use std::net::{IpAddr, SocketAddr};

/// An origin as browsers send it (`scheme://host[:port]`, lower case, no
/// default port), from an operator's `--allow-origin`; the error says why not.
pub fn parse_origin(text: &str) -> Result<String, String> {
    let trimmed = text.trim();
    if trimmed == "*" || trimmed.eq_ignore_ascii_case("null") {
        return Err(format!(
            "{trimmed:?} would let any web page drive the server; name each frontend's origin, e.g. https://app.example.com"
        ));
    }
    normal_origin(trimmed).ok_or_else(|| {
        format!(
            "{trimmed:?} is not an origin; give scheme://host[:port] with no path, e.g. http://localhost:3000"
        )
    })
}

/// A host name or address from an operator's `--allow-host` (lower case, no
/// port); the error says why not.
pub fn parse_host(text: &str) -> Result<String, String> {
    let host = text.trim().to_ascii_lowercase();
    let plain = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    if host == "*" || !plain || host.contains("://") {
        return Err(format!(
            "{text:?} is not a host name; give the name clients use in URLs, without scheme or port, e.g. sluice.internal (never *)"
        ));
    }
    Ok(host_part(&host).to_owned())
}

/// `scheme://authority` normalised, or `None` when it is not an origin.
fn normal_origin(text: &str) -> Option<String> {
    let (scheme, rest) = text.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => "80",
        "https" => "443",
        _ => return None,
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest).to_ascii_lowercase();
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
        return None;
    }
    let host = host_part(&authority);
    let port = &authority[host.len()..];
    let port = port.strip_prefix(':').unwrap_or(port);
    let bad_host = host.is_empty() || (!host.starts_with('[') && host.contains(':'));
    if bad_host || (!port.is_empty() && !port.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    Some(if port.is_empty() || port == default_port {
        format!("{scheme}://{host}")
    } else {
        format!("{scheme}://{host}:{port}")
    })
}

/// The host of `host[:port]` or `[v6][:port]`.
fn host_part(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .find(']')
            .map_or(authority, |end| &authority[..=end]);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            host
        }
        _ => authority,
    }
}

/// The hosts a request may name.
#[derive(Debug, Clone, Default)]
pub(crate) struct Hosts {
    /// The address the server listens on (unknown when driven without a socket).
    pub(crate) bound: Option<SocketAddr>,
    /// `--allow-host` names, lower case.
    pub(crate) allowed: Vec<String>,
}

impl Hosts {
    /// Whether the `Host` header `header` names this server. IP addresses
    /// cannot be rebound, so on an unspecified bind (0.0.0.0) any is taken;
    /// names must be loopback names (`localhost`, `*.localhost`, which
    /// browsers resolve themselves) or listed.
    pub(crate) fn allows(&self, header: &str) -> bool {
        let lower = header.trim().to_ascii_lowercase();
        let host = host_part(&lower);
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return ip.is_loopback()
                || match self.bound {
                    Some(bound) => bound.ip().is_unspecified() || bound.ip() == ip,
                    None => true,
                };
        }
        host == "localhost"
            || host.ends_with(".localhost")
            || self.allowed.iter().any(|a| a == host)
    }
}

/// Whether `origin` is the server's own: the page was loaded from the
/// authority the request is addressed to (`host`, already checked).
pub(crate) fn same_origin(origin: &str, host: Option<&str>) -> bool {
    let (Some(origin), Some(host)) = (normal_origin(origin), host) else {
        return false;
    };
    let host = host.trim();
    ["http", "https"]
        .iter()
        .any(|scheme| normal_origin(&format!("{scheme}://{host}")).as_deref() == Some(&origin))
}

/// Whether `origin` is one an operator allowed (`allowed` normalised).
pub(crate) fn listed_origin(origin: &str, allowed: &[String]) -> bool {
    normal_origin(origin).is_some_and(|o| allowed.contains(&o))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(bound: &str, allowed: &[&str]) -> Hosts {
        Hosts {
            bound: Some(bound.parse().unwrap()),
            allowed: allowed.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn loopback_names_the_bound_address_and_listed_names_pass() {
        let h = hosts("127.0.0.1:8080", &["sluice.internal"]);
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST",
            "app.localhost:9",
            "[::1]:8080",
            "127.0.0.2",
            "sluice.internal:443",
        ] {
            assert!(h.allows(ok), "{ok}");
        }
        for bad in [
            "evil.example:8080",
            "localhost.evil.example",
            "10.0.0.5:8080",
            "sluice.internal.evil",
            "",
        ] {
            assert!(!h.allows(bad), "{bad}");
        }
        let public = hosts("10.0.0.5:8080", &[]);
        assert!(public.allows("10.0.0.5:8080"));
        assert!(!public.allows("10.0.0.6:8080"));
        assert!(!public.allows("rebound.example:8080"));
        let any = hosts("0.0.0.0:8080", &[]);
        assert!(any.allows("192.168.1.20:8080"));
        assert!(!any.allows("rebound.example:8080"));
    }

    #[test]
    fn same_origin_is_the_authority_the_request_names() {
        assert!(same_origin("http://127.0.0.1:8080", Some("127.0.0.1:8080")));
        assert!(same_origin("http://localhost", Some("localhost:80")));
        assert!(same_origin("HTTP://LocalHost:8080", Some("localhost:8080")));
        assert!(!same_origin(
            "http://127.0.0.1:9999",
            Some("127.0.0.1:8080")
        ));
        assert!(!same_origin("http://evil.example", Some("127.0.0.1:8080")));
        assert!(!same_origin("null", Some("127.0.0.1:8080")));
        assert!(!same_origin("http://127.0.0.1:8080", None));
    }

    #[test]
    fn operators_name_origins_and_hosts_exactly() {
        assert_eq!(
            parse_origin("HTTPS://App.Example.com:443/").unwrap(),
            "https://app.example.com"
        );
        assert_eq!(
            parse_origin("http://localhost:3000").unwrap(),
            "http://localhost:3000"
        );
        for bad in [
            "*",
            "null",
            "app.example.com",
            "http://a.example/path",
            "ftp://a",
            "http://u:p@a",
            "http://a:x",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
        assert!(parse_origin("*").unwrap_err().contains("any web page"));
        let allowed = vec![parse_origin("http://localhost:3000").unwrap()];
        assert!(listed_origin("http://LOCALHOST:3000", &allowed));
        assert!(!listed_origin("http://localhost:3001", &allowed));
        assert_eq!(parse_host("Sluice.Internal").unwrap(), "sluice.internal");
        assert_eq!(
            parse_host("sluice.internal:8080").unwrap(),
            "sluice.internal"
        );
        for bad in ["*", "http://x", "a b", ""] {
            assert!(parse_host(bad).is_err(), "{bad}");
        }
    }
}
