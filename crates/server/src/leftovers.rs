//! Files a submission wrote before its run opened (its spooled items, its
//! kept job file): removed if the submission is refused, kept once the run
//! that reads them is open.

use std::path::PathBuf;

/// Files to remove unless [`Leftovers::keep`] is called: dropping it on any
/// refusal path (an invalid job, a policy refusal, `--max-runs` reached, a
/// run that failed before it opened) cleans up after the submission.
#[derive(Debug, Default)]
pub(crate) struct Leftovers {
    paths: Vec<PathBuf>,
}

impl Leftovers {
    /// Removes `path` when this is dropped unkept.
    pub(crate) fn add(&mut self, path: PathBuf) {
        self.paths.push(path);
    }

    /// The run is open and reads these files: they stay.
    pub(crate) fn keep(mut self) {
        self.paths.clear();
    }
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        for path in &self.paths {
            if let Err(e) = std::fs::remove_file(path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), "cannot remove a refused submission's file: {e}");
                }
            }
        }
    }
}
