//! The OpenID userinfo call made before a User is created.

use std::time::Duration;

use serde_json::{Map, Value};

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

/// Calls userinfo endpoints. Messages name the endpoint and the failure, never the token.
#[derive(Clone)]
pub struct UserinfoClient {
    http: reqwest::Client,
}

impl Default for UserinfoClient {
    fn default() -> Self {
        Self::new(USERINFO_TIMEOUT)
    }
}

impl UserinfoClient {
    pub fn new(timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            // A redirect could carry the caller's token to another origin: refuse them.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("building the userinfo HTTP client");
        UserinfoClient { http }
    }

    /// `GET <url>` with `Authorization: <scheme> <token>`. The answer must be a JSON
    /// object; when it has a `sub`, that must be `expected_sub` (OpenID Connect Core
    /// 5.3.2: otherwise the answer is about someone else and must not be used).
    pub async fn fetch(
        &self,
        url: &str,
        scheme: &str,
        token: &str,
        expected_sub: &str,
    ) -> Result<Map<String, Value>, UserinfoError> {
        let transient = |what: String| UserinfoError::Transient(format!("userinfo {url}: {what}"));
        let permanent = |what: String| UserinfoError::Permanent(format!("userinfo {url}: {what}"));
        let mut response = self
            .http
            .get(url)
            .header(reqwest::header::AUTHORIZATION, format!("{scheme} {token}"))
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| {
                // reqwest's messages carry the URL but never request headers.
                let e = e.without_url();
                if e.is_timeout() {
                    permanent(format!("timed out: {e}"))
                } else {
                    transient(format!("request failed: {e}"))
                }
            })?;
        let status = response.status();
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(transient(format!("answered {status}")));
        }
        if !status.is_success() {
            return Err(permanent(format!("answered {status}")));
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_USERINFO_BYTES as u64)
        {
            return Err(permanent(format!(
                "answer is larger than {MAX_USERINFO_BYTES} bytes"
            )));
        }
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_USERINFO_BYTES {
                        return Err(permanent(format!(
                            "answer is larger than {MAX_USERINFO_BYTES} bytes"
                        )));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) if e.is_timeout() => {
                    return Err(permanent(format!("timed out: {}", e.without_url())))
                }
                Err(e) => return Err(transient(format!("reading: {}", e.without_url()))),
            }
        }
        let answer: Map<String, Value> = serde_json::from_slice(&body).map_err(|_| {
            permanent("answer is not a JSON object (signed userinfo is not supported)".into())
        })?;
        // OpenID Connect Core 5.3.2: `sub` is required and must be the token's; without it
        // the answer could describe someone else.
        match answer.get("sub") {
            None => return Err(permanent("answer has no `sub`".into())),
            Some(Value::String(s)) if s == expected_sub => {}
            Some(_) => return Err(permanent("answer's `sub` is not the token's".into())),
        }
        Ok(answer)
    }
}
