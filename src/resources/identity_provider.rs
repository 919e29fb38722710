use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ResourceStatus;

/// Where to learn who a token's subject is. Aidbox's `IdentityProvider`.
///
/// Unknown fields are accepted and ignored: Aidbox's IdentityProvider carries many login
/// settings (client, token_endpoint, ...) that an authorizer has no use for.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "portcullis.dev",
    version = "v1alpha1",
    kind = "IdentityProvider",
    plural = "identityproviders",
    shortname = "idp",
    namespaced,
    status = "ResourceStatus",
    printcolumn = r#"{"name":"System","type":"string","jsonPath":".spec.system"}"#
)]
pub struct IdentityProviderSpec {
    /// The identifier system written on created Users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userinfo_endpoint: Option<String>,
    #[serde(
        default,
        rename = "userinfo-source",
        skip_serializing_if = "Option::is_none"
    )]
    pub userinfo_source: Option<UserinfoSource>,
    /// The scheme word to send instead of `Bearer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userinfo_header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// An inactive provider creates no Users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum UserinfoSource {
    UserinfoEndpoint,
    IdToken,
}
