//! Token validation: which introspector trusts a token, and whether it holds.
//!
//! Knows nothing of tonic or kube. [`TokenVerifier`] holds the caches that outlive a
//! configuration snapshot; the [`TrustStore`] inside each snapshot says whom to trust.

mod introspector;
mod jwt;

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

pub use introspector::{algorithm, Introspector, JwksSource, Trust, VerifyKey};

/// Tokens longer than this are refused before any parsing (a JWT with a large claim set
/// is a few KiB; Envoy's default header limit is 60 KiB).
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The compiled introspectors of one snapshot, indexed the way tokens find them.
#[derive(Debug, Default)]
pub struct TrustStore {
    by_issuer: HashMap<String, Arc<Introspector>>,
    opaque: Vec<Arc<Introspector>>,
}

impl TrustStore {
    /// Issuers must be unique: the caller reports a duplicate with both resources' names.
    pub fn insert(&mut self, introspector: Introspector) -> Result<(), String> {
        let introspector = Arc::new(introspector);
        if let Trust::Introspection { .. } = introspector.trust {
            self.opaque.push(introspector);
            return Ok(());
        }
        let issuer = introspector.issuer.clone().unwrap_or_default();
        if let Some(other) = self.by_issuer.get(&issuer) {
            return Err(format!(
                "issuer {issuer:?} is already trusted by TokenIntrospector/{}",
                other.name
            ));
        }
        self.by_issuer.insert(issuer, introspector);
        Ok(())
    }

    pub fn for_issuer(&self, iss: &str) -> Option<&Arc<Introspector>> {
        self.by_issuer.get(iss)
    }

    pub fn opaque(&self) -> &[Arc<Introspector>] {
        &self.opaque
    }

    pub fn len(&self) -> usize {
        self.by_issuer.len() + self.opaque.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    Jwt,
    Opaque,
}

/// A token that passed validation, with what policies may see of it.
#[derive(Clone, Debug)]
pub struct ValidToken {
    pub kind: TokenKind,
    pub introspector: Arc<Introspector>,
    /// The JWT's claims, or the whole introspection answer.
    pub claims: Arc<Map<String, Value>>,
    /// Seconds since the epoch after which the token must be validated again.
    pub expires_at: Option<u64>,
}

impl ValidToken {
    fn claim(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }
    pub fn subject(&self) -> Option<&str> {
        self.claim("sub")
    }
    pub fn issuer(&self) -> Option<&str> {
        self.claim("iss").or(self.introspector.issuer.as_deref())
    }
    /// `client_id`, else `azp` (OpenID's authorised party).
    pub fn client_id(&self) -> Option<&str> {
        self.claim("client_id").or_else(|| self.claim("azp"))
    }
}

/// Why a token was refused. Every variant but [`TokenError::Unavailable`] is the caller's
/// fault (401); `Unavailable` is ours or the identity provider's (never an allow).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is larger than {0} bytes")]
    TooLarge(usize),
    #[error("token is malformed: {0}")]
    Malformed(String),
    #[error("no TokenIntrospector trusts issuer {0:?}")]
    UntrustedIssuer(String),
    #[error("no TokenIntrospector accepts tokens that are not JWTs")]
    NoOpaqueIntrospector,
    #[error("algorithm {0} is not allowed for this issuer's keys")]
    AlgorithmNotAllowed(String),
    #[error("no key matches the token's kid")]
    UnknownKey,
    #[error("signature does not verify")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token audience is not accepted")]
    BadAudience,
    #[error("token is not active")]
    Inactive,
    #[error("token could not be checked: {0}")]
    Unavailable(String),
}

impl TokenError {
    /// A short stable word for metrics and the decision log.
    pub fn reason(&self) -> &'static str {
        match self {
            TokenError::TooLarge(_) => "token_too_large",
            TokenError::Malformed(_) => "token_malformed",
            TokenError::UntrustedIssuer(_) | TokenError::NoOpaqueIntrospector => "untrusted_issuer",
            TokenError::AlgorithmNotAllowed(_) => "algorithm_not_allowed",
            TokenError::UnknownKey => "unknown_key",
            TokenError::BadSignature => "bad_signature",
            TokenError::Expired => "token_expired",
            TokenError::NotYetValid => "token_not_yet_valid",
            TokenError::BadAudience => "bad_audience",
            TokenError::Inactive => "token_inactive",
            TokenError::Unavailable(_) => "introspection_unavailable",
        }
    }

    pub fn is_internal(&self) -> bool {
        matches!(self, TokenError::Unavailable(_))
    }
}

/// Validates tokens against a snapshot's [`TrustStore`].
pub struct TokenVerifier {
    max_token_bytes: usize,
}

impl Default for TokenVerifier {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_TOKEN_BYTES)
    }
}

impl TokenVerifier {
    pub fn new(max_token_bytes: usize) -> Self {
        TokenVerifier { max_token_bytes }
    }

    pub async fn validate(
        &self,
        trust: &TrustStore,
        token: &str,
    ) -> Result<ValidToken, TokenError> {
        if token.len() > self.max_token_bytes {
            return Err(TokenError::TooLarge(self.max_token_bytes));
        }
        match jwt::Parsed::parse(token) {
            Some(parsed) => {
                let parsed = parsed?;
                let introspector = trust
                    .for_issuer(&parsed.issuer)
                    .ok_or_else(|| TokenError::UntrustedIssuer(parsed.issuer.clone()))?;
                match &introspector.trust {
                    Trust::StaticKeys(keys) => jwt::verify(token, &parsed, introspector, keys),
                    Trust::Jwks(_) => Err(TokenError::Unavailable(
                        "JWKS introspectors are not supported yet".into(),
                    )),
                    Trust::Introspection { .. } => {
                        unreachable!("opaque introspectors have no issuer")
                    }
                }
            }
            None => match trust.opaque().first() {
                None => Err(TokenError::NoOpaqueIntrospector),
                Some(_) => Err(TokenError::Unavailable(
                    "opaque introspection is not supported yet".into(),
                )),
            },
        }
    }
}
