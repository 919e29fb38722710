//! The OpenID userinfo call made before a User is created.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::outbound::{CallError, IdpClient};

/// One attempt may take this long, connection included.
pub const USERINFO_TIMEOUT: Duration = Duration::from_secs(2);
/// A userinfo answer larger than this is refused (it becomes a User's `data`).
pub const MAX_USERINFO_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserinfoError {
    /// Connection refused or reset, 5xx, 429: worth one more try.
    #[error("{0}")]
    Transient(String),
    /// Timeout, 4xx, an answer that is not a JSON object, a different `sub`: retrying
    /// would only repeat it (or, for a timeout, spend the request's time twice).
    #[error("{0}")]
    Permanent(String),
}

impl UserinfoError {
    pub fn is_transient(&self) -> bool {
        matches!(self, UserinfoError::Transient(_))
    }
}

/// Calls userinfo endpoints through the client shared with every identity-provider call.
/// Messages name the endpoint and the failure, never the token.
#[derive(Clone)]
pub struct UserinfoClient {
    http: IdpClient,
}

impl Default for UserinfoClient {
    fn default() -> Self {
        Self::new(IdpClient::new(USERINFO_TIMEOUT))
    }
}

impl UserinfoClient {
    pub fn new(http: IdpClient) -> Self {
        UserinfoClient { http }
    }

    /// `GET <url>` with `Authorization: <scheme> <token>`. The answer must be a JSON
    /// object whose `sub` is `expected_sub` (OpenID Connect Core 5.3.2: otherwise the
    /// answer is about someone else, or no one, and must not be used).
    pub async fn fetch(
        &self,
        url: &str,
        scheme: &str,
        token: &str,
        expected_sub: &str,
    ) -> Result<Map<String, Value>, UserinfoError> {
        let permanent = |what: &str| UserinfoError::Permanent(format!("userinfo {url}: {what}"));
        let authorization = format!("{scheme} {token}");
        let answer = self
            .http
            .get_json(url, Some(&authorization), MAX_USERINFO_BYTES)
            .await
            .map_err(|e| {
                let what = match e {
                    CallError::NotJson | CallError::NotObject => {
                        "answer is not a JSON object (signed userinfo is not supported)".into()
                    }
                    ref e => e.to_string(),
                };
                if e.is_transient() {
                    UserinfoError::Transient(format!("userinfo {url}: {what}"))
                } else {
                    permanent(&what)
                }
            })?;
        match answer.get("sub") {
            None => Err(permanent("answer has no `sub`")),
            Some(Value::String(s)) if s == expected_sub => Ok(answer),
            Some(_) => Err(permanent("answer's `sub` is not the token's")),
        }
    }
}
