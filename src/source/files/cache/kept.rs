//! What a load keeps of each file until the next: its fingerprint, and its items in
//! chunks (a large file's pieces, with the hash of their bytes), prepared for the compiler.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::resources::Origin;
use crate::snapshot::{Compiler, Prepared};
use crate::users::KnownUser;

/// How far before a file was read its times may lie and still hide a later change: a write
/// within the file system's time granularity (2 s on the coarsest) can leave length and
/// times as they were. Such a file is hashed again at the next reload.
pub(super) const RACY: Duration = Duration::from_secs(2);

/// The files of one tree, by path, as last read.
#[derive(Default)]
pub(super) struct Files(pub(super) HashMap<PathBuf, File>);

pub(super) struct File {
    /// `None`: it could not be read, to be tried again.
    pub(super) fingerprint: Option<Fingerprint>,
    /// When the fingerprint was taken, before the file was read.
    pub(super) taken: SystemTime,
    /// Of the bytes read, when the whole file was read.
    pub(super) hash: Option<u64>,
    /// Which read of the loader's this is.
    pub(super) read: u64,
    /// Its items in order: a large file's in its pieces, Users included (`users_kept`); a
    /// small file's in one, every item but the Users (those the index holds).
    pub(super) chunks: Vec<Chunk>,
    /// Its Users are in `chunks`: to build the index again, they are taken from there
    /// instead of reading the file again.
    pub(super) users_kept: bool,
    /// How many resources (not errors) it holds, Users included, as read.
    pub(super) resources: usize,
    /// How many Users it holds, as read.
    pub(super) users: usize,
}

/// Some of a file's items, in order: a piece of a large file, which a later read of the
/// file takes again where it finds the same bytes; or what is kept of a small file.
pub(super) struct Chunk {
    /// The hash and length of its bytes; `None`: not to be taken again (a small file's, or
    /// a piece holding an error, whose message may name a line).
    pub(super) bytes: Option<(u64, usize)>,
    /// Where it lay when read: the line it starts on, and the documents before it.
    pub(super) first_line: usize,
    pub(super) documents_before: usize,
    /// The documents it holds, as the parser counts them.
    pub(super) documents: usize,
    pub(super) items: Vec<Kept>,
    /// How many resources (not errors) and how many Users it holds.
    pub(super) resources: usize,
    pub(super) users: usize,
}

/// An item of a [`Chunk`].
pub(super) enum Kept {
    /// A User of a large file, at `(document, line)` of the file: 16 bytes beside the
    /// index's own copy, where a [`Prepared`] User holds its origin in a box.
    User(KnownUser, u32, u32),
    Item(Prepared),
}

impl Chunk {
    /// Moves it, unchanged, to where a read of its file found it now.
    pub(super) fn move_to(&mut self, first_line: usize, documents_before: usize) {
        let lines = first_line as isize - self.first_line as isize;
        let documents = documents_before as isize - self.documents_before as isize;
        if lines == 0 && documents == 0 {
            return;
        }
        for item in &mut self.items {
            match item {
                Kept::User(_, document, line) => {
                    *document = document.saturating_add_signed(documents as i32);
                    *line = line.saturating_add_signed(lines as i32);
                }
                Kept::Item(item) => item.shift(documents, lines),
            }
        }
        (self.first_line, self.documents_before) = (first_line, documents_before);
    }

    /// Hands its items to `compiler` again, its Users only with `users`: `false` when a
    /// policy kept as compiled no longer fits its budget ([`Compiler::push_prepared`]).
    #[must_use]
    pub(super) fn push(&mut self, path: &Arc<Path>, compiler: &mut Compiler, users: bool) -> bool {
        for item in &mut self.items {
            match item {
                Kept::User(user, document, line) if users => {
                    let origin = Origin::File {
                        path: path.clone(),
                        document: *document as usize,
                        line: *line as usize,
                    };
                    compiler.push_user(user.clone(), origin);
                }
                Kept::User(..) => {}
                Kept::Item(item) => {
                    if !compiler.push_prepared(item) {
                        return false;
                    }
                }
            }
        }
        true
    }

    /// A created User's file's items again (its Users are not kept).
    pub(super) fn push_created(&self, compiler: &mut Compiler) {
        for item in &self.items {
            if let Kept::Item(item) = item {
                compiler.push_created_prepared(item);
            }
        }
    }
}

/// What changes when a file's content does: a write moves the change time, a replacement
/// (an editor's rename, a ConfigMap's `..data` swap) the inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Fingerprint {
    pub(super) len: u64,
    pub(super) modified: (i64, i64),
    pub(super) changed: (i64, i64),
    pub(super) inode: (u64, u64),
}

impl Fingerprint {
    pub(super) fn of(meta: &std::fs::Metadata) -> Self {
        Fingerprint {
            len: meta.len(),
            modified: (meta.mtime(), meta.mtime_nsec()),
            changed: (meta.ctime(), meta.ctime_nsec()),
            inode: (meta.dev(), meta.ino()),
        }
    }

    /// Whether a change made after `taken` may have left this fingerprint as it is.
    pub(super) fn racy(&self, taken: SystemTime) -> bool {
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

/// The Users kept in `chunks`, in order.
pub(super) fn users_of(chunks: &[Chunk]) -> impl Iterator<Item = &KnownUser> {
    (chunks.iter().flat_map(|c| &c.items)).filter_map(|item| match item {
        Kept::User(user, ..) => Some(user),
        Kept::Item(_) => None,
    })
}

impl Chunk {
    pub(super) fn at(
        bytes: Option<(u64, usize)>,
        first_line: usize,
        documents_before: usize,
    ) -> Self {
        Chunk {
            bytes,
            first_line,
            documents_before,
            documents: 0,
            items: Vec::new(),
            resources: 0,
            users: 0,
        }
    }
}
