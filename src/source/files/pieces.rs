//! A large file read and parsed in pieces, on several threads: 100,000 Users reload in a
//! fraction of the time, and the file's text never sits in memory whole.
//!
//! A piece ends where a line starts with `---`. A document marker at the start of a line
//! ends whatever came before it (YAML forbids one even inside quoted text), so a piece
//! parses alone as it would inside the whole file. Pieces are handed over in file order,
//! their lines and documents numbered as in the whole file.

use std::collections::BTreeMap;
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
    let path: Arc<Path> = path.into();
    let shared = Shared {
        state: Mutex::new(State {
            reader: Reader {
                file,
                piece_bytes: piece_bytes.max(1),
                carry: Vec::new(),
                searched: 0,
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
    let (parsed_tx, parsed_rx) = mpsc::channel::<(usize, Output)>();
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            let tx = parsed_tx.clone();
            let (shared, path) = (&shared, &path);
            scope.spawn(move || {
                let _stop_on_panic = StopOnPanic(shared);
                while let Some((seq, piece)) = shared.next_piece(path) {
                    let output = match piece {
                        Ok(piece) => parse_piece(path, &piece),
                        Err(e) => Output {
                            items: vec![Err(e)],
                            parsed: Parsed {
                                ended: true,
                                ..Parsed::default()
                            },
                        },
                    };
                    if tx.send((seq, output)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(parsed_tx);

        let mut waiting = BTreeMap::new();
        let (mut next, mut documents_before) = (0, 0);
        'pieces: for (seq, output) in parsed_rx {
            waiting.insert(seq, output);
            while let Some(output) = waiting.remove(&next) {
                next += 1;
                for mut item in output.items {
                    renumber(&mut item, documents_before);
                    emit(item);
                }
                documents_before += output.parsed.documents;
                let mut state = shared.lock();
                state.handed_over = next;
                state.stop |= output.parsed.ended;
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

/// One piece's resources and errors, in order.
struct Output {
    items: Vec<Result<Resource, ConfigError>>,
    parsed: Parsed,
}

fn parse_piece(path: &Arc<Path>, piece: &Piece) -> Output {
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
    Output { items, parsed }
}

fn renumber(item: &mut Result<Resource, ConfigError>, documents_before: usize) {
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

struct Piece {
    text: String,
    first_line: usize,
    /// A document marker follows: this is not the end of the file.
    followed: bool,
}

struct Reader<R> {
    file: R,
    piece_bytes: usize,
    /// Read, not yet in a piece; it starts a line.
    carry: Vec<u8>,
    /// How far `carry` is known to hold no place to end a piece (one long document).
    searched: usize,
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
            let cut = if self.done {
                Some(self.carry.len())
            } else {
                piece_end(&self.carry, self.piece_bytes.max(self.searched))
            };
            if let Some(cut) = cut {
                return Some(self.take(cut, path));
            }
            // A marker may straddle what was read and what comes next.
            self.searched = self.carry.len().saturating_sub(4);
            let wanted = self.piece_bytes.max(64 << 10) as u64;
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
        self.searched = 0;
        let first_line = self.lines + 1;
        self.lines += bytes.iter().filter(|&&b| b == b'\n').count();
        self.next += 1;
        utf8(bytes)
            .map(|text| Piece {
                text,
                first_line,
                followed,
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
