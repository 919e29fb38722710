//! A configuration file's text: bounded in size, and UTF-8 or an error naming the line.

use std::path::Path;

/// The largest configuration file read: parse time grows with size, and 16 MiB holds
/// about 100,000 Users.
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// Why a file could not be read as configuration text.
#[derive(Debug)]
pub enum ReadError {
    Io(std::io::Error),
    TooLarge,
    NotUtf8 { line: usize, column: usize },
}

impl ReadError {
    /// The line the error is about, 0 when it is about the whole file.
    pub fn line(&self) -> usize {
        match self {
            ReadError::NotUtf8 { line, .. } => *line,
            _ => 0,
        }
    }
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "cannot read: {e}"),
            ReadError::TooLarge => write!(
                f,
                "larger than the {} MiB limit of a configuration file; split it into several files",
                MAX_FILE_BYTES >> 20
            ),
            ReadError::NotUtf8 { column, .. } => {
                write!(f, "not UTF-8: invalid byte at column {column}")
            }
        }
    }
}

/// Read one configuration file: at most [`MAX_FILE_BYTES`], and UTF-8, or an error that
/// says which line is not.
pub fn read_text(path: &Path) -> Result<String, ReadError> {
    use std::io::Read;
    let mut bytes = Vec::new();
    // `take` rather than the size from metadata: the file may grow while it is read.
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(ReadError::TooLarge);
    }
    utf8(bytes)
}

/// The text, or the line and column (from 1) of its first byte that is not UTF-8.
pub fn utf8(bytes: Vec<u8>) -> Result<String, ReadError> {
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line_start = valid.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        ReadError::NotUtf8 {
            line: 1 + valid.iter().filter(|&&b| b == b'\n').count(),
            column: 1 + valid.len() - line_start,
        }
    })
}
