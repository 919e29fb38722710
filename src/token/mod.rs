//! Token validation: which introspector trusts a token, and whether it holds.
//!
//! Knows nothing of tonic or kube. [`TokenVerifier`] holds the caches that outlive a
//! configuration snapshot (verified tokens, JWKS keys); the [`TrustStore`] inside each
//! snapshot says whom to trust. Every cache entry is tied to an introspector's
//! [`Fingerprint`], so a reload that changes an introspector never reuses its old entries.

mod cache;
mod claim_headers;
mod introspection;
mod introspector;
mod jwks;
mod jwt;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::Algorithm;
use serde_json::Value;

use crate::metrics::Metrics;
use crate::outbound::IdpClient;
use crate::resources::json_weight;
use cache::{Verified, VerifiedCache};

pub use claim_headers::ClaimHeader;
pub use introspector::{
    algorithm, Fingerprint, Introspector, JwksSource, Trust, VerifyKey, MAX_LEEWAY_SECONDS,
};

/// Tokens longer than this are refused before any parsing (a JWT with a large claim set
/// is a few KiB; Envoy's default header limit is 60 KiB).
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 16 * 1024;
/// The most a JWKS, discovery or introspection call may take, start to finish. Well under
/// the ext_authz timeout one would configure in Envoy (say 3 s), so that a request whose
/// identity provider is down fails closed with our answer rather than Envoy's.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(2);
/// At most one JWKS refetch per introspector for unknown `kid`s in this interval.
pub const DEFAULT_JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(10);
/// After a failed JWKS fetch, requests that need one fail at once for this long.
pub const DEFAULT_FETCH_RETRY_BACKOFF: Duration = Duration::from_secs(1);
/// How long past `cache_ttl` JWKS keys keep verifying while their endpoint fails.
pub const DEFAULT_JWKS_MAX_STALE: Duration = Duration::from_secs(6 * 3600);
/// Size bound of the verified-token cache (roughly, bytes of tokens and claims).
pub const DEFAULT_VERIFIED_CACHE_BYTES: u64 = 64 * 1024 * 1024;
/// The largest JWKS, discovery document or introspection answer read.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// The compiled introspectors of one snapshot, indexed the way tokens find them.
#[derive(Debug, Default)]
pub struct TrustStore {
    by_issuer: HashMap<String, Arc<Introspector>>,
    /// In name order: opaque tokens are offered to each in turn.
    opaque: Vec<Arc<Introspector>>,
    by_fingerprint: HashMap<Fingerprint, Arc<Introspector>>,
    /// Changes whenever any introspector does: refusals are remembered per generation.
    generation: u64,
    /// Every header any introspector forwards a claim into (`None`: no introspector does).
    claim_headers: Option<Arc<[Arc<str>]>>,
}

impl TrustStore {
    /// Issuers must be unique: the caller reports a duplicate with both resources' names.
    /// Adds an introspector, or changes nothing when its issuer is already trusted.
    pub fn insert(&mut self, introspector: Introspector) -> Result<(), String> {
        if let Some(conflict) = self.conflict(&introspector) {
            return Err(conflict);
        }
        let introspector = Arc::new(introspector);
        let issuer = issuer_of(&introspector);
        let known = self.claim_headers.as_deref().unwrap_or_default();
        let new: Vec<Arc<str>> = introspector
            .claim_headers
            .iter()
            .map(|c| c.header.clone())
            .filter(|h| !known.contains(h))
            .collect();
        if !new.is_empty() {
            self.claim_headers = Some(known.iter().cloned().chain(new).collect());
        }
        let mut prefix = [0u8; 8];
        prefix.copy_from_slice(&introspector.fingerprint[..8]);
        self.generation ^= u64::from_le_bytes(prefix);
        self.by_fingerprint
            .insert(introspector.fingerprint, introspector.clone());
        match issuer {
            None => {
                let at = self.opaque.partition_point(|o| o.name <= introspector.name);
                self.opaque.insert(at, introspector);
            }
            Some(issuer) => {
                self.by_issuer.insert(issuer, introspector);
            }
        }
        Ok(())
    }

    /// Why `introspector` cannot join: another introspector (of another name) already
    /// trusts its issuer. Opaque introspectors are found by trying each, and never clash.
    pub fn conflict(&self, introspector: &Introspector) -> Option<String> {
        let issuer = issuer_of(introspector)?;
        let other = self
            .by_issuer
            .get(&issuer)
            .filter(|other| other.name != introspector.name)?;
        Some(format!(
            "issuer {issuer:?} is already trusted by TokenIntrospector/{}",
            other.name
        ))
    }

    /// Every header some introspector forwards a claim into, if any does.
    pub fn claim_headers(&self) -> Option<Arc<[Arc<str>]>> {
        self.claim_headers.clone()
    }

    pub fn by_fingerprint(&self, fingerprint: &Fingerprint) -> Option<&Arc<Introspector>> {
        self.by_fingerprint.get(fingerprint)
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

/// What one request may trust: the root's introspectors and those of the request's
/// namespace (its team), never another's. The root's come first, for JWT issuers and opaque
/// tokens alike; a team cannot hold an issuer the root trusts (the compiler refuses it).
#[derive(Clone, Copy, Debug)]
pub struct TrustView<'a> {
    root: &'a TrustStore,
    team: Option<&'a TrustStore>,
}

impl<'a> From<&'a TrustStore> for TrustView<'a> {
    fn from(root: &'a TrustStore) -> Self {
        TrustView { root, team: None }
    }
}

impl<'a> From<&'a Arc<TrustStore>> for TrustView<'a> {
    fn from(root: &'a Arc<TrustStore>) -> Self {
        TrustView { root, team: None }
    }
}

impl<'a> TrustView<'a> {
    pub fn new(root: &'a TrustStore, team: Option<&'a TrustStore>) -> Self {
        TrustView { root, team }
    }

    pub fn for_issuer(&self, iss: &str) -> Option<&'a Arc<Introspector>> {
        self.root
            .for_issuer(iss)
            .or_else(|| self.team?.for_issuer(iss))
    }

    /// The opaque introspectors in the order a token is offered to them: the root's by
    /// name, then the team's by name.
    pub fn opaque(&self) -> impl Iterator<Item = &'a Arc<Introspector>> {
        let team = self.team.map(TrustStore::opaque).unwrap_or_default();
        self.root.opaque().iter().chain(team)
    }

    pub fn by_fingerprint(&self, fingerprint: &Fingerprint) -> Option<&'a Arc<Introspector>> {
        self.root
            .by_fingerprint(fingerprint)
            .or_else(|| self.team?.by_fingerprint(fingerprint))
    }

    /// Changes whenever an introspector of the view does; differs between two teams'
    /// views (a refusal under one is not a refusal under the other).
    fn generation(&self) -> u64 {
        self.root.generation ^ self.team.map_or(0, |t| t.generation.rotate_left(17) ^ 1)
    }
}

/// The issuer by which JWTs find `introspector`; `None` for an opaque one.
fn issuer_of(introspector: &Introspector) -> Option<String> {
    match introspector.trust {
        Trust::Introspection { .. } => None,
        _ => Some(introspector.issuer.clone().unwrap_or_default()),
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
    /// The JWT's claims, or the whole introspection answer: always a JSON object, shared
    /// with the cache of verified tokens and read by policies in place.
    pub claims: Arc<Value>,
    /// Seconds since the epoch after which the token must be validated again.
    pub expires_at: Option<u64>,
    /// The claims' [`json_weight`], counted once when the token was verified: what a
    /// policy reading them may have to walk.
    pub claims_weight: u32,
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
    /// The issuer that the accepting TokenIntrospector trusts (`jwt.iss`): for a JWT, its
    /// own `iss`; for an opaque token, the introspector's `jwt.iss` if it names one, never
    /// what the introspection answer claims.
    pub fn trusted_issuer(&self) -> Option<&str> {
        self.introspector.issuer.as_deref()
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

/// The most of an unverified `iss` kept in a refusal. The refusal is cached and echoed in
/// the denial: a 16 KiB token must not make either 16 KiB.
const ISSUER_SHOWN_BYTES: usize = 128;

impl TokenError {
    /// [`TokenError::UntrustedIssuer`], the issuer cut to [`ISSUER_SHOWN_BYTES`].
    pub fn untrusted_issuer(iss: &str) -> Self {
        if iss.len() <= ISSUER_SHOWN_BYTES {
            return TokenError::UntrustedIssuer(iss.to_string());
        }
        let cut = (0..=ISSUER_SHOWN_BYTES)
            .rev()
            .find(|&i| iss.is_char_boundary(i))
            .unwrap_or(0);
        TokenError::UntrustedIssuer(format!("{}...", &iss[..cut]))
    }

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

    /// Whether the same token would be refused again for the same reason: not for
    /// outages, nor for a `kid` that a key rotation may bring, nor for a token whose time
    /// has not come yet.
    pub fn is_final(&self) -> bool {
        !matches!(
            self,
            TokenError::Unavailable(_) | TokenError::UnknownKey | TokenError::NotYetValid
        )
    }

    pub fn is_internal(&self) -> bool {
        matches!(self, TokenError::Unavailable(_))
    }
}

/// Limits and timings of token validation; [`Default`] gives the documented defaults.
#[derive(Clone, Debug)]
pub struct TokenSettings {
    pub max_token_bytes: usize,
    pub fetch_timeout: Duration,
    pub jwks_refetch_interval: Duration,
    pub fetch_retry_backoff: Duration,
    pub jwks_max_stale: Duration,
    pub verified_cache_bytes: u64,
    /// Introspection calls in flight at once, all introspectors together.
    pub max_concurrent_introspections: usize,
}

/// `--max-concurrent-introspections`: well above what a healthy endpoint answering in
/// tens of milliseconds needs at thousands of new tokens a second.
pub const DEFAULT_MAX_CONCURRENT_INTROSPECTIONS: u32 = 64;

impl Default for TokenSettings {
    fn default() -> Self {
        TokenSettings {
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
            fetch_timeout: DEFAULT_FETCH_TIMEOUT,
            jwks_refetch_interval: DEFAULT_JWKS_REFETCH_INTERVAL,
            fetch_retry_backoff: DEFAULT_FETCH_RETRY_BACKOFF,
            jwks_max_stale: DEFAULT_JWKS_MAX_STALE,
            verified_cache_bytes: DEFAULT_VERIFIED_CACHE_BYTES,
            max_concurrent_introspections: DEFAULT_MAX_CONCURRENT_INTROSPECTIONS as usize,
        }
    }
}

/// How long a refusal is remembered. Short: an introspection endpoint that wrongly said
/// `active: false` is asked again within seconds.
const REFUSED_CACHE_TTL: Duration = Duration::from_secs(5);
const REFUSED_CACHE_ENTRIES: u64 = 65_536;

/// Validates tokens against a snapshot's [`TrustStore`]. One per process: its caches
/// outlive snapshots.
pub struct TokenVerifier {
    settings: TokenSettings,
    metrics: Arc<Metrics>,
    http: IdpClient,
    jwks: jwks::JwksCache,
    verified: VerifiedCache,
    /// Tokens refused recently, so that a flood of garbage or revoked tokens costs a
    /// lookup, not an RSA check or an introspection call per request.
    refused: moka::sync::Cache<(cache::TokenHash, u64), TokenError>,
    /// Introspection calls in flight ([`TokenSettings::max_concurrent_introspections`]).
    introspections: tokio::sync::Semaphore,
}

impl Default for TokenVerifier {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_TOKEN_BYTES)
    }
}

impl TokenVerifier {
    /// Defaults but for the token size, with metrics of its own.
    pub fn new(max_token_bytes: usize) -> Self {
        Self::with_settings(
            TokenSettings {
                max_token_bytes,
                ..TokenSettings::default()
            },
            Arc::new(Metrics::new()),
        )
    }

    /// With a client of its own, whose calls are bounded by `settings.fetch_timeout`.
    pub fn with_settings(settings: TokenSettings, metrics: Arc<Metrics>) -> Self {
        let http = IdpClient::new(settings.fetch_timeout);
        Self::with_client(settings, http, metrics)
    }

    /// Sharing `http`, the client for every identity-provider call, whose timeout rules
    /// (`settings.fetch_timeout` is not read).
    pub fn with_client(settings: TokenSettings, http: IdpClient, metrics: Arc<Metrics>) -> Self {
        let jwks = jwks::JwksCache::new(
            http.clone(),
            jwks::Settings {
                refetch_interval: settings.jwks_refetch_interval,
                retry_backoff: settings.fetch_retry_backoff,
                max_stale: settings.jwks_max_stale,
            },
            metrics.clone(),
        );
        TokenVerifier {
            verified: cache::verified_cache(settings.verified_cache_bytes),
            refused: moka::sync::Cache::builder()
                .max_capacity(REFUSED_CACHE_ENTRIES)
                .time_to_live(REFUSED_CACHE_TTL)
                .build(),
            introspections: tokio::sync::Semaphore::new(settings.max_concurrent_introspections),
            settings,
            metrics,
            http,
            jwks,
        }
    }

    /// Validate a bearer token. A token validated before, under an unchanged introspector
    /// and still within its cache time, costs a hash and a lookup; concurrent first
    /// requests for one token share one verification (and one introspection call).
    pub async fn validate<'t>(
        &self,
        trust: impl Into<TrustView<'t>>,
        token: &str,
    ) -> Result<ValidToken, TokenError> {
        let trust = trust.into();
        if token.len() > self.settings.max_token_bytes {
            return Err(TokenError::TooLarge(self.settings.max_token_bytes));
        }
        let key = cache::hash(token);
        if let Some(hit) = self.verified.get(&key).await {
            if hit.is_fresh(Instant::now(), jwt::now()) {
                if let Some(valid) = Self::under(trust, &hit) {
                    self.metrics.token_cache_hit();
                    return Ok(valid);
                }
            }
            // Stale, or verified by an introspector this view does not hold (changed since,
            // or another team's that trusts the same issuer): checked again under this one.
            self.verified.invalidate(&key).await;
        }
        if let Some(refusal) = self.refused.get(&(key, trust.generation())) {
            self.metrics.token_event("refused_cache_hit");
            return Err(refusal);
        }
        self.metrics.token_event("verified_cache_miss");
        // Boxed: the full check's future (a JWKS fetch, an introspection call) is large,
        // and a cache hit should not carry, and move, room for it.
        let result = Box::pin(self.verify_shared(trust, token, key)).await;
        if let Err(e) = &result {
            if e.is_final() {
                self.refused.insert((key, trust.generation()), e.clone());
            }
        }
        result
    }

    async fn verify_shared(
        &self,
        trust: TrustView<'_>,
        token: &str,
        key: cache::TokenHash,
    ) -> Result<ValidToken, TokenError> {
        match self
            .verified
            .try_get_with(key, self.verify(trust, token))
            .await
        {
            Ok(verified) => match Self::under(trust, &verified) {
                Some(valid) => Ok(valid),
                // A request under another snapshot verified it first: check it under ours.
                None => {
                    let verified = self.verify(trust, token).await?;
                    Self::under(trust, &verified).ok_or_else(|| {
                        TokenError::Unavailable("the configuration changed; try again".into())
                    })
                }
            },
            Err(e) => Err((*e).clone()),
        }
    }

    /// A verified token as the current trust store vouches for it: `None` when the
    /// introspector that verified it has changed or gone since.
    fn under(trust: TrustView<'_>, v: &Verified) -> Option<ValidToken> {
        let introspector = trust.by_fingerprint(&v.introspector)?;
        Some(ValidToken {
            kind: v.kind,
            introspector: introspector.clone(),
            claims: v.claims.clone(),
            expires_at: v.expires_at,
            claims_weight: v.claims_weight,
        })
    }

    /// The full check, no cache of verified tokens involved.
    async fn verify(&self, trust: TrustView<'_>, token: &str) -> Result<Verified, TokenError> {
        let Some(parsed) = jwt::Parsed::parse(token) else {
            return self.introspect(trust, token).await;
        };
        let parsed = parsed?;
        let introspector = trust
            .for_issuer(&parsed.issuer)
            .ok_or_else(|| TokenError::untrusted_issuer(&parsed.issuer))?;
        let (valid, limit) = match &introspector.trust {
            // Static keys never change under a fingerprint: keep the token until `exp`.
            Trust::StaticKeys(keys) => (jwt::verify(token, &parsed, introspector, keys)?, None),
            Trust::Jwks(source) => {
                let alg = parsed.header.alg;
                if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
                    // Refused before any fetch: a JWKS holds public keys only.
                    return Err(TokenError::AlgorithmNotAllowed(format!("{alg:?}")));
                }
                let kid = parsed.header.kid.as_deref();
                let keys = self.jwks.keys(introspector, source, kid).await?;
                // Kept no longer than the key set it was verified with: a key dropped from
                // the JWKS stops vouching for cached tokens when it stops for new ones (and
                // a stale set, used while the endpoint is down, vouches for no cache entry).
                let valid = jwt::verify(token, &parsed, introspector, &keys.keys)?;
                (valid, Some(keys.fetched_at + introspector.cache_ttl))
            }
            Trust::Introspection { .. } => {
                return Err(TokenError::untrusted_issuer(&parsed.issuer))
            }
        };
        Ok(Verified {
            introspector: introspector.fingerprint,
            kind: TokenKind::Jwt,
            cache_until: cache::cache_until(valid.expires_at, limit, jwt::now()),
            expires_at: valid.expires_at,
            claims: valid.claims,
            claims_weight: valid.claims_weight,
            weight: weight(2 * token.len()),
        })
    }

    /// Offer an opaque token to each opaque introspector of the view in turn (the root's,
    /// then the team's, each by name); the first that says `active: true` wins. None active: `Inactive`, unless an endpoint failed, in
    /// which case we cannot say and answer `Unavailable` (never an allow).
    async fn introspect(&self, trust: TrustView<'_>, token: &str) -> Result<Verified, TokenError> {
        if trust.opaque().next().is_none() {
            return Err(TokenError::NoOpaqueIntrospector);
        }
        // Not queued: a flood of distinct tokens is shed, not turned into a backlog of
        // calls. Not final either, so not remembered as a refusal.
        let Ok(_permit) = self.introspections.try_acquire() else {
            self.metrics.token_event("introspection_shed");
            return Err(TokenError::Unavailable(format!(
                "{} introspection calls are in flight already",
                self.settings.max_concurrent_introspections
            )));
        };
        let mut failure = None;
        let mut refusal = None;
        for introspector in trust.opaque() {
            let Trust::Introspection { url, authorization } = &introspector.trust else {
                continue;
            };
            match introspection::introspect(
                &self.http,
                &self.metrics,
                introspector,
                url,
                authorization.as_deref(),
                token,
            )
            .await
            {
                Ok(answer) => {
                    let expires_at = answer.get("exp").and_then(Value::as_u64);
                    let answer = Value::Object(answer);
                    let size = token.len() + answer.to_string().len();
                    return Ok(Verified {
                        introspector: introspector.fingerprint,
                        kind: TokenKind::Opaque,
                        cache_until: cache::cache_until(
                            expires_at,
                            Some(Instant::now() + introspector.cache_ttl),
                            jwt::now(),
                        ),
                        expires_at,
                        claims_weight: json_weight(&answer),
                        claims: Arc::new(answer),
                        weight: weight(size),
                    });
                }
                Err(e @ TokenError::Unavailable(_)) => failure = Some(e),
                Err(e) => {
                    refusal.get_or_insert(e);
                }
            }
        }
        Err(failure
            .or(refusal)
            .unwrap_or(TokenError::NoOpaqueIntrospector))
    }
}

fn weight(bytes: usize) -> u32 {
    // Per-entry overhead (key, Arcs, map nodes) on top of the bytes themselves.
    u32::try_from(bytes + 256).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::TokenError;

    #[test]
    fn an_untrusted_issuer_is_kept_and_shown_short() {
        let short = TokenError::untrusted_issuer("https://other.example");
        assert_eq!(
            short,
            TokenError::UntrustedIssuer("https://other.example".into())
        );
        // Multi-byte characters across the cut: still a valid string, never a panic.
        let long = format!("https://{}", "é".repeat(8000));
        let TokenError::UntrustedIssuer(shown) = TokenError::untrusted_issuer(&long) else {
            unreachable!()
        };
        assert!(shown.len() <= 131, "{}", shown.len());
        assert!(shown.starts_with("https://é") && shown.ends_with("..."));
    }
}
