//! JWKS keys: fetched, kept for `cache_ttl`, refreshed in the background, refetched once
//! (rate-limited) for an unknown `kid`, and still used while the endpoint is down, for at
//! most `max_stale` past `cache_ttl`.
//!
//! State is kept per introspector name and key source, outside any snapshot, so a reload
//! that changes nothing keeps its keys and one that changes the URI starts afresh.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use futures::future::{BoxFuture, FutureExt, Shared};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};

use super::MAX_RESPONSE_BYTES;
use super::{Introspector, JwksSource, TokenError, VerifyKey};
use crate::metrics::Metrics;
use crate::outbound::IdpClient;

/// The RSA algorithms, for an RSA JWK that names none.
const RSA_ALGS: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// One fetched key set. Each JWK becomes one [`VerifyKey`] per algorithm it may verify.
pub struct KeySet {
    pub keys: Vec<VerifyKey>,
    pub fetched_at: Instant,
}

impl KeySet {
    /// Whether some key could be the one the token names. A JWK without `kid` fits any.
    fn knows(&self, kid: &str) -> bool {
        self.keys
            .iter()
            .any(|k| k.kid.as_deref().is_none_or(|k| k == kid))
    }
}

type Fetch = Shared<BoxFuture<'static, Result<Arc<KeySet>, String>>>;

#[derive(Default)]
struct State {
    keys: Option<Arc<KeySet>>,
    /// The fetch under way: every caller that needs one waits on this one.
    inflight: Option<Fetch>,
    last_failure: Option<Instant>,
    /// When an unknown `kid` last caused a refetch.
    last_kid_refetch: Option<Instant>,
}

pub struct Settings {
    pub refetch_interval: Duration,
    pub retry_backoff: Duration,
    /// How long past `cache_ttl` keys still verify while their endpoint fails.
    pub max_stale: Duration,
}

pub(crate) struct JwksCache {
    states: moka::sync::Cache<String, Arc<Mutex<State>>>,
    http: IdpClient,
    settings: Settings,
    metrics: Arc<Metrics>,
}

impl JwksCache {
    pub fn new(http: IdpClient, settings: Settings, metrics: Arc<Metrics>) -> Self {
        JwksCache {
            // Introspectors that left the configuration fall out after a day unused.
            states: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_idle(Duration::from_secs(86_400))
                .build(),
            http,
            settings,
            metrics,
        }
    }

    /// The keys that may verify a token with this `kid`, fetching or refetching them as
    /// the rules allow. `Err(UnknownKey)` when no key has that `kid` even after a refetch
    /// (or when a refetch is not allowed yet).
    pub async fn keys(
        &self,
        introspector: &Introspector,
        source: &JwksSource,
        kid: Option<&str>,
    ) -> Result<Arc<KeySet>, TokenError> {
        let id = state_key(introspector, source);
        let state = self.states.get_with(id, Default::default);
        let now = Instant::now();

        let (current, fetch) = {
            let mut s = lock(&state);
            match s.keys.clone() {
                None => (
                    None,
                    self.start_or_join(&state, &mut s, introspector, source),
                ),
                Some(set) => {
                    let stale_at = set.fetched_at + introspector.cache_ttl;
                    if now >= stale_at + self.settings.max_stale {
                        // Stale for too long: a key the issuer withdrew (say, a leaked one)
                        // must not verify for as long as its endpoint can be kept failing.
                        // Requests wait for a fresh set, as before the first fetch.
                        self.metrics.token_event("jwks_stale_expired");
                        (
                            None,
                            self.start_or_join(&state, &mut s, introspector, source),
                        )
                    } else if now >= stale_at {
                        // Stale: refresh in the background and answer with what we have, so
                        // that a slow or dead endpoint costs requests nothing.
                        let _ = self.start_or_join(&state, &mut s, introspector, source);
                        self.metrics.token_event("jwks_stale_served");
                        (Some(set), None)
                    } else {
                        (Some(set), None)
                    }
                }
            }
        };
        let (set, fresh) = match (current, fetch) {
            (Some(set), _) => (set, false),
            (None, Some(fetch)) => (
                fetch.await.map_err(|e| unavailable(introspector, &e))?,
                true,
            ),
            (None, None) => {
                return Err(TokenError::Unavailable(format!(
                "the JWKS of TokenIntrospector/{} could not be fetched recently; retrying shortly",
                introspector.name
            )))
            }
        };
        let Some(kid) = kid else {
            return Ok(set);
        };
        if set.knows(kid) {
            return Ok(set);
        }
        if fresh {
            // Fetched for this very request: asking again at once would learn nothing.
            return Err(TokenError::UnknownKey);
        }

        // An unknown kid: the issuer may have rotated its keys. One refetch per interval,
        // however many forged kids arrive; concurrent misses wait on the same fetch.
        let (fetch, failing) = {
            let mut s = lock(&state);
            let failing = s.last_failure.is_some();
            let fetch = if let Some(f) = &s.inflight {
                Some(f.clone())
            } else if s
                .last_kid_refetch
                .is_some_and(|t| now < t + self.settings.refetch_interval)
            {
                None
            } else {
                let f = self.start_or_join(&state, &mut s, introspector, source);
                if f.is_some() {
                    s.last_kid_refetch = Some(now);
                    self.metrics.token_event("jwks_refetch_unknown_kid");
                }
                f
            };
            (fetch, failing)
        };
        let Some(fetch) = fetch else {
            self.metrics.token_event("jwks_refetch_rate_limited");
            return Err(if failing {
                // The endpoint is failing: the kid may be real, we cannot tell.
                unavailable(introspector, "the endpoint failed recently")
            } else {
                TokenError::UnknownKey
            });
        };
        match fetch.await {
            Ok(set) if set.knows(kid) => Ok(set),
            Ok(_) => Err(TokenError::UnknownKey),
            // The kid may be real: we could not tell.
            Err(e) => Err(unavailable(introspector, &e)),
        }
    }

    /// The fetch under way, or a new one unless the last failure is too recent. The fetch
    /// runs as its own task, so a caller that gives up does not cancel it for the others.
    fn start_or_join(
        &self,
        state: &Arc<Mutex<State>>,
        s: &mut State,
        introspector: &Introspector,
        source: &JwksSource,
    ) -> Option<Fetch> {
        if let Some(f) = &s.inflight {
            return Some(f.clone());
        }
        if s.last_failure
            .is_some_and(|t| t.elapsed() < self.settings.retry_backoff)
        {
            return None;
        }
        let task = tokio::spawn(fetch_task(
            state.clone(),
            self.http.clone(),
            self.metrics.clone(),
            introspector.name.clone(),
            introspector.issuer.clone().unwrap_or_default(),
            match source {
                JwksSource::Uri(uri) => Some(uri.clone()),
                JwksSource::Discovery { .. } => None,
            },
        ));
        let fetch = async move {
            task.await
                .unwrap_or_else(|_| Err("the fetch task failed".into()))
        }
        .boxed()
        .shared();
        s.inflight = Some(fetch.clone());
        Some(fetch)
    }

    #[cfg(test)]
    fn state_count(&self) -> u64 {
        self.states.run_pending_tasks();
        self.states.entry_count()
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // The state is plain data that every writer leaves consistent: a panic elsewhere
    // must not take token validation down with it.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

fn unavailable(introspector: &Introspector, e: &str) -> TokenError {
    TokenError::Unavailable(format!(
        "the JWKS of TokenIntrospector/{} could not be fetched: {e}",
        introspector.name
    ))
}

/// Name plus source: a changed `jwks_uri` (or a switch to discovery) never sees old keys.
fn state_key(introspector: &Introspector, source: &JwksSource) -> String {
    match source {
        JwksSource::Uri(uri) => format!("{}\0uri\0{uri}", introspector.name),
        JwksSource::Discovery { issuer } => format!("{}\0discovery\0{issuer}", introspector.name),
    }
}

async fn fetch_task(
    state: Arc<Mutex<State>>,
    http: IdpClient,
    metrics: Arc<Metrics>,
    name: String,
    issuer: String,
    uri: Option<String>,
) -> Result<Arc<KeySet>, String> {
    metrics.token_event("jwks_fetch");
    // Each call is bounded by the client; the fetch runs as its own task, so a request
    // that stops waiting does not cancel it for the others.
    let result = fetch(&http, &metrics, &issuer, uri).await;
    let mut s = lock(&state);
    s.inflight = None;
    match &result {
        Ok(set) => {
            tracing::debug!(introspector = %name, keys = set.keys.len(), "JWKS fetched");
            s.keys = Some(set.clone());
            s.last_failure = None;
        }
        Err(e) => {
            metrics.token_event("jwks_fetch_error");
            tracing::warn!(
                introspector = %name,
                error = %e,
                cached_keys = s.keys.is_some(),
                "JWKS fetch failed"
            );
            s.last_failure = Some(Instant::now());
        }
    }
    result
}

async fn fetch(
    http: &IdpClient,
    metrics: &Metrics,
    issuer: &str,
    uri: Option<String>,
) -> Result<Arc<KeySet>, String> {
    let uri = match uri {
        Some(uri) => uri,
        None => {
            metrics.token_event("discovery_fetch");
            discover(http, issuer).await?
        }
    };
    let body = http
        .get_json(&uri, None, MAX_RESPONSE_BYTES)
        .await
        .map_err(|e| format!("JWKS endpoint: {e}"))?;
    let keys = parse_jwks(&body)?;
    if keys.is_empty() {
        // Keep the keys we have rather than swap them for none.
        return Err("JWKS has no usable signing key".into());
    }
    Ok(Arc::new(KeySet {
        keys,
        fetched_at: Instant::now(),
    }))
}

/// OpenID Connect Discovery 1.0: `jwks_uri` from the issuer's configuration, whose own
/// `issuer` must be exactly the one configured (section 4.3).
async fn discover(http: &IdpClient, issuer: &str) -> Result<String, String> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let doc = http
        .get_json(&url, None, MAX_RESPONSE_BYTES)
        .await
        .map_err(|e| format!("discovery document: {e}"))?;
    match doc.get("issuer").and_then(Value::as_str) {
        Some(i) if i == issuer => {}
        _ => return Err("discovery document names a different issuer".into()),
    }
    match doc.get("jwks_uri").and_then(Value::as_str) {
        Some(uri) if uri.starts_with("https://") || uri.starts_with("http://") => {
            Ok(uri.to_string())
        }
        _ => Err("discovery document has no http(s) jwks_uri".into()),
    }
}

/// The signing keys of a JWKS. Keys that cannot be used are skipped, not fatal: one odd
/// key (an encryption key, a curve we do not support) must not hide the others.
pub fn parse_jwks(body: &Map<String, Value>) -> Result<Vec<VerifyKey>, String> {
    let Some(Value::Array(jwks)) = body.get("keys") else {
        return Err("JWKS has no `keys` array".into());
    };
    let mut keys = Vec::new();
    for jwk in jwks {
        let Value::Object(jwk) = jwk else { continue };
        match parse_jwk(jwk) {
            Ok((kid, algs, key)) => keys.extend(algs.into_iter().map(|alg| VerifyKey {
                alg,
                kid: kid.clone(),
                key: key.clone(),
            })),
            Err(why) => {
                let kid = jwk.get("kid").and_then(|k| k.as_str()).unwrap_or("");
                tracing::debug!(kid, why, "JWK skipped");
            }
        }
    }
    Ok(keys)
}

type ParsedJwk = (Option<String>, Vec<Algorithm>, DecodingKey);

/// One JWK: its `kid`, the algorithms its `kty`/`crv` (and `alg`, when given) allow, and
/// the key. Symmetric (`oct`) keys are refused: a JWKS is public, so a secret in it is
/// no secret, and an HMAC key must never be confused with a public key.
fn parse_jwk(jwk: &Map<String, Value>) -> Result<ParsedJwk, &'static str> {
    let text = |name: &str| jwk.get(name).and_then(Value::as_str);
    if jwk.get("use").is_some() && text("use") != Some("sig") {
        return Err("not a signature key (`use`)");
    }
    if let Some(ops) = jwk.get("key_ops") {
        let verifies = ops
            .as_array()
            .is_some_and(|ops| ops.iter().any(|o| o.as_str() == Some("verify")));
        if !verifies {
            return Err("not a verification key (`key_ops`)");
        }
    }
    let kid = match jwk.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err("`kid` is not a string"),
    };
    let alg = match jwk.get("alg") {
        None => None,
        Some(Value::String(a)) => Some(a.as_str()),
        Some(_) => return Err("`alg` is not a string"),
    };
    let b64 = |name: &str| -> Result<Vec<u8>, &'static str> {
        let value = text(name).ok_or("a key parameter is missing")?;
        URL_SAFE_NO_PAD
            .decode(value)
            .map_err(|_| "a key parameter is not base64url")
    };
    let fits = |allowed: &[Algorithm]| -> Result<Vec<Algorithm>, &'static str> {
        match alg {
            None => Ok(allowed.to_vec()),
            Some(a) => allowed
                .iter()
                .find(|x| a.parse::<Algorithm>().is_ok_and(|a| a == **x))
                .map(|x| vec![*x])
                .ok_or("`alg` does not fit the key type"),
        }
    };
    match text("kty") {
        Some("RSA") => {
            let (n, e) = (b64("n")?, b64("e")?);
            if n.is_empty() || e.is_empty() {
                return Err("empty RSA modulus or exponent");
            }
            let algs = fits(&RSA_ALGS)?;
            Ok((kid, algs, DecodingKey::from_rsa_raw_components(&n, &e)))
        }
        Some("EC") => {
            let (alg, size) = match text("crv") {
                Some("P-256") => (Algorithm::ES256, 32),
                Some("P-384") => (Algorithm::ES384, 48),
                _ => return Err("unsupported EC curve"),
            };
            let (x, y) = (b64("x")?, b64("y")?);
            if x.len() != size || y.len() != size {
                return Err("EC coordinates do not fit the curve");
            }
            let algs = fits(&[alg])?;
            let mut point = Vec::with_capacity(1 + 2 * size);
            point.push(0x04); // SEC1 uncompressed point
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            Ok((kid, algs, DecodingKey::from_ec_der(&point)))
        }
        Some("OKP") => {
            if text("crv") != Some("Ed25519") {
                return Err("unsupported OKP curve");
            }
            let x = b64("x")?;
            if x.len() != 32 {
                return Err("Ed25519 key is not 32 bytes");
            }
            // RFC 9864 names the algorithm `Ed25519`; older JWKs say `EdDSA`.
            let algs = match alg {
                None | Some("EdDSA") | Some("Ed25519") => vec![Algorithm::EdDSA],
                Some(_) => return Err("`alg` does not fit the key type"),
            };
            Ok((kid, algs, DecodingKey::from_ed_der(&x)))
        }
        Some("oct") => Err("symmetric keys are never taken from a JWKS"),
        _ => Err("unsupported `kty`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Vec<(Option<String>, Algorithm)> {
        let Value::Object(body) = v else {
            unreachable!()
        };
        parse_jwks(&body)
            .unwrap()
            .into_iter()
            .map(|k| (k.kid, k.alg))
            .collect()
    }

    const N: &str = "iU1Xcjbapc9hdRXrcjp-w5P_nw3TaBdbfy_2JwhLQ97-OL5oAyA2rEwwnxejMSeiMrg";
    const P256: &str = "QmehkJ4kfpfxgcPntTZiRor6StXZXliq504cEZnDfR8";
    const ED: &str = "TjWqRNdIFD4PGUvhGpW8SdNcrcKB6ESE0K3iTsfsqzg";

    #[test]
    fn token_jwk_algorithms_follow_kty_crv_and_alg() {
        let keys = parse(json!({"keys": [
            {"kty": "RSA", "kid": "r1", "n": N, "e": "AQAB"},
            {"kty": "RSA", "kid": "r2", "alg": "PS384", "n": N, "e": "AQAB"},
            {"kty": "EC", "kid": "e1", "crv": "P-256", "x": P256, "y": P256},
            {"kty": "OKP", "kid": "d1", "crv": "Ed25519", "x": ED},
        ]}));
        let algs = |kid: &str| -> Vec<Algorithm> {
            keys.iter()
                .filter(|(k, _)| k.as_deref() == Some(kid))
                .map(|(_, a)| *a)
                .collect()
        };
        assert_eq!(algs("r1"), RSA_ALGS.to_vec());
        assert_eq!(algs("r2"), vec![Algorithm::PS384]);
        assert_eq!(algs("e1"), vec![Algorithm::ES256]);
        assert_eq!(algs("d1"), vec![Algorithm::EdDSA]);
    }

    #[test]
    fn token_jwk_unusable_keys_are_skipped() {
        let keys = parse(json!({"keys": [
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "RSA", "kid": "rsa-as-hmac", "alg": "HS256", "n": N, "e": "AQAB"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": N, "e": "AQAB"},
            {"kty": "RSA", "kid": "ops", "key_ops": ["encrypt"], "n": N, "e": "AQAB"},
            {"kty": "RSA", "kid": 7, "n": N, "e": "AQAB"},
            {"kty": "EC", "kid": "p256-as-384", "alg": "ES384", "crv": "P-256", "x": P256, "y": P256},
            {"kty": "EC", "kid": "short", "crv": "P-384", "x": P256, "y": P256},
            {"kty": "EC", "kid": "p521", "crv": "P-521", "x": P256, "y": P256},
            {"kty": "OKP", "kid": "x25519", "crv": "X25519", "x": ED},
            {"kty": "OKP", "kid": "ed-rs", "alg": "RS256", "crv": "Ed25519", "x": ED},
            {"kty": "RSA", "kid": "none", "alg": "none", "n": N, "e": "AQAB"},
            "not an object",
            {"kty": "RSA", "kid": "good", "alg": "RS256", "n": N, "e": "AQAB"},
        ]}));
        assert_eq!(keys, vec![(Some("good".into()), Algorithm::RS256)]);
    }

    #[test]
    fn token_jwks_without_keys_array_is_an_error() {
        let Value::Object(body) = json!({"jwks": []}) else {
            unreachable!()
        };
        assert!(parse_jwks(&body).is_err());
    }

    #[tokio::test]
    async fn token_jwks_state_is_per_introspector_and_source() {
        let cache = JwksCache::new(
            IdpClient::new(Duration::from_millis(200)),
            Settings {
                refetch_interval: Duration::from_secs(10),
                retry_backoff: Duration::from_secs(1),
                max_stale: Duration::from_secs(3600),
            },
            Arc::new(Metrics::new()),
        );
        let spec = |uri: &str| -> crate::resources::TokenIntrospectorSpec {
            serde_json::from_value(json!({
                "type": "jwt", "jwt": {"iss": "https://issuer"}, "jwks_uri": uri
            }))
            .unwrap()
        };
        // Nothing listens on port 9: both fail, each under its own state.
        for uri in ["http://127.0.0.1:9/a", "http://127.0.0.1:9/b"] {
            let i = Introspector::compile("same-name", &spec(uri)).unwrap();
            let super::super::Trust::Jwks(source) = &i.trust else {
                unreachable!()
            };
            let e = cache.keys(&i, source, Some("k")).await.err().unwrap();
            assert!(e.is_internal(), "{e:?}");
        }
        assert_eq!(cache.state_count(), 2);
    }
}
