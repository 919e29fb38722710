//! The file source: `--config` files and directories, read (large ones in pieces) and
//! re-read on change, and the directory of created Users read after them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod cache;
mod pieces;
mod read;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

pub use cache::Loader;
pub use pieces::for_each_in_pieces;
use read::has_config_extension;
pub use read::{empty_configuration, load_each, load_each_except};

use super::Loaded;
use crate::snapshot::Compiler;

/// How long a burst of file events must be quiet before a reload.
const RELOAD_SETTLE: Duration = Duration::from_millis(200);

/// File mode: the `--config` paths, then the directory of created Users.
pub struct FileSource {
    pub config: Vec<PathBuf>,
    /// `--users-dir`, canonical: read after the rest, and leniently, even when it sits
    /// inside a `--config` directory.
    pub users_dir: Option<PathBuf>,
    /// `--root-namespace`: scopes Kubernetes-form resources by namespace (else all root).
    pub root_namespace: Option<std::sync::Arc<str>>,
    /// `--max-regex-bytes`, per namespace.
    pub max_regex_bytes: usize,
}

impl FileSource {
    /// Everything the files hold now, every file read, with room for `users` Users: what
    /// each reload of a [`Loader`], which reads only what changed, must equal. Blocking:
    /// file reads and compilation.
    pub fn load(&self, users: usize) -> Loaded {
        let started = Instant::now();
        let mut compiler = Compiler::with_user_capacity(users)
            .scoped(self.root_namespace.clone())
            .max_regex_bytes(self.max_regex_bytes);
        let except = self.users_dir.as_deref();
        let mut count = load_each_except(&self.config, except, |r| compiler.push(r));
        if count == 0 {
            compiler.warn(empty_configuration(&self.config));
        }
        if let Some(dir) = &self.users_dir {
            count += load_each(std::slice::from_ref(dir), |r| compiler.push_created_user(r));
        }
        Loaded {
            compiled: compiler.finish(),
            resources: count,
            refused: None,
            took: Some(started.elapsed()),
            users_only: false,
        }
    }

    /// The files as they are now; then, on the returned channel, as they are after each
    /// burst of changes, read off the request threads. A reload reads again only the files
    /// that changed ([`Loader`]). The watch lasts as long as the returned watcher.
    pub fn start(
        self,
    ) -> notify::Result<(Loaded, notify::RecommendedWatcher, mpsc::Receiver<Loaded>)> {
        let mut loader = Loader::new(self);
        let first = loader.load();
        // Not the users dir (unless it lies inside a --config directory): each created User
        // would otherwise reload everything. Created Users are served from the resolver's
        // overlay and read back at the next reload.
        let (watcher, mut changes) = watch(loader.config(), RELOAD_SETTLE)?;
        let (tx, loaded) = mpsc::channel(1);
        tokio::spawn(async move {
            while changes.recv().await.is_some() {
                let next = tokio::task::block_in_place(|| loader.load());
                if tx.send(next).await.is_err() {
                    return;
                }
            }
        });
        Ok((first, watcher, loaded))
    }
}

/// Whether a change to this path can change the configuration: a config file, or a
/// Kubernetes ConfigMap mount's `..data` swap (its visible files are symlinks that do not
/// change themselves). Logs, editor swap files and the like do not reload anything.
fn may_change_config(path: &Path) -> bool {
    has_config_extension(path)
        || path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(".."))
        || path.is_dir()
}

/// Watch the paths and send `()` after each burst of changes has settled.
///
/// Directories are watched recursively; a named file is watched through its parent, since
/// editors and ConfigMap updates replace files rather than write them in place.
pub fn watch(
    paths: &[PathBuf],
    settle: Duration,
) -> notify::Result<(notify::RecommendedWatcher, mpsc::Receiver<()>)> {
    let (raw_tx, mut raw_rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            if !event.kind.is_access() && event.paths.iter().any(|p| may_change_config(p)) {
                let _ = raw_tx.send(());
            }
        }
    })?;
    for path in paths {
        if path.is_dir() {
            watcher.watch(path, RecursiveMode::Recursive)?;
        } else {
            let parent = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            watcher.watch(parent, RecursiveMode::NonRecursive)?;
        }
    }
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        while raw_rx.recv().await.is_some() {
            // Debounce: a save is often several events (truncate, write, rename).
            while let Ok(Some(())) = tokio::time::timeout(settle, raw_rx.recv()).await {}
            if tx.send(()).await.is_err() {
                break;
            }
        }
    });
    Ok((watcher, rx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{ConfigError, Resource};

    fn load(paths: &[PathBuf]) -> (Vec<Resource>, Vec<ConfigError>) {
        let (mut resources, mut errors) = (Vec::new(), Vec::new());
        load_each(paths, |item| match item {
            Ok(r) => resources.push(r),
            Err(e) => errors.push(e),
        });
        (resources, errors)
    }

    #[test]
    fn reads_directories_recursively_and_skips_other_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("a.yaml"), "resourceType: User\nid: a\n").unwrap();
        std::fs::write(
            dir.path().join("sub/b.json"),
            r#"{"resourceType":"User","id":"b"}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("README.md"), "not config").unwrap();
        std::fs::write(
            dir.path().join(".hidden.yaml"),
            "resourceType: User\nid: h\n",
        )
        .unwrap();
        let (resources, errors) = load(&[dir.path().to_path_buf()]);
        assert!(errors.is_empty(), "{errors:?}");
        let names: Vec<_> = resources.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn only_config_files_and_configmap_swaps_trigger_a_reload() {
        assert!(may_change_config(Path::new("/etc/p/policy.yaml")));
        assert!(may_change_config(Path::new("/etc/p/policy.json")));
        assert!(may_change_config(Path::new("/etc/p/..data")));
        assert!(may_change_config(Path::new(
            "/etc/p/..2026_11_22_18_00_00.123"
        )));
        assert!(!may_change_config(Path::new("/etc/p/portcullis.log")));
        assert!(!may_change_config(Path::new("/etc/p/.policy.yaml.swp")));
    }

    #[test]
    fn a_missing_path_is_an_error() {
        let (_, errors) = load(&[PathBuf::from("/nonexistent/portcullis")]);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].to_string().contains("/nonexistent/portcullis"));
    }
}
