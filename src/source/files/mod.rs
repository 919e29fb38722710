//! The file source: `--config` files and directories, read (large ones in pieces) and
//! re-read on change, and the directory of created Users read after them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod pieces;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::resources::{
    for_each_document, read_text, ConfigError, Origin, Resource, MAX_FILE_BYTES,
};
pub use pieces::for_each_in_pieces;
use pieces::PIECE_BYTES;

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
    /// Everything the files hold now, with room for `users` Users. Blocking: file reads
    /// and compilation.
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
    /// burst of changes, read off the request threads. The watch lasts as long as the
    /// returned watcher.
    pub fn start(
        self,
    ) -> notify::Result<(Loaded, notify::RecommendedWatcher, mpsc::Receiver<Loaded>)> {
        let first = self.load(0);
        // As many Users as the last good load: a reload seldom changes that much.
        let mut users = first.compiled.as_ref().map_or(0, |s| s.users.len());
        // Not the users dir (unless it lies inside a --config directory): each created User
        // would otherwise reload everything. Created Users are served from the resolver's
        // overlay and read back at the next reload.
        let (watcher, mut changes) = watch(&self.config, RELOAD_SETTLE)?;
        let (tx, loaded) = mpsc::channel(1);
        tokio::spawn(async move {
            while changes.recv().await.is_some() {
                let next = tokio::task::block_in_place(|| self.load(users));
                if let Ok(snapshot) = &next.compiled {
                    users = snapshot.users.len();
                }
                if tx.send(next).await.is_err() {
                    return;
                }
            }
        });
        Ok((first, watcher, loaded))
    }
}

const EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

/// Read every `*.yaml`, `*.yml` and `*.json` file named or found below the given paths,
/// in sorted order so that the result does not depend on the file system, handing each
/// resource or error over as soon as it is parsed (one file, or a few pieces of a large one,
/// in memory at a time).
/// Returns how many resources were read.
pub fn load_each(paths: &[PathBuf], emit: impl FnMut(Result<Resource, ConfigError>)) -> usize {
    load_each_except(paths, None, emit)
}

/// [`load_each`], passing over the directory `except` (canonical) wherever it appears
/// below the paths: `serve` reads its directory of created Users on its own terms.
pub fn load_each_except(
    paths: &[PathBuf],
    except: Option<&Path>,
    mut emit: impl FnMut(Result<Resource, ConfigError>),
) -> usize {
    let mut count = 0;
    for path in paths {
        let mut files = Vec::new();
        if let Err(e) = collect(path, true, except, &mut files) {
            emit(Err(file_error(path, format!("cannot read: {e}"))));
            continue;
        }
        files.sort();
        for file in files {
            load_file(&file, &mut |item| {
                count += usize::from(item.is_ok());
                emit(item)
            });
        }
    }
    count
}

/// One file: read whole and parsed in one pass, or, when large, read and parsed in pieces
/// on as many threads as there are cores (up to 4).
fn load_file(path: &Path, emit: &mut impl FnMut(Result<Resource, ConfigError>)) {
    let opened = std::fs::File::open(path).and_then(|f| Ok((f.metadata()?.len(), f)));
    match opened {
        Ok((len, file)) if len > 2 * PIECE_BYTES as u64 && len <= MAX_FILE_BYTES => {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
            for_each_in_pieces(path, file, PIECE_BYTES, threads, emit)
        }
        _ => match read_text(path) {
            Ok(text) => for_each_document(path, &text, emit),
            Err(e) => emit(Err(ConfigError {
                origin: Origin::File {
                    path: path.into(),
                    document: 0,
                    line: e.line(),
                },
                resource: None,
                field: None,
                message: e.to_string(),
            })),
        },
    }
}

/// The warning for `--config` paths that hold no resource: every request would be denied.
pub fn empty_configuration(paths: &[PathBuf]) -> ConfigError {
    let shown: Vec<_> = paths.iter().map(|p| p.display().to_string()).collect();
    file_error(
        Path::new(&shown.join(", ")),
        "no resources: every request would be denied (no TokenIntrospector, no AccessPolicy)"
            .into(),
    )
}

fn file_error(path: &Path, message: String) -> ConfigError {
    ConfigError {
        origin: Origin::File {
            path: path.into(),
            document: 0,
            line: 0,
        },
        resource: None,
        field: None,
        message,
    }
}

fn collect(
    path: &Path,
    named: bool,
    except: Option<&Path>,
    out: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    let meta = std::fs::metadata(path)?;
    if meta.is_dir() {
        if except.is_some_and(|x| path.canonicalize().is_ok_and(|p| p == x)) {
            return Ok(());
        }
        for entry in std::fs::read_dir(path)? {
            let entry = entry?;
            let name = entry.file_name();
            // Editors' and Kubernetes' ConfigMap mounts' hidden entries (`..data`) duplicate files.
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            collect(&entry.path(), false, except, out)?;
        }
    } else if named || has_config_extension(path) {
        out.push(path.to_path_buf());
    }
    Ok(())
}

fn has_config_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.contains(&e))
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
