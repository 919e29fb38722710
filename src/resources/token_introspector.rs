use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::checks::{
    MAX_AUDIENCES, MAX_CACHE_TTL_SECONDS, MAX_CLAIM_PATH_BYTES, MAX_CLAIM_TO_HEADERS,
    MAX_HEADER_NAME_BYTES, MAX_JWT_KEYS, MAX_LEEWAY_SECONDS, MIN_CACHE_TTL_SECONDS,
};
use super::{Reference, ResourceStatus};

/// Which tokens to trust. Aidbox's `TokenIntrospector`, fields unchanged.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "portcullis.dev",
    version = "v1alpha1",
    kind = "TokenIntrospector",
    plural = "tokenintrospectors",
    shortname = "ti",
    category = "portcullis",
    namespaced,
    status = "ResourceStatus",
    doc = "Which bearer tokens portcullis trusts: JWTs by shared secret, static keys or JWKS, \
           opaque tokens by RFC 7662 introspection. Aidbox's TokenIntrospector.",
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.type","description":"jwt or opaque."}"#,
    printcolumn = r#"{"name":"Issuer","type":"string","jsonPath":".spec.jwt.iss","description":"The jwt.iss whose tokens it checks."}"#
)]
#[serde(deny_unknown_fields)]
pub struct TokenIntrospectorSpec {
    /// `jwt`: tokens are JWTs checked by signature; `opaque`: tokens are checked by RFC 7662
    /// introspection. Required.
    #[serde(rename = "type")]
    pub type_: IntrospectorType,
    /// The issuer and the keys of JWTs (`type: jwt`); for `type: opaque`, only `iss`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtSettings>,
    /// JWKS endpoint, an http(s) URL: one of the key sources of `type: jwt`. Aidbox keeps
    /// it at the top level, not under `jwt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// The RFC 7662 endpoint that checks tokens of `type: opaque` (required there, refused
    /// for `type: jwt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub introspection_endpoint: Option<IntrospectionEndpoint>,
    /// The IdentityProvider, in this namespace, that finds and creates the Users of this
    /// introspector's tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_provider: Option<Reference>,
    /// Seconds that JWKS keys or an introspection answer are kept (1..86400, default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = MIN_CACHE_TTL_SECONDS, max = MAX_CACHE_TTL_SECONDS))]
    pub cache_ttl: Option<u32>,
    /// portcullis extension: take `jwks_uri` from `<jwt.iss>/.well-known/openid-configuration`
    /// (a key source of its own, when `true`).
    #[serde(
        default,
        rename = "openidDiscovery",
        skip_serializing_if = "Option::is_none"
    )]
    pub openid_discovery: Option<bool>,
    /// portcullis extension: on allow, set these request headers for the upstream from the
    /// validated token's claims (a dotted path reaches nested claims). At most 32 entries.
    #[serde(
        default,
        rename = "claimToHeaders",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(length(max = MAX_CLAIM_TO_HEADERS))]
    pub claim_to_headers: Option<Vec<ClaimToHeader>>,
}

impl TokenIntrospectorSpec {
    /// Every Secret reference, with the field it stands for (`jwt.secret`, `jwt.keys[0].k`,
    /// `introspection_endpoint.authorization`).
    pub fn secret_refs(&self) -> Vec<(String, &SecretKeyRef)> {
        let mut refs = Vec::new();
        if let Some(jwt) = &self.jwt {
            if let Some(r) = &jwt.secret_ref {
                refs.push(("jwt.secretRef".to_string(), r));
            }
            for (i, key) in jwt.keys.iter().flatten().enumerate() {
                if let Some(r) = &key.k_ref {
                    refs.push((format!("jwt.keys[{i}].kRef"), r));
                }
            }
        }
        if let Some(r) = self
            .introspection_endpoint
            .as_ref()
            .and_then(|e| e.authorization_ref.as_ref())
        {
            refs.push(("introspection_endpoint.authorizationRef".to_string(), r));
        }
        refs
    }

    /// Replaces each Secret reference by the value `read` finds for it. A field given both
    /// inline and by reference, or a reference `read` cannot resolve, is an error naming
    /// the field.
    pub fn resolve_secrets<E>(
        &mut self,
        mut read: impl FnMut(&SecretKeyRef) -> Result<String, E>,
    ) -> Result<(), (String, SecretProblem<E>)> {
        fn fill<E>(
            field: String,
            inline: &mut Option<String>,
            reference: &mut Option<SecretKeyRef>,
            read: &mut impl FnMut(&SecretKeyRef) -> Result<String, E>,
        ) -> Result<(), (String, SecretProblem<E>)> {
            let Some(r) = reference.take() else {
                return Ok(());
            };
            if inline.is_some() {
                return Err((field, SecretProblem::Both));
            }
            *inline = Some(read(&r).map_err(|e| (field, SecretProblem::Read(e)))?);
            Ok(())
        }
        if let Some(jwt) = &mut self.jwt {
            fill(
                "jwt.secretRef".into(),
                &mut jwt.secret,
                &mut jwt.secret_ref,
                &mut read,
            )?;
            for (i, key) in jwt.keys.iter_mut().flatten().enumerate() {
                fill(
                    format!("jwt.keys[{i}].kRef"),
                    &mut key.k,
                    &mut key.k_ref,
                    &mut read,
                )?;
            }
        }
        if let Some(e) = &mut self.introspection_endpoint {
            fill(
                "introspection_endpoint.authorizationRef".into(),
                &mut e.authorization,
                &mut e.authorization_ref,
                &mut read,
            )?;
        }
        Ok(())
    }
}

/// Why a Secret reference gave no value.
#[derive(Debug)]
pub enum SecretProblem<E> {
    /// The value is also given inline: one of the two must go.
    Both,
    Read(E),
}

/// One claim forwarded to the upstream as a request header.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimToHeader {
    /// A lower-case `x-` header name of the application's own: never `x-forwarded-*`,
    /// `x-envoy-*`, `x-request-id`, `x-b3-*` or `x-portcullis-*`; each header once.
    #[schemars(length(max = MAX_HEADER_NAME_BYTES))]
    pub header: String,
    /// The claim, as a dotted path (`realm_access.roles`).
    #[schemars(length(max = MAX_CLAIM_PATH_BYTES))]
    pub claim: String,
}

/// How tokens are checked.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum IntrospectorType {
    Jwt,
    Opaque,
}

/// The issuer and the key source of JWTs.
#[derive(Serialize, Deserialize, Clone, Default, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtSettings {
    /// The issuer: a JWT is handled by the introspector whose `iss` equals its `iss` claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// HS256 shared secret, not empty: one of the key sources of `type: jwt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Kubernetes mode: `secret`, read from a key of a Secret in the object's namespace
    /// (labelled `portcullis.dev/secret-consumer: "true"`). Not beside `secret`.
    #[serde(default, rename = "secretRef", skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// Static keys, tried in order among those whose `alg` equals the token's: one of the
    /// key sources of `type: jwt`. Not empty, at most 16.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_JWT_KEYS))]
    pub keys: Option<Vec<JwtKey>>,
    /// portcullis extension: when set, the `aud` claim must contain one of these. Not
    /// empty, at most 32.
    #[serde(
        default,
        rename = "allowedAudiences",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(length(max = MAX_AUDIENCES))]
    pub allowed_audiences: Option<Vec<String>>,
    /// portcullis extension: clock skew, in seconds, allowed on `exp`, `nbf` and `iat`
    /// (0..300, default 30).
    #[serde(
        default,
        rename = "leewaySeconds",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(max = MAX_LEEWAY_SECONDS))]
    pub leeway_seconds: Option<u32>,
}

/// One static key of `jwt.keys`.
#[derive(Serialize, Deserialize, Clone, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtKey {
    /// The key type: `RSA`, `EC`, `OKP`, or `OCT` (also `oct`) for a symmetric secret.
    pub kty: KeyType,
    /// The one algorithm this key verifies; it must fit `kty`.
    pub alg: KeyAlgorithm,
    /// `PEM` (default) for a public key in `pub`; `plain` for the symmetric secret `k` of
    /// an `OCT` key.
    #[serde(default = "KeyFormat::default_pem")]
    pub format: KeyFormat,
    /// A PEM public key (`format: PEM`).
    #[serde(default, rename = "pub", skip_serializing_if = "Option::is_none")]
    pub pub_: Option<String>,
    /// A symmetric secret, not empty (`OCT`, `format: plain`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<String>,
    /// Kubernetes mode: `k`, read from a key of a Secret in the object's namespace. Not
    /// beside `k`.
    #[serde(default, rename = "kRef", skip_serializing_if = "Option::is_none")]
    pub k_ref: Option<SecretKeyRef>,
    /// Optional: when set, only tokens whose header `kid` equals it use this key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
}

/// A key's type. `oct` is read as `OCT`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[schemars(extend("enum" = ["RSA", "EC", "OCT", "oct", "OKP"]))]
pub enum KeyType {
    #[serde(rename = "RSA")]
    Rsa,
    #[serde(rename = "EC")]
    Ec,
    #[serde(rename = "OCT", alias = "oct")]
    Oct,
    #[serde(rename = "OKP")]
    Okp,
}

/// A JWS algorithm (`none` is never one).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum KeyAlgorithm {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

/// How a key is written. `pem` is read as `PEM`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[schemars(extend("enum" = ["PEM", "pem", "plain"]))]
pub enum KeyFormat {
    #[serde(rename = "PEM", alias = "pem")]
    Pem,
    #[serde(rename = "plain")]
    Plain,
}

impl KeyFormat {
    fn default_pem() -> Self {
        KeyFormat::Pem
    }
}

/// Where opaque tokens are checked.
#[derive(Serialize, Deserialize, Clone, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionEndpoint {
    /// RFC 7662 endpoint, an http(s) URL.
    pub url: String,
    /// The literal `Authorization` header value sent to it (`Basic ...`). Never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<String>,
    /// Kubernetes mode: `authorization`, read from a key of a Secret in the object's
    /// namespace. Not beside `authorization`.
    #[serde(
        default,
        rename = "authorizationRef",
        skip_serializing_if = "Option::is_none"
    )]
    pub authorization_ref: Option<SecretKeyRef>,
}

/// A key of a Secret in the referencing object's own namespace.
#[derive(
    Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct SecretKeyRef {
    /// The Secret's name, in the referencing object's namespace.
    pub name: String,
    /// The key of the Secret's `data` that holds the value.
    pub key: String,
}

// Debug output may reach a log: secrets, symmetric keys and the introspection
// Authorization value show only whether they are set.
fn set<T>(v: &Option<T>) -> Option<&'static str> {
    v.as_ref().map(|_| super::REDACTED)
}

impl std::fmt::Debug for JwtSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSettings")
            .field("iss", &self.iss)
            .field("secret", &set(&self.secret))
            .field("secret_ref", &self.secret_ref)
            .field("keys", &self.keys)
            .field("allowed_audiences", &self.allowed_audiences)
            .field("leeway_seconds", &self.leeway_seconds)
            .finish()
    }
}

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKey")
            .field("kty", &self.kty)
            .field("alg", &self.alg)
            .field("format", &self.format)
            .field("pub", &self.pub_.as_ref().map(|_| "[public key]"))
            .field("k", &set(&self.k))
            .field("k_ref", &self.k_ref)
            .field("kid", &self.kid)
            .finish()
    }
}

impl std::fmt::Debug for IntrospectionEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntrospectionEndpoint")
            .field("url", &self.url)
            .field("authorization", &set(&self.authorization))
            .field("authorization_ref", &self.authorization_ref)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_secrets() {
        let spec: TokenIntrospectorSpec = serde_json::from_value(serde_json::json!({
            "type": "jwt",
            "jwt": {"iss": "x", "secret": "s3cret-value", "keys": [
                {"kty": "OCT", "alg": "HS256", "format": "plain", "k": "oct-key-value"}]},
            "introspection_endpoint": {"url": "https://i", "authorization": "Basic c2VjcmV0"}
        }))
        .unwrap();
        let debug = format!("{spec:?}");
        for secret in ["s3cret-value", "oct-key-value", "Basic c2VjcmV0"] {
            assert!(!debug.contains(secret), "{debug}");
        }
        assert!(debug.contains("[redacted]"));
    }
}
