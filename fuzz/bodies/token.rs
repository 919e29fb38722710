//! Fuzz body `token`: JWT parsing and validation through `token::TokenVerifier::validate`,
//! against the trust store of a fixed configuration: an HMAC secret, an HMAC secret with
//! an audience and no leeway, and static keys (RSA and EC keys of tests/fixtures/keys, an
//! OCT key).
//!
//! Input: `MODE REST`. The first byte, mod 16, chooses the mode (see [`Mode`]):
//! - 0..=3, raw: `REST` is the token itself (UTF-8; else nothing to do);
//! - otherwise `REST` is `HEADER 0xFF CLAIMS [0xFF TWEAK]`, the bytes of a JWT's header and
//!   claims (JSON, or not), base64url-encoded and signed: 4..=6 with the trusted HMAC
//!   secret, 7 with a wrong secret, 8 with the RSA key (slow: rarely), 9 and 10 with the EC
//!   key, 11 with HS256 keyed by the RSA *public* key (algorithm confusion), 12..=15 with
//!   the trusted secret and then one byte of the token changed at `TWEAK`'s position.
//!
//! Properties: no panic; a token not signed with a trusted key (modes 7 and 11) is never
//! accepted; an accepted token verifies independently with a key of its introspector for
//! its `alg`, names that introspector's issuer, is not expired, not yet valid or for
//! another audience, and its claims are its payload; validating twice gives the same
//! answer (the caches agree with a fresh check); an error never quotes the token.

#[path = "common.rs"]
mod common;

use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use portcullis::metrics::Metrics;
use portcullis::outbound::IdpClient;
use portcullis::snapshot::Snapshot;
use portcullis::token::{TokenSettings, TokenVerifier, ValidToken};
use serde_json::{json, Map, Value};

pub const HMAC_ISS: &str = "https://hmac.fuzz.example";
pub const HMAC_SECRET: &str = "fuzz-hmac-secret";
pub const AUD_ISS: &str = "https://aud.fuzz.example";
pub const AUD_SECRET: &str = "fuzz-aud-secret";
pub const AUD: &str = "fuzz-api";
pub const KEYS_ISS: &str = "https://keys.fuzz.example";
pub const OCT_KEY: &str = "fuzz-oct-key";
pub const WRONG_SECRET: &str = "not-the-secret";

const RSA_PUB: &str = include_str!("../../tests/fixtures/keys/rsa-a.pub.pem");
const RSA_KEY: &str = include_str!("../../tests/fixtures/keys/rsa-a.key.pem");
const EC_PUB: &str = include_str!("../../tests/fixtures/keys/ec-p256.pub.pem");
const EC_KEY: &str = include_str!("../../tests/fixtures/keys/ec-p256.key.pem");

/// The fixed configuration, as a JSON file's text.
pub fn config() -> String {
    json!([
        {"resourceType": "TokenIntrospector", "id": "hmac", "type": "jwt",
         "jwt": {"iss": HMAC_ISS, "secret": HMAC_SECRET}},
        {"resourceType": "TokenIntrospector", "id": "aud", "type": "jwt",
         "jwt": {"iss": AUD_ISS, "secret": AUD_SECRET, "allowedAudiences": [AUD], "leewaySeconds": 0}},
        {"resourceType": "TokenIntrospector", "id": "keys", "type": "jwt",
         "jwt": {"iss": KEYS_ISS, "keys": [
             {"kty": "RSA", "alg": "RS256", "format": "PEM", "pub": RSA_PUB, "kid": "rsa-a"},
             {"kty": "RSA", "alg": "PS256", "format": "PEM", "pub": RSA_PUB},
             {"kty": "EC", "alg": "ES256", "format": "PEM", "pub": EC_PUB, "kid": "ec-p256"},
             {"kty": "OCT", "alg": "HS384", "format": "plain", "k": OCT_KEY, "kid": "oct"}
         ]},
         "claimToHeaders": [{"header": "x-tenant", "claim": "tenant"}]}
    ])
    .to_string()
}

/// The keys each issuer's tokens may verify with, independently of portcullis.
fn trusted_keys(iss: &str) -> Vec<(Algorithm, DecodingKey)> {
    let secret = |s: &str| DecodingKey::from_secret(s.as_bytes()).expect("a secret");
    match iss {
        HMAC_ISS => vec![(Algorithm::HS256, secret(HMAC_SECRET))],
        AUD_ISS => vec![(Algorithm::HS256, secret(AUD_SECRET))],
        KEYS_ISS => {
            let rsa = || DecodingKey::from_rsa_pem(RSA_PUB.as_bytes()).expect("RSA key");
            vec![
                (Algorithm::RS256, rsa()),
                (Algorithm::PS256, rsa()),
                (
                    Algorithm::ES256,
                    DecodingKey::from_ec_pem(EC_PUB.as_bytes()).expect("EC key"),
                ),
                (Algorithm::HS384, secret(OCT_KEY)),
            ]
        }
        _ => Vec::new(),
    }
}

struct Setup {
    snapshot: Snapshot,
    http: IdpClient,
    metrics: Arc<Metrics>,
    rsa: EncodingKey,
    ec: EncodingKey,
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let mut compiler = portcullis::snapshot::Compiler::default();
        portcullis::resources::for_each_document(
            std::path::Path::new("token-fuzz.json"),
            &config(),
            |item| compiler.push(item),
        );
        Setup {
            snapshot: compiler.finish().expect("the fixed configuration compiles"),
            http: IdpClient::new(std::time::Duration::from_millis(100)),
            metrics: Arc::new(Metrics::new()),
            rsa: EncodingKey::from_rsa_pem(RSA_KEY.as_bytes()).expect("RSA private key"),
            ec: EncodingKey::from_ec_pem(EC_KEY.as_bytes()).expect("EC private key"),
        }
    })
}

fn header_alg(header: &[u8]) -> Option<Algorithm> {
    let v: Value = serde_json::from_slice(header).ok()?;
    serde_json::from_value(v.get("alg")?.clone()).ok()
}

/// `HEADER.CLAIMS.SIGNATURE`, the signature made by `sign` over the first two parts.
fn signed(header: &[u8], claims: &[u8], alg: Algorithm, key: &EncodingKey) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).expect("signing");
    format!("{message}.{signature}")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Raw,
    Hmac,
    WrongSecret,
    Rsa,
    Ec,
    Confusion,
    Tweak,
}

impl Mode {
    pub fn of(byte: u8) -> Mode {
        match byte % 16 {
            0..=3 => Mode::Raw,
            4..=6 => Mode::Hmac,
            7 => Mode::WrongSecret,
            8 => Mode::Rsa,
            9 | 10 => Mode::Ec,
            11 => Mode::Confusion,
            _ => Mode::Tweak,
        }
    }

    /// The first byte of an input of this mode (the smoke test writes the seeds with it).
    #[allow(dead_code)]
    pub fn byte(self) -> u8 {
        match self {
            Mode::Raw => 0,
            Mode::Hmac => 4,
            Mode::WrongSecret => 7,
            Mode::Rsa => 8,
            Mode::Ec => 9,
            Mode::Confusion => 11,
            Mode::Tweak => 12,
        }
    }
}

pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let setup = setup();
    let mode = Mode::of(mode);
    let token = if mode == Mode::Raw {
        match std::str::from_utf8(rest) {
            Ok(t) => t.to_string(),
            Err(_) => return,
        }
    } else {
        let parts = common::split(rest, 3);
        let (header, claims) = (parts[0], parts[1]);
        let hmac = |default| match header_alg(header) {
            Some(a @ (Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)) => a,
            _ => default,
        };
        let secret = |s: &str| EncodingKey::from_secret(s.as_bytes()).expect("a secret");
        match mode {
            Mode::Raw => unreachable!("read above"),
            Mode::Hmac => signed(header, claims, hmac(Algorithm::HS256), &secret(HMAC_SECRET)),
            Mode::WrongSecret => signed(
                header,
                claims,
                hmac(Algorithm::HS256),
                &secret(WRONG_SECRET),
            ),
            Mode::Rsa => {
                let alg = match header_alg(header) {
                    Some(
                        a @ (Algorithm::RS256
                        | Algorithm::RS384
                        | Algorithm::RS512
                        | Algorithm::PS256
                        | Algorithm::PS384
                        | Algorithm::PS512),
                    ) => a,
                    _ => Algorithm::RS256,
                };
                signed(header, claims, alg, &setup.rsa)
            }
            Mode::Ec => signed(header, claims, Algorithm::ES256, &setup.ec),
            Mode::Confusion => signed(header, claims, hmac(Algorithm::HS256), &secret(RSA_PUB)),
            Mode::Tweak => {
                let mut token =
                    signed(header, claims, hmac(Algorithm::HS256), &secret(HMAC_SECRET))
                        .into_bytes();
                let tweak = parts[2];
                if !token.is_empty() && tweak.len() >= 2 {
                    let at = (usize::from(tweak[0]) << 8 | usize::from(tweak[1])) % token.len();
                    token[at] = tweak.get(2).copied().unwrap_or(b'A');
                }
                match String::from_utf8(token) {
                    Ok(t) => t,
                    Err(_) => return,
                }
            }
        }
    };

    let verifier = TokenVerifier::with_client(
        TokenSettings::default(),
        setup.http.clone(),
        setup.metrics.clone(),
    );
    let trust = &setup.snapshot.root.trust;
    let first = common::block_on(verifier.validate(trust, &token));
    let second = common::block_on(verifier.validate(trust, &token));
    match (&first, &second) {
        (Ok(a), Ok(b)) => assert_eq!(a.claims, b.claims, "a cached token changed its claims"),
        (Err(a), Err(b)) => assert_eq!(a, b, "a token refused twice for different reasons"),
        _ => panic!("validated twice, answered differently: {first:?} then {second:?}"),
    }
    match first {
        Ok(valid) => {
            assert!(
                mode != Mode::WrongSecret && mode != Mode::Confusion,
                "accepted a token signed with a key it does not trust ({mode:?})"
            );
            check_accepted(&token, &valid);
        }
        Err(e) => {
            let _ = e.reason();
            let message = e.to_string();
            if let Some((_, signature)) = token.rsplit_once('.') {
                if signature.len() >= 16 {
                    assert!(
                        !message.contains(signature),
                        "an error quotes the token: {message}"
                    );
                }
            }
        }
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn check_accepted(token: &str, valid: &ValidToken) {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        panic!("accepted a token that is not three parts");
    };
    let header: Map<String, Value> = URL_SAFE_NO_PAD
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .expect("an accepted token's header is a JSON object");
    let payload: Map<String, Value> = URL_SAFE_NO_PAD
        .decode(p)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .expect("an accepted token's payload is a JSON object");
    assert!(!header.contains_key("crit"), "accepted a token with `crit`");
    let alg: Algorithm = serde_json::from_value(header["alg"].clone()).expect("a known alg");
    let iss = payload
        .get("iss")
        .and_then(Value::as_str)
        .expect("an `iss`");
    assert_eq!(
        valid.introspector.issuer.as_deref(),
        Some(iss),
        "accepted by an introspector of another issuer"
    );
    let message = format!("{h}.{p}");
    let verifies = trusted_keys(iss).iter().any(|(key_alg, key)| {
        *key_alg == alg
            && jsonwebtoken::crypto::verify(s, message.as_bytes(), key, alg).unwrap_or(false)
    });
    assert!(
        verifies,
        "accepted a token that no trusted key of {iss} signed (alg {alg:?})"
    );
    assert_eq!(
        valid.claims.as_object(),
        Some(&payload),
        "the claims are not the token's payload"
    );

    let leeway = valid.introspector.leeway.as_secs();
    let now = now();
    let exp = payload
        .get("exp")
        .and_then(Value::as_f64)
        .expect("an accepted token has a numeric `exp`");
    assert!(
        exp + leeway as f64 + 1.0 >= now as f64,
        "accepted an expired token"
    );
    if let Some(nbf) = payload.get("nbf").and_then(Value::as_f64) {
        assert!(
            nbf <= (now + leeway + 1) as f64,
            "accepted a token before its `nbf`"
        );
    }
    if iss == AUD_ISS {
        let aud_ok = match payload.get("aud") {
            Some(Value::String(a)) => a == AUD,
            Some(Value::Array(list)) => list.iter().any(|a| a == AUD),
            _ => false,
        };
        assert!(aud_ok, "accepted a token for another audience");
    }
}
