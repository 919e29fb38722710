//! JWT parsing and signature checks.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{errors::ErrorKind, Algorithm, Header, Validation};
use serde_json::{Map, Value};

use super::{Introspector, TokenError, TokenKind, ValidToken, VerifyKey};
use crate::resources::json_weight;

/// A JWT's header and issuer, read before the signature is checked: only to choose the
/// introspector and key. Nothing read here is trusted until [`verify`] succeeds.
pub struct Parsed {
    pub header: Header,
    pub issuer: String,
}

impl Parsed {
    /// `None` when the token is not JWT-shaped (three dot-separated parts whose first is a
    /// base64url JSON object), so that it may be an opaque token; `Some(Err)` when it is
    /// JWT-shaped but unreadable or unacceptable.
    pub fn parse(token: &str) -> Option<Result<Parsed, TokenError>> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(_sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let header = URL_SAFE_NO_PAD
            .decode(header)
            .ok()
            .and_then(|b| serde_json::from_slice::<Map<String, Value>>(&b).ok())?;
        Some(Self::read(header, payload))
    }

    fn read(header: Map<String, Value>, payload: &str) -> Result<Parsed, TokenError> {
        // We implement no JWS extension, so a header that makes one critical is refused
        // (RFC 7515 section 4.1.11).
        if header.contains_key("crit") {
            return Err(TokenError::Malformed(
                "header lists critical extensions (`crit`)".into(),
            ));
        }
        // `kid` is an opaque string: any other JSON type is refused, not coerced.
        if header.get("kid").is_some_and(|k| !k.is_string()) {
            return Err(TokenError::Malformed("header `kid` is not a string".into()));
        }
        // `alg: none` and unknown algorithms fail here: jsonwebtoken knows no such variant.
        // `jwk`, `jku`, `x5u` and `x5c` may be read into the header but never choose a key.
        let header: Header = serde_json::from_value(Value::Object(header)).map_err(|_| {
            TokenError::Malformed("header is not a JWT header with a known `alg`".into())
        })?;
        let bytes = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TokenError::Malformed("payload is not base64url".into()))?;
        let payload: Map<String, Value> = serde_json::from_slice(&bytes)
            .map_err(|_| TokenError::Malformed("payload is not a JSON object".into()))?;
        let issuer = match payload.get("iss") {
            Some(Value::String(iss)) => iss.clone(),
            Some(_) => return Err(TokenError::Malformed("`iss` is not a string".into())),
            None => return Err(TokenError::Malformed("no `iss` claim".into())),
        };
        Ok(Parsed { header, issuer })
    }
}

/// Check the signature with the keys meant for the token's `alg`, in order, then the
/// registered claims. Headers that name keys (`jwk`, `jku`, `x5u`, `x5c`) are ignored.
pub fn verify(
    token: &str,
    parsed: &Parsed,
    introspector: &Arc<Introspector>,
    keys: &[VerifyKey],
) -> Result<ValidToken, TokenError> {
    // First the keys the token may mean (`kid` is an opaque string, compared exactly; a
    // key without `kid` may be meant by any token), then those fit for its `alg`.
    let kid = parsed.header.kid.as_deref();
    let mut meant = keys
        .iter()
        .filter(|k| k.kid.is_none() || kid.is_none() || k.kid.as_deref() == kid)
        .peekable();
    if meant.peek().is_none() {
        return Err(TokenError::UnknownKey);
    }
    let alg = parsed.header.alg;
    let mut candidates = meant.filter(|k| k.alg == alg).peekable();
    if candidates.peek().is_none() {
        return Err(TokenError::AlgorithmNotAllowed(format!("{alg:?}")));
    }
    let validation = validation(alg, introspector);
    let mut last = TokenError::BadSignature;
    for key in candidates {
        match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation) {
            Ok(data) => return finish(data.claims, introspector, TokenKind::Jwt),
            Err(e) => {
                last = map_error(e.kind());
                // Claims errors come after a good signature: another key would say the same.
                if last != TokenError::BadSignature {
                    return Err(last);
                }
            }
        }
    }
    Err(last)
}

pub fn validation(alg: Algorithm, introspector: &Introspector) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = introspector.leeway.as_secs();
    v.validate_nbf = true;
    if let Some(iss) = &introspector.issuer {
        v.set_issuer(&[iss]);
    }
    match &introspector.allowed_audiences {
        Some(auds) => {
            // jsonwebtoken passes a token with no `aud` at all unless it is required.
            v.set_required_spec_claims(&["exp", "iss", "aud"]);
            v.set_audience(auds);
        }
        None => {
            v.set_required_spec_claims(&["exp", "iss"]);
            v.validate_aud = false;
        }
    }
    v
}

/// The last checks that jsonwebtoken does not make, then the validated token.
pub fn finish(
    claims: Map<String, Value>,
    introspector: &Arc<Introspector>,
    kind: TokenKind,
) -> Result<ValidToken, TokenError> {
    let now = now();
    let leeway = introspector.leeway.as_secs();
    if let Some(iat) = claims.get("iat").and_then(Value::as_u64) {
        if iat > now + leeway {
            return Err(TokenError::NotYetValid);
        }
    }
    let expires_at = claims.get("exp").and_then(Value::as_u64);
    let claims = Value::Object(claims);
    Ok(ValidToken {
        kind,
        introspector: introspector.clone(),
        claims_weight: json_weight(&claims),
        claims: Arc::new(claims),
        expires_at,
    })
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn map_error(kind: &ErrorKind) -> TokenError {
    match kind {
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidAudience => TokenError::BadAudience,
        ErrorKind::InvalidAlgorithm => TokenError::AlgorithmNotAllowed("for this key".into()),
        ErrorKind::InvalidIssuer => TokenError::UntrustedIssuer("iss does not match".into()),
        ErrorKind::MissingRequiredClaim(c) if c == "aud" => TokenError::BadAudience,
        ErrorKind::MissingRequiredClaim(c) => TokenError::Malformed(format!("no `{c}` claim")),
        other => TokenError::Malformed(describe(other)),
    }
}

/// A description that never quotes the token.
fn describe(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::InvalidToken => "not a JWT".into(),
        ErrorKind::Base64(_) => "not base64url".into(),
        ErrorKind::Json(_) => "not JSON".into(),
        ErrorKind::Utf8(_) => "not UTF-8".into(),
        ErrorKind::InvalidAlgorithmName => "unknown or disallowed algorithm".into(),
        _ => "invalid".into(),
    }
}
