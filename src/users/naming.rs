//! The name of an auto-created User, derived from `(system, sub)` alone, so that every
//! replica creating the same user writes the same object (docs/users.md, "Naming").

use sha2::{Digest, Sha256};

/// Kubernetes names (RFC 1123 labels) are at most this long.
pub const MAX_NAME_LEN: usize = 63;
/// Hex digits of SHA-256 in a hashed name: 80 bits, so a collision needs ~2^40 users.
const HASH_HEX: usize = 20;
/// Room kept for the readable system prefix of a hashed name.
const MAX_PREFIX: usize = MAX_NAME_LEN - HASH_HEX - 1;

/// `<system>-<sub>` when that is already a valid RFC 1123 label (a Keycloak UUID sub under
/// system `keycloak`: `keycloak-74ae9aaf-5681-4231-96d3-eeec940a20b4`); otherwise a slug of
/// the system, `-`, and the first 20 hex digits of SHA-256 over `system`, NUL, `sub`
/// (`u-<hex>` when the system leaves no slug).
///
/// The sub is never lower-cased or trimmed into the readable form: subs are case-sensitive,
/// and two subs must not share a name. The system is part of the name so that two identity
/// providers issuing the same sub make two Users.
pub fn user_name(system: &str, sub: &str) -> String {
    let readable = format!("{system}-{sub}");
    if is_valid_name(&readable) {
        return readable;
    }
    let mut hasher = Sha256::new();
    hasher.update(system.as_bytes());
    hasher.update([0u8]);
    hasher.update(sub.as_bytes());
    let digest = hasher.finalize();
    let hex: String = digest
        .iter()
        .flat_map(|b| [b >> 4, b & 0xf])
        .take(HASH_HEX)
        .map(|n| char::from_digit(n.into(), 16).expect("a nibble is a hex digit"))
        .collect();
    let prefix = slug(system, MAX_PREFIX);
    let prefix = if prefix.is_empty() { "u" } else { &prefix };
    format!("{prefix}-{hex}")
}

/// An RFC 1123 label: 1..=63 of `[a-z0-9-]`, starting and ending alphanumeric.
pub fn is_valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_NAME_LEN
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// Lower-case alphanumerics, every other run of characters one `-`, trimmed, at most `max`.
fn slug(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    for c in s.chars() {
        if out.len() >= max {
            break;
        }
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_valid_subs_readable() {
        assert_eq!(
            user_name("keycloak", "74ae9aaf-5681-4231-96d3-eeec940a20b4"),
            "keycloak-74ae9aaf-5681-4231-96d3-eeec940a20b4"
        );
        assert_eq!(user_name("keycloak", "alice"), "keycloak-alice");
    }

    #[test]
    fn hashes_subs_that_are_not_valid_names() {
        for (system, sub) in [
            ("keycloak", "Alice"),
            ("keycloak", "alice@example.com"),
            ("https://accounts.google.com", "110169484474386276334"),
            ("keycloak", &"a".repeat(60)),
            ("keycloak", ""),
            ("keycloak", "-x"),
            ("", "x y"),
            ("…", "ü"),
        ] {
            let name = user_name(system, sub);
            assert!(is_valid_name(&name), "{system:?} {sub:?} → {name:?}");
            assert_eq!(name, user_name(system, sub), "deterministic");
        }
        // The example of docs/users.md.
        assert_eq!(
            user_name("https://accounts.google.com", "110169484474386276334"),
            "https-accounts-google-com-1a6adac36fceb13630bc"
        );
        assert!(user_name("", "x y").starts_with("u-"));
        assert!(is_valid_name(&user_name(&"S".repeat(200), "x y")));
    }

    #[test]
    fn distinct_inputs_give_distinct_names() {
        let names = [
            user_name("keycloak", "Alice"),
            user_name("keycloak", "alice"),
            user_name("keycloak", "ALICE"),
            user_name("github", "Alice"),
            user_name("keycloak", "alice@x"),
            user_name("keycloak\0alice", "x"),
            user_name("keycloak", "alice\0x"),
        ];
        let unique: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "{names:?}");
    }

    #[test]
    fn checks_rfc_1123_labels() {
        assert!(is_valid_name("a"));
        assert!(is_valid_name("a-1"));
        assert!(is_valid_name(&"a".repeat(63)));
        assert!(!is_valid_name(&"a".repeat(64)));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name("-a"));
        assert!(!is_valid_name("a-"));
        assert!(!is_valid_name("A"));
        assert!(!is_valid_name("a.b"));
        assert!(!is_valid_name("a_b"));
    }
}
