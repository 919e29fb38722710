use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::checks::{self, MAX_KIND_BYTES, MAX_REFERENCE_BYTES};

/// An Aidbox reference: `{reference: "IdentityProvider/keycloak"}` or
/// `{resourceType: IdentityProvider, id: keycloak}`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Reference {
    /// `Kind/name`, as `IdentityProvider/keycloak`; or give `resourceType` and `id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_REFERENCE_BYTES))]
    pub reference: Option<String>,
    /// The kind, with `id`, instead of `reference`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "resourceType"
    )]
    #[schemars(length(max = MAX_KIND_BYTES))]
    pub resource_type: Option<String>,
    /// The name, with `resourceType`, instead of `reference`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// One `link` of an AccessPolicy: a reference to `User/<name>`, or to `Client/<id>` with
/// the `issuer` whose tokens may name that client.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Link {
    /// `User/<name>` or `Client/<id>`; or give `resourceType` and `id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_REFERENCE_BYTES))]
    pub reference: Option<String>,
    /// `User` or `Client`, with `id`, instead of `reference`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "resourceType"
    )]
    #[schemars(length(max = MAX_KIND_BYTES))]
    pub resource_type: Option<String>,
    /// The User's name or the client's id, with `resourceType`, instead of `reference`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// For a Client link: the `jwt.iss` of the TokenIntrospector whose tokens may name
    /// this client (every trusted issuer can put any `client_id` in its tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
}

impl Link {
    /// The `(kind, name)` this link points at, or why it cannot be read.
    pub fn target(&self) -> Result<(&str, &str), String> {
        target(&self.reference, &self.resource_type, &self.id)
    }
}

impl Reference {
    /// The `(kind, name)` this reference points at, or why it cannot be read.
    pub fn target(&self) -> Result<(&str, &str), String> {
        target(&self.reference, &self.resource_type, &self.id)
    }
}

fn target<'a>(
    reference: &'a Option<String>,
    resource_type: &'a Option<String>,
    id: &'a Option<String>,
) -> Result<(&'a str, &'a str), String> {
    match (reference, resource_type, id) {
        (Some(r), None, None) if r.len() > MAX_REFERENCE_BYTES => {
            Err(format!("longer than {MAX_REFERENCE_BYTES} bytes"))
        }
        (Some(r), None, None) => match r.split_once('/') {
            Some((kind, name)) if !kind.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok((kind, name))
            }
            _ => Err(checks::PROVIDER_REF_FORM.message.into()),
        },
        (None, Some(kind), Some(_)) if kind.len() > MAX_KIND_BYTES => {
            Err(format!("`resourceType` longer than {MAX_KIND_BYTES} bytes"))
        }
        (None, Some(kind), Some(name)) => Ok((kind, name)),
        (None, None, None) => Err(checks::PROVIDER_REF_EMPTY.message.into()),
        _ => Err(checks::PROVIDER_REF_SHAPE.message.into()),
    }
}
