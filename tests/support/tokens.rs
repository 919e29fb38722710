//! Tokens for tests: JWTs minted with jsonwebtoken (HS256 with a shared secret, or signed
//! with a test key of tests/fixtures/keys), a handcrafted `alg: none`, the test keys'
//! JWKs, and a look inside any JWT.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Map, Value};

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// A JWT claims set under construction. `Jwt::new(iss, sub)` starts with `iat` = now
/// and `exp` = now + 10 minutes.
#[derive(Debug, Clone)]
pub struct Jwt {
    claims: Map<String, Value>,
    kid: Option<String>,
}

impl Jwt {
    pub fn new(iss: &str, sub: &str) -> Self {
        let now = now();
        let mut claims = Map::new();
        claims.insert("iss".into(), json!(iss));
        claims.insert("sub".into(), json!(sub));
        claims.insert("iat".into(), json!(now));
        claims.insert("exp".into(), json!(now + 600));
        Jwt { claims, kid: None }
    }

    /// No claims at all.
    pub fn empty() -> Self {
        Jwt {
            claims: Map::new(),
            kid: None,
        }
    }

    pub fn iss(self, iss: &str) -> Self {
        self.claim("iss", iss)
    }

    pub fn sub(self, sub: &str) -> Self {
        self.claim("sub", sub)
    }

    /// `exp` = an absolute Unix time.
    pub fn exp(self, exp: i64) -> Self {
        self.claim("exp", exp)
    }

    /// `exp` = now + `secs` (negative: in the past).
    pub fn exp_in(self, secs: i64) -> Self {
        self.exp(now() + secs)
    }

    /// Expired an hour ago (well beyond any clock-skew leeway).
    pub fn expired(self) -> Self {
        self.claim("iat", now() - 7200).exp_in(-3600)
    }

    /// `nbf` = an absolute Unix time.
    pub fn nbf(self, nbf: i64) -> Self {
        self.claim("nbf", nbf)
    }

    /// `nbf` = now + `secs`.
    pub fn nbf_in(self, secs: i64) -> Self {
        self.nbf(now() + secs)
    }

    /// Any claim, with any JSON value.
    pub fn claim(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.claims.insert(name.to_string(), value.into());
        self
    }

    /// Every member of a JSON object as a claim (replacing those of the same name).
    pub fn claims_from(mut self, extra: Value) -> Self {
        let Value::Object(extra) = extra else {
            panic!("claims_from takes a JSON object, not {extra}");
        };
        self.claims.extend(extra);
        self
    }

    /// Removes a claim (for example `exp`).
    pub fn without(mut self, name: &str) -> Self {
        self.claims.remove(name);
        self
    }

    /// Sets the header's `kid`.
    pub fn kid(mut self, kid: &str) -> Self {
        self.kid = Some(kid.to_string());
        self
    }

    pub fn claims(&self) -> Value {
        Value::Object(self.claims.clone())
    }

    /// Signed with HS256 and this shared secret.
    pub fn sign_hs256(&self, secret: &str) -> String {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = self.kid.clone();
        encode(
            &header,
            &self.claims(),
            &EncodingKey::from_secret(secret.as_bytes()).unwrap(),
        )
    }

    /// Signed with the test key `key` of tests/fixtures/keys and `alg` (header `kid` as
    /// set with [`Jwt::kid`]).
    pub fn sign_with(&self, key: &str, alg: Algorithm) -> String {
        sign(key, alg, self.kid.as_deref(), &self.claims())
    }

    /// `{"alg":"none","typ":"JWT"}`, these claims and an empty signature: a token that
    /// must never be accepted.
    pub fn alg_none(&self) -> String {
        self.with_header_unsigned(json!({"alg": "none", "typ": "JWT"}))
    }

    /// Any header and these claims, with an empty signature.
    pub fn with_header_unsigned(&self, header: Value) -> String {
        format!("{}.{}.", b64_json(&header), b64_json(&self.claims()))
    }
}

/// The base64url (unpadded) of a JSON value, as in a JWT's header and payload.
pub fn b64_json(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).expect("serialize JSON"))
}

/// `Bearer <token>`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// `Basic base64(user:password)`.
pub fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

/// A file of tests/fixtures/keys, as text.
pub fn fixture(name: &str) -> String {
    let path = super::repo_path("tests/fixtures/keys").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The public JWK of a test key (`kid` = the key's name).
pub fn jwk(name: &str) -> Value {
    serde_json::from_str(&fixture(&format!("{name}.jwk.json")))
        .unwrap_or_else(|e| panic!("{name}.jwk.json: {e}"))
}

/// [`jwk`] with some members replaced or added.
pub fn jwk_with(name: &str, extra: Value) -> Value {
    let mut k = jwk(name);
    for (field, value) in extra.as_object().expect("a JSON object") {
        k[field] = value.clone();
    }
    k
}

/// `{"keys": [jwk(name), ...]}`.
pub fn jwks(names: &[&str]) -> Value {
    json!({"keys": names.iter().map(|n| jwk(n)).collect::<Vec<_>>()})
}

/// A test key's private key (`<name>.key.pem`: RSA, EC or Ed25519), parsed once per test
/// binary (PEM parsing is not free).
pub fn encoding_key(name: &str) -> EncodingKey {
    static KEYS: OnceLock<Mutex<HashMap<String, EncodingKey>>> = OnceLock::new();
    let mut keys = KEYS.get_or_init(Default::default).lock().unwrap();
    keys.entry(name.to_string())
        .or_insert_with(|| {
            let pem = fixture(&format!("{name}.key.pem"));
            let pem = pem.as_bytes();
            EncodingKey::from_rsa_pem(pem)
                .or_else(|_| EncodingKey::from_ec_pem(pem))
                .or_else(|_| EncodingKey::from_ed_pem(pem))
                .unwrap_or_else(|e| panic!("{name}.key.pem is no private key: {e}"))
        })
        .clone()
}

/// Claims of `iss` for subject `alice`, valid for ten minutes, plus `extra`.
pub fn claims(iss: &str, extra: Value) -> Value {
    Jwt::new(iss, "alice").claims_from(extra).claims()
}

/// A JWT of these claims signed with the test key `key`, header `kid` as given.
pub fn sign(key: &str, alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    encode(&header, claims, &encoding_key(key))
}

/// RS256 with `rsa-a`, `kid: rsa-a`, [`claims`] of `iss` plus `extra`.
pub fn rs256(iss: &str, extra: Value) -> String {
    sign(
        "rsa-a",
        Algorithm::RS256,
        Some("rsa-a"),
        &claims(iss, extra),
    )
}

fn encode(header: &Header, claims: &Value, key: &EncodingKey) -> String {
    jsonwebtoken::encode(header, claims, key).expect("sign a JWT")
}

/// The header and claims of a JWT, decoded without any check (the test's own view).
pub fn jwt_parts(token: &str) -> (Value, Value) {
    let part = |n: usize| -> Value {
        let text = token.split('.').nth(n).unwrap_or_else(|| {
            panic!(
                "not a JWT ({} dot-separated parts)",
                token.split('.').count()
            )
        });
        let bytes = URL_SAFE_NO_PAD.decode(text).expect("JWT part is base64url");
        serde_json::from_slice(&bytes).expect("JWT part is JSON")
    };
    (part(0), part(1))
}

/// The claims of a JWT, decoded without any check.
pub fn jwt_claims(token: &str) -> Value {
    jwt_parts(token).1
}

/// `token` re-signed: the same claims, `kid` and `typ`, signed RS256 with the test key
/// `key`. Only a verifier that ignores the issuer's keys takes it.
pub fn forge_rs256(token: &str, key: &str, kid: Option<&str>) -> String {
    let (header, claims) = jwt_parts(token);
    let mut forged = Header::new(Algorithm::RS256);
    forged.kid = kid
        .map(str::to_string)
        .or_else(|| header["kid"].as_str().map(str::to_string));
    forged.typ = header["typ"].as_str().map(str::to_string);
    encode(&forged, &claims, &encoding_key(key))
}
