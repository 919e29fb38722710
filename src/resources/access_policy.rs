use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::checks::MAX_LINKS;
use super::{Link, ResourceStatus};

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
