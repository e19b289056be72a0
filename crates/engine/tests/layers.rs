//! The engine's modules stay in layers: no module cycle, and arrows only
//! downward — the base (clock, identity, errors, counters' parts) imports
//! only the base, and nothing below the front ends (quick mode, the job
//! runner, the worker) imports a front end. Read from the `crate::` and
//! `super::` paths in `src/`, the way `shared/tools/modcycles.py` reads them;
//! test code (`tests.rs`, anything after `#[cfg(test)]`) is left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

/// The front ends: each runs (or shows) a kind of run and may use anything.
const FRONT_ENDS: &[&str] = &["quick", "quick_plan", "job", "worker", "results"];

/// The lowest layer: each of these imports only others of this list.
const BASE: &[&str] = &[
    "clock",
    "identity",
    "error",
    "errors",
    "item_error",
    "check_report",
    "meter",
    "fair",
    "nul",
    "recording",
    "stopping",
    "tokens",
    "shape",
    "files",
];

/// 0 base, 1 the engine's core, 2 a front end.
fn layer(m: &Module) -> u8 {
    let top = m.first().map(String::as_str).unwrap_or("");
    if FRONT_ENDS.contains(&top) {
        2
    } else if BASE.contains(&top) {
        0
    } else {
        1
    }
}

fn name(m: &Module) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("read src")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "tests") {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs")
            && path.file_name().is_some_and(|n| n != "tests.rs")
        {
            out.push(path);
        }
    }
}

fn module_of(rel: &Path) -> Module {
    let mut parts: Module = rel
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts
        .last()
        .is_some_and(|p| p == "lib" || p == "main" || p == "mod")
    {
        parts.pop();
    }
    parts
}

/// The source without test code and without `//` comments.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or("");
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn skip_ws(s: &[u8], i: &mut usize) {
    while *i < s.len() && s[*i].is_ascii_whitespace() {
        *i += 1;
    }
}

/// The paths starting at `i`: `a::b`, or every leaf of `a::{b, c::{d, e}}`.
fn paths_at(s: &[u8], i: &mut usize) -> Vec<Module> {
    let mut prefix = Module::new();
    loop {
        skip_ws(s, i);
        if s.get(*i) == Some(&b'{') {
            *i += 1;
            let mut out = Vec::new();
            loop {
                skip_ws(s, i);
                match s.get(*i) {
                    None => return out,
                    Some(b'}') => {
                        *i += 1;
                        return out;
                    }
                    _ => {}
                }
                let start = *i;
                for p in paths_at(s, i) {
                    out.push(prefix.iter().cloned().chain(p).collect());
                }
                // Past `as name`, `*`, up to the next item.
                while *i < s.len() && s[*i] != b',' && s[*i] != b'}' {
                    *i += 1;
                }
                if s.get(*i) == Some(&b',') {
                    *i += 1;
                }
                if *i == start {
                    *i += 1;
                }
            }
        }
        let start = *i;
        while *i < s.len() && is_ident(s[*i]) {
            *i += 1;
        }
        if *i == start {
            return vec![prefix];
        }
        prefix.push(String::from_utf8_lossy(&s[start..*i]).into_owned());
        if s[*i..].starts_with(b"::") {
            *i += 2;
        } else {
            return vec![prefix];
        }
    }
}

/// Every module each module imports (not its ancestors or descendants).
fn graph() -> BTreeMap<Module, BTreeSet<Module>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let texts: Vec<(Module, String)> = files
        .iter()
        .map(|f| {
            let rel = f.strip_prefix(&src).expect("under src");
            let text = std::fs::read_to_string(f).expect("read a source file");
            (module_of(rel), code(&text))
        })
        .collect();
    let modules: BTreeSet<Module> = texts.iter().map(|(m, _)| m.clone()).collect();
    let mut edges = BTreeMap::new();
    for (m, text) in &texts {
        let s = text.as_bytes();
        let mut found = BTreeSet::new();
        for (at, _) in text.match_indices("::") {
            let (root, start) = if at >= 5 && &s[at - 5..at] == b"crate" {
                ("crate", at - 5)
            } else if at >= 5 && &s[at - 5..at] == b"super" {
                ("super", at - 5)
            } else {
                continue;
            };
            if start > 0 && (is_ident(s[start - 1]) || s[start - 1] == b':') {
                continue;
            }
            let mut i = at + 2;
            for path in paths_at(s, &mut i) {
                let mut target: Module = if root == "crate" {
                    Vec::new()
                } else {
                    m[..m.len().saturating_sub(1)].to_vec()
                };
                for part in path {
                    match part.as_str() {
                        "self" => {}
                        "super" => {
                            target.pop();
                        }
                        _ => target.push(part),
                    }
                }
                while !target.is_empty() && !modules.contains(&target) {
                    target.pop();
                }
                if target.is_empty() || target == *m {
                    continue;
                }
                if target.starts_with(m) || m.starts_with(&target) {
                    continue;
                }
                found.insert(target);
            }
        }
        edges.insert(m.clone(), found);
    }
    edges
}

/// Strongly connected sets of two or more modules (Tarjan).
fn cycles(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<String>> {
    struct State<'a> {
        edges: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        on: BTreeSet<&'a Module>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(st: &mut State<'a>, v: &'a Module) {
        let n = st.index.len();
        st.index.insert(v, n);
        st.low.insert(v, n);
        st.stack.push(v);
        st.on.insert(v);
        for w in &st.edges[v] {
            if !st.index.contains_key(w) {
                visit(st, w);
                let low = st.low[v].min(st.low[w]);
                st.low.insert(v, low);
            } else if st.on.contains(w) {
                let low = st.low[v].min(st.index[w]);
                st.low.insert(v, low);
            }
        }
        if st.low[v] == st.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = st.stack.pop() {
                st.on.remove(w);
                comp.push(name(w));
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                st.out.push(comp);
            }
        }
    }
    let mut st = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !st.index.contains_key(v) {
            visit(&mut st, v);
        }
    }
    st.out
}

#[test]
fn the_reader_sees_the_imports() {
    // A graph read wrong would pass every check below: make sure it sees
    // known arrows, in `use` groups and in inline paths.
    let edges = graph();
    let m = |s: &str| -> Module { s.split("::").map(str::to_owned).collect() };
    assert!(edges.len() > 50, "only {} modules read", edges.len());
    assert!(edges[&m("heartbeat")].contains(&m("identity")));
    assert!(edges[&m("lifecycle")].contains(&m("report")));
    assert!(edges[&m("job::runner::parts")].contains(&m("job::runner::send")));
    let s = b"crate::{a::{b, c as d}, e::*, self};".as_slice();
    let mut i = "crate::".len();
    let found = paths_at(s, &mut i);
    assert_eq!(found, vec![m("a::b"), m("a::c"), m("e"), m("self")]);
}

#[test]
fn no_module_cycle() {
    let found = cycles(&graph());
    assert!(
        found.is_empty(),
        "module cycles in crates/engine/src (move the shared type to a module both sides use): {found:?}"
    );
}

#[test]
fn arrows_only_point_down() {
    let mut wrong = Vec::new();
    for (m, targets) in graph() {
        for t in targets {
            if layer(&t) > layer(&m) {
                wrong.push(format!("{} imports {}", name(&m), name(&t)));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "a lower module imports a higher one (front ends: {FRONT_ENDS:?}; base: {BASE:?}): {wrong:#?}"
    );
}
