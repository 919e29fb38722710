//! Shared harness for portcullis's end-to-end tests.
//!
//! Declared once per test binary: by each room's `main.rs` (`tests/<room>/main.rs`) as
//! `#[path = "../support/mod.rs"] mod support;`, whose files then `use crate::support;`,
//! and by a test standing alone (`tests/soak.rs`) as `mod support;`.
//!
//! Every process this module starts is killed when its handle is dropped, and its
//! captured output is printed when the drop happens during a panic, so a failing test
//! shows what Envoy and portcullis said.
//!
//! Every helper the tests share lives here, once: processes ([`portcullis`], [`envoy`],
//! [`oidc_provider`], headless Chromium in [`browser`]), in-process servers
//! ([`upstream`], [`stub_idp`]), what the tests send ([`tokens`], [`ext_authz`], [`raw`])
//! and what they read back ([`metrics`], [`users`]); certificates for TLS servers
//! ([`tls`]); and the library's token verifier
//! in-process ([`verifier`]).
#![allow(dead_code)]

pub mod browser;
pub mod envoy;
pub mod ext_authz;
pub mod fake_apiserver;
pub mod metrics;
pub mod oidc_provider;
pub mod otlp;
pub mod portcullis;
pub mod process;
pub mod raw;
pub mod steps;
pub mod stub_idp;
pub mod tls;
pub mod tokens;
pub mod upstream;
pub mod users;
pub mod verifier;

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Deadlines for test instances of `portcullis serve`, as environment variables (a test's
/// own flag wins). Far above what a decision takes even in a debug build under a loaded
/// suite: a test must not depend on the machine's speed. Tests of deadlines set their own.
pub const TEST_DEADLINES: [(&str, &str); 2] = [
    ("PORTCULLIS_DECISION_TIMEOUT_MS", "20000"),
    ("PORTCULLIS_IDP_TIMEOUT_MS", "15000"),
];

/// The repository root (where Cargo.toml is).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A path relative to the repository root.
pub fn repo_path(rel: impl AsRef<Path>) -> PathBuf {
    repo_root().join(rel)
}

/// How long [`eventually`] waits for a state: far beyond what any state change takes
/// even on a loaded machine, so that only a state that never comes fails a test.
pub const WAIT: Duration = Duration::from_secs(15);

/// Polls `check` every 50 ms until it yields `Some`, and returns that; panics naming
/// `what` when [`WAIT`] passes first. Wait for a state this way, never for the clock.
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_within(WAIT, what, check).await
}

/// [`eventually`] with a bound of the caller's choosing.
pub async fn eventually_within<T, F, Fut>(bound: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + bound;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {bound:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A tool the end-to-end tests run: `$<env_var>` when set, else `<repo>/.tools/bin/<name>`.
/// Panics when neither exists: these tests never skip silently.
pub fn tool_bin(env_var: &str, name: &str) -> PathBuf {
    const INSTALL: &str = "run scripts/install-test-deps.sh";
    if let Some(bin) = std::env::var_os(env_var).filter(|b| !b.is_empty()) {
        let bin = PathBuf::from(bin);
        assert!(
            bin.exists(),
            "{env_var}={} does not exist. {name} not found: {INSTALL}",
            bin.display()
        );
        return bin;
    }
    let bin = repo_path(".tools/bin").join(name);
    assert!(
        bin.exists(),
        "{name} not found: {INSTALL} (looked at ${env_var} and {})",
        bin.display()
    );
    bin
}

/// A loopback port that was free a moment ago (bind 127.0.0.1:0, read, drop).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// `127.0.0.1:<free port>`.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// An HTTP client for talking to local test servers: never uses a proxy from the
/// environment, never follows redirects, and gives up after 10 s.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("build reqwest client")
}

/// Reads a captured log file, lossily; never panics.
pub(crate) fn read_log(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => format!("<could not read {}: {e}>", path.display()),
    }
}

/// The last `max` bytes of a log, cut at a char boundary.
pub(crate) fn tail(log: &str, max: usize) -> &str {
    if log.len() <= max {
        return log;
    }
    let mut start = log.len() - max;
    while !log.is_char_boundary(start) {
        start += 1;
    }
    &log[start..]
}

/// Writes JSON documents (resources) as one multi-document YAML file.
pub fn write_documents(path: &Path, docs: &[serde_json::Value]) {
    let text = docs
        .iter()
        .map(|d| serde_yaml::to_string(d).expect("YAML"))
        .collect::<Vec<_>>()
        .join("---\n");
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Writes `dir/name` by replacing it (a temp file renamed over it), as editors and
/// ConfigMap updates do: a watcher never sees half a file.
pub fn replace_file(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    std::fs::rename(&tmp, dir.join(name)).unwrap_or_else(|e| panic!("rename to {name}: {e}"));
}

/// Names of the resources of `kind` (Aidbox `id` or Kubernetes `metadata.name`) found
/// in the config files below `dir` (`*.yaml`, `*.yml`, `*.json`, recursively).
/// Lets tests follow the example configs instead of repeating their names.
pub fn resources_of_kind(dir: &Path, kind: &str) -> Vec<(String, serde_json::Value)> {
    let mut out = Vec::new();
    let mut files = Vec::new();
    collect_config_files(dir, &mut files);
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_json::to_value(
                <serde_yaml::Value as serde::Deserialize>::deserialize(doc)
                    .unwrap_or_else(|e| panic!("parse {}: {e}", file.display())),
            )
            .unwrap_or_else(|e| panic!("convert {}: {e}", file.display()));
            let doc_kind = value
                .get("resourceType")
                .or_else(|| value.get("kind"))
                .and_then(|k| k.as_str());
            if doc_kind != Some(kind) {
                continue;
            }
            let name = value
                .get("id")
                .or_else(|| value.pointer("/metadata/name"))
                .and_then(|n| n.as_str())
                .unwrap_or_else(|| panic!("{kind} without a name in {}", file.display()))
                .to_string();
            let body = value.get("spec").cloned().unwrap_or(value);
            out.push((name, body));
        }
    }
    out
}

fn collect_config_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())) {
            collect_config_files(&entry.expect("dir entry").path(), out);
        }
    } else if matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    ) {
        out.push(path.to_path_buf());
    }
}
