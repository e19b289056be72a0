//! A glob input: one item per matching regular file, sorted by path, as
//! `{path, name, stem, ext, size}`.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{json, Value};

use super::{BadItem, Entries, InputError, RawItem};

/// The regular files `pattern` matches, absolute and sorted; none is an error.
pub(super) fn matches(pattern: &str) -> Result<Arc<[PathBuf]>, InputError> {
    let options = glob::MatchOptions {
        case_sensitive: true,
        // `*` stays within one directory; only `**` descends.
        require_literal_separator: true,
        // Hidden files (`.DS_Store`, `._x.wav`) only when the pattern names them.
        require_literal_leading_dot: true,
    };
    let paths = glob::glob_with(pattern, options).map_err(|e| InputError::BadPattern {
        pattern: pattern.to_string(),
        message: e.to_string(),
    })?;
    let mut files = Vec::new();
    for entry in paths {
        let path = entry.map_err(|e| InputError::Read {
            path: e.path().to_path_buf(),
            source: e.into(),
        })?;
        // `is_file` follows symbolic links: a link to a file is a file.
        if path.is_file() {
            files.push(std::path::absolute(&path).unwrap_or(path));
        }
    }
    if files.is_empty() {
        return Err(InputError::NoMatch {
            pattern: pattern.to_string(),
        });
    }
    files.sort();
    Ok(files.into())
}

/// Streams one entry per file; a file that vanished or whose name is not
/// UTF-8 is a bad entry.
pub(super) fn entries(files: Arc<[PathBuf]>) -> Entries {
    Box::new((0..files.len()).map(move |i| {
        let position = i as u64;
        let path = &files[i];
        let bad = |message: String| BadItem {
            position,
            line: None,
            message,
        };
        let Some(text) = path.to_str() else {
            return Ok(Err(bad(format!(
                "the path {} is not valid UTF-8; rename the file",
                path.display()
            ))));
        };
        let size = match std::fs::metadata(path) {
            Ok(meta) => meta.len(),
            Err(e) => return Ok(Err(bad(format!("cannot read {text}: {e}")))),
        };
        let value: Value = json!({
            "path": text,
            "name": part(path.file_name()),
            "stem": part(path.file_stem()),
            "ext": part(path.extension()),
            "size": size,
        });
        Ok(Ok(RawItem {
            position,
            line: None,
            value,
        }))
    }))
}

/// A path part as text; empty when missing (no extension) or not UTF-8.
fn part(p: Option<&std::ffi::OsStr>) -> &str {
    p.and_then(|s| s.to_str()).unwrap_or("")
}
