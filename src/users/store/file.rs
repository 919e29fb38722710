//! [`FileUserStore`]: created Users as files of `--users-dir`, one `User` object in
//! Kubernetes form per file, read back as configuration at the next reload.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;

use super::{manifest, StoreError, UserStore};
use crate::resources::{namespace_of, object_name, parse_documents, ReadError, Spec, API_VERSION};
use crate::users::{is_valid_name, KnownUser};

/// `<dir>/<name>.yaml`, one User manifest in Kubernetes form per file.
pub struct FileUserStore {
    dir: PathBuf,
    /// Check-then-rename under one lock, so that this process never replaces a file.
    write_lock: Arc<Mutex<()>>,
}

impl FileUserStore {
    /// Creates the directory when missing: an empty store is a valid start.
    pub fn new(dir: impl Into<PathBuf>) -> std::io::Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        Ok(FileUserStore {
            dir,
            write_lock: Arc::new(Mutex::new(())),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path_of(&self, name: &str) -> PathBuf {
        match namespace_of(name) {
            Some(ns) => self
                .dir
                .join(ns)
                .join(format!("{}.yaml", object_name(name))),
            None => self.dir.join(format!("{name}.yaml")),
        }
    }

    /// The stored User by name, if any.
    pub fn get<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<KnownUser>, StoreError>> {
        let dir = self.dir.clone();
        let name = name.to_string();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let (dir, object) = place(&dir, &name)?;
                read_file(&dir, object)
            })
            .await
            .map_err(|e| StoreError::Io(format!("reader task failed: {e}")))?
        })
    }
}

impl UserStore for FileUserStore {
    fn create(
        &self,
        user: KnownUser,
        provider: &str,
    ) -> BoxFuture<'_, Result<KnownUser, StoreError>> {
        let dir = self.dir.clone();
        let provider = provider.to_string();
        let lock = self.write_lock.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let _guard = lock.lock().unwrap_or_else(|e| e.into_inner());
                create_file(&dir, user, &provider)
            })
            .await
            .map_err(|e| StoreError::Io(format!("writer task failed: {e}")))?
        })
    }

    fn describe(&self) -> String {
        format!("directory {}", self.dir.display())
    }

    fn files(&self) -> Option<&FileUserStore> {
        Some(self)
    }
}

/// The directory and file stem of a User's file: `<dir>/<name>`, or, for a User of a
/// namespace (files scoped by `--root-namespace`), `<dir>/<namespace>/<name>`.
fn place<'n>(dir: &Path, name: &'n str) -> Result<(PathBuf, &'n str), StoreError> {
    let (namespace, object) = (namespace_of(name), object_name(name));
    // The name becomes a path: only RFC 1123 labels, so no `/`, `..` or hidden files.
    let valid = is_valid_name(object) && namespace.is_none_or(is_valid_name);
    if !valid {
        return Err(StoreError::InvalidName(name.to_string()));
    }
    Ok((
        namespace.map_or_else(|| dir.to_path_buf(), |ns| dir.join(ns)),
        object,
    ))
}

fn create_file(dir: &Path, user: KnownUser, provider: &str) -> Result<KnownUser, StoreError> {
    let (dir, object) = place(dir, user.name())?;
    let dir = dir.as_path();
    if let Some(existing) = read_file(dir, object)? {
        return Ok(existing);
    }
    let text = serde_yaml::to_string(&manifest(&user, provider))
        .map_err(|e| StoreError::Io(format!("serialising User/{}: {e}", user.name())))?;
    let io = |what: &str, e: std::io::Error| StoreError::Io(format!("{what}: {e}"));
    // Hidden, and not *.yaml: the config loader skips it if it sees it half-written.
    static SEQ: AtomicU64 = AtomicU64::new(0);
    if let Err(e) = std::fs::create_dir_all(dir) {
        return Err(io(&format!("creating {}", dir.display()), e));
    }
    let tmp = dir.join(format!(
        ".{}.yaml.{}-{}.tmp",
        object,
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let final_path = dir.join(format!("{object}.yaml"));
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        // Durable before it becomes visible: a crash leaves no empty User behind.
        f.sync_all()?;
        Ok(())
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(&format!("writing {}", final_path.display()), e));
    }
    // A hard link never replaces an existing file: when another replica sharing the
    // directory got there first, its User stands and is returned, as create() promises.
    let linked = std::fs::hard_link(&tmp, &final_path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            sync_dir(dir);
            Ok(user)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_file(dir, object)?
            .ok_or_else(|| StoreError::Io(format!("{} vanished", final_path.display()))),
        Err(e) => Err(io(&format!("writing {}", final_path.display()), e)),
    }
}

#[cfg(unix)]
fn sync_dir(dir: &Path) {
    // The rename is durable only once the directory is; failing here loses nothing visible.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(not(unix))]
fn sync_dir(_: &Path) {}

/// The User of file `<dir>/<name>.yaml`, `name` a plain name ([`place`]).
fn read_file(dir: &Path, name: &str) -> Result<Option<KnownUser>, StoreError> {
    let path = dir.join(format!("{name}.yaml"));
    let text = match crate::resources::read_text(&path) {
        Ok(t) => t,
        Err(ReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::Io(format!("reading {}: {e}", path.display()))),
    };
    let corrupt = |message: String| StoreError::Corrupt {
        name: name.to_string(),
        message,
    };
    let (resources, errors) = parse_documents(&path, &text);
    if let Some(e) = errors.first() {
        return Err(corrupt(e.to_string()));
    }
    match resources.as_slice() {
        [r] if r.name == name => match &r.spec {
            Spec::User(spec) => {
                let name = crate::resources::qualified(r.namespace.as_deref(), &r.name);
                Ok(Some(KnownUser::new(&name, spec)))
            }
            _ => Err(corrupt(format!(
                "holds a {}, not a User",
                r.spec.kind_name()
            ))),
        },
        _ => Err(corrupt(format!(
            "expected one {API_VERSION} User named {name:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{Identifier, UserSpec};
    use serde_json::json;

    fn user(name: &str, sub: &str) -> KnownUser {
        user_with(name, sub, json!({"sub": sub, "email_verified": false}))
    }

    fn user_with(name: &str, sub: &str, data: serde_json::Value) -> KnownUser {
        KnownUser::new(
            name,
            &UserSpec {
                data: Some(data),
                identifier: vec![Identifier {
                    system: "keycloak".into(),
                    value: sub.into(),
                }],
                ..Default::default()
            },
        )
    }

    #[tokio::test]
    async fn writes_a_kubernetes_manifest_and_reads_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileUserStore::new(dir.path().join("users")).unwrap();
        let u = user("keycloak-abc", "abc");
        assert_eq!(store.create(u.clone(), "keycloak").await.unwrap(), u);

        let text = std::fs::read_to_string(store.path_of("keycloak-abc")).unwrap();
        let doc: serde_json::Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(doc["apiVersion"], "portcullis.dev/v1alpha1");
        assert_eq!(doc["kind"], "User");
        assert_eq!(doc["metadata"]["name"], "keycloak-abc");
        assert_eq!(
            doc["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "portcullis"
        );
        assert_eq!(
            doc["spec"],
            json!({"data": {"sub": "abc", "email_verified": false},
                   "identifier": [{"system": "keycloak", "value": "abc"}]})
        );
        // No temporary file is left beside it.
        let entries: Vec<_> = std::fs::read_dir(store.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(entries, ["keycloak-abc.yaml"]);

        // The configuration loader reads it as a User, as `serve` does at start-up.
        let mut compiler = crate::snapshot::Compiler::default();
        crate::source::files::load_each(&[store.dir().to_path_buf()], |r| {
            compiler.push_created_user(r)
        });
        let snapshot = compiler.finish().unwrap();
        assert!(snapshot.skipped.is_empty(), "{:?}", snapshot.skipped);
        assert_eq!(*snapshot.users.by_name("keycloak-abc").unwrap(), u);
        assert_eq!(store.get("keycloak-abc").await.unwrap(), Some(u));
        assert_eq!(store.get("keycloak-nobody").await.unwrap(), None);
    }

    /// With `--root-namespace`, a User of a team's introspector is `namespace/name`: its
    /// file sits in a directory of that namespace, and reads back as that User.
    #[tokio::test]
    async fn a_namespaced_user_lives_in_its_namespaces_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileUserStore::new(dir.path().join("users")).unwrap();
        let u = user("team-a/keycloak-abc", "abc");
        assert_eq!(store.create(u.clone(), "keycloak").await.unwrap(), u);
        let path = store.dir().join("team-a").join("keycloak-abc.yaml");
        assert_eq!(store.path_of("team-a/keycloak-abc"), path);
        let doc: serde_json::Value =
            serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(doc["metadata"]["namespace"], "team-a");
        assert_eq!(
            store.get("team-a/keycloak-abc").await.unwrap(),
            Some(u.clone())
        );
        let mut compiler = crate::snapshot::Compiler::default().scoped(Some("platform".into()));
        crate::source::files::load_each(&[store.dir().to_path_buf()], |r| {
            compiler.push_created_user(r)
        });
        let snapshot = compiler.finish().unwrap();
        assert!(snapshot.skipped.is_empty(), "{:?}", snapshot.skipped);
        assert_eq!(*snapshot.users.by_name("team-a/keycloak-abc").unwrap(), u);
    }

    #[tokio::test]
    async fn converges_on_an_existing_object_without_replacing_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileUserStore::new(dir.path()).unwrap();
        let first = user("keycloak-abc", "abc");
        store.create(first.clone(), "keycloak").await.unwrap();
        let before = std::fs::read_to_string(store.path_of("keycloak-abc")).unwrap();
        let second = user_with(
            "keycloak-abc",
            "abc",
            json!({"sub": "abc", "changed": true}),
        );
        assert_eq!(store.create(second, "keycloak").await.unwrap(), first);
        let after = std::fs::read_to_string(store.path_of("keycloak-abc")).unwrap();
        assert_eq!(before, after);
    }

    #[tokio::test]
    async fn concurrent_creates_of_one_name_write_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(FileUserStore::new(dir.path()).unwrap());
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let u = user_with("keycloak-abc", "abc", json!({ "writer": i }));
                    store.create(u, "keycloak").await.unwrap()
                })
            })
            .collect();
        let results = futures::future::join_all(tasks).await;
        let first = results[0].as_ref().unwrap().clone();
        assert!(results.iter().all(|r| *r.as_ref().unwrap() == first));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert_eq!(store.get("keycloak-abc").await.unwrap(), Some(first));
    }

    #[tokio::test]
    async fn refuses_unsafe_names_and_unreadable_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileUserStore::new(dir.path()).unwrap();
        for name in [
            "../escape",
            ".hidden",
            "a/b/c",
            "../b",
            "A/b",
            "a/",
            "Upper",
            "",
        ] {
            let err = store.create(user(name, "x"), "keycloak").await.unwrap_err();
            assert!(matches!(err, StoreError::InvalidName(_)), "{name}: {err}");
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

        std::fs::write(store.path_of("broken"), "kind: [").unwrap();
        let err = store
            .create(user("broken", "x"), "keycloak")
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        std::fs::write(
            store.path_of("other"),
            "resourceType: User\nid: someone-else\n",
        )
        .unwrap();
        let err = store.get("other").await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        // Never overwritten.
        assert_eq!(
            std::fs::read_to_string(store.path_of("broken")).unwrap(),
            "kind: ["
        );
    }
}
