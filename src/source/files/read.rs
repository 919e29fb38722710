//! Reading `--config` paths: the files below them in sorted order, each read whole or, when
//! large, in pieces.

use std::hash::{BuildHasher, Hasher, RandomState};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::pieces::{for_each_in_pieces, read_pieces, Cut, Piece, PieceRead, PIECE_BYTES};
use crate::resources::{
    for_each_document, read_text, ConfigError, Origin, Resource, MAX_FILE_BYTES,
};

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
        let files = match files_below(path, except) {
            Ok(files) => files,
            Err(e) => {
                emit(Err(e));
                continue;
            }
        };
        for file in files {
            load_file(&file, None, &mut |item| {
                count += usize::from(item.is_ok());
                emit(item)
            });
        }
    }
    count
}

/// The files to read below `path` (or `path` itself), sorted; or why they cannot be listed.
pub(super) fn files_below(path: &Path, except: Option<&Path>) -> Result<Vec<PathBuf>, ConfigError> {
    let mut files = Vec::new();
    collect(path, true, except, &mut files)
        .map_err(|e| file_error(path, format!("cannot read: {e}")))?;
    files.sort();
    Ok(files)
}

/// One file: read whole and parsed in one pass, or, when large, read and parsed in pieces
/// on as many threads as there are cores (up to 4). With `hasher`, returns the hash of what
/// was read when it read the whole file (see [`hash_file`]).
pub(super) fn load_file(
    path: &Path,
    hasher: Option<&RandomState>,
    emit: &mut impl FnMut(Result<Resource, ConfigError>),
) -> Option<u64> {
    let opened = std::fs::File::open(path).and_then(|f| Ok((f.metadata()?.len(), f)));
    match opened {
        Ok((len, file)) if len > 2 * PIECE_BYTES as u64 && len <= MAX_FILE_BYTES => {
            let threads = threads();
            let mut reader = Hashing {
                inner: file,
                hasher: hasher.map(RandomState::build_hasher),
                end: false,
            };
            for_each_in_pieces(path, &mut reader, PIECE_BYTES, threads, emit);
            // A piece that ended the parse early left the rest unread.
            reader.hasher.filter(|_| reader.end).map(|h| h.finish())
        }
        _ => match read_text(path) {
            Ok(text) => {
                for_each_document(path, &text, emit);
                hasher.map(|h| {
                    let mut hasher = h.build_hasher();
                    hasher.write(text.as_bytes());
                    hasher.finish()
                })
            }
            Err(e) => {
                emit(Err(ConfigError {
                    origin: Origin::File {
                        path: path.into(),
                        document: 0,
                        line: e.line(),
                    },
                    resource: None,
                    field: None,
                    message: e.to_string(),
                }));
                None
            }
        },
    }
}

/// [`load_file`] of a large file, for a reload: its pieces cut by content and hashed
/// ([`Cut::ByContent`]), those that `skip` knows not parsed, each handed to `handle` in
/// file order, which says whether to stop there. Returns the hash of the whole file, as
/// [`load_file`] does; `Err` when the file is not one that [`load_file`] reads in pieces.
pub(super) fn load_pieces(
    path: &Arc<Path>,
    hasher: &RandomState,
    skip: &(dyn Fn(&Piece) -> bool + Sync),
    handle: impl FnMut(PieceRead) -> bool,
) -> Result<Option<u64>, ()> {
    let opened = std::fs::File::open(path).and_then(|f| Ok((f.metadata()?.len(), f)));
    let file = match opened {
        Ok((len, file)) if len > 2 * PIECE_BYTES as u64 && len <= MAX_FILE_BYTES => file,
        _ => return Err(()),
    };
    let mut reader = Hashing {
        inner: file,
        hasher: Some(hasher.build_hasher()),
        end: false,
    };
    let cut = Cut::ByContent;
    read_pieces(
        path,
        &mut reader,
        cut,
        threads(),
        Some(hasher),
        skip,
        handle,
    );
    Ok(reader.hasher.filter(|_| reader.end).map(|h| h.finish()))
}

/// Threads to parse a large file on: as many as there are cores, up to 4.
fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

/// The hash of a file's bytes, as [`load_file`] gives it, without parsing; `None` when it
/// cannot be read whole.
pub(super) fn hash_file(path: &Path, hasher: &RandomState) -> Option<u64> {
    let mut reader = Hashing {
        inner: std::fs::File::open(path).ok()?.take(MAX_FILE_BYTES + 1),
        hasher: Some(hasher.build_hasher()),
        end: false,
    };
    let read = std::io::copy(&mut reader, &mut std::io::sink()).ok()?;
    if read > MAX_FILE_BYTES {
        return None;
    }
    reader.hasher.map(|h| h.finish())
}

/// Hashes what is read through it. SipHash, the standard library's, hashes a stream the
/// same whatever the size of the reads.
struct Hashing<R> {
    inner: R,
    hasher: Option<std::hash::DefaultHasher>,
    /// The end of the file was reached.
    end: bool,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.end |= n == 0 && !buf.is_empty();
        if let Some(hasher) = &mut self.hasher {
            hasher.write(&buf[..n]);
        }
        Ok(n)
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

pub(super) fn has_config_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.contains(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A racy file's hash is compared with the one taken as it was read: both must hash the
    /// same bytes alike, read whole or in pieces.
    #[test]
    fn a_file_hashes_alike_read_whole_in_pieces_or_as_a_stream() {
        let dir = tempfile::tempdir().unwrap();
        let hasher = RandomState::new();
        let small = dir.path().join("small.yaml");
        std::fs::write(&small, "resourceType: User\nid: a\n").unwrap();
        let large = dir.path().join("large.yaml");
        let text: String = (0..2000)
            .map(|i| format!("---\nresourceType: User\nid: u{i}\n"))
            .collect();
        assert!(text.len() > 2 * PIECE_BYTES);
        std::fs::write(&large, &text).unwrap();
        for path in [&small, &large] {
            let read = load_file(path, Some(&hasher), &mut |item| assert!(item.is_ok()));
            assert!(read.is_some(), "{path:?}");
            assert_eq!(read, hash_file(path, &hasher), "{path:?}");
        }
        assert_ne!(hash_file(&small, &hasher), hash_file(&large, &hasher));
        // Stopped by a syntax error, the pieces leave the rest unread: no hash.
        let long = text.repeat(10);
        std::fs::write(&large, format!("---\ndata: [unclosed\n{long}")).unwrap();
        assert_eq!(load_file(&large, Some(&hasher), &mut |_| {}), None);
    }
}
