//! The name of an auto-created User, derived from `(system, sub)` alone, so that every
//! replica creating the same user writes the same object (docs/users.md, "Naming").

use sha2::{Digest, Sha256};

/// Kubernetes names (RFC 1123 labels) are at most this long.
pub const MAX_NAME_LEN: usize = 63;
/// Hex digits of SHA-256 in a hashed name: 80 bits, so a collision needs ~2^40 users.
const HASH_HEX: usize = 20;
/// Room kept for the readable system prefix of a hashed name.
const MAX_PREFIX: usize = MAX_NAME_LEN - HASH_HEX - 1;

/// The label by which `serve --kube --users on-demand` finds a User by identifier: its value
/// is [`identifier_label`] of one of the User's identifiers.
pub const IDENTIFIER_LABEL: &str = "portcullis.dev/identifier";
/// Hex digits of SHA-256 in an identifier label: 160 bits, within a label value's 63.
const LABEL_HEX: usize = 40;

/// The value of [`IDENTIFIER_LABEL`] for the identifier `{system, value}`: the first 40 hex
/// digits of SHA-256 over `system|value` (docs/users.md, "Users on demand"). A label value
/// holds at most 63 of `[A-Za-z0-9-_.]`, so the identifier itself cannot be the value; two
/// pairs that meet on one text (`a|b` + `c`, `a` + `b|c`) only cost a lookup a second
/// candidate, since a User found by the label must also hold the identifier.
pub fn identifier_label(system: &str, value: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(system.as_bytes());
    hasher.update(b"|");
    hasher.update(value.as_bytes());
    hex(&hasher.finalize(), LABEL_HEX)
}

/// What a User's [`IDENTIFIER_LABEL`] says of it, against its identifiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelCheck {
    /// It has no identifiers: it is found by name, the label does not matter.
    NotNeeded,
    /// The label names one of its identifiers.
    Labelled,
    /// It has identifiers and no label: found by name only, never by identifier.
    Missing { expected: String },
    /// The label names none of its identifiers.
    Wrong { found: String, expected: String },
}

impl LabelCheck {
    /// Checks `label` (the value the User carries, if any) against `identifiers`.
    pub fn of<'a>(
        mut identifiers: impl Iterator<Item = (&'a str, &'a str)>,
        label: Option<&str>,
    ) -> Self {
        let Some((system, value)) = identifiers.next() else {
            return LabelCheck::NotNeeded;
        };
        let expected = identifier_label(system, value);
        match label {
            None => LabelCheck::Missing { expected },
            Some(found) if found == expected => LabelCheck::Labelled,
            Some(found) => {
                if identifiers.any(|(s, v)| identifier_label(s, v) == found) {
                    LabelCheck::Labelled
                } else {
                    LabelCheck::Wrong {
                        found: found.to_string(),
                        expected,
                    }
                }
            }
        }
    }

    /// What to say of a User whose label is missing or wrong, `None` when it is fine.
    pub fn warning(&self) -> Option<String> {
        match self {
            LabelCheck::NotNeeded | LabelCheck::Labelled => None,
            LabelCheck::Missing { expected } => Some(format!(
                "no label `{IDENTIFIER_LABEL}: {expected}` (the hash of its first identifier):                  with `--users on-demand` it is found by name only, never by identifier"
            )),
            LabelCheck::Wrong { found, expected } => Some(format!(
                "label `{IDENTIFIER_LABEL}: {found}` names none of its identifiers (the first                  one's is `{expected}`): with `--users on-demand` it is found by name only,                  never by identifier"
            )),
        }
    }
}

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
    let hex = hex(&hasher.finalize(), HASH_HEX);
    let prefix = slug(system, MAX_PREFIX);
    let prefix = if prefix.is_empty() { "u" } else { &prefix };
    format!("{prefix}-{hex}")
}

/// The first `digits` hex digits of `bytes`, lower case.
fn hex(bytes: &[u8], digits: usize) -> String {
    bytes
        .iter()
        .flat_map(|b| [b >> 4, b & 0xf])
        .take(digits)
        .map(|n| char::from_digit(n.into(), 16).expect("a nibble is a hex digit"))
        .collect()
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
    fn the_identifier_label_is_40_hex_of_sha256_over_system_bar_value() {
        // printf 'keycloak|alice' | sha256sum
        assert_eq!(
            identifier_label("keycloak", "alice"),
            "8918486e0cca7329a59cd84620653f76882126b0"
        );
        let label = identifier_label("https://accounts.google.com", "110169484474386276334");
        assert_eq!(label.len(), 40);
        assert!(label
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert_ne!(
            label,
            identifier_label("https://accounts.google.com", "110169484474386276335")
        );
    }

    #[test]
    fn a_label_is_checked_against_every_identifier() {
        let ids = [("kc", "1"), ("gh", "2")];
        let check = |label: Option<&str>| LabelCheck::of(ids.iter().copied(), label);
        assert_eq!(
            check(Some(&identifier_label("kc", "1"))),
            LabelCheck::Labelled
        );
        assert_eq!(
            check(Some(&identifier_label("gh", "2"))),
            LabelCheck::Labelled
        );
        assert!(matches!(check(None), LabelCheck::Missing { .. }));
        assert!(matches!(check(Some("x")), LabelCheck::Wrong { .. }));
        assert!(check(None)
            .warning()
            .unwrap()
            .contains(&identifier_label("kc", "1")));
        assert_eq!(
            LabelCheck::of(std::iter::empty(), None),
            LabelCheck::NotNeeded
        );
        assert_eq!(
            LabelCheck::of(std::iter::empty(), Some("x")),
            LabelCheck::NotNeeded
        );
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
