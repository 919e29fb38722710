//! File mode's reload of what changed. Each file's resources are kept from one load to the
//! next beside the file's fingerprint, prepared for the compiler (a policy as compiled); a
//! reload reads again only the files whose fingerprint and bytes changed. Users are not
//! kept per file: while no file holding Users changed since the last good load, its User
//! index is taken whole; else every file holding Users is read again. The compiler still
//! takes every file's resources in the order of a full read, so that what a load gives
//! (snapshot, errors, warnings, the created Users passed over) is what reading every file
//! gives.

use std::collections::HashMap;
use std::hash::RandomState;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::read::{empty_configuration, files_below, hash_file, load_file};
use super::FileSource;
use crate::resources::{ConfigError, Resource};
use crate::snapshot::{Compiler, Prepared};
use crate::source::Loaded;
use crate::users::UserIndex;

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
    /// Numbers each read of a file.
    reads: u64,
    /// How many files the last load read (again).
    read: usize,
    /// The Users of the last good load.
    users: Option<KeptUsers>,
}

/// The Users of a good load, and which reads of which files they came from.
struct KeptUsers {
    index: Arc<UserIndex>,
    /// The created Users' files passed over.
    skipped: Vec<ConfigError>,
    from: Vec<Source>,
}

/// One place Users came from: a read of a file that held some (or of the directory of
/// created Users, all of whose files count), or the error of a directory that could not
/// be listed.
#[derive(Clone, PartialEq, Eq)]
enum Source {
    File(PathBuf, u64),
    Unlisted(String),
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
    /// Which read of the loader's this is.
    read: u64,
    /// Every item but the Users, in order: those the index holds.
    items: Vec<Prepared>,
    /// How many resources (not errors) it holds, Users included, as read.
    resources: usize,
    /// How many Users it holds, as read.
    users: usize,
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
        let since = Duration::new(
            latest.0.unsigned_abs(),
            latest.1.clamp(0, 999_999_999) as u32,
        );
        let at = match latest.0 >= 0 {
            true => SystemTime::UNIX_EPOCH + since,
            false => SystemTime::UNIX_EPOCH - since,
        };
        at + RACY >= taken
    }
}

/// Which directory a file is read for: its items are prepared differently.
#[derive(Clone, Copy)]
enum Tree {
    Config,
    Created,
}

/// A place of the full read's order.
enum Listed {
    Config(PathBuf),
    Created(PathBuf),
    /// A `--config` path that cannot be listed.
    ConfigError(ConfigError),
    /// The directory of created Users, when it cannot be listed.
    CreatedError(ConfigError),
}

impl Loader {
    pub fn new(source: FileSource) -> Self {
        Loader {
            source,
            config: Files::default(),
            created: Files::default(),
            hasher: RandomState::new(),
            reads: 0,
            read: 0,
            users: None,
        }
    }

    /// The `--config` paths, to watch.
    pub fn config(&self) -> &[PathBuf] {
        &self.source.config
    }

    /// How many files the last load read: those added or changed since the one before,
    /// and those holding Users when Users changed.
    pub fn files_read(&self) -> usize {
        self.read
    }

    /// Everything the files hold now, reading again only the files changed since the last
    /// load (every file, the first time). Blocking: file reads and compilation.
    pub fn load(&mut self) -> Loaded {
        let started = Instant::now();
        let mut users_again = false;
        let mut loaded = loop {
            match self.load_changed(users_again) {
                Ok(loaded) => break loaded,
                Err(Again::Users) => users_again = true,
                Err(Again::Budget) => {
                    (self.config, self.created) = (Files::default(), Files::default());
                    self.users = None;
                }
            }
        };
        loaded.took = Some(started.elapsed());
        loaded
    }

    /// [`Loader::load`], the Users taken whole unless `users_again` or they changed.
    fn load_changed(&mut self, users_again: bool) -> Result<Loaded, Again> {
        self.read = 0;
        let mut reader = Reader {
            hasher: &self.hasher,
            reads: &mut self.reads,
            read: &mut self.read,
        };
        // Every file in the order of a full read; those unchanged since the last load kept,
        // the others to be read as the compiler takes them.
        let (mut config, mut created) = (Files::default(), Files::default());
        let mut listed = Vec::new();
        let except = self.source.users_dir.as_deref();
        for path in &self.source.config {
            match files_below(path, except) {
                Ok(files) => {
                    for path in files {
                        config.keep(&path, &mut self.config, &mut reader);
                        listed.push(Listed::Config(path));
                    }
                }
                Err(e) => listed.push(Listed::ConfigError(e)),
            }
        }
        if let Some(dir) = &self.source.users_dir {
            match files_below(dir, None) {
                Ok(files) => {
                    for path in files {
                        created.keep(&path, &mut self.created, &mut reader);
                        listed.push(Listed::Created(path));
                    }
                }
                Err(e) => listed.push(Listed::CreatedError(e)),
            }
        }
        // Files gone since are forgotten with what they held.
        (self.config, self.created) = (config, created);

        // A file to read is taken to hold no User: if it does, the load starts over.
        let created_changed = (listed.iter())
            .any(|l| matches!(l, Listed::Created(path) if !self.created.0.contains_key(path)));
        let from = sources(&self.config, &self.created, &listed);
        let kept = (self.users.as_ref())
            .filter(|kept| !users_again && !created_changed && kept.from == from);
        let source = &self.source;
        let compiler = match kept {
            Some(kept) => {
                Compiler::default().keeping_users(kept.index.clone(), kept.skipped.clone())
            }
            None => Compiler::with_user_capacity(self.users.as_ref().map_or(0, |k| k.index.len())),
        };
        let mut compiler = compiler
            .scoped(source.root_namespace.clone())
            .max_regex_bytes(source.max_regex_bytes);
        // The Users changed: every file holding some is read again, for its Users.
        let users_again = kept.is_none();

        let mut count = 0;
        for l in &listed {
            let path = match l {
                Listed::ConfigError(e) => {
                    compiler.push(Err(e.clone()));
                    continue;
                }
                Listed::Config(path) => path,
                Listed::Created(_) | Listed::CreatedError(_) => continue,
            };
            let file = match self.config.0.get_mut(path) {
                Some(file) if !(users_again && file.users > 0) => {
                    for item in &mut file.items {
                        if !compiler.push_prepared(item) {
                            return Err(Again::Budget);
                        }
                    }
                    file
                }
                _ => {
                    let file = reader.read(path, Tree::Config, &mut compiler, users_again)?;
                    self.config
                        .0
                        .entry(path.clone())
                        .insert_entry(file)
                        .into_mut()
                }
            };
            count += file.resources;
        }
        if count == 0 {
            compiler.warn(empty_configuration(&source.config));
        }
        for l in &listed {
            let path = match l {
                Listed::CreatedError(e) if users_again => {
                    compiler.push_created_user(Err(e.clone()));
                    continue;
                }
                Listed::Created(path) => path,
                _ => continue,
            };
            let file = match self.created.0.get_mut(path) {
                Some(file) if !(users_again && file.users > 0) => {
                    if users_again {
                        file.items
                            .iter()
                            .for_each(|item| compiler.push_created_prepared(item));
                    }
                    file
                }
                _ => {
                    let file = reader.read(path, Tree::Created, &mut compiler, users_again)?;
                    self.created
                        .0
                        .entry(path.clone())
                        .insert_entry(file)
                        .into_mut()
                }
            };
            count += file.resources;
        }
        let files = self.config.0.len() + self.created.0.len();
        tracing::debug!(
            files,
            read = self.read,
            users_again,
            "configuration files read"
        );
        let compiled = compiler.finish();
        if let Ok(snapshot) = &compiled {
            self.users = Some(KeptUsers {
                index: snapshot.users.clone(),
                skipped: snapshot.skipped.clone(),
                from: sources(&self.config, &self.created, &listed),
            });
        }
        Ok(Loaded {
            compiled,
            resources: count,
            refused: None,
            took: None,
            users_only: false,
        })
    }
}

/// Why a load starts over.
enum Again {
    /// A policy kept as compiled is over its scope's regex budget now: the error needs its
    /// spec, which is not kept. Every file is read again (a configuration error: rare).
    Budget,
    /// A file read holds Users, where the Users were taken whole: every file holding
    /// Users is read again.
    Users,
}

/// Where the Users of a load of these files, in this order, come from; a file not read
/// yet counts as holding none.
fn sources(config: &Files, created: &Files, listed: &[Listed]) -> Vec<Source> {
    let read = |files: &Files, path: &PathBuf, all: bool| {
        let file = files.0.get(path)?;
        (all || file.users > 0).then(|| Source::File(path.clone(), file.read))
    };
    (listed.iter())
        .filter_map(|l| match l {
            Listed::Config(path) => read(config, path, false),
            Listed::Created(path) => read(created, path, true),
            Listed::ConfigError(_) => None,
            Listed::CreatedError(e) => Some(Source::Unlisted(e.to_string())),
        })
        .collect()
}

/// Reads files for a load, and counts them.
struct Reader<'a> {
    hasher: &'a RandomState,
    reads: &'a mut u64,
    read: &'a mut usize,
}

impl Reader<'_> {
    /// `last` while the file is unchanged.
    fn unchanged(&mut self, path: &Path, last: Option<File>) -> Option<File> {
        let taken = SystemTime::now();
        let fingerprint = Fingerprint::of(&std::fs::metadata(path).ok()?);
        let last = last?;
        if last.fingerprint == Some(fingerprint) && !fingerprint.racy(last.taken) {
            return Some(last);
        }
        // Changed; or perhaps changed within the granularity of its times; or only
        // touched, or replaced by the same bytes (a ConfigMap's update replaces every
        // file): the bytes tell, for a fraction of what parsing them costs.
        let same = last.hash.is_some() && hash_file(path, self.hasher) == last.hash;
        same.then(|| File {
            fingerprint: Some(fingerprint),
            taken,
            ..last
        })
    }

    /// The file at `path` read anew, each item handed to `compiler` as it is parsed, one
    /// file's resources in memory at a time; its Users then are the index's alone.
    /// `Again::Users` when it holds a User and the Users were to be taken whole.
    fn read(
        &mut self,
        path: &Path,
        tree: Tree,
        compiler: &mut Compiler,
        users_again: bool,
    ) -> Result<File, Again> {
        let taken = SystemTime::now();
        let fingerprint = std::fs::metadata(path).ok().map(|m| Fingerprint::of(&m));
        let (mut items, mut resources, mut users) = (Vec::new(), 0, 0);
        let hash = load_file(path, Some(self.hasher), &mut |item: Result<
            Resource,
            ConfigError,
        >| {
            if users > 0 && !users_again {
                return;
            }
            resources += usize::from(item.is_ok());
            let mut item = match tree {
                Tree::Config => compiler.prepare(item),
                Tree::Created => compiler.prepare_created(item),
            };
            if item.is_user() {
                users += 1;
                if !users_again {
                    return;
                }
            }
            match tree {
                Tree::Config => {
                    let taken = compiler.push_prepared(&mut item);
                    debug_assert!(taken, "an item read anew is compiled, not repaid");
                }
                Tree::Created => compiler.push_created_prepared(&item),
            }
            if !item.is_user() {
                items.push(item);
            }
        });
        *self.reads += 1;
        *self.read += 1;
        if users > 0 && !users_again {
            return Err(Again::Users);
        }
        items.shrink_to_fit();
        Ok(File {
            fingerprint,
            taken,
            hash,
            read: *self.reads,
            items,
            resources,
            users,
        })
    }
}

impl Files {
    /// Puts the file at `path` here as `last` holds it, while unchanged: else it is to be
    /// read. A path listed twice is looked at once.
    fn keep(&mut self, path: &Path, last: &mut Files, reader: &mut Reader<'_>) {
        if let Some(last) = last.0.remove(path) {
            if let Some(file) = reader.unchanged(path, Some(last)) {
                self.0.insert(path.to_path_buf(), file);
            }
        }
    }
}

#[cfg(test)]
mod tests;
