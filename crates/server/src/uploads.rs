//! Files sent with a submission (`multipart/form-data`): each run gets a
//! scratch directory of its own under the store's directory
//! (`uploads/SERVER/RUN/`), removed when the run ends, whatever its ending.
//!
//! Each server holds an exclusive lock on `uploads/SERVER.lock` while it
//! lives, so a server starting later sweeps only the directories of servers
//! that are gone (a crash or `kill -9` leaves them behind), never those of
//! one still running on the same store directory.

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::error::{ApiError, ApiResult};

/// Where this server keeps uploads, made on first use.
pub(crate) struct Uploads {
    /// `<store dir>/uploads`.
    root: PathBuf,
    /// This server's directory and the lock that marks it as alive.
    mine: Mutex<Option<(PathBuf, File)>>,
}

/// One run's files: the directory is removed when this is dropped (the
/// run's thread owns it, so that is when the run ends; a submission refused
/// before it started drops it at once).
#[derive(Debug)]
pub(crate) struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// The directory (absolute).
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        match std::fs::remove_dir_all(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("removing uploads {}: {e}", self.path.display()),
        }
    }
}

/// A name no other directory of this store has: the clock's nanoseconds,
/// the process and a counter, hashed.
fn nonce() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let seed = format!(
        "{nanos}.{}.{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(seed.as_bytes()))
}

impl Uploads {
    /// Uploads under `store_dir/uploads` (nothing is created yet).
    pub(crate) fn new(store_dir: &Path) -> Uploads {
        let root = store_dir.join("uploads");
        Uploads {
            root: std::path::absolute(&root).unwrap_or(root),
            mine: Mutex::new(None),
        }
    }

    /// Removes what servers that are no longer running left behind; returns
    /// how many of their run directories went.
    pub(crate) fn sweep(&self) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return 0;
        };
        let mine = self.mine_dir();
        let mut removed = 0;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "lock") {
                let dir = path.with_extension("");
                if Some(&dir) == mine.as_ref() || !unowned(&path) {
                    continue;
                }
                removed += runs_in(&dir);
                let _ = std::fs::remove_dir_all(&dir);
                let _ = std::fs::remove_file(&path);
            } else if path.is_dir() && !path.with_extension("lock").exists() {
                // A directory whose lock is gone has no owner either.
                removed += runs_in(&path);
                let _ = std::fs::remove_dir_all(&path);
            }
        }
        removed
    }

    fn mine_dir(&self) -> Option<PathBuf> {
        let mine = self.mine.lock().unwrap_or_else(|e| e.into_inner());
        mine.as_ref().map(|(dir, _)| dir.clone())
    }

    /// Removes this server's directory and lock if no run's files are left
    /// in it (on shutdown, once the runs have ended).
    pub(crate) fn close(&self) {
        let mut mine = self.mine.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((dir, lock)) = mine.take() {
            if std::fs::remove_dir(&dir).is_ok() {
                let _ = std::fs::remove_file(dir.with_extension("lock"));
                drop(lock);
            } else {
                *mine = Some((dir, lock));
            }
        }
    }

    /// A new, empty scratch directory for one run.
    pub(crate) fn scratch(&self) -> ApiResult<ScratchDir> {
        let failed = |e: std::io::Error| ApiError::internal("keeping the uploaded files", e);
        let mut mine = self.mine.lock().unwrap_or_else(|e| e.into_inner());
        let dir = match mine.as_ref() {
            Some((dir, _)) => dir.clone(),
            None => {
                std::fs::create_dir_all(&self.root).map_err(failed)?;
                let name = nonce();
                // The lock first, then the directory: a directory without its
                // lock is a leftover to any sweep.
                let lock = File::create(self.root.join(format!("{name}.lock"))).map_err(failed)?;
                lock.try_lock().map_err(|e| match e {
                    TryLockError::Error(e) => failed(e),
                    TryLockError::WouldBlock => failed(std::io::Error::other("lock taken")),
                })?;
                let dir = std::path::absolute(self.root.join(&name)).map_err(failed)?;
                std::fs::create_dir_all(&dir).map_err(failed)?;
                *mine = Some((dir.clone(), lock));
                dir
            }
        };
        let path = dir.join(nonce());
        std::fs::create_dir(&path).map_err(failed)?;
        Ok(ScratchDir { path })
    }
}

/// Whether no live server holds the lock file at `path`.
fn unowned(path: &Path) -> bool {
    match File::options().write(true).open(path) {
        Ok(file) => match file.try_lock() {
            Ok(()) => true,
            Err(TryLockError::WouldBlock) => false,
            Err(TryLockError::Error(_)) => false,
        },
        Err(_) => false,
    }
}

fn runs_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.flatten().count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scratch_dir_goes_when_dropped() {
        let store = tempfile::tempdir().unwrap();
        let uploads = Uploads::new(store.path());
        let a = uploads.scratch().unwrap();
        let b = uploads.scratch().unwrap();
        assert_ne!(a.path(), b.path());
        std::fs::write(a.path().join("x.png"), b"png").unwrap();
        let path = a.path().to_path_buf();
        drop(a);
        assert!(!path.exists());
        assert!(b.path().exists());
    }

    #[test]
    fn a_sweep_spares_live_servers_and_removes_the_others_leftovers() {
        let store = tempfile::tempdir().unwrap();
        let live = Uploads::new(store.path());
        let kept = live.scratch().unwrap();
        // A server that died: its lock file is there but nobody holds it.
        let dead = Uploads::new(store.path());
        let left = dead.scratch().unwrap();
        let left_path = left.path().to_path_buf();
        std::mem::forget(left);
        let dead_dir = dead.mine_dir().unwrap();
        drop(dead);
        // A directory whose lock file is gone.
        let orphan = store.path().join("uploads/0123/abcd");
        std::fs::create_dir_all(&orphan).unwrap();

        let starting = Uploads::new(store.path());
        assert_eq!(starting.sweep(), 2);
        assert!(kept.path().exists(), "a running server's files stay");
        assert!(!left_path.exists() && !dead_dir.exists());
        assert!(!orphan.exists());
        assert!(!dead_dir.with_extension("lock").exists());
        assert_eq!(live.sweep(), 0, "and it does not sweep itself");
        let mine = live.mine_dir().unwrap();
        live.close();
        assert!(mine.exists(), "not while a run's files are there");
        drop(kept);
        live.close();
        assert!(!mine.exists() && !mine.with_extension("lock").exists());
    }
}
