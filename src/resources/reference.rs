use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An Aidbox reference: `{reference: "IdentityProvider/keycloak"}` or
/// `{resourceType: IdentityProvider, id: keycloak}`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Reference {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "resourceType"
    )]
    pub resource_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Only on an AccessPolicy's `Client/<id>` link: the issuer (`jwt.iss` of a
    /// TokenIntrospector) whose tokens may name that client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
}

impl Reference {
    /// The `(kind, name)` this reference points at, or why it cannot be read.
    pub fn target(&self) -> Result<(&str, &str), String> {
        match (&self.reference, &self.resource_type, &self.id) {
            (Some(r), None, None) => match r.split_once('/') {
                Some((kind, name))
                    if !kind.is_empty() && !name.is_empty() && !name.contains('/') =>
                {
                    Ok((kind, name))
                }
                _ => Err(format!("reference {r:?} is not of the form Kind/name")),
            },
            (None, Some(kind), Some(name)) => Ok((kind, name)),
            (None, None, None) => Err("empty reference".into()),
            _ => Err(
                "use either `reference: Kind/name` or `resourceType` with `id`, not both".into(),
            ),
        }
    }
}
