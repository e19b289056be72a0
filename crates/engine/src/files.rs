//! Which files a run may read at run time, for runs that are not the user's
//! own (a job submitted to `sluice serve`): a path a template renders (an
//! upload's `file`) is read only if, with symlinks and `..` resolved, it
//! lies inside one of the allowed directories. Runs from the CLI have no
//! such limit.

use std::path::{Path, PathBuf};

/// The run-state key under which a confined run keeps its directories (a
/// JSON list), so that every process working it (`sluice worker`s on a
/// shared store) confines it the same way.
pub const FILE_ACCESS_STATE: &str = "files.readable";

/// Directories a run may read files from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileAccess {
    /// Canonical directories.
    roots: Vec<PathBuf>,
}

impl FileAccess {
    /// Reading confined to `roots` (those that do not exist allow nothing).
    pub fn within(roots: &[PathBuf]) -> FileAccess {
        FileAccess {
            roots: roots
                .iter()
                .filter_map(|r| std::fs::canonicalize(r).ok())
                .collect(),
        }
    }

    /// The confinement kept with run `run_id`, if any.
    pub fn kept(
        store: &mut dyn sluice_store::Store,
        run_id: &str,
    ) -> crate::Result<Option<FileAccess>> {
        let kept = store.run_state(run_id, FILE_ACCESS_STATE)?;
        Ok(kept.into_iter().next().map(|(_, dirs)| {
            let dirs: Vec<PathBuf> = serde_json::from_value(dirs).unwrap_or_default();
            FileAccess::within(&dirs)
        }))
    }

    /// The directories it allows (canonical).
    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// The directories as kept with a run (see [`FILE_ACCESS_STATE`]).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!(self.roots)
    }

    /// The canonical path of `path` if the run may read it, else why not
    /// (names the key to blame as `what`).
    pub fn readable(&self, path: &Path, what: &str) -> Result<PathBuf, String> {
        let refused = || {
            format!(
                "{what} {} is outside the directories this run may read (the files sent with it, and the server's --allow-dir directories)",
                path.display()
            )
        };
        let canonical = std::fs::canonicalize(path).map_err(|_| refused())?;
        if self.roots.iter().any(|r| canonical.starts_with(r)) {
            Ok(canonical)
        } else {
            Err(refused())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_files_under_the_roots_are_readable() {
        let dir = tempfile::tempdir().unwrap();
        let inside = dir.path().join("in");
        std::fs::create_dir(&inside).unwrap();
        std::fs::write(inside.join("a.png"), b"x").unwrap();
        std::fs::write(dir.path().join("secret"), b"s").unwrap();
        let access = FileAccess::within(std::slice::from_ref(&inside));
        assert!(access
            .readable(&inside.join("a.png"), "upload.file")
            .is_ok());
        for bad in [
            dir.path().join("secret"),
            inside.join("../secret"),
            PathBuf::from("/etc/passwd"),
            inside.join("missing.png"),
        ] {
            let e = access.readable(&bad, "upload.file").unwrap_err();
            assert!(e.starts_with("upload.file "), "{e}");
        }
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(dir.path().join("secret"), inside.join("link")).unwrap();
            assert!(access
                .readable(&inside.join("link"), "upload.file")
                .is_err());
        }
    }
}
