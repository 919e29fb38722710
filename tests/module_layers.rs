//! The top-level modules of `src/` depend on each other one way only, layer by layer:
//!
//! ```text
//! runtime, commands, telemetry   the wiring and the one-shot commands
//! server, cli                    the edges (gRPC, HTTP, admin, webhook) and the flags
//! source, decision               where configuration comes from (files, the cluster);
//!                                the pipeline: token → user → policies. Neither uses
//!                                the other.
//! snapshot                       the compiled configuration (trust, policies, user index)
//! token, policy, users           token validation; the policy engines; who is calling
//!                                (a User, its index, find and create, the stores)
//! resources, metrics, outbound,  the four kinds and their documents; counters that take
//! proto                          plain values; the one HTTP client for identity
//!                                providers; generated protobuf
//! ```
//!
//! A module may use only modules of lower layers. Test code (`tests.rs` files and
//! `#[cfg(test)]` modules) is not counted; comments are not code. This test fails, naming
//! the offending lines, when an edge points up or sideways, which is how a cycle starts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const LAYERS: &[&[&str]] = &[
    &["runtime", "commands", "telemetry"],
    &["server", "cli"],
    &["source", "decision"],
    &["snapshot"],
    &["token", "policy", "users"],
    &["resources", "metrics", "outbound", "proto"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// `(from, to)` → the lines that make the edge.
type Edges = BTreeMap<(String, String), Vec<String>>;

fn collect(dir: &Path, edges: &mut Edges, modules: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, edges, modules);
            continue;
        }
        if path.extension().and_then(|e| e.to_str()) != Some("rs")
            || path.file_name().and_then(|n| n.to_str()) == Some("tests.rs")
        {
            continue;
        }
        let rel = path.strip_prefix(src()).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if top == "lib" || top == "main" {
            continue;
        }
        modules.insert(top.clone());
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("#[cfg(test)]") {
                break; // test modules stand at the end of a file, by convention here
            }
            if code.starts_with("//") {
                continue;
            }
            let code = code.split("//").next().unwrap_or("");
            for (i, _) in code.match_indices("crate::") {
                let used: String = code[i + "crate::".len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if used.is_empty() || used == top {
                    continue;
                }
                edges.entry((top.clone(), used)).or_default().push(format!(
                    "src/{}:{}: {}",
                    rel.display(),
                    n + 1,
                    line.trim()
                ));
            }
        }
    }
}

fn src() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src"))
}

#[test]
fn top_level_modules_depend_one_way() {
    let mut edges = Edges::new();
    let mut modules = BTreeSet::new();
    collect(src(), &mut edges, &mut modules);

    let mut problems = Vec::new();
    for module in &modules {
        if layer_of(module).is_none() {
            problems.push(format!(
                "module `{module}` has no layer: add it to LAYERS in tests/module_layers.rs"
            ));
        }
    }
    let mut graph = BTreeMap::<&str, Vec<&str>>::new();
    for ((from, to), lines) in &edges {
        graph.entry(from).or_default().push(to);
        match (layer_of(from), layer_of(to)) {
            (Some(f), Some(t)) if f < t => {}
            (Some(_), Some(_)) => problems.push(format!(
                "`{from}` uses `{to}`, which is not below it:\n  {}",
                lines.join("\n  ")
            )),
            _ => {}
        }
    }
    // What the check saw, for `cargo test --test module_layers -- --nocapture`.
    for (from, to) in &graph {
        eprintln!("{from} -> {}", to.join(", "));
    }
    assert!(
        problems.is_empty(),
        "module layering broken:\n{}",
        problems.join("\n")
    );
    // The check must see the edges it polices: the pipeline uses the engines.
    assert!(edges.contains_key(&("decision".into(), "policy".into())));
}

/// The files of one folder of `src/` (a file `x.rs` and its folder `x/` are one node, named
/// `x`; the folder's own `mod.rs` is their parent, not one of them) import each other one
/// way only. An edge is a path, in a `use` or in code, that names a sibling: `super::x`,
/// `crate::<folder>::x`, `super::{x, y::z}`. Test code is not counted, as above.
///
/// A circle among siblings means two files that are really one, or a type that lives in the
/// wrong one: move it (to one of them, or to a file of its own that both use).
#[test]
fn no_circle_inside_a_folder() {
    let mut edges = FolderEdges::new();
    collect_folder_edges(src(), &mut edges);

    let mut problems = Vec::new();
    for (folder, graph) in &edges {
        for circle in circles(graph) {
            let lines: Vec<&str> = graph
                .iter()
                .filter(|((from, to), _)| circle.contains(from) && circle.contains(to))
                .flat_map(|(_, lines)| lines.iter().map(String::as_str))
                .collect();
            problems.push(format!(
                "files of one folder import each other in a circle: {}\n  {}",
                show_circle(folder, &circle),
                lines.join("\n  ")
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "circles inside a folder of src/:\n{}",
        problems.join("\n")
    );
    // The check must see the edges it polices: the listeners use the shutdown's `Stop`.
    assert!(edges["runtime"].contains_key(&("servers".into(), "shutdown".into())));
}

/// Folder under `src/` (`""` for `src/` itself) → `(from, to)` between its nodes → the
/// lines that make the edge.
type FolderEdges = BTreeMap<String, BTreeMap<(String, String), Vec<String>>>;

fn collect_folder_edges(dir: &Path, edges: &mut FolderEdges) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_folder_edges(&path, edges);
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.ends_with(".rs") || name == "tests.rs" {
            continue;
        }
        let rel = path.strip_prefix(src()).unwrap();
        if rel == Path::new("main.rs") {
            continue; // the binary: a crate of its own
        }
        // The module the file is: `a/b.rs` and `a/b/mod.rs` are `a::b`, `lib.rs` the root.
        let mut module: Vec<String> = rel
            .with_extension("")
            .components()
            .map(|c| c.as_os_str().to_string_lossy().to_string())
            .collect();
        if matches!(module.last().map(String::as_str), Some("mod" | "lib")) {
            module.pop();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (line_no, target) in paths_in(&text) {
            let Some(target) = resolve(&module, &target) else {
                continue;
            };
            // In every folder that holds this file (as one of its nodes) and the target.
            for depth in 0..module.len() {
                let folder = &module[..depth];
                if target.len() <= depth || target[..depth] != *folder {
                    continue;
                }
                let (from, to) = (&module[depth], &target[depth]);
                if from == to || !is_node(folder, to) {
                    continue;
                }
                let line = text.lines().nth(line_no).unwrap_or("").trim();
                let line = format!("src/{}:{}: {line}", rel.display(), line_no + 1);
                let lines = edges
                    .entry(folder.join("/"))
                    .or_default()
                    .entry((from.clone(), to.clone()))
                    .or_default();
                if !lines.contains(&line) {
                    lines.push(line); // once, however many names of a group it brings
                }
            }
        }
    }
}

/// Whether `name` is a file (`name.rs`) or folder (`name/`) of `src/<folder>`.
fn is_node(folder: &[String], name: &str) -> bool {
    let dir = folder.iter().fold(src().to_path_buf(), |p, f| p.join(f));
    name != "mod"
        && name != "tests"
        && (dir.join(format!("{name}.rs")).is_file() || dir.join(name).is_dir())
}

/// A path as written (`["super", "x", "Y"]`, `["crate", "a", "b"]`) as a path from the
/// crate root, from inside `module`; `None` when it does not start at `crate`, `super` or
/// `self`.
fn resolve(module: &[String], path: &[String]) -> Option<Vec<String>> {
    let mut rest = path.iter().peekable();
    let mut base: Vec<String> = match rest.next()?.as_str() {
        "crate" => Vec::new(),
        "self" => module.to_vec(),
        "super" => module[..module.len().checked_sub(1)?].to_vec(),
        _ => return None,
    };
    while rest.peek().map(|s| s.as_str()) == Some("super") {
        rest.next();
        base.pop()?;
    }
    base.extend(rest.filter(|s| s.as_str() != "self").cloned());
    Some(base)
}

/// Every path that starts at `crate`, `super` or `self` in the file's code (comments and
/// test code left out), `use` groups expanded (`super::{a, b::{c, d}}` is three paths),
/// with the index of the line where it starts.
fn paths_in(text: &str) -> Vec<(usize, Vec<String>)> {
    // The code alone, with the line each byte came from.
    let mut code = Vec::new();
    let mut line_of = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]") {
            break; // test modules stand at the end of a file, by convention here
        }
        let kept = line.split("//").next().unwrap_or("");
        code.extend_from_slice(kept.as_bytes());
        code.push(b'\n');
        line_of.extend(std::iter::repeat_n(n, kept.len() + 1));
    }
    let ident_byte = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut found = Vec::new();
    let mut i = 0;
    while i < code.len() {
        let at_word = i == 0 || !(ident_byte(code[i - 1]) || code[i - 1] == b':');
        let starts = ["crate", "super", "self"]
            .into_iter()
            .find(|w| code[i..].starts_with(w.as_bytes()));
        if let (true, Some(word)) = (at_word, starts) {
            let mut parser = PathParser { code: &code, at: i };
            let end_of_word = i + word.len();
            if end_of_word < code.len() && !ident_byte(code[end_of_word]) {
                for path in parser.tree(Vec::new()) {
                    found.push((line_of[i], path));
                }
                i = parser.at.max(i + 1);
                continue;
            }
        }
        i += 1;
    }
    found
}

/// Reads a path or a `use` tree: `a::b::{c, d::e as f, g::*}`.
struct PathParser<'c> {
    code: &'c [u8],
    at: usize,
}

impl PathParser<'_> {
    fn skip_space(&mut self) {
        while self.at < self.code.len() && self.code[self.at].is_ascii_whitespace() {
            self.at += 1;
        }
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_space();
        let found = self.code[self.at..].starts_with(token.as_bytes());
        if found {
            self.at += token.len();
        }
        found
    }

    fn ident(&mut self) -> Option<String> {
        self.skip_space();
        let start = self.at;
        while self.at < self.code.len()
            && (self.code[self.at].is_ascii_alphanumeric() || self.code[self.at] == b'_')
        {
            self.at += 1;
        }
        (self.at > start).then(|| String::from_utf8_lossy(&self.code[start..self.at]).into())
    }

    /// The paths that continue `prefix` from here.
    fn tree(&mut self, prefix: Vec<String>) -> Vec<Vec<String>> {
        if self.eat("{") {
            let mut paths = Vec::new();
            while !self.eat("}") {
                let before = self.at;
                paths.extend(self.tree(prefix.clone()));
                self.eat(",");
                if self.at == before || self.at >= self.code.len() {
                    break; // not a use tree after all
                }
            }
            return paths;
        }
        if self.eat("*") {
            return vec![prefix];
        }
        let Some(segment) = self.ident() else {
            return vec![prefix];
        };
        let mut path = prefix;
        path.push(segment);
        let before = self.at;
        if self.eat("::") {
            return self.tree(path);
        }
        self.at = before;
        vec![path]
    }
}

/// The circles of one folder's graph: its strongly connected components of more than one
/// node, each sorted.
fn circles(graph: &BTreeMap<(String, String), Vec<String>>) -> Vec<Vec<String>> {
    let mut next = BTreeMap::<&str, Vec<&str>>::new();
    for (from, to) in graph.keys() {
        next.entry(from).or_default().push(to);
    }
    let reaches = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from];
        while let Some(n) = todo.pop() {
            for m in next.get(n).into_iter().flatten() {
                if seen.insert(*m) {
                    todo.push(m);
                }
            }
        }
        seen
    };
    let reach: BTreeMap<&str, BTreeSet<&str>> = next.keys().map(|n| (*n, reaches(n))).collect();
    let mut circles: BTreeSet<Vec<String>> = BTreeSet::new();
    for (n, from_n) in &reach {
        let circle: Vec<String> = from_n
            .iter()
            .filter(|m| reach.get(*m).is_some_and(|r| r.contains(n)))
            .map(|m| m.to_string())
            .collect();
        if circle.len() > 1 {
            circles.insert(circle);
        }
    }
    circles.into_iter().collect()
}

fn show_circle(folder: &str, circle: &[String]) -> String {
    let dir = if folder.is_empty() {
        "src/".to_string()
    } else {
        format!("src/{folder}/")
    };
    circle
        .iter()
        .map(
            |n| match src().join(folder).join(format!("{n}.rs")).is_file() {
                true => format!("{dir}{n}.rs"),
                false => format!("{dir}{n}/"),
            },
        )
        .collect::<Vec<_>>()
        .join(" ⇄ ")
}
