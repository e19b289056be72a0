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

impl Drop for PgSchema {
    fn drop(&mut self) {
        let _ = exec(
            &self.base,
            &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name),
        );
    }
}
