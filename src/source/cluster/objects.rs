//! Objects from the API, turned into the index's plain data. Read as untyped JSON, so
//! that one object that fails to parse is marked Invalid and the watch goes on. The only
//! kube types of the judgement's way in.

use kube::api::{ApiResource, DynamicObject};
use kube::core::GroupVersionKind;

use super::judge::{spec, Object, ObjectKey};
use crate::resources::{read_annotations, Kind, ResourceStatus, GROUP, VERSION};

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
