//! Paths as the policy compares them: made canonical (symlinks and `..`
//! resolved; for a path not there yet, its nearest existing ancestor's
//! canonical form with the rest appended, which may not climb), and shown
//! without the server's own directories.

use std::path::{Component, Path, PathBuf};

/// `path` canonical, or `None` when it cannot be made so (the rest past its
/// nearest existing ancestor climbs with `..`).
fn canonical(path: &Path) -> Option<PathBuf> {
    if let Ok(c) = std::fs::canonicalize(path) {
        return Some(c);
    }
    let mut rest = Vec::new();
    let mut at = path;
    loop {
        let name = at.file_name()?;
        rest.push(name.to_owned());
        at = at.parent()?;
        if let Ok(base) = std::fs::canonicalize(at) {
            let tail: PathBuf = rest.iter().rev().collect();
            if tail
                .components()
                .any(|c| !matches!(c, Component::Normal(_)))
            {
                return None;
            }
            return Some(base.join(tail));
        }
    }
}

/// Whether `path`, made canonical, lies under one of `roots` (each made
/// canonical too).
pub(crate) fn inside(path: &Path, roots: &[PathBuf]) -> bool {
    let Some(path) = canonical(path) else {
        return false;
    };
    roots.iter().any(|root| {
        std::fs::canonicalize(root)
            .map(|r| path.starts_with(r))
            .unwrap_or(false)
    })
}

/// The directory part of a glob pattern: its components before the first
/// that holds a wildcard.
pub(crate) fn glob_base(pattern: &str) -> PathBuf {
    Path::new(pattern)
        .components()
        .take_while(|c| {
            !c.as_os_str()
                .to_string_lossy()
                .contains(['*', '?', '[', '{'])
        })
        .collect()
}

/// `path` as a client may see it: relative to the first of `prefixes` it
/// lies under (the server's directories are its own).
pub(crate) fn shown(path: &Path, prefixes: &[PathBuf]) -> String {
    let relative = prefixes.iter().find_map(|p| path.strip_prefix(p).ok());
    format!("{:?}", relative.unwrap_or(path).display().to_string())
}

/// The `--allow-dir` that would cover `path` (its directory, shown).
pub(crate) fn dir_flag(path: &Path, prefixes: &[PathBuf]) -> String {
    let dir = if path.is_dir() {
        path
    } else {
        path.parent().unwrap_or(path)
    };
    let shown = prefixes
        .iter()
        .find_map(|p| dir.strip_prefix(p).ok())
        .map_or_else(|| dir.display().to_string(), |p| p.display().to_string());
    format!(
        "--allow-dir {}",
        if shown.is_empty() { "." } else { &shown }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_compared_where_they_really_are() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(dir.path().join("secret"), "s").unwrap();
        let roots = [root.clone()];
        assert!(inside(&root.join("sub"), &roots));
        assert!(inside(&root.join("new/file.txt"), &roots), "not there yet");
        assert!(!inside(&root.join("../secret"), &roots));
        assert!(!inside(&root.join("new/../../secret"), &roots));
        assert!(!inside(Path::new("/etc/passwd"), &roots));
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(dir.path(), root.join("out")).unwrap();
            assert!(!inside(&root.join("out/secret"), &roots), "a symlink out");
        }
    }

    #[test]
    fn a_glob_is_judged_by_its_directory() {
        assert_eq!(glob_base("/a/b/*.png"), PathBuf::from("/a/b"));
        assert_eq!(glob_base("/a/**/x"), PathBuf::from("/a"));
        assert_eq!(glob_base("/etc/passw*"), PathBuf::from("/etc"));
    }

    #[test]
    fn server_directories_are_not_shown() {
        let prefixes = [PathBuf::from("/srv/work")];
        assert_eq!(
            shown(Path::new("/srv/work/a.jsonl"), &prefixes),
            "\"a.jsonl\""
        );
        assert_eq!(
            shown(Path::new("/etc/passwd"), &prefixes),
            "\"/etc/passwd\""
        );
        assert_eq!(
            dir_flag(Path::new("/srv/work/data/a.jsonl"), &prefixes),
            "--allow-dir data"
        );
    }
}
