//! A large file read and parsed in pieces, on several threads: 100,000 Users reload in a
//! fraction of the time, and the file's text never sits in memory whole.
//!
//! A piece ends where a line starts with `---`. A document marker at the start of a line
//! ends whatever came before it (YAML forbids one even inside quoted text), so a piece
//! parses alone as it would inside the whole file. Pieces are handed over in file order,
//! their lines and documents numbered as in the whole file.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, RandomState};
use std::io::Read;
use std::path::Path;
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};

use crate::resources::{
    parse_text, utf8, ConfigError, Origin, Parsed, ReadError, Resource, MAX_FILE_BYTES,
};

/// About this much text per piece (100 Users). Small pieces keep the parsed resources in
/// flight few: with 128 KiB pieces the allocator scattered what the snapshot keeps among
/// their garbage, and the settled memory grew by 4 MB of 32 (`bench-memory.sh`); at 16 KiB
/// it stays as with one pass, at the same speed.
pub const PIECE_BYTES: usize = 16 << 10;

/// Cut by content ([`Cut::ByContent`]), a piece holds at least this much text, and ends at
/// the first document after it that [`ends_a_piece`] picks: about 16 KiB in all, as
/// [`PIECE_BYTES`].
const CONTENT_MIN_BYTES: usize = 8 << 10;
/// ... and past this much, at the next document, whatever it holds.
const CONTENT_MAX_BYTES: usize = 64 << 10;

/// Where pieces end.
#[derive(Clone, Copy, Debug)]
pub enum Cut {
    /// At the first document at or past this many bytes from the piece's start.
    Every(usize),
    /// Where the documents' own bytes say ([`ends_a_piece`]): a document edited changes its
    /// own piece, and the pieces after it are cut as before, so that a file read again
    /// parses only the pieces whose bytes changed ([`read_pieces`]'s `skip`).
    ByContent,
}

/// Read `file` (the file at `path`) in pieces of about `piece_bytes`, parse them on
/// `threads` threads, and hand every resource or error over in file order. Stops after an
/// error that ends a piece early (a YAML syntax error, text that is not UTF-8), as a parse
/// of the whole file stops there.
pub fn for_each_in_pieces(
    path: &Path,
    file: impl Read + Send,
    piece_bytes: usize,
    threads: usize,
    mut emit: impl FnMut(Result<Resource, ConfigError>),
) {
    let mut documents_before = 0;
    let path: Arc<Path> = path.into();
    let skip = |_: &Piece| false;
    read_pieces(
        &path,
        file,
        Cut::Every(piece_bytes),
        threads,
        None,
        &skip,
        |out| {
            let (items, parsed) = match out {
                PieceRead::Parsed { items, parsed, .. } => (items, parsed),
                PieceRead::Skipped(piece) => parse_piece(&path, &piece),
                PieceRead::Failed(e) => {
                    emit(Err(e));
                    return true;
                }
            };
            for mut item in items {
                renumber(&mut item, documents_before);
                emit(item);
            }
            documents_before += parsed.documents;
            parsed.ended
        },
    );
}

/// A piece of a file, as [`read_pieces`] hands it over.
pub enum PieceRead {
    /// Its resources and errors in order, their documents numbered from the piece's first
    /// ([`renumber`] them).
    Parsed {
        piece: Piece,
        items: Vec<Result<Resource, ConfigError>>,
        parsed: Parsed,
    },
    /// Not parsed: `skip` knew it.
    Skipped(Piece),
    /// It could not be read: nothing follows.
    Failed(ConfigError),
}

/// Read `file` (the file at `path`) in pieces cut as `cut` says, parse them on `threads`
/// threads, and hand each over in file order to `handle`, which says whether to stop there
/// (the parse ended early). With `hasher`, each piece's bytes are hashed ([`Piece::hash`]),
/// and a piece that `skip` then knows is not parsed.
pub fn read_pieces<R: Read + Send>(
    path: &Arc<Path>,
    file: R,
    cut: Cut,
    threads: usize,
    hasher: Option<&RandomState>,
    skip: &(dyn Fn(&Piece) -> bool + Sync),
    mut handle: impl FnMut(PieceRead) -> bool,
) {
    let shared = Shared {
        state: Mutex::new(State {
            reader: Reader {
                file,
                cut,
                carry: Vec::new(),
                searched: 0,
                document: 0,
                next: 0,
                lines: 0,
                read: 0,
                done: false,
            },
            handed_over: 0,
            stop: false,
        }),
        changed: Condvar::new(),
        // Pieces read but not yet handed over: what the parsed resources in memory are.
        ahead: 2 * threads.max(1),
    };
    let (parsed_tx, parsed_rx) = mpsc::channel::<(usize, PieceRead)>();
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            let tx = parsed_tx.clone();
            let shared = &shared;
            scope.spawn(move || {
                let _stop_on_panic = StopOnPanic(shared);
                while let Some((seq, piece)) = shared.next_piece(path) {
                    let output = match piece {
                        Ok(mut piece) => {
                            piece.hash = hasher.map(|h| h.hash_one(piece.text.as_bytes()));
                            if skip(&piece) {
                                PieceRead::Skipped(piece)
                            } else {
                                let (items, parsed) = parse_piece(path, &piece);
                                PieceRead::Parsed {
                                    piece,
                                    items,
                                    parsed,
                                }
                            }
                        }
                        Err(e) => PieceRead::Failed(e),
                    };
                    if tx.send((seq, output)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(parsed_tx);

        let mut waiting = BTreeMap::new();
        let mut next = 0;
        'pieces: for (seq, output) in parsed_rx {
            waiting.insert(seq, output);
            while let Some(output) = waiting.remove(&next) {
                next += 1;
                let ended = handle(output);
                let mut state = shared.lock();
                state.handed_over = next;
                state.stop |= ended;
                let stop = state.stop;
                drop(state);
                shared.changed.notify_all();
                if stop {
                    break 'pieces;
                }
            }
        }
    });
}

/// One piece's resources and errors in order, their documents numbered from the piece's
/// first, and what the parse read.
pub fn parse_piece(
    path: &Arc<Path>,
    piece: &Piece,
) -> (Vec<Result<Resource, ConfigError>>, Parsed) {
    let mut items = Vec::new();
    let mut parsed = parse_text(path, &piece.text, piece.first_line, &mut |i| items.push(i));
    if parsed.parser_error && (piece.first_line > 1 || piece.followed) {
        // The parser's message counts lines from the start of its text, and says what it
        // met where the text ended: parse again with the lines before the piece left blank
        // and the next document's marker after it, so that the message is the one the
        // whole file gives. Only on such an error: it stops the file there.
        let mut padded = "\n".repeat(piece.first_line - 1);
        padded.push_str(&piece.text);
        if piece.followed {
            padded.push_str("---\n");
        }
        items.clear();
        parsed = parse_text(path, &padded, 1, &mut |i| items.push(i));
    }
    (items, parsed)
}

/// Numbers an item's document as in the whole file, `documents_before` coming before its
/// piece.
pub fn renumber(item: &mut Result<Resource, ConfigError>, documents_before: usize) {
    let origin = match item {
        Ok(r) => &mut r.origin,
        Err(e) => &mut e.origin,
    };
    // Document 0 is the whole file (it could not be read): not a piece's to renumber.
    if let Origin::File { document, .. } = origin {
        if *document > 0 {
            *document += documents_before;
        }
    }
}

struct Shared<R> {
    state: Mutex<State<R>>,
    changed: Condvar,
    ahead: usize,
}

struct State<R> {
    reader: Reader<R>,
    /// Pieces handed over so far.
    handed_over: usize,
    stop: bool,
}

impl<R: Read> Shared<R> {
    fn lock(&self) -> MutexGuard<'_, State<R>> {
        // A thread that panicked holding the lock left the reader mid-piece: stop reading.
        self.state.lock().unwrap_or_else(|poisoned| {
            let mut state = poisoned.into_inner();
            state.stop = true;
            state
        })
    }

    /// The next piece to parse, once few enough are ahead of the one handed over; `None`
    /// at the end of the file or when told to stop.
    fn next_piece(&self, path: &Arc<Path>) -> Option<(usize, Result<Piece, ConfigError>)> {
        let mut state = self.lock();
        while !state.stop && state.reader.next >= state.handed_over + self.ahead {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        if state.stop {
            return None;
        }
        let seq = state.reader.next;
        let piece = state.reader.read_piece(path)?;
        Some((seq, piece))
    }
}

/// Tells the others to stop if its thread panics, so that none waits for a piece that
/// will never come; the scope then passes the panic on.
struct StopOnPanic<'a, R: Read>(&'a Shared<R>);

impl<R: Read> Drop for StopOnPanic<'_, R> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.lock().stop = true;
            self.0.changed.notify_all();
        }
    }
}

/// Some of a file's text, cut where a document starts.
pub struct Piece {
    pub text: String,
    /// The line of the file it starts on.
    pub first_line: usize,
    /// A document marker follows: this is not the end of the file.
    pub followed: bool,
    /// Of `text`, when [`read_pieces`] was given a hasher.
    pub hash: Option<u64>,
}

struct Reader<R> {
    file: R,
    cut: Cut,
    /// Read, not yet in a piece; it starts a line.
    carry: Vec<u8>,
    /// How far `carry` is known to hold no place to end a piece (one long document).
    searched: usize,
    /// Cut by content: where the document being searched through starts in `carry`.
    document: usize,
    /// The number of the next piece.
    next: usize,
    /// Lines before `carry`.
    lines: usize,
    read: u64,
    done: bool,
}

impl<R: Read> Reader<R> {
    fn read_piece(&mut self, path: &Arc<Path>) -> Option<Result<Piece, ConfigError>> {
        loop {
            if self.done && self.carry.is_empty() {
                return None;
            }
            let cut = match self.cut {
                Cut::Every(_) if self.done => Some(self.carry.len()),
                Cut::Every(bytes) => piece_end(&self.carry, bytes.max(1).max(self.searched)),
                Cut::ByContent => {
                    let (cut, searched, document) =
                        content_end(&self.carry, self.searched, self.document, self.done);
                    (self.searched, self.document) = (searched, document);
                    cut.or(self.done.then_some(self.carry.len()))
                }
            };
            if let Some(cut) = cut {
                return Some(self.take(cut, path));
            }
            if let Cut::Every(_) = self.cut {
                // A marker may straddle what was read and what comes next.
                self.searched = self.carry.len().saturating_sub(4);
            }
            let wanted = match self.cut {
                Cut::Every(bytes) => bytes.max(64 << 10),
                Cut::ByContent => 64 << 10,
            } as u64;
            match (&mut self.file).take(wanted).read_to_end(&mut self.carry) {
                Ok(0) => self.done = true,
                Ok(n) => {
                    // The file may grow while it is read.
                    self.read += n as u64;
                    if self.read > MAX_FILE_BYTES {
                        return Some(Err(self.fail(path, ReadError::TooLarge)));
                    }
                }
                Err(e) => return Some(Err(self.fail(path, ReadError::Io(e)))),
            }
        }
    }

    fn take(&mut self, cut: usize, path: &Arc<Path>) -> Result<Piece, ConfigError> {
        let followed = cut < self.carry.len();
        let rest = self.carry.split_off(cut);
        let bytes = std::mem::replace(&mut self.carry, rest);
        (self.searched, self.document) = (0, 0);
        let first_line = self.lines + 1;
        self.lines += bytes.iter().filter(|&&b| b == b'\n').count();
        self.next += 1;
        utf8(bytes)
            .map(|text| Piece {
                text,
                first_line,
                followed,
                hash: None,
            })
            .map_err(|e| {
                let line = match e {
                    ReadError::NotUtf8 { line, .. } => first_line - 1 + line,
                    _ => 0,
                };
                self.fail_at(path, line, e)
            })
    }

    fn fail(&mut self, path: &Arc<Path>, e: ReadError) -> ConfigError {
        self.next += 1;
        self.fail_at(path, 0, e)
    }

    /// Nothing more is read after an error: a file read whole stops there too.
    fn fail_at(&mut self, path: &Arc<Path>, line: usize, e: ReadError) -> ConfigError {
        self.done = true;
        self.carry = Vec::new();
        ConfigError {
            origin: Origin::File {
                path: path.clone(),
                document: 0,
                line,
            },
            resource: None,
            field: None,
            message: e.to_string(),
        }
    }
}

/// Where the piece that starts `text` ends: at the first document marker (`---` alone on
/// its line, or before a space or tab) at or past `at_least` bytes, unless a directive
/// (`%YAML`) goes with that document. `None` when `text` holds no such place yet.
fn piece_end(text: &[u8], at_least: usize) -> Option<usize> {
    let mut from = at_least.max(1);
    while from < text.len() {
        let newline = from - 1 + text[from - 1..].iter().position(|&b| b == b'\n')?;
        let start = newline + 1;
        let marker = text.get(start..start + 4)?;
        // As `document_start_lines` counts markers: `---` alone, or before a space or tab.
        let ends = match marker[3] {
            b' ' | b'\t' | b'\n' => true,
            b'\r' => text.get(start + 4) == Some(&b'\n'),
            _ => false,
        };
        let before = &text[..start];
        if marker.starts_with(b"---") && ends && has_content(before) && !after_directive(before) {
            return Some(start);
        }
        from = start + 1;
    }
    None
}

/// [`Cut::ByContent`]: where the piece that starts `text` ends, if `text` holds enough to
/// tell, searching from `from` (a line's start: `text` holds no place to end the piece
/// before it) through the document that starts at `document`; and from where, and through
/// which document, to search on when more text is read. A place is known only once the
/// bytes after it that decide are in (`eof`: there are no more), so that the same bytes
/// are cut alike however they were read.
fn content_end(
    text: &[u8],
    mut from: usize,
    mut document: usize,
    eof: bool,
) -> (Option<usize>, usize, usize) {
    loop {
        // The start of the next line at or after `from` (a line starts at 0 only as the
        // piece's own start: a piece is never empty).
        let start = match from {
            0 => match text.iter().position(|&b| b == b'\n') {
                Some(newline) => newline + 1,
                None => return (None, 0, document),
            },
            _ => from,
        };
        let Some(marker) = text.get(start..start + 4) else {
            // Not enough to tell (`---\r\n` needs 5 bytes); at the end, no place left.
            return (None, start, document);
        };
        let ends = match marker[3] {
            b' ' | b'\t' | b'\n' => true,
            b'\r' => match text.get(start + 4) {
                Some(&b) => b == b'\n',
                None if eof => false,
                None => return (None, start, document),
            },
            _ => false,
        };
        if marker.starts_with(b"---") && ends {
            let before = &text[..start];
            let picked = start >= CONTENT_MAX_BYTES || ends_a_piece(&text[document..start], start);
            if picked && has_content(before) && !after_directive(before) {
                return (Some(start), 0, 0);
            }
            document = start;
        }
        // On to the next line.
        match text[start..].iter().position(|&b| b == b'\n') {
            Some(newline) => from = start + newline + 1,
            None => return (None, start, document),
        }
    }
}

/// Whether the document `document`, which ends `at` bytes into its piece, ends the piece:
/// past [`CONTENT_MIN_BYTES`], by a hash of its first and last 64 bytes, with a chance
/// that grows with its length, so that pieces come to about 8 KiB more whatever the
/// documents' size. The hash is fixed (FxHash's step, a word at a time: it runs on every
/// document of the file), not seeded: the same bytes must be cut alike at every load.
fn ends_a_piece(document: &[u8], at: usize) -> bool {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    if at < CONTENT_MIN_BYTES {
        return false;
    }
    let head = &document[..document.len().min(64)];
    let tail = &document[document.len().saturating_sub(64)..];
    let mut hash: u64 = 0;
    for part in [head, tail] {
        let mut words = part.chunks_exact(8);
        for word in &mut words {
            let mut bytes = [0; 8];
            bytes.copy_from_slice(word);
            hash = (hash.rotate_left(5) ^ u64::from_le_bytes(bytes)).wrapping_mul(K);
        }
        for &b in words.remainder() {
            hash = (hash.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }
    // The multiply leaves the low bits poorly mixed: fold the high ones in.
    hash ^= hash >> 32;
    (hash % (8 << 10)) < document.len() as u64
}

/// Whether `before` holds more than blank lines and comments. A text without a document
/// still reads as one empty document, where in the whole file it is none.
fn has_content(before: &[u8]) -> bool {
    before
        .split(|&b| b == b'\n')
        .map(|line| line.trim_ascii())
        .any(|line| !line.is_empty() && !line.starts_with(b"#"))
}

/// Whether the last line of `before` that is neither blank nor a comment is a directive.
fn after_directive(before: &[u8]) -> bool {
    before
        .split(|&b| b == b'\n')
        .rev()
        .map(|line| line.trim_ascii())
        .find(|line| !line.is_empty() && !line.starts_with(b"#"))
        .is_some_and(|line| line.starts_with(b"%"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::for_each_document;

    fn whole(text: &str) -> Vec<Result<Resource, ConfigError>> {
        let mut items = Vec::new();
        for_each_document(Path::new("t.yaml"), text, |i| items.push(i));
        items
    }

    fn in_pieces(
        text: &str,
        piece_bytes: usize,
        threads: usize,
    ) -> Vec<Result<Resource, ConfigError>> {
        let mut items = Vec::new();
        let file = text.as_bytes();
        for_each_in_pieces(Path::new("t.yaml"), file, piece_bytes, threads, |i| {
            items.push(i)
        });
        items
    }

    const MIXED: &str = "# a comment before anything\n\
        resourceType: User\nid: first\n\
        ---\nresourceType: User\nid: second\ndata: {note: \"--- not a marker\"}\n\
        --- # a marker with a comment\n\
        resourceType: AccessPolicy\nid: p\nengine: matcho\nmatcho:\n  uri: |\n    ---\n    indented, not a marker\n\
        ---\n\n# blank and comment lines\n\n\
        resourceType: User\nid: not-a-bool\ninactive: maybe\n\
        ---\n[{resourceType: User, id: in-a-list}, {resourceType: User, id: also}]\n\
        --- {resourceType: User, id: flow}\n\
        ---\n---\nresourceType: Client\nid: unknown-kind\n\
        ---\r\nresourceType: User\r\nid: crlf\r\n\
        ---\nresourceType: User\nid: last\n";

    /// Cut anywhere they may be, pieces give what the whole file gives: the same
    /// resources and errors, in the same order, at the same lines and documents.
    #[test]
    fn pieces_read_as_the_whole_file_reads() {
        let expected = whole(MIXED);
        assert_eq!(
            expected.iter().filter(|i| i.is_err()).count(),
            2,
            "{expected:#?}"
        );
        assert_eq!(expected.len(), 10, "{expected:#?}");
        for piece_bytes in [1, 7, 40, 100, 1 << 20] {
            for threads in [1, 3] {
                assert_eq!(
                    in_pieces(MIXED, piece_bytes, threads),
                    expected,
                    "{piece_bytes} bytes, {threads} threads"
                );
            }
        }
    }

    /// A syntax error stops the file where it is, and its message names the file's lines.
    #[test]
    fn a_syntax_error_stops_there_and_names_the_files_line() {
        let text = format!("{MIXED}---\nresourceType: User\nid: bad\ndata: [unclosed\n---\nresourceType: User\nid: after\n");
        let expected = whole(&text);
        let last = expected.last().unwrap().as_ref().unwrap_err().to_string();
        assert!(
            last.contains("invalid YAML") && last.contains("line 3"),
            "{last}"
        );
        for piece_bytes in [1, 64] {
            let got = in_pieces(&text, piece_bytes, 2);
            assert_eq!(got, expected, "{piece_bytes} bytes");
        }
    }

    /// What runs on past a document's end is an error where the whole file finds it.
    #[test]
    fn unclosed_brackets_and_quotes_fail_as_in_the_whole_file() {
        for tail in [
            "data: [unclosed\n",
            "data: {unclosed: 1\n",
            "data: \"unclosed\n",
            "data: 'unclosed\n",
            "data: \"two\n  lines\n",
            "data: *nowhere\n",
            "data: &a 1\nmore: *a\n",
            "- a\nb: c\n",
        ] {
            let text = format!("resourceType: User\nid: a\n---\nresourceType: User\nid: b\n{tail}---\nresourceType: User\nid: c\n---\nresourceType: User\nid: d\n");
            let expected = whole(&text);
            for piece_bytes in [1, 30] {
                assert_eq!(
                    in_pieces(&text, piece_bytes, 2),
                    expected,
                    "{tail:?}, {piece_bytes} bytes"
                );
            }
        }
    }

    #[test]
    fn a_directive_stays_with_its_document() {
        let text = "resourceType: User\nid: a\n...\n%YAML 1.2\n# its document\n---\nresourceType: User\nid: b\n";
        assert_eq!(piece_end(text.as_bytes(), 1), None);
        assert_eq!(in_pieces(text, 1, 2), whole(text));
        assert_eq!(whole(text).iter().filter(|i| i.is_ok()).count(), 2);
    }

    /// Cut by content, a large file reads as the whole file reads; and an edit near its
    /// start leaves the pieces after the first few as they were, byte for byte (however
    /// the reads of 64 KiB now fall on them): what lets a later read find them again.
    #[test]
    fn pieces_cut_by_content_read_as_the_whole_file_and_survive_an_edit_before_them() {
        let mut text = String::new();
        for i in 0..3000 {
            text.push_str(&match i % 5 {
                0 => format!("---\r\nresourceType: User\r\nid: crlf{i}\r\n"),
                1 => format!("--- # c\nresourceType: User\nid: c{i}\ndata: {{n: \"--- no\"}}\n"),
                2 => format!(
                    "---\n\n# a comment\n\nresourceType: AccessPolicy\nid: p{i}\n\
                     engine: matcho\nmatcho:\n  uri: |\n    ---\n    indented\n"
                ),
                3 => format!("--- {{resourceType: User, id: flow{i}}}\n"),
                _ => format!("...\n%YAML 1.2\n---\nresourceType: User\nid: d{i}\n"),
            });
        }
        let hasher = RandomState::new();
        let path: Arc<Path> = Path::new("t.yaml").into();
        let mut items = Vec::new();
        let mut documents_before = 0;
        let parse = |_: &Piece| false;
        read_pieces(
            &path,
            text.as_bytes(),
            Cut::ByContent,
            2,
            None,
            &parse,
            |out| {
                let PieceRead::Parsed {
                    items: parsed,
                    parsed: p,
                    ..
                } = out
                else {
                    panic!("not parsed");
                };
                for mut item in parsed {
                    renumber(&mut item, documents_before);
                    items.push(item);
                }
                documents_before += p.documents;
                p.ended
            },
        );
        assert_eq!(items, whole(&text));
        assert_eq!(items.len(), 3000);

        // The pieces, hashed, not parsed.
        let cut = |text: &str| {
            let mut pieces = Vec::new();
            let hash = |_: &Piece| true;
            read_pieces(
                &path,
                text.as_bytes(),
                Cut::ByContent,
                2,
                Some(&hasher),
                &hash,
                |out| {
                    let PieceRead::Skipped(piece) = out else {
                        panic!("parsed");
                    };
                    pieces.push((piece.text.len(), piece.hash));
                    false
                },
            );
            pieces
        };
        let before = cut(&text);
        assert!(before.len() > 8, "{before:?}");
        for edit in (0..4000).step_by(37) {
            let now = cut(&format!("# {}\n{text}", "x".repeat(edit)));
            assert_eq!(now[now.len() - 6..], before[before.len() - 6..], "{edit}");
        }
    }

    #[test]
    fn text_that_is_not_utf8_names_its_line_in_the_file() {
        let mut bytes = b"resourceType: User\nid: a\n---\nresourceType: User\nid: b\n".to_vec();
        bytes.extend_from_slice(b"data: {x: caf\xe9}\n");
        let mut items = Vec::new();
        for_each_in_pieces(Path::new("t.yaml"), &bytes[..], 1, 2, |i| items.push(i));
        let error = items.last().unwrap().as_ref().unwrap_err().to_string();
        assert!(
            error.ends_with("t.yaml:6: not UTF-8: invalid byte at column 14"),
            "{error}"
        );
        assert_eq!(
            items.len(),
            2,
            "the first document, then the error: {items:?}"
        );
    }
}
