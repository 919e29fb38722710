//! Objects from the API, turned into the index's plain data. Read as untyped JSON, so
//! that one object that fails to parse is marked Invalid and the watch goes on. The only
//! kube types of the judgement's way in.

use kube::api::{ApiResource, DynamicObject};
use kube::core::GroupVersionKind;

use super::judge::{spec, Object, ObjectKey};
use crate::resources::{Kind, ResourceStatus, GROUP, VERSION};

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
    let spec = spec(kind, o.data.get_mut("spec").map(serde_json::Value::take));
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
