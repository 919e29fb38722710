//! The HTTP client that talks to identity providers (JWKS, discovery, introspection).
//!
//! Every call is bounded in time and in answer size, follows no redirects, and reports
//! errors in words that never quote a token, a secret or the Authorization header.

use std::time::Duration;

use http::HeaderValue;
use reqwest::redirect::Policy;
use serde_json::{Map, Value};

#[derive(Clone)]
pub(crate) struct Http {
    client: reqwest::Client,
    max_body: usize,
}

impl Http {
    pub fn new(timeout: Duration, max_body: usize) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            // The configured URL is the endpoint: a redirect elsewhere is a misconfiguration
            // or an attack, and must not carry the introspection credentials along.
            .redirect(Policy::none())
            .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client for identity providers builds (rustls, no system config)");
        Http { client, max_body }
    }

    pub async fn get_json(&self, url: &str) -> Result<Map<String, Value>, String> {
        let request = self
            .client
            .get(url)
            .header(http::header::ACCEPT, "application/json");
        self.send(request).await
    }

    /// An RFC 7662 call: `POST` form `token=...`, with the configured `Authorization`.
    pub async fn introspect(
        &self,
        url: &str,
        authorization: Option<&str>,
        token: &str,
    ) -> Result<Map<String, Value>, String> {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("token", token)
            .append_pair("token_type_hint", "access_token")
            .finish();
        let mut request = self
            .client
            .post(url)
            .header(http::header::ACCEPT, "application/json")
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body);
        if let Some(value) = authorization {
            let mut value = HeaderValue::from_str(value)
                .map_err(|_| "the configured authorization is not a valid header value")?;
            // Keeps it out of any debug output of the request.
            value.set_sensitive(true);
            request = request.header(http::header::AUTHORIZATION, value);
        }
        self.send(request).await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Map<String, Value>, String> {
        let mut response = request.send().await.map_err(describe)?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("answered HTTP {}", status.as_u16()));
        }
        if response
            .content_length()
            .is_some_and(|n| n > self.max_body as u64)
        {
            return Err(format!("answer is larger than {} bytes", self.max_body));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(describe)? {
            if body.len() + chunk.len() > self.max_body {
                return Err(format!("answer is larger than {} bytes", self.max_body));
            }
            body.extend_from_slice(&chunk);
        }
        match serde_json::from_slice(&body) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) => Err("answer is not a JSON object".into()),
            Err(_) => Err("answer is not JSON".into()),
        }
    }
}

/// reqwest's own message names the URL; ours says only what went wrong.
fn describe(e: reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "could not connect".into()
    } else if e.is_redirect() {
        "redirected (redirects are not followed)".into()
    } else if e.is_body() || e.is_decode() {
        "answer could not be read".into()
    } else {
        "request failed".into()
    }
}
