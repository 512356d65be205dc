//! The import-circle check: reads a crate's sources as text, finds which
//! file each `crate::`, `super::` and `self::` path leads to, and reports
//! every circle of files.
//!
//! A path leads to the file of the longest module it names
//! (`crate::guests::Registry` to `guests/mod.rs`). A module's children may
//! use what their ancestors declare (`super::Node` from `sync/workers.rs`):
//! that is how Rust splits one module over files, so an arrow from a file
//! up to one of its ancestors is not counted. Every other arrow is, and a
//! circle among them fails the check.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module: its path from the crate root and the file it is written in.
#[derive(Debug, Clone)]
struct Module {
    path: Vec<String>,
    file: PathBuf,
}

/// Every circle of files among `src`'s crate roots (`lib.rs`, `main.rs`,
/// `bin/*.rs`), each as the files in it, sorted.
pub fn circles(src: &Path) -> Vec<Vec<PathBuf>> {
    let mut roots = vec![src.join("lib.rs"), src.join("main.rs")];
    if let Ok(bins) = std::fs::read_dir(src.join("bin")) {
        roots.extend(bins.flatten().map(|e| e.path()));
    }
    let mut found = Vec::new();
    for root in roots.into_iter().filter(|r| r.is_file()) {
        let modules = modules_of(&root);
        let graph = arrows(&modules);
        found.extend(
            strong_components(&graph)
                .into_iter()
                .filter(|c| c.len() > 1),
        );
    }
    found.sort();
    found.dedup();
    found
}

/// The modules declared from `root` by `mod name;`, recursively.
fn modules_of(root: &Path) -> Vec<Module> {
    let mut out = Vec::new();
    let mut todo = vec![Module {
        path: Vec::new(),
        file: root.to_path_buf(),
    }];
    while let Some(m) = todo.pop() {
        let text = code_of(&m.file);
        // A crate root and `mod.rs` keep children beside them; `foo.rs`
        // keeps them in `foo/`.
        let dir = match m.file.file_name().and_then(|n| n.to_str()) {
            Some("mod.rs") | Some("lib.rs") | Some("main.rs") => {
                m.file.parent().map(Path::to_path_buf).unwrap_or_default()
            }
            _ if m.path.is_empty() => m.file.parent().map(Path::to_path_buf).unwrap_or_default(),
            _ => m.file.with_extension(""),
        };
        for name in declared_modules(&text) {
            let flat = dir.join(format!("{name}.rs"));
            let nested = dir.join(&name).join("mod.rs");
            let file = if flat.is_file() { flat } else { nested };
            if file.is_file() {
                let mut path = m.path.clone();
                path.push(name);
                todo.push(Module { path, file });
            }
        }
        out.push(m);
    }
    out
}

/// `mod name;` declarations (not inline `mod name { … }` blocks).
fn declared_modules(code: &str) -> Vec<String> {
    code.split(';')
        .filter_map(|stmt| {
            let words: Vec<&str> = stmt.split_whitespace().collect();
            let at = words.iter().rposition(|w| *w == "mod")?;
            (at + 2 == words.len()).then(|| words[at + 1].to_string())
        })
        .filter(|n| n.chars().all(|c| c.is_alphanumeric() || c == '_'))
        .collect()
}

/// The file-to-file arrows, without those from a file up to its ancestors.
fn arrows(modules: &[Module]) -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let by_path: BTreeMap<&[String], &Module> =
        modules.iter().map(|m| (m.path.as_slice(), m)).collect();
    let mut graph: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
    for m in modules {
        let entry = graph.entry(m.file.clone()).or_default();
        for path in paths_in(&code_of(&m.file)) {
            let Some(target) = resolve(&m.path, &path) else {
                continue;
            };
            // The longest module the path names.
            let to = (0..=target.len())
                .rev()
                .find_map(|n| by_path.get(&target[..n]).map(|t| (n, *t)));
            let Some((n, to)) = to else { continue };
            let is_ancestor = n <= m.path.len() && m.path[..n] == target[..n];
            if to.file != m.file && !is_ancestor {
                entry.insert(to.file.clone());
            }
        }
    }
    graph
}

/// A path as segments from the crate root, from the module at `from`.
fn resolve(from: &[String], path: &[String]) -> Option<Vec<String>> {
    let mut at: Vec<String> = from.to_vec();
    let mut rest = path;
    match rest.first().map(String::as_str) {
        Some("crate") => {
            at.clear();
            rest = &rest[1..];
        }
        Some("self") => rest = &rest[1..],
        Some("super") => {
            while rest.first().map(String::as_str) == Some("super") {
                at.pop()?;
                rest = &rest[1..];
            }
        }
        _ => return None,
    }
    at.extend(rest.iter().cloned());
    Some(at)
}

/// Every `crate::…`, `self::…` and `super::…` path in `code`, with `use`
/// groups (`use crate::{a::B, c::{D, E}}`) spelled out.
fn paths_in(code: &str) -> Vec<Vec<String>> {
    let flat = expand_groups(code);
    let bytes = flat.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let starts = (i == 0 || !word(bytes[i - 1]))
            && ["crate::", "self::", "super::"]
                .iter()
                .any(|p| bytes[i..].starts_with(p.as_bytes()));
        if !starts {
            i += 1;
            continue;
        }
        let mut j = i;
        while j < bytes.len() && word(bytes[j]) {
            j += 1;
        }
        out.push(
            String::from_utf8_lossy(&bytes[i..j])
                .split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        );
        i = j;
    }
    out
}

/// `a::{b::C, d}` becomes `a::b::C a::d`, innermost groups first.
fn expand_groups(code: &str) -> String {
    let mut s = code.to_string();
    loop {
        let Some(open) = s.find("::{") else { return s };
        let Some(close) = s[open..].find('}').map(|c| c + open) else {
            return s;
        };
        // The innermost group: no `{` between this one's braces.
        let inner_open = s[..close].rfind("::{").unwrap_or(open);
        let start = s[..inner_open]
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .map_or(0, |p| p + 1);
        let prefix = s[start..inner_open].to_string();
        let items: Vec<String> = s[inner_open + 3..close]
            .split(',')
            .map(str::trim)
            .filter(|i| !i.is_empty())
            .map(|i| format!("{prefix}::{i}"))
            .collect();
        s.replace_range(start..=close, &items.join(" "));
    }
}

/// A file's text without comments and string literals.
fn code_of(file: &Path) -> String {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                let mut last = ' ';
                for c in chars.by_ref() {
                    if last == '*' && c == '/' {
                        break;
                    }
                    last = c;
                }
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    if c == '"' && !escaped {
                        break;
                    }
                    escaped = c == '\\' && !escaped;
                }
                out.push_str("\"\"");
            }
            _ => out.push(c),
        }
    }
    out
}

/// Tarjan's strongly connected components.
fn strong_components(graph: &BTreeMap<PathBuf, BTreeSet<PathBuf>>) -> Vec<Vec<PathBuf>> {
    struct State<'g> {
        graph: &'g BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        index: BTreeMap<&'g PathBuf, (usize, usize)>,
        stack: Vec<&'g PathBuf>,
        on_stack: BTreeSet<&'g PathBuf>,
        next: usize,
        out: Vec<Vec<PathBuf>>,
    }
    fn visit<'g>(s: &mut State<'g>, v: &'g PathBuf) {
        s.index.insert(v, (s.next, s.next));
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        let graph = s.graph;
        for w in graph.get(v).into_iter().flatten() {
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.index[w].1.min(s.index[v].1);
                s.index.entry(v).and_modify(|e| e.1 = low);
            } else if s.on_stack.contains(w) {
                let low = s.index[w].0.min(s.index[v].1);
                s.index.entry(v).and_modify(|e| e.1 = low);
            }
        }
        if s.index[v].0 == s.index[v].1 {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.clone());
                if w == v {
                    break;
                }
            }
            component.sort();
            s.out.push(component);
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> PathBuf {
        let dir = crate::temp_dir("layout");
        for (name, text) in files {
            let path = dir.join(name);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
            std::fs::write(path, text).expect("write");
        }
        dir
    }

    fn names(dir: &Path, circles: Vec<Vec<PathBuf>>) -> Vec<Vec<String>> {
        circles
            .into_iter()
            .map(|c| {
                c.iter()
                    .map(|f| f.strip_prefix(dir).expect("inside").display().to_string())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn a_circle_between_siblings_through_a_use_group_is_found() {
        let dir = tree(&[
            ("lib.rs", "mod a;\npub mod b;\n"),
            ("a.rs", "use crate::{b::{One, Two}};\npub struct A;"),
            (
                "b.rs",
                "// crate::a::A in a comment is no arrow\npub fn f() -> crate::a::A { todo!() }",
            ),
        ]);
        assert_eq!(names(&dir, circles(&dir)), vec![vec!["a.rs", "b.rs"]]);
    }

    #[test]
    fn a_longer_circle_across_folders_is_found() {
        let dir = tree(&[
            ("lib.rs", "mod x;\nmod y;\nmod z;"),
            ("x/mod.rs", "mod inner;"),
            ("x/inner.rs", "use crate::y::Y;"),
            ("y.rs", "use super::z::Z;"),
            ("z.rs", "fn f(_: crate::x::inner::I) {}"),
        ]);
        assert_eq!(
            names(&dir, circles(&dir)),
            vec![vec!["x/inner.rs", "y.rs", "z.rs"]]
        );
    }

    #[test]
    fn children_using_their_parent_and_strings_are_no_circle() {
        let dir = tree(&[
            ("lib.rs", "mod sync;"),
            (
                "sync/mod.rs",
                "mod workers;\nuse self::workers::Workers;\npub struct Node;",
            ),
            (
                "sync/workers.rs",
                "use super::Node;\nconst S: &str = \"crate::sync::workers\";",
            ),
        ]);
        assert!(circles(&dir).is_empty());
    }
}
