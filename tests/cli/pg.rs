//! A scratch PostgreSQL schema per test on the real server
//! (`SLUICE_TEST_POSTGRES`, default `postgres://postgres@127.0.0.1:5432/test`),
//! dropped afterwards. Without a server the test says it skips, unless
//! `SLUICE_REQUIRE_POSTGRES=1` (CI), which makes that a failure.

use std::sync::atomic::{AtomicU64, Ordering};

/// One test's schema and the `--store` URL that uses only it.
pub(crate) struct PgSchema {
    pub(crate) url: String,
    base: String,
    name: String,
}

fn server_url() -> String {
    std::env::var("SLUICE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn exec(url: &str, sql: &str) -> Result<(), tokio_postgres::Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        let driver = tokio::spawn(connection);
        let result = client.batch_execute(sql).await;
        drop(client);
        let _ = driver.await;
        result
    })
}

impl PgSchema {
    /// A fresh schema, or `None` after saying the test skips.
    pub(crate) fn create() -> Option<PgSchema> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let base = server_url();
        let name = format!(
            "sluice_cli_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        if let Err(e) = exec(&base, &format!("CREATE SCHEMA {name}")) {
            if std::env::var("SLUICE_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                panic!("PostgreSQL is required (SLUICE_REQUIRE_POSTGRES=1) but unreachable: {e}");
            }
            eprintln!("skipping: PostgreSQL is unreachable ({e}); set SLUICE_REQUIRE_POSTGRES=1 to fail instead");
            return None;
        }
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-csearch_path%3D{name}");
        Some(PgSchema { url, base, name })
    }
}

impl PgSchema {
    /// The store URL with `application_name=NAME`: the connections of the
    /// processes given it can be told apart (and terminated) in
    /// `pg_stat_activity`, without touching anyone else's.
    pub(crate) fn url_named(&self, name: &str) -> String {
        format!("{}&application_name={name}", self.url)
    }

    /// The server's host and port.
    pub(crate) fn address(&self) -> (String, u16) {
        let config: tokio_postgres::Config = self.base.parse().unwrap();
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            _ => "127.0.0.1".into(),
        };
        (host, config.get_ports().first().copied().unwrap_or(5432))
    }

    /// This schema's store URL through 127.0.0.1:`port` (a proxy).
    pub(crate) fn url_via(&self, port: u16) -> String {
        let config: tokio_postgres::Config = self.base.parse().unwrap();
        let user = config.get_user().unwrap_or("postgres");
        let password = config
            .get_password()
            .map(|p| format!(":{}", String::from_utf8_lossy(p)))
            .unwrap_or_default();
        let db = config.get_dbname().unwrap_or("postgres");
        format!(
            "postgres://{user}{password}@127.0.0.1:{port}/{db}?options=-csearch_path%3D{}",
            self.name
        )
    }

    /// Terminates every backend named `name` (see [`PgSchema::url_named`]),
    /// as a failover or a restarted pooler would; returns how many.
    pub(crate) fn terminate(&self, name: &str) -> u64 {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(&self.base, tokio_postgres::NoTls)
                .await
                .unwrap();
            let driver = tokio::spawn(connection);
            let row = client
                .query_one(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) \
                     FROM pg_stat_activity WHERE application_name = $1",
                    &[&name],
                )
                .await
                .unwrap();
            drop(client);
            let _ = driver.await;
            row.get::<_, i64>(0) as u64
        })
    }
}

impl PgSchema {
    /// The one number `sql` selects, in this schema.
    pub(crate) fn count(&self, sql: &str) -> i64 {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
                .await
                .unwrap();
            let driver = tokio::spawn(connection);
            let row = client.query_one(sql, &[]).await.unwrap();
            drop(client);
            let _ = driver.await;
            row.get::<_, i64>(0)
        })
    }

    /// Every row of every table in the schema, as text (`row::text`): what
    /// the store holds, to search for what it must not.
    pub(crate) fn dump(&self) -> String {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(&self.base, tokio_postgres::NoTls)
                .await
                .unwrap();
            let driver = tokio::spawn(connection);
            let tables = client
                .query(
                    "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1",
                    &[&self.name],
                )
                .await
                .unwrap();
            let mut out = String::new();
            for t in tables {
                let table: String = t.get(0);
                let rows = client
                    .query(
                        &format!("SELECT t::text FROM {}.\"{table}\" t", self.name),
                        &[],
                    )
                    .await
                    .unwrap();
                for r in rows {
                    out.push_str(&r.get::<_, String>(0));
                    out.push('\n');
                }
            }
            drop(client);
            let _ = driver.await;
            out
        })
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let _ = exec(
            &self.base,
            &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name),
        );
    }
}
