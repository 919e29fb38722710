//! An object as the cluster index keeps it: what the judgement, the snapshot and the
//! status writer read, and nothing else. No kube types, no metadata but the few fields
//! that decide (name, generation, uid, age), no annotations but the dry-run flag folded
//! into a policy's spec.
//!
//! - A User is kept in its one form, [`KnownUser`] (one shared block of text), which the
//!   snapshot's user index shares: a relist or a clash admits it again as it is, and
//!   [`KnownUser::spec`] gives its spec back. Its spec as JSON maps is not kept: at 100,000
//!   Users that was most of the index.
//! - The other kinds keep their parsed spec, compiled again on a rebuild of their scope.
//! - The status an object carries is shared ([`Statuses`]): the ones portcullis writes
//!   repeat, word for word, across thousands of objects.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use super::judge::{resource_of, Object, ObjectKey, Ready};
use crate::resources::{qualified, FieldError, Origin, Resource, ResourceStatus, SecretKeyRef};
use crate::resources::{Spec, TokenIntrospectorSpec};
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
    /// Any other kind: boxed, so that the many Users do not pay for its size.
    Config(Box<Spec>),
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
            spec: held
                .spec
                .as_ref()
                .map(HeldSpec::to_spec)
                .map_err(|e| FieldError::clone(e)),
            status: held.status.as_deref().cloned(),
        }
    }
}

impl HeldSpec {
    pub fn to_spec(&self) -> Spec {
        match self {
            HeldSpec::User(user) => Spec::User(user.spec()),
            HeldSpec::Config(spec) => (**spec).clone(),
        }
    }

    /// A TokenIntrospector's spec.
    pub fn introspector(&self) -> Option<&TokenIntrospectorSpec> {
        match self {
            HeldSpec::Config(spec) => match &**spec {
                Spec::TokenIntrospector(ti) => Some(ti),
                _ => None,
            },
            HeldSpec::User(_) => None,
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
            Ok(HeldSpec::Config(spec)) => Ok(&**spec),
            Err(e) => Err(&**e),
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
