use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ResourceStatus;

/// A known person or service account. Aidbox's `User`; other Aidbox fields are kept as
/// written and ignored.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "portcullis.dev",
    version = "v1alpha1",
    kind = "User",
    plural = "users",
    // `users` alone is ambiguous where another group has Users (OpenShift's user.openshift.io).
    shortname = "puser",
    category = "portcullis",
    namespaced,
    status = "ResourceStatus",
    doc = "A known person or service account, found from a valid token by name or by \
           identifier, or created on first sight. Aidbox's User.",
    printcolumn = r#"{"name":"Inactive","type":"boolean","jsonPath":".spec.inactive","description":"true: every request of this User is denied (empty: active)."}"#,
    printcolumn = r#"{"name":"Systems","type":"string","priority":1,"jsonPath":".spec.identifier[*].system","description":"The identifier systems (IdentityProviders) that know this User."}"#,
    printcolumn = r#"{"name":"Email","type":"string","priority":1,"jsonPath":".spec.email","description":"The User's email."}"#
)]
// Aidbox's other User fields are kept and ignored, as in files. Nothing keeps them secret:
// a `password` here is readable by whoever may read Users.
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct UserSpec {
    /// Free JSON, usually an object; policies see it as `user.data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::any_json")]
    pub data: Option<serde_json::Value>,
    /// Who this User is at which IdentityProvider: `{system, value}` pairs, each held by one
    /// User only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identifier: Vec<Identifier>,
    /// The User's email; policies see it as `user.email`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// `true`: a request whose token resolves to this User is denied (403), whatever a
    /// policy says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inactive: Option<bool>,
}

/// One identity of a User at one IdentityProvider.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub struct Identifier {
    /// The `system` of the IdentityProvider.
    pub system: String,
    /// The subject there: the token's `sub`.
    pub value: String,
}
