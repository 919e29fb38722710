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

/// The line (from 1) of `field` (a dotted path like `jwt.keys[0].alg`, inside `spec` for
/// the Kubernetes form, at the top for Aidbox's) in the YAML document that starts at line
/// `start` of `text`: as deep as block YAML lets the path be followed, so a key in a flow
/// mapping (`{iss: x}`) is found at its mapping's line. `None` when not even the first key
/// is found (the error then names the document's line).
pub fn field_line(text: &str, start: usize, field: &str) -> Option<usize> {
    let lines: Vec<&str> = text
        .lines()
        .skip(start.saturating_sub(1))
        .enumerate()
        .take_while(|(i, l)| *i == 0 || (l.trim_end() != "---" && !l.starts_with("--- ")))
        .map(|(_, l)| l)
        .collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let content = |l: &str| !l.trim().is_empty() && !l.trim_start().starts_with('#');
    // The Kubernetes form keeps the fields under `spec:`.
    let under_spec = lines.iter().any(|l| l.starts_with("spec:"));
    let mut segments: Vec<Segment> = Vec::new();
    if under_spec {
        segments.push(Segment::Key("spec".into()));
    }
    for part in field.split('.') {
        let (key, mut rest) = part.split_once('[').map_or((part, ""), |(k, r)| (k, r));
        if !key.is_empty() {
            segments.push(Segment::Key(key.to_string()));
        }
        while let Some((index, after)) = rest.split_once(']') {
            segments.push(Segment::Index(index.parse().ok()?));
            rest = after.strip_prefix('[').unwrap_or(after);
        }
    }
    let (mut from, mut parent, mut found) = (0usize, None::<usize>, None::<usize>);
    let mut matched = 0;
    for segment in &segments {
        // The lines of the current block: below `from`, deeper than the parent.
        let block = (from..lines.len()).take_while(|&j| {
            j == from || !content(lines[j]) || parent.is_none_or(|p| indent(lines[j]) > p)
        });
        let hit = match segment {
            Segment::Key(key) => block.into_iter().find(|&j| {
                let l = lines[j].trim_start().trim_start_matches("- ").trim_start();
                [
                    format!("{key}:"),
                    format!("\"{key}\":"),
                    format!("'{key}':"),
                ]
                .iter()
                .any(|k| l.starts_with(k.as_str()))
            }),
            Segment::Index(i) => {
                let items: Vec<usize> = block
                    .filter(|&j| lines[j].trim_start().starts_with("- "))
                    .collect();
                let first = items.first().map(|&j| indent(lines[j]));
                items
                    .into_iter()
                    .filter(|&j| Some(indent(lines[j])) == first)
                    .nth(*i)
            }
        };
        let Some(j) = hit else { break };
        found = Some(j);
        matched += 1;
        let line = lines[j];
        // Where the keys inside it sit: deeper than the key, or than an item's dash.
        parent = Some(match segment {
            Segment::Key(_) => {
                indent(line) + line.trim_start().len()
                    - line.trim_start().trim_start_matches("- ").len()
            }
            Segment::Index(_) => indent(line),
        });
        from = match segment {
            Segment::Key(_) => j + 1,
            // An item's first key sits on the dash's line.
            Segment::Index(_) => j,
        };
        if line.contains('{') || line.contains('[') {
            break; // a flow collection: the rest of the path is on this line
        }
    }
    // `spec:` alone says nothing of the field.
    let prefix = usize::from(under_spec);
    (matched > prefix).then(|| start + found.unwrap_or_default())
}

enum Segment {
    Key(String),
    Index(usize),
}

#[cfg(test)]
mod field_line_tests {
    use super::field_line;

    const DOC: &str = "apiVersion: portcullis.dev/v1alpha1\n\
        kind: TokenIntrospector\n\
        metadata: {name: t}\n\
        spec:\n\
        \x20 type: jwt\n\
        \x20 jwt:\n\
        \x20   iss: https://a\n\
        \x20   keys:\n\
        \x20     - kty: RSA\n\
        \x20       alg: RS256\n\
        \x20     - kty: RSA\n\
        \x20       alg: RS999\n\
        \x20 claimToHeaders: [{claim: sub, header: x-sub}]\n";

    #[test]
    fn finds_the_fields_line_in_block_yaml() {
        assert_eq!(field_line(DOC, 1, "jwt.iss"), Some(7));
        assert_eq!(field_line(DOC, 1, "jwt.keys[1].alg"), Some(12));
        assert_eq!(field_line(DOC, 1, "jwt.keys[0].kty"), Some(9));
        // In a flow collection: the collection's line.
        assert_eq!(field_line(DOC, 1, "claimToHeaders[0].header"), Some(13));
        // A second document: lines count from the file's start.
        let two = format!("resourceType: AccessPolicy\nid: a\nengine: allow\n---\n{DOC}");
        assert_eq!(field_line(&two, 5, "jwt.keys[1].alg"), Some(16));
        let aidbox = "resourceType: AccessPolicy\nid: p\nengine: matcho\nmatcho:\n  uri: \"#(\"\n";
        assert_eq!(field_line(aidbox, 1, "matcho.uri"), Some(5));
        assert_eq!(field_line(DOC, 1, "nowhere.at.all"), None);
    }
}
