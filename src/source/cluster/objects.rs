//! Objects from the API, turned into the index's plain data. Read as untyped JSON, so
//! that one object that fails to parse is marked Invalid and the watch goes on. The only
//! kube types of the judgement's way in.

use kube::api::{ApiResource, DynamicObject};
use kube::core::GroupVersionKind;

use super::judge::{spec, Object, ObjectKey, Ready, Verdict};
use crate::resources::{read_annotations, Kind, ResourceStatus, Spec, GROUP, VERSION};
use crate::snapshot::Rejection;
use crate::users::{KnownUser, LabelCheck, Refused, IDENTIFIER_LABEL, MAX_USER_BYTES};

pub fn api_resource(kind: Kind) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(GROUP, VERSION, kind.name()),
        kind.plural(),
    )
}

pub fn key(kind: Kind, o: &DynamicObject) -> ObjectKey {
    ObjectKey {
        kind,
        namespace: o.metadata.namespace.clone().unwrap_or_default(),
        name: o.metadata.name.clone().unwrap_or_default(),
    }
}

pub fn object(kind: Kind, mut o: DynamicObject) -> Object {
    let annotations = o.metadata.annotations.as_ref();
    let spec = spec(kind, o.data.get_mut("spec").map(serde_json::Value::take)).and_then(|mut s| {
        // An AccessPolicy's dry-run annotation belongs with its spec: flipping it is a change.
        read_annotations(&mut s, |key| Some(Some(annotations?.get(key)?.as_str())))?;
        Ok(s)
    });
    // A status this version cannot read is one to overwrite.
    let status = o
        .data
        .get_mut("status")
        .map(serde_json::Value::take)
        .and_then(|s| serde_json::from_value::<ResourceStatus>(s).ok());
    Object {
        key: key(kind, &o),
        generation: o.metadata.generation.unwrap_or(0),
        uid: {
            use std::hash::{BuildHasher, BuildHasherDefault};
            BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
                .hash_one(o.metadata.uid.as_deref().unwrap_or_default())
        },
        created: o
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(0, |t| t.0.as_second()),
        spec,
        status,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::resources::Spec;

    fn policy(annotations: &[(&str, &str)]) -> DynamicObject {
        let mut o = DynamicObject::new("p", &api_resource(Kind::AccessPolicy))
            .within("team-a")
            .data(serde_json::json!({"spec": {"engine": "allow"}}));
        o.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        );
        o
    }

    fn dry_run(o: DynamicObject) -> Result<bool, crate::resources::FieldError> {
        match object(Kind::AccessPolicy, o).spec? {
            Spec::AccessPolicy(spec) => Ok(spec.dry_run),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_policys_dry_run_comes_from_its_annotations() {
        assert_eq!(dry_run(policy(&[])), Ok(false));
        assert_eq!(
            dry_run(policy(&[("portcullis.dev/dry-run", "true")])),
            Ok(true)
        );
        assert_eq!(dry_run(policy(&[("istio.io/dry-run", "true")])), Ok(true));
        let e = dry_run(policy(&[("portcullis.dev/dry-run", "yes")])).unwrap_err();
        assert_eq!(e.field, r#"metadata.annotations["portcullis.dev/dry-run"]"#);
    }
}

/// One User object as read, judged on its own.
#[derive(Debug, Clone)]
pub struct Judged {
    pub object: Object,
    /// Its `portcullis.dev/identifier` label.
    pub label: Option<String>,
    /// The User, when it serves.
    pub user: Option<KnownUser>,
    /// Its `Ready` condition on its own (a conflict with another User comes on top).
    pub ready: Ready,
}

impl Judged {
    /// The verdict for its status: its own, or `refused` when another User holds its
    /// identifier. A User that serves with its label missing or wrong says so.
    pub fn verdict(&self, refused: Option<Ready>) -> Verdict {
        Verdict {
            key: self.object.key.clone(),
            uid: self.object.uid,
            generation: self.object.generation,
            ready: refused.unwrap_or_else(|| self.ready.clone()),
            previous_serves: false,
            observed: self.object.status.clone(),
        }
    }
}

/// Judges one User object: it serves unless its spec does not parse or it is too large
/// (as [`crate::users::admit`] refuses it); what its label says is said in the message.
pub fn judge(o: DynamicObject) -> Judged {
    let label = o
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(IDENTIFIER_LABEL))
        .cloned();
    let object = object(Kind::User, o);
    let (user, ready) = match &object.spec {
        Ok(Spec::User(spec)) => {
            let name = crate::resources::qualified(Some(&object.key.namespace), &object.key.name);
            let user = KnownUser::new(&name, spec);
            if user.size() > MAX_USER_BYTES {
                let rejection = Rejection::from(Refused::TooLarge);
                (None, Ready::from_rejection(&rejection))
            } else {
                let check = LabelCheck::of(user.identifiers(), label.as_deref());
                let mut ready = Ready::accepted();
                if let Some(warning) = check.warning() {
                    ready.message = format!("serving, found by name only: {warning}");
                }
                (Some(user), ready)
            }
        }
        Ok(_) => (
            None,
            Ready::refused(
                "Invalid",
                &[crate::resources::FieldError::new("kind", "not a User")],
            ),
        ),
        Err(e) => (None, Ready::refused("Invalid", std::slice::from_ref(e))),
    };
    Judged {
        object,
        label,
        user,
        ready,
    }
}
