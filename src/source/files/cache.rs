//! File mode's reload of what changed. Each file's resources are kept from one load to the
//! next beside the file's fingerprint, prepared for the compiler (a policy as compiled); a
//! reload reads again only the files whose fingerprint and bytes changed. A large file is
//! kept in pieces, each with the hash of its bytes, its Users included: read again, it
//! parses only the pieces whose bytes changed, and takes the others' resources as they
//! were, moved to where they now lie. While no file holding Users changed since the last
//! good load, its User index is taken whole; when only large files' Users changed, it is
//! changed in place (the Users gone removed, those changed or added admitted again),
//! unless a User is refused; else the index is built again from every file holding Users
//! (a large file's kept pieces, a small file read again). The compiler
//! still takes every file's resources in the order of a full read, so that what a load
//! gives (snapshot, errors, warnings, the created Users passed over) is what reading every
//! file gives.

use std::collections::{HashMap, HashSet};
use std::hash::RandomState;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::pieces::{parse_piece, renumber, Piece, PieceRead};
use super::read::{empty_configuration, files_below, hash_file, load_file, load_pieces};
use super::FileSource;
use crate::resources::{ConfigError, Origin, Resource};
use crate::snapshot::Compiler;
use crate::source::Loaded;
use crate::users::{KnownUser, UserIndex};

mod kept;
use kept::{users_of, Chunk, File, Files, Fingerprint, Kept};

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
    /// How many pieces of large files the last load parsed (over every start).
    parsed: usize,
    /// Whether the last load built the User index anew.
    users_built: bool,
    /// The Users of the last good load.
    users: Option<KeptUsers>,
    /// The pieces of the large files changed since the last load, until they are read
    /// again: those whose bytes are still there are taken again.
    stale: HashMap<PathBuf, Stale>,
}

/// A large file's pieces as read before it changed.
struct Stale {
    /// Which read they are, when they are that read's, whole: the last good load's User
    /// index may hold their Users.
    read: Option<u64>,
    chunks: Vec<Chunk>,
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
            parsed: 0,
            users_built: false,
            users: None,
            stale: HashMap::new(),
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

    /// How many pieces of large files the last load parsed: those whose bytes changed
    /// since the file was read before.
    pub fn pieces_parsed(&self) -> usize {
        self.parsed
    }

    /// Whether the last load built the User index anew, every User pushed, rather than
    /// take the last good load's whole or changed in place.
    pub fn users_built(&self) -> bool {
        self.users_built
    }

    /// Everything the files hold now, reading again only the files changed since the last
    /// load (every file, the first time). Blocking: file reads and compilation.
    pub fn load(&mut self) -> Loaded {
        let started = Instant::now();
        self.parsed = 0;
        let mut users_again = false;
        let mut loaded = loop {
            match self.load_changed(users_again) {
                Ok(loaded) => break loaded,
                Err(Again::Users) => users_again = true,
                Err(Again::Budget) => {
                    (self.config, self.created) = (Files::default(), Files::default());
                    self.users = None;
                    self.stale.clear();
                }
            }
        };
        self.stale.clear();
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
            parsed: &mut self.parsed,
            stale: &mut self.stale,
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
        let kept = (self.users.as_ref()).filter(|_| !users_again && !created_changed);
        // The large files changed whose Users the kept index holds, as last read: the index
        // may be changed in place for them (`Users::Patch`), when no created User was
        // passed over (a User changed may let one in).
        let patch: HashSet<PathBuf> = match kept {
            Some(kept) if kept.skipped.is_empty() => (reader.stale.iter())
                .filter(|(path, stale)| {
                    let read = stale
                        .read
                        .map(|read| Source::File(path.to_path_buf(), read));
                    read.is_some_and(|read| kept.from.contains(&read))
                })
                .map(|(path, _)| path.clone())
                .collect(),
            _ => HashSet::new(),
        };
        let patched = |s: &&Source| matches!(s, Source::File(path, _) if patch.contains(path));
        let kept = kept.filter(|kept| kept.from.iter().filter(|s| !patched(s)).eq(from.iter()));
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
        self.users_built = users_again;

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
                Some(file) if !(users_again && file.users > 0 && !file.users_kept) => {
                    let at: Arc<Path> = path.as_path().into();
                    for chunk in &mut file.chunks {
                        if !chunk.push(&at, &mut compiler, users_again) {
                            return Err(Again::Budget);
                        }
                    }
                    file
                }
                _ => {
                    let users = match (users_again, patch.contains(path)) {
                        (true, _) => Users::Push,
                        (false, true) => Users::Patch,
                        (false, false) => Users::Kept,
                    };
                    let file = reader.read(path, Tree::Config, &mut compiler, users)?;
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
                        file.chunks
                            .iter()
                            .for_each(|chunk| chunk.push_created(&mut compiler));
                    }
                    file
                }
                _ => {
                    let users = if users_again {
                        Users::Push
                    } else {
                        Users::Kept
                    };
                    let file = reader.read(path, Tree::Created, &mut compiler, users)?;
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
            pieces_parsed = self.parsed,
            users_again,
            users_patched = !patch.is_empty() && !users_again,
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
    parsed: &'a mut usize,
    /// See [`Loader::stale`].
    stale: &'a mut HashMap<PathBuf, Stale>,
}

/// What a file read does with the Users it finds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Users {
    /// The index is taken whole: a User found means the Users changed (`Again::Users`).
    Kept,
    /// The index is taken whole, and changed in place: the file held Users before, and
    /// the index holds them as it held them. The Users it no longer holds leave, those
    /// changed or added are admitted again; one refused means `Again::Users`.
    Patch,
    /// The index is built anew: each User is pushed.
    Push,
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
        // file): the bytes tell, for a fraction of what parsing them costs; a new length
        // tells alone.
        let same = last.hash.is_some()
            && (last.fingerprint).is_some_and(|f| f.len == fingerprint.len)
            && hash_file(path, self.hasher) == last.hash;
        if !same {
            // Its pieces whose bytes are still there are taken again when it is read.
            if last.chunks.iter().any(|c| c.bytes.is_some()) {
                let stale = Stale {
                    read: Some(last.read),
                    chunks: last.chunks,
                };
                self.stale.insert(path.to_path_buf(), stale);
            }
            return None;
        }
        Some(File {
            fingerprint: Some(fingerprint),
            taken,
            ..last
        })
    }

    /// The file at `path` read anew, each item handed to `compiler` as it is parsed, one
    /// file's resources in memory at a time (but what is kept of it); its Users then are
    /// the index's alone. A large file's pieces whose bytes a stale read of it held are
    /// taken from there, not parsed. `Again::Users` when it holds a User and the Users
    /// were to be taken whole (as [`Users`] says).
    fn read(
        &mut self,
        path: &Path,
        tree: Tree,
        compiler: &mut Compiler,
        users: Users,
    ) -> Result<File, Again> {
        let taken = SystemTime::now();
        let fingerprint = std::fs::metadata(path).ok().map(|m| Fingerprint::of(&m));
        let at: Arc<Path> = path.into();
        let mut read = Read {
            compiler,
            tree,
            users,
            again: None,
            resources: 0,
            users_found: 0,
            parsed: 0,
        };
        let (hash, chunks, users_kept) = match tree {
            Tree::Config => {
                let stale = self.stale.remove(path).map_or_else(Vec::new, |s| s.chunks);
                let before: Vec<KnownUser> = match users {
                    Users::Patch => users_of(&stale).cloned().collect(),
                    _ => Vec::new(),
                };
                match read.pieces(&at, self.hasher, stale) {
                    Ok((hash, chunks)) => {
                        if users == Users::Patch && read.again.is_none() {
                            read.patch(&before, &chunks);
                        }
                        (hash, chunks, true)
                    }
                    Err(chunks) => {
                        if !chunks.is_empty() {
                            let stale = Stale { read: None, chunks };
                            self.stale.insert(path.to_path_buf(), stale);
                        }
                        let (hash, chunk) = read.whole(&at, self.hasher);
                        (hash, vec![chunk], false)
                    }
                }
            }
            Tree::Created => {
                let (hash, chunk) = read.whole(&at, self.hasher);
                (hash, vec![chunk], false)
            }
        };
        *self.reads += 1;
        *self.read += 1;
        *self.parsed += read.parsed;
        match read.again {
            Some(Again::Users) if users_kept => {
                // Read again for its Users: what it read whole is taken again then.
                let chunks = chunks.into_iter().filter(|c| c.bytes.is_some()).collect();
                let stale = Stale { read: None, chunks };
                self.stale.insert(path.to_path_buf(), stale);
                return Err(Again::Users);
            }
            Some(again) => return Err(again),
            None => {}
        }
        Ok(File {
            fingerprint,
            taken,
            hash,
            read: *self.reads,
            chunks,
            users_kept,
            resources: read.resources,
            users: read.users_found,
        })
    }
}

/// One read of a file: its items handed to the compiler, and what is kept of them.
struct Read<'a> {
    compiler: &'a mut Compiler,
    tree: Tree,
    users: Users,
    /// Why the load must start over, once it must: nothing more is taken.
    again: Option<Again>,
    resources: usize,
    users_found: usize,
    /// Pieces parsed.
    parsed: usize,
}

impl Read<'_> {
    /// The file read whole: its items but the Users, in one chunk.
    fn whole(&mut self, path: &Arc<Path>, hasher: &RandomState) -> (Option<u64>, Chunk) {
        let mut chunk = Chunk::at(None, 1, 0);
        let hash = load_file(path, Some(hasher), &mut |item| {
            self.take(item, &mut chunk, false)
        });
        self.done(&mut chunk);
        (hash, chunk)
    }

    /// A large file read in pieces cut by content, those found in `stale` taken from there;
    /// `Err(stale)` when it is not large, to be read whole.
    fn pieces(
        &mut self,
        path: &Arc<Path>,
        hasher: &RandomState,
        stale: Vec<Chunk>,
    ) -> Result<(Option<u64>, Vec<Chunk>), Vec<Chunk>> {
        // A policy of a stale piece not taken again would hold its compiled regexes while
        // this read compiles others: one compiled now would share its program, and pay what
        // that program cost, where a full read, which does not find it, compiles and pays
        // anew (`RegexBudget`). Such pieces are let go first, found by a first pass that
        // only hashes the pieces; a file of Users alone is read once.
        let stale = match stale
            .iter()
            .any(|c| c.items.iter().any(|i| matches!(i, Kept::Item(_))))
        {
            true => Self::still_there(path, hasher, stale),
            false => stale,
        };
        let known: HashSet<(u64, usize)> = stale.iter().filter_map(|c| c.bytes).collect();
        let mut stale: HashMap<(u64, usize), Vec<Chunk>> =
            stale
                .into_iter()
                .fold(HashMap::new(), |mut by_bytes, chunk| {
                    if let Some(bytes) = chunk.bytes {
                        by_bytes.entry(bytes).or_default().push(chunk);
                    }
                    by_bytes
                });
        let skip = |piece: &Piece| {
            (piece.hash).is_some_and(|hash| known.contains(&(hash, piece.text.len())))
        };
        let (mut chunks, mut documents_before) = (Vec::new(), 0);
        let read = load_pieces(path, hasher, &skip, |piece| {
            if self.again.is_some() {
                return true;
            }
            let (piece, items, parsed) = match piece {
                PieceRead::Skipped(piece) => {
                    let bytes = (piece.hash.unwrap_or_default(), piece.text.len());
                    let found = stale.get_mut(&bytes).and_then(Vec::pop);
                    if let Some(mut chunk) = found {
                        chunk.move_to(piece.first_line, documents_before);
                        self.take_again(path, &mut chunk);
                        documents_before += chunk.documents;
                        chunks.push(chunk);
                        return self.again.is_some();
                    }
                    // Its bytes twice in the file, once before: parsed here.
                    let (items, parsed) = parse_piece(path, &piece);
                    (piece, items, parsed)
                }
                PieceRead::Parsed {
                    piece,
                    items,
                    parsed,
                } => (piece, items, parsed),
                PieceRead::Failed(e) => {
                    let mut chunk = Chunk::at(None, 0, documents_before);
                    self.take(Err(e), &mut chunk, true);
                    self.done(&mut chunk);
                    chunks.push(chunk);
                    return true;
                }
            };
            self.parsed += 1;
            let whole = !parsed.ended && items.iter().all(Result::is_ok);
            let bytes = (piece.hash.filter(|_| whole)).map(|hash| (hash, piece.text.len()));
            let mut chunk = Chunk::at(bytes, piece.first_line, documents_before);
            chunk.documents = parsed.documents;
            for mut item in items {
                renumber(&mut item, documents_before);
                self.take(item, &mut chunk, true);
            }
            documents_before += parsed.documents;
            if self.again.is_none() {
                self.done(&mut chunk);
                chunks.push(chunk);
            }
            parsed.ended || self.again.is_some()
        });
        let unread = stale.into_values().flatten();
        match read {
            // Stopped to start over: what is still whole is taken again then.
            Ok(hash) if self.again.is_some() => {
                Ok((hash, chunks.into_iter().chain(unread).collect()))
            }
            Ok(hash) => Ok((hash, chunks)),
            Err(()) => Err(unread.collect()),
        }
    }

    /// Those of the `stale` pieces whose bytes the file at `path` holds now, as many times
    /// as it holds them (its pieces hashed, not parsed).
    fn still_there(path: &Arc<Path>, hasher: &RandomState, stale: Vec<Chunk>) -> Vec<Chunk> {
        let mut by_bytes: HashMap<(u64, usize), Vec<Chunk>> = HashMap::new();
        for chunk in stale {
            if let Some(bytes) = chunk.bytes {
                by_bytes.entry(bytes).or_default().push(chunk);
            }
        }
        let mut found = Vec::new();
        let _ = load_pieces(path, hasher, &|_| true, |piece| {
            let PieceRead::Skipped(piece) = piece else {
                return true;
            };
            let bytes = (piece.hash.unwrap_or_default(), piece.text.len());
            found.extend(by_bytes.get_mut(&bytes).and_then(Vec::pop));
            false
        });
        found
    }

    /// An item parsed, handed to the compiler and kept in `chunk`, its User too with
    /// `keep_users`.
    fn take(&mut self, item: Result<Resource, ConfigError>, chunk: &mut Chunk, keep_users: bool) {
        if self.again.is_some() {
            return;
        }
        let ok = usize::from(item.is_ok());
        self.resources += ok;
        chunk.resources += ok;
        let compiler = &mut *self.compiler;
        let mut item = match self.tree {
            Tree::Config => compiler.prepare(item),
            Tree::Created => compiler.prepare_created(item),
        };
        let keep_users = keep_users && matches!(self.tree, Tree::Config);
        if item.is_user() {
            self.users_found += 1;
            chunk.users += 1;
            match self.users {
                Users::Push => {}
                Users::Patch if keep_users => {}
                Users::Kept | Users::Patch => {
                    self.again = Some(Again::Users);
                    return;
                }
            }
        }
        if keep_users {
            match item.into_user() {
                Ok((user, origin)) => {
                    // A file's origin; a file under `MAX_FILE_BYTES` has fewer lines.
                    let (document, line) = match &origin {
                        Origin::File { document, line, .. } => (*document, *line),
                        Origin::Cluster { .. } => (0, 0),
                    };
                    let small = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
                    if self.users == Users::Push {
                        compiler.push_user(user.clone(), origin);
                    }
                    chunk
                        .items
                        .push(Kept::User(user, small(document), small(line)));
                }
                Err(mut other) => {
                    let taken = compiler.push_prepared(&mut other);
                    debug_assert!(taken, "an item read anew is compiled, not repaid");
                    chunk.items.push(Kept::Item(other));
                }
            }
            return;
        }
        match self.tree {
            Tree::Config => {
                let taken = compiler.push_prepared(&mut item);
                debug_assert!(taken, "an item read anew is compiled, not repaid");
            }
            Tree::Created => compiler.push_created_prepared(&item),
        }
        if !item.is_user() {
            chunk.items.push(Kept::Item(item));
        }
    }

    /// A stale piece's items, found again unchanged, handed to the compiler again.
    fn take_again(&mut self, path: &Arc<Path>, chunk: &mut Chunk) {
        self.resources += chunk.resources;
        self.users_found += chunk.users;
        if chunk.users > 0 && self.users == Users::Kept {
            self.again = Some(Again::Users);
        } else if !chunk.push(path, self.compiler, self.users == Users::Push) {
            self.again = Some(Again::Budget);
        }
    }

    /// [`Users::Patch`]: the kept index, which holds the Users `before` of the file,
    /// changed in place to hold those of its `chunks` instead; else `Again::Users`.
    fn patch(&mut self, before: &[KnownUser], chunks: &[Chunk]) {
        // A good load's: each name once.
        let mut gone: HashMap<&str, &KnownUser> = before.iter().map(|u| (u.name(), u)).collect();
        let (mut changed, mut added) = (Vec::new(), Vec::new());
        for user in users_of(chunks) {
            match gone.remove(user.name()) {
                Some(was) if user.is(was) => {}
                Some(_) => changed.push(user.clone()),
                // Or a name given twice: then found in the index, and refused.
                None => added.push(user.clone()),
            }
        }
        if !(self.compiler).patch_kept_users(gone.into_keys(), changed, added) {
            self.again = Some(Again::Users);
        }
    }

    fn done(&self, chunk: &mut Chunk) {
        chunk.items.shrink_to_fit();
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
