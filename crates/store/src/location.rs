//! Where a store lives: a SQLite file (the default) or a PostgreSQL database,
//! chosen by `--store` / `SLUICE_STORE`, and how to open it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::{PostgresStore, Result, SqliteStore, Store};

/// A store's address as the user gave it.
///
/// `postgres://…` and `postgresql://…` name a PostgreSQL database; anything else
/// is a SQLite file path. [`fmt::Display`] never shows a password, so the value
/// may appear in messages and logs.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// A SQLite database file (created with its directories on first open).
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL (it may hold credentials: never print it raw).
    Postgres(String),
}

impl StoreLocation {
    /// Reads `--store`: a `postgres://` or `postgresql://` URL, else a file path.
    pub fn parse(text: &str) -> StoreLocation {
        let lower = text.trim_start().to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            StoreLocation::Postgres(text.trim().to_owned())
        } else {
            StoreLocation::Sqlite(PathBuf::from(text))
        }
    }

    /// Opens a new connection (creating and migrating the schema as needed).
    pub fn open(&self) -> Result<Box<dyn Store>> {
        match self {
            StoreLocation::Sqlite(path) => Ok(Box::new(SqliteStore::open(path)?)),
            StoreLocation::Postgres(url) => Ok(Box::new(PostgresStore::open(url)?)),
        }
    }

    /// The local directory for files that belong with the store: spooled
    /// inputs (stdin, url sources). For SQLite the database's directory; for a
    /// database server `.sluice/` under the current directory.
    pub fn local_dir(&self) -> PathBuf {
        match self {
            StoreLocation::Sqlite(path) => match path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
                _ => PathBuf::from("."),
            },
            StoreLocation::Postgres(_) => PathBuf::from(".sluice"),
        }
    }

    /// The SQLite file, if this is one.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            StoreLocation::Sqlite(path) => Some(path),
            StoreLocation::Postgres(_) => None,
        }
    }

    /// Whether several processes may work on one run in this store at once.
    pub fn is_shared(&self) -> bool {
        matches!(self, StoreLocation::Postgres(_))
    }
}

impl Default for StoreLocation {
    fn default() -> Self {
        StoreLocation::Sqlite(crate::default_sqlite_path())
    }
}

impl FromStr for StoreLocation {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Ok(StoreLocation::parse(s))
    }
}

impl From<PathBuf> for StoreLocation {
    fn from(path: PathBuf) -> Self {
        StoreLocation::Sqlite(path)
    }
}

impl From<&Path> for StoreLocation {
    fn from(path: &Path) -> Self {
        StoreLocation::Sqlite(path.to_path_buf())
    }
}

impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreLocation::Sqlite(path) => write!(f, "{}", path.display()),
            StoreLocation::Postgres(url) => f.write_str(&redact_url(url)),
        }
    }
}

impl fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreLocation({self})")
    }
}

/// Query parameters that carry credentials in URLs people use (`?key=` of
/// Google's APIs, `?sig=` of signed URLs, `?password=` of libpq, …).
const SECRET_PARAMS: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "pass",
    "secret",
    "client_secret",
    "token",
    "access_token",
    "auth",
    "key",
    "api_key",
    "apikey",
    "api-key",
    "sig",
    "signature",
    "sslpassword",
];

/// The URL with its credentials replaced by `***`: a password
/// (`user:secret@`), the user too where it is the credential (`http://KEY@`;
/// a database URL keeps its user name), and credential query parameters
/// (`password=`, `key=`, `token=`, `sig=`, …). For showing and keeping URLs
/// in run metadata; never for sending.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let web = out[..scheme_end].eq_ignore_ascii_case("http")
            || out[..scheme_end].eq_ignore_ascii_case("https");
        let rest_start = scheme_end + 3;
        let authority_end = out[rest_start..]
            .find(['/', '?', '#'])
            .map_or(out.len(), |i| rest_start + i);
        if let Some(at) = out[rest_start..authority_end].rfind('@') {
            let userinfo = &out[rest_start..rest_start + at];
            match userinfo.find(':') {
                Some(colon) => {
                    let from = rest_start + colon + 1;
                    out.replace_range(from..rest_start + at, "***");
                }
                None if web && !userinfo.is_empty() => {
                    out.replace_range(rest_start..rest_start + at, "***");
                }
                None => {}
            }
        }
    }
    if let Some(q) = out.find('?') {
        let (head, rest) = out.split_at(q + 1);
        let (query, fragment) = match rest.find('#') {
            Some(h) => rest.split_at(h),
            None => (rest, ""),
        };
        let query: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if SECRET_PARAMS.iter().any(|s| k.eq_ignore_ascii_case(s)) => {
                    format!("{k}=***")
                }
                _ => pair.to_owned(),
            })
            .collect();
        out = format!("{head}{}{fragment}", query.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls_and_paths() {
        assert_eq!(
            StoreLocation::parse("postgres://u@h/db"),
            StoreLocation::Postgres("postgres://u@h/db".into())
        );
        assert!(StoreLocation::parse("PostgreSQL://h/db").is_shared());
        assert_eq!(
            StoreLocation::parse("runs/x.db"),
            StoreLocation::Sqlite("runs/x.db".into())
        );
        assert_eq!(
            StoreLocation::parse("runs/x.db").local_dir(),
            PathBuf::from("runs")
        );
        assert_eq!(StoreLocation::parse("x.db").local_dir(), PathBuf::from("."));
    }

    #[test]
    fn display_hides_passwords() {
        let shown =
            StoreLocation::parse("postgres://bob:s3cret@db:5432/x?password=s3cret&a=1").to_string();
        assert_eq!(shown, "postgres://bob:***@db:5432/x?password=***&a=1");
        assert!(
            !format!("{:?}", StoreLocation::parse("postgres://a:s3cret@h/d")).contains("s3cret")
        );
        assert_eq!(redact_url("postgres://bob@h/db"), "postgres://bob@h/db");
    }

    #[test]
    fn credentials_in_any_url_are_masked() {
        for (url, shown) in [
            (
                "http://user:KEY@host:8080/v1/chat",
                "http://user:***@host:8080/v1/chat",
            ),
            (
                "https://sk-abc@api.example/v1",
                "https://***@api.example/v1",
            ),
            (
                "https://maps.example/api?key=AIza123&q=x",
                "https://maps.example/api?key=***&q=x",
            ),
            (
                "https://h/x?X-Sig=1&sig=abc&token=t#frag",
                "https://h/x?X-Sig=1&sig=***&token=***#frag",
            ),
            ("http://host/v1?page=2", "http://host/v1?page=2"),
            ("http://host/a@b", "http://host/a@b"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }
}
