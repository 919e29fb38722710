//! The four kinds, their API group, version and plurals: one table that documents, watchers,
//! CRDs, status and the webhook all read.

use std::fmt;

pub const GROUP: &str = "portcullis.dev";
pub const VERSION: &str = "v1alpha1";
pub const API_VERSION: &str = "portcullis.dev/v1alpha1";

/// The four kinds, in the order they are admitted: an IdentityProvider before the
/// TokenIntrospectors that name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    IdentityProvider,
    TokenIntrospector,
    AccessPolicy,
    User,
}

/// `(kind, name, plural)`, in [`Kind::ALL`] order.
const TABLE: [(Kind, &str, &str); 4] = [
    (
        Kind::IdentityProvider,
        "IdentityProvider",
        "identityproviders",
    ),
    (
        Kind::TokenIntrospector,
        "TokenIntrospector",
        "tokenintrospectors",
    ),
    (Kind::AccessPolicy, "AccessPolicy", "accesspolicies"),
    (Kind::User, "User", "users"),
];

/// The kinds' names as a message lists them.
pub const KIND_NAMES: &str = "TokenIntrospector, AccessPolicy, IdentityProvider, User";

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::IdentityProvider,
        Kind::TokenIntrospector,
        Kind::AccessPolicy,
        Kind::User,
    ];
    /// Everything but Users, which are compiled on their own.
    pub const CONFIG: [Kind; 3] = [
        Kind::IdentityProvider,
        Kind::TokenIntrospector,
        Kind::AccessPolicy,
    ];

    /// `TokenIntrospector`, ...: the `kind` of a manifest, the `resourceType` of Aidbox.
    pub fn name(self) -> &'static str {
        TABLE[self as usize].1
    }

    /// `tokenintrospectors`, ...: the resource of the API path and of RBAC rules.
    pub fn plural(self) -> &'static str {
        TABLE[self as usize].2
    }

    /// The kind named `name`, if it is one of the four.
    pub fn from_name(name: &str) -> Option<Kind> {
        TABLE.iter().find(|row| row.1 == name).map(|row| row.0)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_in_the_order_of_the_enum() {
        for (i, kind) in Kind::ALL.into_iter().enumerate() {
            assert_eq!(TABLE[i].0, kind);
            assert_eq!(Kind::from_name(kind.name()), Some(kind));
        }
        assert_eq!(Kind::from_name("Secret"), None);
        let listed: Vec<&str> = KIND_NAMES.split(", ").collect();
        assert_eq!(listed.len(), 4);
        assert!(listed.iter().all(|n| Kind::from_name(n).is_some()));
        assert_eq!(API_VERSION, format!("{GROUP}/{VERSION}"));
    }

    /// The CRD types name their group, kind and plural in attributes, which cannot read
    /// constants: they must say what the table says.
    #[test]
    fn the_crds_say_what_the_table_says() {
        let crds = crate::resources::crds();
        assert_eq!(crds.len(), Kind::ALL.len());
        for kind in Kind::ALL {
            let crd = crds
                .iter()
                .find(|c| c.spec.names.kind == kind.name())
                .unwrap_or_else(|| panic!("no CRD of kind {kind}"));
            assert_eq!(crd.spec.group, GROUP);
            assert_eq!(crd.spec.names.plural, kind.plural());
            assert!(crd.spec.versions.iter().any(|v| v.name == VERSION));
        }
    }
}
