//! Which store a command uses when `--store`/`SLUICE_STORE` names none: the
//! nearest `.sluice/sluice.db` at or above the job or input file's directory
//! (for `sluice run FILE`), or above the current directory (for commands that
//! name a run), found as git finds `.git`. A first run creates one next to its
//! file, so the same file is the same run from any working directory.

use std::path::{Path, PathBuf};

use sluice_store::StoreLocation;

/// The store's directory and file, relative to the directory it serves.
const STORE_DIR: &str = ".sluice";
const STORE_FILE: &str = "sluice.db";

/// The store for running `file`: the nearest existing one at or above its
/// directory, else a new one in that directory.
pub(crate) fn for_file(file: &Path) -> StoreLocation {
    let absolute = absolute(file);
    let dir = absolute.parent().unwrap_or(Path::new("/"));
    let db = nearest(dir).unwrap_or_else(|| dir.join(STORE_DIR).join(STORE_FILE));
    StoreLocation::Sqlite(shown(&db))
}

/// The store at or above the current directory, if there is one.
pub(crate) fn nearest_here() -> Option<StoreLocation> {
    let cwd = std::env::current_dir().ok()?;
    nearest(&cwd).map(|db| StoreLocation::Sqlite(shown(&db)))
}

/// Where a store for the current directory goes when there is none yet.
pub(crate) fn new_here() -> StoreLocation {
    StoreLocation::Sqlite(Path::new(STORE_DIR).join(STORE_FILE))
}

/// The nearest `.sluice/sluice.db` at or above `dir`.
fn nearest(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .map(|d| d.join(STORE_DIR).join(STORE_FILE))
        .find(|db| db.is_file())
}

fn absolute(path: &Path) -> PathBuf {
    if let Ok(real) = std::fs::canonicalize(path) {
        return real;
    }
    match std::env::current_dir() {
        Ok(cwd) => cwd.join(path),
        Err(_) => path.to_path_buf(),
    }
}

/// `path` relative to the current directory when it is below it (shorter in
/// messages, and the same file for this process), else as it is.
fn shown(path: &Path) -> PathBuf {
    let cwd = std::env::current_dir()
        .ok()
        .and_then(|c| std::fs::canonicalize(c).ok())
        // From `/`, a relative path reads like a mistake.
        .filter(|c| c.parent().is_some());
    match cwd.and_then(|c| path.strip_prefix(c).ok().map(Path::to_path_buf)) {
        Some(rel) if !rel.as_os_str().is_empty() => rel,
        _ => path.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nearest_store_above_a_directory_is_found() {
        let root = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(root.path()).unwrap();
        let deep = root.join("a/b/c");
        std::fs::create_dir_all(&deep).unwrap();
        assert_eq!(nearest(&deep).filter(|p| p.starts_with(&root)), None);
        std::fs::create_dir_all(root.join("a/.sluice")).unwrap();
        std::fs::write(root.join("a/.sluice/sluice.db"), b"").unwrap();
        assert_eq!(nearest(&deep), Some(root.join("a/.sluice/sluice.db")));
        // A file in `a/b/c` runs in `a`'s store; one elsewhere gets its own.
        std::fs::write(deep.join("in.jsonl"), b"").unwrap();
        let StoreLocation::Sqlite(found) = for_file(&deep.join("in.jsonl")) else {
            panic!("a SQLite store");
        };
        assert_eq!(absolute(&found), root.join("a/.sluice/sluice.db"));
        if nearest(&root).is_none() {
            // (Unless a store exists above the temporary directory.)
            std::fs::write(root.join("x.jsonl"), b"").unwrap();
            let StoreLocation::Sqlite(new) = for_file(&root.join("x.jsonl")) else {
                panic!("a SQLite store");
            };
            assert_eq!(new, root.join(".sluice/sluice.db"));
        }
    }
}
