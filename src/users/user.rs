//! [`KnownUser`]: the one form of a User inside portcullis, and its one conversion each
//! way to the `User` object of files and the API ([`crate::resources::User`]).

use std::fmt;
use std::sync::Arc;

use serde_json::{json, Map, Value};
use smallvec::SmallVec;

use crate::resources::{self, namespace_of, object_name, qualified, Identifier, UserSpec};

/// A User that portcullis knows (configured, from the cluster, or created), as the index
/// keeps it and policies see it (`user` in the request context). The resource itself, as
/// written in a file or the API, is [`crate::resources::User`].
///
/// All of it sits behind one pointer, so a clone is a reference count and each index that
/// holds a User (a snapshot's, the spare of the cluster's pair, the cluster index itself)
/// pays 8 bytes for it; a User costs about 200 bytes, where its spec as JSON maps costs
/// about 900.
#[derive(Clone, PartialEq)]
pub struct KnownUser(Arc<Parts>);

#[derive(PartialEq)]
struct Parts {
    /// The name, `data` as JSON, the email, then each identifier's system and value.
    text: Box<str>,
    /// Where each piece of `text` ends, in that order.
    ends: SmallVec<[u32; 5]>,
    has_data: bool,
    has_email: bool,
    inactive: Option<bool>,
}

const NAME: usize = 0;
const DATA: usize = 1;
const EMAIL: usize = 2;
const FIRST_IDENTIFIER: usize = 3;

impl KnownUser {
    /// The same User, not merely an equal one: a clone of it.
    pub fn is(&self, other: &KnownUser) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Callers bound the size: configuration refuses a User over [`MAX_USER_BYTES`] (after
    /// reading it whole), and userinfo answers are limited to 64 KiB.
    pub fn new(name: &str, spec: &UserSpec) -> Self {
        let data = spec.data.as_ref().map(Value::to_string);
        let mut text = String::with_capacity(
            name.len()
                + data.as_ref().map_or(0, String::len)
                + spec.email.as_ref().map_or(0, String::len)
                + spec
                    .identifier
                    .iter()
                    .map(|i| i.system.len() + i.value.len())
                    .sum::<usize>(),
        );
        let mut ends = SmallVec::new();
        let mut push = |s: &str| {
            text.push_str(s);
            ends.push(u32::try_from(text.len()).expect("a User is bounded well under 4 GiB"));
        };
        push(name);
        push(data.as_deref().unwrap_or(""));
        push(spec.email.as_deref().unwrap_or(""));
        for id in &spec.identifier {
            push(&id.system);
            push(&id.value);
        }
        Self(Arc::new(Parts {
            text: text.into(),
            ends,
            has_data: data.is_some(),
            has_email: spec.email.is_some(),
            inactive: spec.inactive,
        }))
    }

    fn piece(&self, i: usize) -> &str {
        let ends = &self.0.ends;
        let start = if i == 0 { 0 } else { ends[i - 1] as usize };
        &self.0.text[start..ends[i] as usize]
    }

    /// Bytes of text: name, data, email and identifiers.
    pub fn size(&self) -> usize {
        self.0.text.len()
    }

    /// The name the index knows it by: `namespace/name` from the cluster.
    pub fn name(&self) -> &str {
        self.piece(NAME)
    }

    /// `metadata.name`: what `x-portcullis-user` and `user.id` show.
    pub fn object_name(&self) -> &str {
        object_name(self.name())
    }

    pub fn email(&self) -> Option<&str> {
        self.0.has_email.then(|| self.piece(EMAIL))
    }

    /// `(system, value)` of each identifier, in order.
    pub fn identifiers(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + '_ {
        (0..self.identifier_count()).map(|i| self.identifier(i))
    }

    fn identifier_count(&self) -> usize {
        (self.0.ends.len() - FIRST_IDENTIFIER) / 2
    }

    /// The `i`th identifier, `(system, value)`: the index keeps positions, not copies.
    pub(super) fn identifier(&self, i: usize) -> (&str, &str) {
        let at = FIRST_IDENTIFIER + 2 * i;
        (self.piece(at), self.piece(at + 1))
    }

    pub fn has_identifier(&self, system: &str, value: &str) -> bool {
        self.identifiers().any(|id| id == (system, value))
    }

    pub fn is_active(&self) -> bool {
        !self.0.inactive.unwrap_or(false)
    }

    /// `data`, parsed: `{}` when the User has none.
    pub fn data(&self) -> Value {
        if !self.0.has_data {
            return Value::Object(Map::new());
        }
        // Serialized by `new` from a Value: it parses.
        serde_json::from_str(self.piece(DATA)).unwrap_or_else(|_| Value::Object(Map::new()))
    }

    /// `{id, data, identifier, email?}`: the shape of `user` in the request context.
    pub fn to_context(&self) -> Value {
        let mut v = Map::with_capacity(4);
        v.insert("id".into(), json!(self.object_name()));
        v.insert("data".into(), self.data());
        v.insert(
            "identifier".into(),
            Value::Array(
                self.identifiers()
                    .map(|(system, value)| json!({"system": system, "value": value}))
                    .collect(),
            ),
        );
        if let Some(email) = self.email() {
            v.insert("email".into(), json!(email));
        }
        Value::Object(v)
    }

    /// The User as a resource spec again.
    pub fn spec(&self) -> UserSpec {
        UserSpec {
            data: self.0.has_data.then(|| self.data()),
            identifier: self
                .identifiers()
                .map(|(system, value)| Identifier {
                    system: system.into(),
                    value: value.into(),
                })
                .collect(),
            email: self.email().map(str::to_owned),
            inactive: self.0.inactive,
        }
    }

    /// A `User` object (from the API, or written back by a store) as the index knows it:
    /// named `namespace/name` when it has a namespace.
    pub fn from_manifest(user: &resources::User) -> Self {
        let name = qualified(
            user.metadata.namespace.as_deref(),
            user.metadata.name.as_deref().unwrap_or_default(),
        );
        KnownUser::new(&name, &user.spec)
    }

    /// The User as a `User` object: `metadata.name`, the namespace of a `namespace/name`,
    /// and its spec. No labels: a store adds those it writes.
    pub fn to_manifest(&self) -> resources::User {
        let mut user = resources::User::new(self.object_name(), self.spec());
        if let Some(ns) = namespace_of(self.name()) {
            user.metadata.namespace = Some(ns.to_string());
        }
        user
    }
}

/// The largest User configuration accepts: Kubernetes stores objects up to about 1.5 MiB.
pub const MAX_USER_BYTES: usize = 1 << 20;

impl fmt::Debug for KnownUser {
    // Only the name: `data` and identifiers are personal data, and Debug output ends up in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name())
            .finish_non_exhaustive()
    }
}
