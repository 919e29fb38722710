//! An object as the cluster index keeps it: what the judgement, the snapshot and the
//! status writer read, and nothing else. No kube types, no metadata but the few fields
//! that decide (name, generation, uid, age), no annotations but the dry-run flag folded
//! into a policy's spec.
//!
//! - A User is kept in its one form, [`KnownUser`] (one shared block of text), which the
//!   snapshot's user index shares: a relist or a clash admits it again as it is, and
//!   [`KnownUser::spec`] gives its spec back. Its spec as JSON maps is not kept: at 100,000
//!   Users that was most of the index.
//! - An AccessPolicy is kept as its spec's compact JSON text ([`HeldPolicy`]), parsed
//!   again when its scope is rebuilt: its parsed spec (a `Spec` of 384 bytes and
//!   `matcho`'s JSON maps) took about 0.8 KB more, 8 MiB at 10,000 policies, and parsing
//!   the text costs a rebuild no more than cloning the parsed spec did (BENCHMARKS.md).
//! - The few other kinds keep their parsed spec, compiled again on a rebuild of their scope.
//! - The status an object carries is shared ([`Statuses`]): the ones portcullis writes
//!   repeat, word for word, across thousands of objects.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use super::judge::{resource_of, Object, ObjectKey, Ready};
use crate::resources::{qualified, FieldError, Origin, Resource, ResourceStatus, SecretKeyRef};
use crate::resources::{AccessPolicySpec, Spec, TokenIntrospectorSpec};
use crate::snapshot::Compiler;
use crate::users::KnownUser;

/// One object as read, in the form the index keeps; [`Object`] is the same as read.
#[derive(Clone, Debug, PartialEq)]
pub struct HeldObject {
    pub key: ObjectKey,
    pub held: Held,
}

/// What the index keeps of an object, beside its key.
#[derive(Clone, Debug, PartialEq)]
pub struct Held {
    pub generation: i64,
    /// [`Object::uid`].
    pub uid: u64,
    /// [`Object::created`].
    pub created: i64,
    /// The spec, or the field that kept it from parsing (boxed: rare, and twice the size
    /// of a spec kept).
    pub spec: Result<HeldSpec, Box<FieldError>>,
    /// The status it carries now, shared with the objects that carry the same.
    pub status: Option<Arc<ResourceStatus>>,
}

/// A spec as kept.
#[derive(Clone, Debug, PartialEq)]
pub enum HeldSpec {
    /// A User, as the snapshot serves it: two versions are equal exactly when their specs
    /// are (its text holds `data` as JSON, email and identifiers, each delimited).
    User(KnownUser),
    /// An AccessPolicy, as text (boxed, so that the many Users do not pay for a wide
    /// pointer).
    Policy(Box<HeldPolicy>),
    /// Any other kind: boxed, so that the many Users do not pay for its size.
    Config(Box<Spec>),
}

/// An AccessPolicy's spec as its compact JSON text, parsed again each time it is compiled.
/// Two versions are equal when their texts are: equal texts are equal specs, so no change
/// is missed; an edit that only reorders the keys of a JSON object differs in text for an
/// equal spec, and costs one needless rebuild of its namespace.
#[derive(Clone, Debug, PartialEq)]
pub struct HeldPolicy {
    json: Box<str>,
    /// Not a field of the spec's JSON: read from the annotations.
    dry_run: bool,
}

impl HeldPolicy {
    pub fn new(spec: &AccessPolicySpec) -> Self {
        HeldPolicy {
            json: serde_json::to_string(spec)
                .expect("a spec serialises")
                .into(),
            dry_run: spec.dry_run,
        }
    }

    /// The spec, parsed again. It parsed when read, and serde_json reads back what it
    /// wrote, so an error here is a bug; it refuses the object rather than stop the index.
    pub fn spec(&self) -> Result<AccessPolicySpec, FieldError> {
        let mut spec: AccessPolicySpec = serde_json::from_str(&self.json)
            .map_err(|e| FieldError::new("spec", format!("kept spec does not parse: {e}")))?;
        spec.dry_run = self.dry_run;
        Ok(spec)
    }
}

impl HeldObject {
    /// `object` in the form kept, its status shared through `statuses`.
    pub fn new(object: Object, statuses: &Statuses) -> Self {
        let Object {
            key,
            generation,
            uid,
            created,
            spec,
            status,
        } = object;
        let spec = spec
            .map(|spec| match spec {
                Spec::User(user) => {
                    let name = qualified(Some(&key.namespace), &key.name);
                    HeldSpec::User(KnownUser::new(&name, &user))
                }
                Spec::AccessPolicy(policy) => HeldSpec::Policy(Box::new(HeldPolicy::new(&policy))),
                other => HeldSpec::Config(Box::new(other)),
            })
            .map_err(Box::new);
        HeldObject {
            key,
            held: Held {
                generation,
                uid,
                created,
                spec,
                status: status.map(|s| statuses.share(s)),
            },
        }
    }

    /// The object as read again: its spec given back from the form kept.
    pub fn to_object(&self) -> Object {
        let held = &self.held;
        Object {
            key: self.key.clone(),
            generation: held.generation,
            uid: held.uid,
            created: held.created,
            spec: match &held.spec {
                Ok(spec) => spec.to_spec(),
                Err(e) => Err(FieldError::clone(e)),
            },
            status: held.status.as_deref().cloned(),
        }
    }
}

impl HeldSpec {
    /// The spec, given back from the form kept (see [`HeldPolicy::spec`] for the error).
    pub fn to_spec(&self) -> Result<Spec, FieldError> {
        match self {
            HeldSpec::User(user) => Ok(Spec::User(user.spec())),
            HeldSpec::Policy(policy) => policy.spec().map(Spec::AccessPolicy),
            HeldSpec::Config(spec) => Ok((**spec).clone()),
        }
    }

    /// A TokenIntrospector's spec.
    pub fn introspector(&self) -> Option<&TokenIntrospectorSpec> {
        match self {
            HeldSpec::Config(spec) => match &**spec {
                Spec::TokenIntrospector(ti) => Some(ti),
                _ => None,
            },
            HeldSpec::User(_) | HeldSpec::Policy(_) => None,
        }
    }
}

impl Held {
    /// Checks the object and admits it into `compiler`, as [`super::judge::check`] does an
    /// [`Object`]: a User as kept, any other kind with its Secret references filled in
    /// by `read`. `Some` resource for those other kinds. The error is what its `Ready`
    /// condition says.
    pub fn check(
        &self,
        (namespace, name): (&str, &str),
        read: impl FnMut(&SecretKeyRef) -> Result<String, Ready>,
        compiler: &mut Compiler,
    ) -> Result<Option<Resource>, Ready> {
        let spec = match &self.spec {
            Ok(HeldSpec::User(user)) => {
                let origin = Origin::Cluster {
                    generation: self.generation,
                };
                return compiler
                    .admit_user(user.clone(), &origin)
                    .map(|()| None)
                    .map_err(|rejection| Ready::from_rejection(&rejection));
            }
            Ok(spec) => spec.to_spec(),
            Err(e) => Err(FieldError::clone(e)),
        };
        let r = resource_of(namespace, name, self.generation, spec, read)?;
        compiler
            .admit(&r)
            .map_err(|rejection| Ready::from_rejection(&rejection))?;
        Ok(Some(r))
    }
}

/// Statuses shared between the objects that carry the same one: one per distinct status,
/// not one per object. Those no object holds any more are dropped as it grows.
#[derive(Default)]
pub struct Statuses {
    shared: Mutex<Shared>,
}

#[derive(Default)]
struct Shared {
    set: HashSet<Arc<ResourceStatus>>,
    /// How many were held at the last sweep: the next comes when the set has doubled.
    after_sweep: usize,
}

/// A sweep is not worth it below this many statuses.
const SWEEP_FLOOR: usize = 64;

impl Statuses {
    /// The shared copy of `status`.
    pub fn share(&self, status: ResourceStatus) -> Arc<ResourceStatus> {
        let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(held) = shared.set.get(&status) {
            return held.clone();
        }
        if shared.set.len() >= SWEEP_FLOOR.max(2 * shared.after_sweep) {
            shared.set.retain(|s| Arc::strong_count(s) > 1);
            shared.after_sweep = shared.set.len();
        }
        let status = Arc::new(status);
        shared.set.insert(status.clone());
        status
    }

    /// How many distinct statuses are kept (some perhaps no longer held).
    pub fn len(&self) -> usize {
        let shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        shared.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests;
