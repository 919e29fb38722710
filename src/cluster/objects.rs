//! Objects from the API, turned into the index's plain data. Read as untyped JSON, so
//! that one object that fails to parse is marked Invalid and the watch goes on.

use kube::api::{ApiResource, DynamicObject};
use kube::core::GroupVersionKind;

use super::index::{Kind, Object, ObjectKey};
use crate::resources::ResourceStatus;
use crate::source::{parse_spec, FieldError, Spec};

pub const GROUP: &str = "portcullis.dev";
pub const VERSION: &str = "v1alpha1";

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

/// The `spec` of an object of `kind`, or the field that kept it from parsing.
pub fn spec(kind: Kind, spec: Option<serde_json::Value>) -> Result<Spec, FieldError> {
    match spec {
        Some(spec) => parse_spec(kind.name(), spec),
        None => Err(FieldError::new("spec", "missing")),
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
