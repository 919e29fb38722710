//! Tokens for tests: HS256 JWTs minted with jsonwebtoken, and a handcrafted `alg: none`.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
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
        jsonwebtoken::encode(
            &header,
            &self.claims(),
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("sign HS256 JWT")
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

fn b64_json(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).expect("serialize JSON"))
}

/// `Bearer <token>`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}
