//! Fuzz body `config_yaml`: the configuration loader on the text of one YAML file (any
//! number of documents, either form: Aidbox `resourceType` or Kubernetes `apiVersion`),
//! parsed and compiled into a snapshot as `validate` and the file source do.
//!
//! Input: the file's bytes (not UTF-8: nothing to do, as the file source cannot read it).
//! Properties: see `common::check_config`; and read in pieces, as a large file is, the
//! file gives exactly what a parse of the whole gives.

#[path = "common.rs"]
mod common;

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    common::check_config("fuzz.yaml", text);
    check_pieces("fuzz.yaml", text);
}

/// Cut at every place a piece may end, parsed on two threads: the same resources and
/// errors, in the same order, at the same lines and documents, with the same messages.
/// Not where `[`/`{` nest too deep or a character YAML refuses is found: those checks
/// refuse the whole file before any document, and a piece only where it meets them.
/// Nor where a line ends in a lone `\r`: the parser counts it as a line end, the loader's
/// line numbers (in the whole file as in pieces) do not.
fn check_pieces(file: &str, text: &str) {
    use portcullis::resources::for_each_document;
    use portcullis::source::files::for_each_in_pieces;
    if text.replace("\r\n", "").contains('\r') {
        return;
    }
    let path = std::path::Path::new(file);
    let (mut whole, mut pieces) = (Vec::new(), Vec::new());
    for_each_document(path, text, |item| whole.push(item));
    for_each_in_pieces(path, text.as_bytes(), 1, 2, |item| pieces.push(item));
    let refused_text = |items: &[Result<_, portcullis::resources::ConfigError>]| {
        items.iter().any(|i| {
            matches!(i, Err(e) if e.message.contains("nested deeper than")
                || e.message.contains("not allowed in YAML"))
        })
    };
    if refused_text(&whole) || refused_text(&pieces) {
        return;
    }
    assert_eq!(pieces, whole, "read in pieces, the file reads otherwise");
}
