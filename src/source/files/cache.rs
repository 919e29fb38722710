//! File mode's reload of what changed. Each file's resources are kept from one load to the
//! next, prepared for the compiler (a User compiled, a policy with what compiling it gave),
//! beside the file's fingerprint: a reload reads again only the files whose fingerprint
//! changed, and the compiler takes the rest as they are. It still compiles one whole
//! configuration from them, in the order of a full read, so that what it gives (snapshot,
//! errors, warnings, the Users passed over) is what reading every file would give.

use std::collections::hash_map::Entry as Slot;
use std::collections::HashMap;
use std::hash::RandomState;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::read::{empty_configuration, files_below, hash_file, load_file};
use super::FileSource;
use crate::resources::{ConfigError, Resource};
use crate::snapshot::{Compiler, Prepared};
use crate::source::Loaded;

/// How far before a file was read its times may lie and still hide a later change: a write
/// within the file system's time granularity (2 s on the coarsest) can leave length and
/// times as they were. Such a file is hashed again at the next reload.
const RACY: Duration = Duration::from_secs(2);

/// Keeps what the files held at the last load, and loads again what changed since.
pub struct Loader {
    source: FileSource,
    config: Files,
    /// The directory of created Users.
    created: Files,
    hasher: RandomState,
    /// How many Users the last good load held: room for as many in the next.
    users: usize,
    /// How many files the last load read (again).
    read: usize,
}

/// The files of one tree, by path, as last read.
#[derive(Default)]
struct Files(HashMap<PathBuf, File>);

struct File {
    /// `None`: it could not be read, to be tried again.
    fingerprint: Option<Fingerprint>,
    /// When the fingerprint was taken, before the file was read.
    taken: SystemTime,
    /// Of the bytes read, when the whole file was read.
    hash: Option<u64>,
    items: Vec<Prepared>,
    /// How many of `items` are resources (not errors), as read.
    resources: usize,
}

/// What changes when a file's content does: a write moves the change time, a replacement
/// (an editor's rename, a ConfigMap's `..data` swap) the inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fingerprint {
    len: u64,
    modified: (i64, i64),
    changed: (i64, i64),
    inode: (u64, u64),
}

impl Fingerprint {
    fn of(meta: &std::fs::Metadata) -> Self {
        Fingerprint {
            len: meta.len(),
            modified: (meta.mtime(), meta.mtime_nsec()),
            changed: (meta.ctime(), meta.ctime_nsec()),
            inode: (meta.dev(), meta.ino()),
        }
    }

    /// Whether a change made after `taken` may have left this fingerprint as it is.
    fn racy(&self, taken: SystemTime) -> bool {
        let latest = self.modified.max(self.changed);
        let at = |(secs, nanos): (i64, i64)| {
            let since = Duration::new(secs.unsigned_abs(), nanos.clamp(0, 999_999_999) as u32);
            match secs >= 0 {
                true => SystemTime::UNIX_EPOCH + since,
                false => SystemTime::UNIX_EPOCH - since,
            }
        };
        at(latest) + RACY >= taken
    }
}

/// Which directory a file is read for: its items are prepared differently.
#[derive(Clone, Copy)]
enum Tree {
    Config,
    Created,
}

impl Loader {
    pub fn new(source: FileSource) -> Self {
        Loader {
            source,
            config: Files::default(),
            created: Files::default(),
            hasher: RandomState::new(),
            users: 0,
            read: 0,
        }
    }

    /// The `--config` paths, to watch.
    pub fn config(&self) -> &[PathBuf] {
        &self.source.config
    }

    /// How many files the last load read: those added or changed since the one before.
    pub fn files_read(&self) -> usize {
        self.read
    }

    /// Everything the files hold now, reading again only the files changed since the last
    /// load (every file, the first time). Blocking: file reads and compilation.
    pub fn load(&mut self) -> Loaded {
        let started = Instant::now();
        let source = &self.source;
        let mut compiler = Compiler::with_user_capacity(self.users)
            .scoped(source.root_namespace.clone())
            .max_regex_bytes(source.max_regex_bytes);
        let (mut count, mut read) = (0, 0);
        let mut config = Files::default();
        let except = source.users_dir.as_deref();
        for path in &source.config {
            let files = match files_below(path, except) {
                Ok(files) => files,
                Err(e) => {
                    compiler.push(Err(e));
                    continue;
                }
            };
            for path in files {
                let (file, fresh) = config.take(
                    path,
                    &mut self.config,
                    &self.hasher,
                    &compiler,
                    Tree::Config,
                );
                (count, read) = (count + file.resources, read + usize::from(fresh));
                for item in &mut file.items {
                    compiler.push_prepared(item);
                }
            }
        }
        if count == 0 {
            compiler.warn(empty_configuration(&source.config));
        }
        let mut created = Files::default();
        if let Some(dir) = &source.users_dir {
            match files_below(dir, None) {
                Ok(files) => {
                    for path in files {
                        let (file, fresh) = created.take(
                            path,
                            &mut self.created,
                            &self.hasher,
                            &compiler,
                            Tree::Created,
                        );
                        (count, read) = (count + file.resources, read + usize::from(fresh));
                        for item in &file.items {
                            compiler.push_created_prepared(item);
                        }
                    }
                }
                Err(e) => compiler.push_created_user(Err(e)),
            }
        }
        // Files gone since are forgotten with what they held.
        (self.config, self.created) = (config, created);
        let files = self.config.0.len() + self.created.0.len();
        tracing::debug!(files, read, "configuration files read again");
        self.read = read;
        let compiled = compiler.finish();
        if let Ok(snapshot) = &compiled {
            self.users = snapshot.users.len();
        }
        Loaded {
            compiled,
            resources: count,
            refused: None,
            took: Some(started.elapsed()),
            users_only: false,
        }
    }
}

impl Files {
    /// The file at `path`, as `last` holds it while unchanged, else read anew; and whether
    /// it was read. A path listed twice is read once.
    fn take(
        &mut self,
        path: PathBuf,
        last: &mut Files,
        hasher: &RandomState,
        compiler: &Compiler,
        tree: Tree,
    ) -> (&mut File, bool) {
        match self.0.entry(path) {
            Slot::Occupied(slot) => (slot.into_mut(), false),
            Slot::Vacant(slot) => {
                let (file, fresh) = File::refresh(
                    slot.key(),
                    last.0.remove(slot.key()),
                    hasher,
                    compiler,
                    tree,
                );
                (slot.insert(file), fresh)
            }
        }
    }
}

impl File {
    /// `last` while the file is unchanged, else the file read anew; and whether it was read.
    fn refresh(
        path: &Path,
        last: Option<File>,
        hasher: &RandomState,
        compiler: &Compiler,
        tree: Tree,
    ) -> (File, bool) {
        let taken = SystemTime::now();
        let fingerprint = std::fs::metadata(path).ok().map(|m| Fingerprint::of(&m));
        if let (Some(last), Some(fingerprint)) = (last, fingerprint) {
            if last.fingerprint == Some(fingerprint) {
                if !fingerprint.racy(last.taken) {
                    return (last, false);
                }
                // Changed within the granularity of its times, perhaps: the bytes tell.
                if last.hash.is_some() && hash_file(path, hasher) == last.hash {
                    return (File { taken, ..last }, false);
                }
            }
        }
        let (mut items, mut resources) = (Vec::new(), 0);
        let hash = load_file(path, Some(hasher), &mut |item: Result<
            Resource,
            ConfigError,
        >| {
            resources += usize::from(item.is_ok());
            items.push(match tree {
                Tree::Config => compiler.prepare(item),
                Tree::Created => compiler.prepare_created(item),
            });
        });
        let file = File {
            fingerprint,
            taken,
            hash,
            items,
            resources,
        };
        (file, true)
    }
}

#[cfg(test)]
mod tests;
