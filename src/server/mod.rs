//! The edges: gRPC (ext_authz v3, health, admin), HTTP (health, metrics, ext_authz) and
//! the explain page on the admin listener, and HTTPS (the admission webhook). They
//! translate to and from [`crate::decision`] and [`crate::source::cluster::judge`] and
//! hold no decision logic. Each decision the ext_authz edges ask for is one OTLP span
//! ([`spans`]); both admin edges explain through [`operator`].

pub mod admin;
pub mod coalesce;
pub mod explain_page;
pub mod grpc;
pub mod http;
pub mod listen;
pub mod operator;
pub mod spans;
pub mod tls;
pub mod webhook;

/// A header value's bytes as text, bytes that are not UTF-8 replaced by U+FFFD. Valid text
/// (nearly always) is checked by `from_utf8`, several times faster than the lossy scan.
fn header_text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn header_text_keeps_text_and_replaces_what_is_not() {
        assert_eq!(super::header_text("é ✓".as_bytes()), "é ✓");
        assert_eq!(super::header_text(b"a\xffb"), "a\u{fffd}b");
    }
}
