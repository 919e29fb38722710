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
