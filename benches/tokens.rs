//! The cost of a token: a first RS256 verification against the cost of a cache hit.
//!
//!     cargo bench --bench tokens
//!
//! "first verification" runs with a verified-token cache that keeps nothing, so each
//! iteration parses, checks the RS256 signature and the claims, as a token seen for the
//! first time does (keys already known: a static PEM key, no network). "cache hit" is the
//! same token validated again: a SHA-256 of the token and one cache lookup. "raw signature
//! check" is the RSA verification alone, the floor for a first verification.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use criterion::{criterion_group, criterion_main, Criterion};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use portcullis::metrics::Metrics;
use portcullis::resources::TokenIntrospectorSpec;
use portcullis::token::{Introspector, TokenSettings, TokenVerifier, TrustStore};

const ISS: &str = "https://bench.example";

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/keys/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn trust() -> TrustStore {
    let spec: TokenIntrospectorSpec = serde_json::from_value(json!({
        "type": "jwt",
        "jwt": {"iss": ISS, "keys": [
            {"kty": "RSA", "alg": "RS256", "format": "PEM", "pub": fixture("rsa-a.pub.pem")}
        ]}
    }))
    .unwrap();
    let mut trust = TrustStore::default();
    trust
        .insert(Introspector::compile("bench", &spec).unwrap())
        .unwrap();
    trust
}

fn token() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({
        "iss": ISS, "sub": "bench-user", "aud": "api", "scope": "read write",
        "client_id": "bench-client", "iat": now, "exp": now + 3600,
    });
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rsa-a".into());
    let key = EncodingKey::from_rsa_pem(fixture("rsa-a.key.pem").as_bytes()).unwrap();
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

fn verifier(cache_bytes: u64) -> TokenVerifier {
    TokenVerifier::with_settings(
        TokenSettings {
            verified_cache_bytes: cache_bytes,
            ..TokenSettings::default()
        },
        Arc::new(Metrics::new()),
    )
}

fn tokens(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let trust = trust();
    let token = token();

    let uncached = verifier(0);
    c.bench_function("token/rs256_first_verification", |b| {
        b.to_async(&rt).iter(|| async {
            uncached.validate(&trust, &token).await.unwrap();
        })
    });

    // The floor: the RSA signature check alone, on the same token and key, without parsing
    // the token, choosing a key or checking claims.
    let (message, signature) = token.rsplit_once('.').unwrap();
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(fixture("rsa-a.pub.pem").as_bytes()).unwrap();
    assert!(
        jsonwebtoken::crypto::verify(signature, message.as_bytes(), &key, Algorithm::RS256)
            .unwrap()
    );
    c.bench_function("token/rs256_raw_signature_check", |b| {
        b.iter(|| {
            jsonwebtoken::crypto::verify(signature, message.as_bytes(), &key, Algorithm::RS256)
                .unwrap()
        })
    });

    let cached = verifier(TokenSettings::default().verified_cache_bytes);
    rt.block_on(cached.validate(&trust, &token)).unwrap();
    c.bench_function("token/rs256_cache_hit", |b| {
        b.to_async(&rt).iter(|| async {
            cached.validate(&trust, &token).await.unwrap();
        })
    });
}

criterion_group!(benches, tokens);
criterion_main!(benches);
