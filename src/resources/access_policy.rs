use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::checks::MAX_LINKS;
use super::{FieldError, Link, ResourceStatus, Spec};

/// The annotation that makes an AccessPolicy dry-run: `"true"` or `"false"`.
pub const DRY_RUN_ANNOTATION: &str = "portcullis.dev/dry-run";
/// Istio's AuthorizationPolicy annotation of the same meaning, read as well.
pub const ISTIO_DRY_RUN_ANNOTATION: &str = "istio.io/dry-run";

/// When a request is allowed. Aidbox's `AccessPolicy`, fields unchanged.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "portcullis.dev",
    version = "v1alpha1",
    kind = "AccessPolicy",
    plural = "accesspolicies",
    // Not `ap`: Istio's AuthorizationPolicy has that short name, in the very clusters
    // portcullis serves.
    shortname = "acp",
    category = "portcullis",
    namespaced,
    status = "ResourceStatus",
    doc = "When a request is allowed: a policy of engine allow, matcho, json-schema or \
           complex, for every request or for the Users and clients it links. Aidbox's \
           AccessPolicy.",
    printcolumn = r#"{"name":"Engine","type":"string","jsonPath":".spec.engine","description":"allow, matcho, json-schema or complex."}"#,
    printcolumn = r#"{"name":"Description","type":"string","priority":1,"jsonPath":".spec.description","description":"The policy's own description."}"#
)]
#[serde(deny_unknown_fields)]
pub struct AccessPolicySpec {
    /// How the policy decides: `allow` (always), `matcho` (the pattern in `matcho`),
    /// `json-schema` (the schema in `schema`), `complex` (the sub-policies in `and` or `or`).
    /// Required.
    pub engine: PolicyEngine,
    /// The pattern, for `engine: matcho`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::any_json")]
    pub matcho: Option<serde_json::Value>,
    /// A draft-07 JSON Schema, for `engine: json-schema`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::any_json")]
    pub schema: Option<serde_json::Value>,
    /// Inline sub-policies that must all allow, for `engine: complex`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::any_json_list")]
    pub and: Option<Vec<serde_json::Value>>,
    /// Inline sub-policies of which one must allow, for `engine: complex`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::any_json_list")]
    pub or: Option<Vec<serde_json::Value>>,
    /// `User/<name>`, or `Client/<id>` with the `issuer` whose tokens may name it: the
    /// policy applies only to those. Absent: every request. Never empty; at most 1024.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_LINKS))]
    pub link: Option<Vec<Link>>,
    /// Free text, not evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Evaluated, counted and logged, but never allows: `metadata.annotations`
    /// `portcullis.dev/dry-run: "true"` (or Istio's `istio.io/dry-run`). Not a field of the
    /// spec, nor of its schema: the document parser and the cluster watch read it from the
    /// annotations ([`read_annotations`]). It takes part in `==`, so that an object whose
    /// annotation flips is a changed object.
    #[serde(skip)]
    #[schemars(skip)]
    pub dry_run: bool,
}

/// The engine that evaluates a policy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyEngine {
    Allow,
    Matcho,
    JsonSchema,
    Complex,
}

impl AccessPolicySpec {
    /// The part the policy compiler reads: engine and body, without `link` and `description`.
    pub fn body(&self) -> serde_json::Value {
        let mut body = serde_json::to_value(self).expect("spec serialises");
        if let Some(map) = body.as_object_mut() {
            map.remove("link");
            map.remove("description");
        }
        body
    }
}

/// Reads what an object's `metadata.annotations` say of its spec: for an AccessPolicy,
/// whether it is dry-run ([`DRY_RUN_ANNOTATION`], [`ISTIO_DRY_RUN_ANNOTATION`]). Other
/// kinds take no annotation. `annotation(key)` is `None` when the key is absent,
/// `Some(None)` when its value is not a string.
///
/// A value other than `"true"` or `"false"`, or the two annotations saying different
/// things, is an error naming the annotation.
pub fn read_annotations<'a>(
    spec: &mut Spec,
    annotation: impl Fn(&str) -> Option<Option<&'a str>>,
) -> Result<(), FieldError> {
    let Spec::AccessPolicy(policy) = spec else {
        return Ok(());
    };
    let mut said: Option<(&str, bool)> = None;
    for key in [DRY_RUN_ANNOTATION, ISTIO_DRY_RUN_ANNOTATION] {
        let field = || format!("metadata.annotations[{key:?}]");
        let value = match annotation(key) {
            None => continue,
            Some(Some("true")) => true,
            Some(Some("false")) => false,
            Some(Some(other)) => {
                return Err(FieldError::new(
                    field(),
                    format!("{other:?} is neither \"true\" nor \"false\""),
                ))
            }
            Some(None) => {
                return Err(FieldError::new(
                    field(),
                    "a string, \"true\" or \"false\" (quoted: Kubernetes takes only strings \
                     as annotation values)",
                ))
            }
        };
        match said {
            Some((first, earlier)) if earlier != value => {
                return Err(FieldError::new(
                    field(),
                    format!("\"{value}\" disagrees with {first}: \"{earlier}\""),
                ))
            }
            _ => said = Some((key, value)),
        }
    }
    policy.dry_run = said.is_some_and(|(_, dry_run)| dry_run);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Spec {
        Spec::AccessPolicy(AccessPolicySpec {
            engine: PolicyEngine::Allow,
            matcho: None,
            schema: None,
            and: None,
            or: None,
            link: None,
            description: None,
            dry_run: false,
        })
    }

    fn read(annotations: &[(&str, Option<&'static str>)]) -> Result<bool, FieldError> {
        let mut spec = policy();
        read_annotations(&mut spec, |key| {
            annotations.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
        })?;
        let Spec::AccessPolicy(p) = spec else {
            unreachable!()
        };
        Ok(p.dry_run)
    }

    #[test]
    fn dry_run_is_read_from_either_annotation_and_anything_else_is_refused() {
        assert_eq!(read(&[]), Ok(false));
        assert_eq!(read(&[(DRY_RUN_ANNOTATION, Some("true"))]), Ok(true));
        assert_eq!(read(&[(DRY_RUN_ANNOTATION, Some("false"))]), Ok(false));
        assert_eq!(read(&[(ISTIO_DRY_RUN_ANNOTATION, Some("true"))]), Ok(true));
        assert_eq!(
            read(&[
                (DRY_RUN_ANNOTATION, Some("true")),
                (ISTIO_DRY_RUN_ANNOTATION, Some("true"))
            ]),
            Ok(true)
        );
        let e = read(&[(DRY_RUN_ANNOTATION, Some("yes"))]).unwrap_err();
        assert_eq!(e.field, r#"metadata.annotations["portcullis.dev/dry-run"]"#);
        assert!(e.message.contains("\"yes\""), "{e:?}");
        let e = read(&[(ISTIO_DRY_RUN_ANNOTATION, None)]).unwrap_err();
        assert_eq!(e.field, r#"metadata.annotations["istio.io/dry-run"]"#);
        let e = read(&[
            (DRY_RUN_ANNOTATION, Some("false")),
            (ISTIO_DRY_RUN_ANNOTATION, Some("true")),
        ])
        .unwrap_err();
        assert_eq!(e.field, r#"metadata.annotations["istio.io/dry-run"]"#);
        // Other kinds take no annotation.
        let mut user = Spec::User(Default::default());
        let said = read_annotations(&mut user, |_| Some(Some("maybe")));
        assert_eq!(said, Ok(()));
    }
}
