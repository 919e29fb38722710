use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ResourceStatus;

/// Where to learn who a token's subject is. Aidbox's `IdentityProvider`.
///
/// Other fields are kept as written and ignored: Aidbox's IdentityProvider carries many
/// login settings (client, token_endpoint, ...) that an authorizer has no use for.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "portcullis.dev",
    version = "v1alpha1",
    kind = "IdentityProvider",
    plural = "identityproviders",
    shortname = "idp",
    category = "portcullis",
    namespaced,
    status = "ResourceStatus",
    doc = "Where to learn who a token's subject is (userinfo), and the identifier system that \
           names that subject on Users. Aidbox's IdentityProvider.",
    printcolumn = r#"{"name":"System","type":"string","jsonPath":".spec.system","description":"The identifier system of this provider's subjects."}"#,
    printcolumn = r#"{"name":"Active","type":"boolean","priority":1,"jsonPath":".spec.active","description":"false: creates no Users (empty: true)."}"#
)]
// In the cluster as in files, Aidbox's other fields are kept and ignored (not pruned, and
// not refused by kubectl's strict field validation), so that a body copied from Aidbox
// applies unchanged.
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct IdentityProviderSpec {
    /// The identifier system of this provider's subjects: Users are found by, and created
    /// with, the identifier `{system, value: <sub>}`. Unique among IdentityProviders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// URL called, to create a User, with the incoming token (`Authorization:
    /// <userinfo_header> <token>`). Needed when `userinfo-source` is `userinfo-endpoint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userinfo_endpoint: Option<String>,
    /// `userinfo-endpoint` (default): call `userinfo_endpoint`; `id-token`: call nothing and
    /// use the validated token's own claims.
    #[serde(
        default,
        rename = "userinfo-source",
        skip_serializing_if = "Option::is_none"
    )]
    pub userinfo_source: Option<UserinfoSource>,
    /// The scheme word sent to `userinfo_endpoint` instead of `Bearer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userinfo_header: Option<String>,
    /// Accepted for Aidbox compatibility; not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// Accepted for Aidbox compatibility; not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Default `true`. `false`: the provider creates no Users; existing Users are still
    /// found through it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    /// Accepted for Aidbox compatibility; not used.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
}

/// Where a created User's data comes from.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum UserinfoSource {
    UserinfoEndpoint,
    IdToken,
}
