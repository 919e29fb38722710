//! Objects from the API, turned into the index's plain data. Read as untyped JSON, so
//! that one object that fails to parse is marked Invalid and the watch goes on. The only
//! kube types of the judgement's way in.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ApiResource, DynamicObject};
use kube::core::{DynamicResourceScope, GroupVersionKind};
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use super::judge::{spec, Object, ObjectKey, Ready, Verdict};
use crate::resources::{read_annotations, Kind, ResourceStatus, Spec, GROUP, VERSION};
use crate::resources::{DRY_RUN_ANNOTATION, ISTIO_DRY_RUN_ANNOTATION};
use crate::snapshot::Rejection;
use crate::users::{KnownUser, LabelCheck, Refused, IDENTIFIER_LABEL, MAX_USER_BYTES};

pub fn api_resource(kind: Kind) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(GROUP, VERSION, kind.name()),
        kind.plural(),
    )
}

fn key_of(kind: Kind, metadata: &ObjectMeta) -> ObjectKey {
    ObjectKey {
        kind,
        namespace: metadata.namespace.clone().unwrap_or_default(),
        name: metadata.name.clone().unwrap_or_default(),
    }
}

pub fn object(kind: Kind, mut o: DynamicObject) -> Object {
    let spec = o.data.get_mut("spec").map(Value::take);
    let status = o.data.get_mut("status").map(Value::take);
    object_of(kind, &o.metadata, spec, status)
}

/// An object as a watch read it.
pub fn watched(kind: Kind, o: Watched) -> Object {
    object_of(kind, &o.metadata, o.spec, o.status)
}

/// The key of an object as a watch read it.
pub fn watched_key(kind: Kind, o: &Watched) -> ObjectKey {
    key_of(kind, &o.metadata)
}

fn object_of(
    kind: Kind,
    metadata: &ObjectMeta,
    spec_value: Option<Value>,
    status: Option<Value>,
) -> Object {
    let annotations = metadata.annotations.as_ref();
    let spec = spec(kind, spec_value).and_then(|mut s| {
        // An AccessPolicy's dry-run annotation belongs with its spec: flipping it is a change.
        read_annotations(&mut s, |key| Some(Some(annotations?.get(key)?.as_str())))?;
        Ok(s)
    });
    // A status this version cannot read is one to overwrite.
    let status = status.and_then(|s| serde_json::from_value::<ResourceStatus>(s).ok());
    Object {
        key: key_of(kind, metadata),
        generation: metadata.generation.unwrap_or(0),
        uid: {
            use std::hash::{BuildHasher, BuildHasherDefault};
            BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
                .hash_one(metadata.uid.as_deref().unwrap_or_default())
        },
        created: metadata
            .creation_timestamp
            .as_ref()
            .map_or(0, |t| t.0.as_second()),
        spec,
        status,
    }
}

/// An object of the four kinds as the watches read it: of its metadata only what is read
/// (name, namespace, uid, generation, age, the dry-run annotations, and the
/// `resourceVersion` the watch resumes from), and its spec and status. `managedFields`,
/// labels, other annotations (`kubectl`'s last applied configuration is a whole copy of
/// the object) and every other field are passed over as the JSON is read, never held.
#[derive(Clone, Debug, Deserialize)]
pub struct Watched {
    #[serde(deserialize_with = "slim_metadata")]
    metadata: ObjectMeta,
    #[serde(default, deserialize_with = "present")]
    spec: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    status: Option<Value>,
}

/// A field that is there, `null` included: `spec: null` is a spec that does not parse,
/// as a [`DynamicObject`] reads it.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// The fields of `metadata` that [`Watched`] keeps.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SlimMetadata {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    generation: Option<i64>,
    creation_timestamp: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    resource_version: Option<String>,
    #[serde(default, deserialize_with = "dry_run_annotations")]
    annotations: Option<BTreeMap<String, String>>,
}

fn slim_metadata<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    let m = SlimMetadata::deserialize(d)?;
    Ok(ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        uid: m.uid,
        generation: m.generation,
        creation_timestamp: m.creation_timestamp,
        resource_version: m.resource_version,
        annotations: m.annotations,
        ..ObjectMeta::default()
    })
}

/// The annotations that are part of a spec ([`read_annotations`]); the others' values are
/// skipped unread.
fn dry_run_annotations<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    struct Wanted;
    impl<'de> Visitor<'de> for Wanted {
        type Value = Option<BTreeMap<String, String>>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map of annotations")
        }

        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(Wanted)
        }

        fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
            let mut kept = BTreeMap::new();
            while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                if [DRY_RUN_ANNOTATION, ISTIO_DRY_RUN_ANNOTATION].contains(&&*key) {
                    kept.insert(key.into_owned(), map.next_value()?);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(Some(kept))
        }
    }
    d.deserialize_option(Wanted)
}

impl kube::Resource for Watched {
    type DynamicType = ApiResource;
    type Scope = DynamicResourceScope;

    fn kind(dt: &ApiResource) -> Cow<'_, str> {
        dt.kind.as_str().into()
    }

    fn group(dt: &ApiResource) -> Cow<'_, str> {
        dt.group.as_str().into()
    }

    fn version(dt: &ApiResource) -> Cow<'_, str> {
        dt.version.as_str().into()
    }

    fn api_version(dt: &ApiResource) -> Cow<'_, str> {
        dt.api_version.as_str().into()
    }

    fn plural(dt: &ApiResource) -> Cow<'_, str> {
        dt.plural.as_str().into()
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
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

    /// What a watch reads is what the whole object says, less what is never read.
    #[test]
    fn a_watched_object_keeps_what_is_read_and_says_what_the_whole_object_says() {
        let json = serde_json::json!({
            "apiVersion": "portcullis.dev/v1alpha1", "kind": "AccessPolicy",
            "metadata": {
                "name": "p", "namespace": "team-a", "uid": "u-1", "generation": 4,
                "resourceVersion": "77", "creationTimestamp": "2026-01-02T03:04:05Z",
                "labels": {"app": "x"},
                "annotations": {"portcullis.dev/dry-run": "true",
                    "kubectl.kubernetes.io/last-applied-configuration": "{\"a\": [1, 2]}"},
                "managedFields": [{"manager": "kubectl", "operation": "Apply",
                    "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:engine": {}}}}]
            },
            "spec": {"engine": "allow"},
            "status": {"observedGeneration": 4, "conditions": []},
            "somethingElse": {"big": [1, 2, 3]}
        });
        let slim: Watched = serde_json::from_value(json.clone()).unwrap();
        let meta = &slim.metadata;
        assert_eq!(meta.resource_version.as_deref(), Some("77"));
        assert!(meta.managed_fields.is_none() && meta.labels.is_none());
        let annotations: Vec<&String> = meta.annotations.iter().flatten().map(|a| a.0).collect();
        assert_eq!(annotations, ["portcullis.dev/dry-run"]);
        let whole: DynamicObject = serde_json::from_value(json).unwrap();
        let read = watched(Kind::AccessPolicy, slim.clone());
        assert_eq!(read, object(Kind::AccessPolicy, whole));
        assert!(matches!(read.spec, Ok(Spec::AccessPolicy(ref p)) if p.dry_run));
        assert_eq!(watched_key(Kind::AccessPolicy, &slim), read.key);
    }

    /// A `null` spec does not parse, as the whole object read says; a missing one is
    /// missing; `annotations: null` is none.
    #[test]
    fn a_watched_object_without_a_spec_reads_as_the_whole_object() {
        for spec in [serde_json::json!(null), serde_json::json!("absent")] {
            let mut json = serde_json::json!({"metadata": {"name": "q", "annotations": null}});
            if spec.is_null() {
                json["spec"] = spec;
            }
            let slim: Watched = serde_json::from_value(json.clone()).unwrap();
            let whole: DynamicObject = serde_json::from_value(json).unwrap();
            let read = watched(Kind::User, slim).spec;
            assert!(read.is_err());
            assert_eq!(read, object(Kind::User, whole).spec);
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
