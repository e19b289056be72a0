//! Template functions that put a file into a request: `data_url(path)`
//! (`data:MEDIA;base64,…`, the media type from the file's first bytes or its
//! name) and `base64(path)`. A relative path is from the job file's
//! directory; a run that is not the user's own (a job submitted to `sluice
//! serve`) is confined to the directories its [`FileScope`] allows. A
//! missing, unreadable or oversized file is an error naming the path, so
//! `plan` (and the check before `run`) finds it before anything is sent.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use minijinja::{Environment, Error, ErrorKind, Value};
use sluice_dialect::media::{base64_encode, media_type, MAX_INLINE_BYTES};

use crate::placeholder::Placeholder;

/// Where one job's templates may read files from: shared by every template
/// of the job (cheap to clone; a confinement set later holds for all).
#[derive(Clone, Default)]
pub struct FileScope {
    inner: Arc<RwLock<ScopeState>>,
}

#[derive(Default)]
struct ScopeState {
    /// Relative paths are from here (the job file's directory).
    base: PathBuf,
    /// Canonical directories files must lie in; `None`: anywhere.
    roots: Option<Vec<PathBuf>>,
}

impl std::fmt::Debug for FileScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state();
        write!(f, "FileScope({:?}, {:?})", state.base, state.roots)
    }
}

impl FileScope {
    /// Files relative to `base`, anywhere.
    pub(crate) fn new(base: PathBuf) -> FileScope {
        FileScope {
            inner: Arc::new(RwLock::new(ScopeState { base, roots: None })),
        }
    }

    /// From now on, only files inside `roots` (directories; those that do not
    /// exist allow nothing) may be read.
    pub fn confine(&self, roots: &[PathBuf]) {
        let canonical = roots
            .iter()
            .filter_map(|r| std::fs::canonicalize(r).ok())
            .collect();
        let mut state = self.inner.write().unwrap_or_else(|e| e.into_inner());
        state.roots = Some(canonical);
    }

    fn state(&self) -> std::sync::RwLockReadGuard<'_, ScopeState> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `data_url` and `base64` to `env`, reading through this scope.
    pub(crate) fn register(&self, env: &mut Environment<'static>) {
        let scope = self.clone();
        env.add_function("data_url", move |path: Value| scope.call("data_url", &path));
        let scope = self.clone();
        env.add_function("base64", move |path: Value| scope.call("base64", &path));
    }

    fn call(&self, name: &str, path: &Value) -> Result<Value, Error> {
        // While a template is checked, an earlier answer or a variable is a
        // stand-in: so is what the function makes of it.
        let text = path.as_str().map(str::to_owned);
        let stand_in = match &text {
            None if Placeholder::is(path) => true,
            Some(t) => t.starts_with('⟨') && t.ends_with('⟩'),
            None => false,
        };
        if stand_in {
            return Ok(Placeholder::value(format!("{name}({path})")));
        }
        let Some(text) = text else {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("{name}() takes a file path (a string), not {}", path.kind()),
            ));
        };
        if text.starts_with("http://") || text.starts_with("https://") {
            // The API fetches a URL itself; base64 of one would mean downloading it here.
            return match name {
                "data_url" => Ok(Value::from(text)),
                _ => Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("base64({text:?}): base64 reads a local file; pass the URL as it is (image_url takes URLs)"),
                )),
            };
        }
        let bytes = self.read(name, &text)?;
        let encoded = base64_encode(&bytes);
        Ok(Value::from(match name {
            "data_url" => format!("data:{};base64,{encoded}", media_type(&bytes, &text)),
            _ => encoded,
        }))
    }

    /// The file's bytes, after the confinement and size checks.
    fn read(&self, name: &str, text: &str) -> Result<Vec<u8>, Error> {
        let fail = |message: String| Error::new(ErrorKind::InvalidOperation, message);
        let state = self.state();
        let path = match Path::new(text) {
            p if p.is_absolute() => p.to_path_buf(),
            p => state.base.join(p),
        };
        let unreadable = |e: std::io::Error| {
            fail(format!(
                "{name}({text:?}): cannot read {}: {e}; check the path (relative paths are from the job file's directory)",
                path.display()
            ))
        };
        if let Some(roots) = &state.roots {
            let canonical = std::fs::canonicalize(&path).map_err(unreadable)?;
            if !roots.iter().any(|r| canonical.starts_with(r)) {
                return Err(fail(format!(
                    "{name}({text:?}): {} is outside the directories this run may read (the files sent with it, and the server's --allow-dir directories)",
                    path.display()
                )));
            }
        }
        let size = std::fs::metadata(&path).map_err(unreadable)?.len();
        if size > MAX_INLINE_BYTES {
            return Err(fail(format!(
                "{name}({text:?}): {} is {:.1} MB; no API takes more than {} MB in a message; send a smaller file",
                path.display(),
                size as f64 / 1e6,
                MAX_INLINE_BYTES >> 20
            )));
        }
        std::fs::read(&path).map_err(unreadable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(scope: &FileScope, source: &str, path: &str) -> Result<String, String> {
        let mut env = crate::template::environment();
        scope.register(&mut env);
        env.render_str(source, minijinja::context! { p => path })
            .map_err(|e| format!("{e:#}"))
    }

    #[test]
    fn files_become_data_urls_and_base64_relative_to_the_job() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("dot.png"), b"\x89PNG\r\n\x1a\nrest").unwrap();
        let scope = FileScope::new(dir.path().to_path_buf());
        assert_eq!(
            render(&scope, "{{ data_url(p) }}", "dot.png").unwrap(),
            "data:image/png;base64,iVBORw0KGgpyZXN0"
        );
        assert_eq!(
            render(&scope, "{{ base64(p) }}", "dot.png").unwrap(),
            "iVBORw0KGgpyZXN0"
        );
        assert_eq!(
            render(&scope, "{{ data_url(p) }}", "https://x.test/a.png").unwrap(),
            "https://x.test/a.png"
        );
        let e = render(&scope, "{{ data_url(p) }}", "missing.png").unwrap_err();
        assert!(e.contains("data_url(\"missing.png\"): cannot read"), "{e}");
        assert!(e.contains("missing.png"), "{e}");
    }

    #[test]
    fn a_confined_scope_reads_only_inside_its_roots() {
        let dir = tempfile::tempdir().unwrap();
        let inside = dir.path().join("in");
        std::fs::create_dir(&inside).unwrap();
        std::fs::write(inside.join("a.txt"), b"ok").unwrap();
        std::fs::write(dir.path().join("secret"), b"s").unwrap();
        let scope = FileScope::new(inside.clone());
        scope.confine(std::slice::from_ref(&inside));
        assert_eq!(render(&scope, "{{ base64(p) }}", "a.txt").unwrap(), "b2s=");
        let e = render(&scope, "{{ base64(p) }}", "../secret").unwrap_err();
        assert!(e.contains("outside the directories"), "{e}");
    }

    #[test]
    fn stand_ins_stay_stand_ins_while_checking() {
        let scope = FileScope::new(PathBuf::new());
        assert_eq!(
            render(&scope, "{{ data_url(p) }}", "⟨steps.draw.file⟩").unwrap(),
            "⟨data_url(⟨steps.draw.file⟩)⟩"
        );
    }
}
