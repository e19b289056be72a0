//! Spooling standard input to a file named by its content hash, so the same
//! data piped again maps to the same file (and the same run) and resumes.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use sluice_spec::InputFormat;

use super::InputError;

/// The spool file extension for `format`.
fn extension(format: InputFormat) -> &'static str {
    match format {
        InputFormat::Jsonl => "jsonl",
        InputFormat::Csv => "csv",
        InputFormat::Json => "json",
    }
}

/// Copies `input` to `dir/stdin-<xxh3 hex>.<ext>`; returns the path and hash.
pub(super) fn stdin(
    input: &mut dyn Read,
    dir: &Path,
    format: InputFormat,
) -> Result<(PathBuf, u64), InputError> {
    let tmp = temp_path(dir, "stdin");
    let mut out = create(&tmp)?;
    let write_err = |source| InputError::Write {
        path: tmp.clone(),
        source,
    };
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(source) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(InputError::Read {
                    path: PathBuf::from("-"),
                    source,
                });
            }
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(write_err)?;
    }
    out.flush().map_err(write_err)?;
    drop(out);
    let hash = hasher.digest();
    let path = dir.join(format!("stdin-{hash:016x}.{}", extension(format)));
    commit(&tmp, &path)?;
    Ok((path, hash))
}

/// A temporary name in `dir` unique to this process and call.
pub(super) fn temp_path(dir: &Path, prefix: &str) -> PathBuf {
    dir.join(format!(
        "{prefix}-{}-{:08x}.partial",
        std::process::id(),
        fastrand::u32(..)
    ))
}

/// Creates `dir`'s parents and `path` for buffered writing.
pub(super) fn create(path: &Path) -> Result<BufWriter<File>, InputError> {
    let write_err = |source| InputError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(write_err)?;
    }
    Ok(BufWriter::with_capacity(
        256 * 1024,
        File::create(path).map_err(write_err)?,
    ))
}

/// Renames the finished `tmp` to `path`, atomically: a reader never sees a
/// half-written spool.
pub(super) fn commit(tmp: &Path, path: &Path) -> Result<(), InputError> {
    std::fs::rename(tmp, path).map_err(|source| {
        let _ = std::fs::remove_file(tmp);
        InputError::Write {
            path: path.to_path_buf(),
            source,
        }
    })
}
