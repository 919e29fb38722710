//! A TokenIntrospector compiled for use: keys parsed, settings checked, defaults applied.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey};
use sha2::{Digest, Sha256};

use super::claim_headers::{self, ClaimHeader};
use crate::resources::checks::{self, MAX_CACHE_TTL_SECONDS, MIN_CACHE_TTL_SECONDS};
use crate::resources::FieldError;
use crate::resources::{
    IntrospectorType, JwtKey, KeyAlgorithm, KeyFormat, KeyType, TokenIntrospectorSpec,
};

pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(300);
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
pub use crate::resources::checks::MAX_LEEWAY_SECONDS;

/// SHA-256 of an introspector's name and whole spec: caches that outlive a snapshot are
/// keyed by it, so any change to the resource (a new secret, a new `jwks_uri`, other
/// audiences) makes its old entries unreachable.
pub type Fingerprint = [u8; 32];

pub struct Introspector {
    pub name: String,
    pub fingerprint: Fingerprint,
    /// `jwt.iss`: JWTs whose `iss` equals it come here.
    pub issuer: Option<String>,
    pub trust: Trust,
    /// `IdentityProvider` name from `identity_provider`.
    pub identity_provider: Option<String>,
    pub cache_ttl: Duration,
    pub leeway: Duration,
    pub allowed_audiences: Option<Vec<String>>,
    /// `claimToHeaders`: what to forward to the upstream on allow.
    pub claim_headers: Vec<ClaimHeader>,
}

/// How a token is checked.
pub enum Trust {
    /// `jwt.secret` or `jwt.keys`: keys known at load time.
    StaticKeys(Vec<VerifyKey>),
    /// `jwks_uri`, or discovered from the issuer.
    Jwks(JwksSource),
    /// `type: opaque`: RFC 7662 introspection.
    Introspection {
        url: String,
        authorization: Option<String>,
    },
}

pub enum JwksSource {
    Uri(String),
    /// `openidDiscovery: true`: the JWKS URI comes from the issuer's discovery document.
    Discovery {
        issuer: String,
    },
}

/// One key and the only algorithm it may verify.
pub struct VerifyKey {
    pub alg: Algorithm,
    pub kid: Option<String>,
    pub key: DecodingKey,
}

impl std::fmt::Debug for Introspector {
    // Keys and secrets stay out of debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Introspector")
            .field("name", &self.name)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl Introspector {
    pub fn compile(name: &str, spec: &TokenIntrospectorSpec) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        // Kubernetes mode fills these in from Secrets before compiling; one left here was
        // read from a file.
        for (field, _) in spec.secret_refs() {
            errors.push(FieldError::new(
                field,
                "Secret references are read only with --kube; in files, give the value inline \
                 (validate, explain and test resolve them from Secret manifests beside the resource)",
            ));
        }
        let jwt = spec.jwt.clone().unwrap_or_default();
        let cache_ttl = match spec.cache_ttl {
            None => DEFAULT_CACHE_TTL,
            Some(s) if (MIN_CACHE_TTL_SECONDS..=MAX_CACHE_TTL_SECONDS).contains(&s) => {
                Duration::from_secs(s.into())
            }
            Some(s) => {
                errors.push(FieldError::new(
                    "cache_ttl",
                    format!(
                        "{s} is outside {MIN_CACHE_TTL_SECONDS}..{MAX_CACHE_TTL_SECONDS} seconds"
                    ),
                ));
                DEFAULT_CACHE_TTL
            }
        };
        let identity_provider = match &spec.identity_provider {
            None => None,
            Some(r) => match r.target() {
                Ok(("IdentityProvider", name)) => Some(name.to_string()),
                Ok(_) => {
                    errors.push(FieldError::new(
                        "identity_provider",
                        checks::PROVIDER_REF_KIND.message,
                    ));
                    None
                }
                Err(e) => {
                    errors.push(FieldError::new("identity_provider", e));
                    None
                }
            },
        };
        if let Some(auds) = &jwt.allowed_audiences {
            if auds.is_empty() {
                errors.push(FieldError::new(
                    "jwt.allowedAudiences",
                    checks::AUDIENCES_NOT_EMPTY.message,
                ));
            }
            if auds.len() > checks::MAX_AUDIENCES {
                errors.push(FieldError::new(
                    "jwt.allowedAudiences",
                    format!("{} entries: at most {}", auds.len(), checks::MAX_AUDIENCES),
                ));
            }
        }

        if jwt.leeway_seconds.is_some_and(|s| s > MAX_LEEWAY_SECONDS) {
            errors.push(FieldError::new(
                "jwt.leewaySeconds",
                format!(
                    "at most {MAX_LEEWAY_SECONDS} seconds: more would keep expired tokens alive"
                ),
            ));
        }

        let claim_headers = claim_headers::compile(
            spec.claim_to_headers.as_deref().unwrap_or_default(),
            &mut errors,
        );
        let trust = match spec.type_ {
            IntrospectorType::Jwt => compile_jwt(spec, &jwt, &mut errors),
            IntrospectorType::Opaque => compile_opaque(spec, &jwt, &mut errors),
        };
        match trust {
            Some(trust) if errors.is_empty() => Ok(Introspector {
                name: name.to_string(),
                fingerprint: fingerprint(name, spec),
                issuer: jwt.iss.clone(),
                trust,
                identity_provider,
                cache_ttl,
                leeway: jwt
                    .leeway_seconds
                    .map(|s| Duration::from_secs(s.into()))
                    .unwrap_or(DEFAULT_LEEWAY),
                allowed_audiences: jwt.allowed_audiences.clone(),
                claim_headers,
            }),
            _ => Err(errors),
        }
    }
}

fn compile_jwt(
    spec: &TokenIntrospectorSpec,
    jwt: &crate::resources::JwtSettings,
    errors: &mut Vec<FieldError>,
) -> Option<Trust> {
    match jwt.iss.as_deref() {
        None | Some("") => errors.push(FieldError::new("jwt.iss", checks::ISSUER_REQUIRED.message)),
        Some(_) => {}
    }
    if spec.introspection_endpoint.is_some() {
        errors.push(FieldError::new(
            "introspection_endpoint",
            checks::ENDPOINT_ONLY_OPAQUE.message,
        ));
    }
    let discovery = spec.openid_discovery.unwrap_or(false);
    let chosen: Vec<&str> = [
        // A reference left here is its own error (above), not a missing key.
        (
            "jwt.secret",
            jwt.secret.is_some() || jwt.secret_ref.is_some(),
        ),
        ("jwt.keys", jwt.keys.is_some()),
        ("jwks_uri", spec.jwks_uri.is_some()),
        ("openidDiscovery", discovery),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    if chosen.len() != 1 {
        // The field names the first source given: the message lists them all.
        errors.push(FieldError::new(
            chosen.first().copied().unwrap_or("jwt"),
            checks::KEY_SOURCE.message,
        ));
        return None;
    }
    if let Some(secret) = &jwt.secret {
        // jsonwebtoken refuses an empty secret, the only one it refuses.
        let Ok(key) = DecodingKey::from_secret(secret.as_bytes()) else {
            errors.push(FieldError::new(
                "jwt.secret",
                checks::SECRET_NOT_EMPTY.message,
            ));
            return None;
        };
        return Some(Trust::StaticKeys(vec![VerifyKey {
            alg: Algorithm::HS256,
            kid: None,
            key,
        }]));
    }
    if let Some(keys) = &jwt.keys {
        if keys.is_empty() {
            errors.push(FieldError::new("jwt.keys", checks::KEYS_NOT_EMPTY.message));
            return None;
        }
        if keys.len() > checks::MAX_JWT_KEYS {
            let why = format!("{} keys: at most {}", keys.len(), checks::MAX_JWT_KEYS);
            errors.push(FieldError::new("jwt.keys", why));
            return None;
        }
        let compiled: Vec<VerifyKey> = keys
            .iter()
            .enumerate()
            .filter_map(|(i, k)| match compile_key(k) {
                Ok(key) => Some(key),
                // A `kRef` left unresolved is its own error (above), not a missing `k`.
                Err(("k", _)) if k.k_ref.is_some() => None,
                Err((field, message)) => {
                    errors.push(FieldError::new(format!("jwt.keys[{i}].{field}"), message));
                    None
                }
            })
            .collect();
        return Some(Trust::StaticKeys(compiled));
    }
    if let Some(uri) = &spec.jwks_uri {
        if let Err(e) = check_url(uri) {
            errors.push(FieldError::new("jwks_uri", e));
        }
        return Some(Trust::Jwks(JwksSource::Uri(uri.clone())));
    }
    Some(Trust::Jwks(JwksSource::Discovery {
        issuer: jwt.iss.clone().unwrap_or_default(),
    }))
}

fn compile_opaque(
    spec: &TokenIntrospectorSpec,
    jwt: &crate::resources::JwtSettings,
    errors: &mut Vec<FieldError>,
) -> Option<Trust> {
    if jwt.secret.is_some()
        || jwt.secret_ref.is_some()
        || jwt.keys.is_some()
        || spec.jwks_uri.is_some()
    {
        errors.push(FieldError::new("type", checks::OPAQUE_NO_KEYS.message));
    }
    let Some(endpoint) = &spec.introspection_endpoint else {
        errors.push(FieldError::new(
            "introspection_endpoint.url",
            checks::OPAQUE_ENDPOINT.message,
        ));
        return None;
    };
    if let Err(e) = check_url(&endpoint.url) {
        errors.push(FieldError::new("introspection_endpoint.url", e));
    }
    if let Some(value) = &endpoint.authorization {
        // Say what is wrong without quoting the value: it is a credential.
        if http::HeaderValue::from_str(value).is_err() {
            errors.push(FieldError::new(
                "introspection_endpoint.authorization",
                "not a valid HTTP header value (control characters or non-ASCII?)",
            ));
        }
    }
    Some(Trust::Introspection {
        url: endpoint.url.clone(),
        authorization: endpoint.authorization.clone(),
    })
}

fn fingerprint(name: &str, spec: &TokenIntrospectorSpec) -> Fingerprint {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([0]);
    // Serialising a spec that was just deserialised cannot fail.
    h.update(serde_json::to_vec(spec).unwrap_or_default());
    h.finalize().into()
}

fn check_url(url: &str) -> Result<(), &'static str> {
    match url.split_once("://") {
        Some(("http" | "https", rest)) if !rest.is_empty() => Ok(()),
        _ => Err(checks::NOT_A_URL),
    }
}

/// The algorithm families each key type may verify: an RSA key never checks an HMAC.
fn compile_key(k: &JwtKey) -> Result<VerifyKey, (&'static str, String)> {
    let alg = algorithm(k.alg);
    let fits = matches!(
        (k.kty, k.alg),
        (
            KeyType::Oct,
            KeyAlgorithm::HS256 | KeyAlgorithm::HS384 | KeyAlgorithm::HS512
        ) | (
            KeyType::Rsa,
            KeyAlgorithm::RS256
                | KeyAlgorithm::RS384
                | KeyAlgorithm::RS512
                | KeyAlgorithm::PS256
                | KeyAlgorithm::PS384
                | KeyAlgorithm::PS512
        ) | (KeyType::Ec, KeyAlgorithm::ES256 | KeyAlgorithm::ES384)
            | (KeyType::Okp, KeyAlgorithm::EdDSA)
    );
    if !fits {
        return Err(("alg", checks::KEY_ALG_FITS.message.into()));
    }
    let key = match (k.kty, k.format) {
        (KeyType::Oct, KeyFormat::Plain) => {
            match k
                .k
                .as_deref()
                .map(|k| DecodingKey::from_secret(k.as_bytes()))
            {
                Some(Ok(key)) => key,
                _ => return Err(("k", checks::KEY_K_REQUIRED.message.into())),
            }
        }
        (KeyType::Oct, KeyFormat::Pem) => {
            return Err(("format", checks::KEY_OCT_PLAIN.message.into()))
        }
        (_, KeyFormat::Plain) => return Err(("format", checks::KEY_PUBLIC_PEM.message.into())),
        (kty, KeyFormat::Pem) => {
            let Some(pem) = k.pub_.as_deref() else {
                return Err(("pub", checks::KEY_PUB_REQUIRED.message.into()));
            };
            let parsed = match kty {
                KeyType::Rsa => DecodingKey::from_rsa_pem(pem.as_bytes()),
                KeyType::Ec => DecodingKey::from_ec_pem(pem.as_bytes()),
                KeyType::Okp => DecodingKey::from_ed_pem(pem.as_bytes()),
                KeyType::Oct => unreachable!("handled above"),
            };
            // The parser's message may quote key material: say only what kind of key failed.
            parsed.map_err(|_| ("pub", format!("not a valid {kty:?} public key in PEM form")))?
        }
    };
    Ok(VerifyKey {
        alg,
        kid: k.kid.clone(),
        key,
    })
}

pub fn algorithm(a: KeyAlgorithm) -> Algorithm {
    match a {
        KeyAlgorithm::HS256 => Algorithm::HS256,
        KeyAlgorithm::HS384 => Algorithm::HS384,
        KeyAlgorithm::HS512 => Algorithm::HS512,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
    }
}
