//! What the admin listener gives an operator, whichever edge asks (the gRPC operator API
//! in [`super::admin`], the explain page in [`super::explain_page`]): the operator-token
//! check, and the explanation of one request with the token presented scrubbed from it.

use std::sync::Arc;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::decision::{Authorizer, HttpRequest};
use crate::resources::REDACTED;

/// Both edges of the admin listener: the operator token and the authorizer they explain
/// with. Cheap to clone.
#[derive(Clone)]
pub struct AdminService {
    authorizer: Arc<Authorizer>,
    /// SHA-256 of the operator token: compared by digest, so the comparison leaks nothing
    /// useful about the token through timing.
    token_digest: [u8; 32],
}

/// Why a caller of the admin listener was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No `authorization: Bearer ...` at all.
    NoToken,
    /// A bearer token, but not the operator's.
    WrongToken,
}

/// One request to explain, as either edge receives it. Empty strings take the defaults:
/// `GET`, `http`, `/`.
#[derive(Debug, Default, Clone)]
pub struct ExplainInput {
    pub method: String,
    pub scheme: String,
    pub host: String,
    /// Path with the query string.
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// A bearer token; when set it replaces any `authorization` header.
    pub token: String,
    /// Decide as for a request of this namespace (empty: none, only the root's resources).
    pub namespace: String,
}

/// What an explanation says, ready for either edge. Neither the token explained nor the
/// operator token appears anywhere in it.
#[derive(Debug)]
pub struct Explained {
    pub allowed: bool,
    pub status: u16,
    pub reason: String,
    pub message: String,
    pub policy: Option<String>,
    /// The whole trace as JSON (the shape `portcullis explain --output json` prints).
    pub trace: Value,
    /// The trace as the readable tree `portcullis explain` prints.
    pub tree: String,
}

impl AdminService {
    pub fn new(authorizer: Arc<Authorizer>, operator_token: &str) -> Self {
        AdminService {
            authorizer,
            token_digest: Sha256::digest(operator_token.trim().as_bytes()).into(),
        }
    }

    /// Traces show validated claims and Users: never for a caller without the operator
    /// token. `authorization` is the header's value, `Bearer <token>`.
    pub fn check_operator(&self, authorization: Option<&str>) -> Result<(), Refusal> {
        let presented = authorization
            .and_then(bearer)
            .filter(|t| !t.is_empty())
            .ok_or(Refusal::NoToken)?;
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        if digest == self.token_digest {
            Ok(())
        } else {
            Err(Refusal::WrongToken)
        }
    }

    /// Decides `input` against the running configuration, as the ext_authz service would,
    /// and says why at every step.
    pub async fn explain(&self, input: ExplainInput) -> Explained {
        let token = input.token.trim().to_owned();
        let mut headers: Vec<(String, String)> = input
            .headers
            .into_iter()
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v))
            .filter(|(k, _)| !k.is_empty() && (token.is_empty() || k != "authorization"))
            .collect();
        if !token.is_empty() {
            headers.push(("authorization".into(), format!("Bearer {token}")));
        }
        let host = if input.host.is_empty() {
            headers
                .iter()
                .find(|(k, _)| k == "host")
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        } else {
            input.host
        };
        let request = HttpRequest {
            method: or_default(input.method, "GET").to_ascii_uppercase(),
            scheme: or_default(input.scheme, "http"),
            host,
            path: or_default(input.path, "/"),
            headers,
            remote_addr: None,
            context_extensions: Vec::new(),
            namespace: Some(input.namespace.trim().to_owned()).filter(|ns| !ns.is_empty()),
        };
        let (decision, trace) = self.authorizer.explain(&request).await;
        let mut trace_json = serde_json::to_value(&trace).unwrap_or_else(
            |e| serde_json::json!({ "error": format!("the trace does not serialise: {e}") }),
        );
        let mut tree = trace.to_tree();
        let mut message = decision.message.to_string();
        // The request context never holds a credential header's value, and a trace shows
        // claims, never the token; but the token may still have been pasted into another
        // header or the path. The token presented is not shown back, wherever it was.
        let presented = request
            .headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .and_then(|(_, v)| bearer(v))
            .unwrap_or_default();
        scrub_value(&mut trace_json, presented);
        scrub(&mut tree, presented);
        scrub(&mut message, presented);
        Explained {
            allowed: decision.allowed(),
            status: decision.http_status(),
            reason: decision.reason.to_string(),
            message,
            policy: decision.policy,
            trace: trace_json,
            tree,
        }
    }
}

/// The token of `Bearer <token>` (the scheme in any case, RFC 9110).
fn bearer(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

fn or_default(value: String, default: &str) -> String {
    if value.trim().is_empty() {
        default.to_owned()
    } else {
        value.trim().to_owned()
    }
}

/// Secrets shorter than this are not scrubbed: replacing every `a` of a trace would hide
/// more than it protects, and no token that validates is that short.
const SCRUB_MIN_LEN: usize = 8;

/// Replaces every occurrence of `secret` in `text` by the redaction marker.
fn scrub(text: &mut String, secret: &str) {
    if secret.len() >= SCRUB_MIN_LEN && text.contains(secret) {
        *text = text.replace(secret, REDACTED);
    }
}

/// [`scrub`] on every string of a JSON value, object keys included.
fn scrub_value(value: &mut Value, secret: &str) {
    if secret.len() < SCRUB_MIN_LEN {
        return;
    }
    match value {
        Value::String(s) => scrub(s, secret),
        Value::Array(items) => items.iter_mut().for_each(|v| scrub_value(v, secret)),
        Value::Object(map) => {
            if map.keys().any(|k| k.contains(secret)) {
                let entries = std::mem::take(map);
                for (mut k, mut v) in entries {
                    scrub(&mut k, secret);
                    scrub_value(&mut v, secret);
                    map.insert(k, v);
                }
            } else {
                map.values_mut().for_each(|v| scrub_value(v, secret));
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bearer_takes_the_scheme_in_any_case() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer"), None);
    }

    #[test]
    fn a_secret_is_scrubbed_from_every_string_and_key() {
        let secret = "s3cr3t-token-value";
        let mut v = json!({
            "a": format!("x {secret} y"),
            "list": [secret, 1, null],
            format!("k-{secret}"): {"deep": secret},
        });
        scrub_value(&mut v, secret);
        let text = v.to_string();
        assert!(!text.contains(secret), "{text}");
        assert_eq!(v["a"], json!(format!("x {REDACTED} y")));
        assert_eq!(v[format!("k-{REDACTED}")]["deep"], json!(REDACTED));
        let mut short = json!({"a": "abc"});
        scrub_value(&mut short, "abc");
        assert_eq!(short["a"], "abc", "too short to be a secret worth hiding");
    }
}
