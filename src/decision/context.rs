//! The request context that every policy sees (docs/resources.md, "The request context").

use std::sync::OnceLock;

use serde_json::{json, Map, Value};

use super::HttpRequest;
use crate::policy::Context;
use crate::resources::{is_credential_header, text_weight};
use crate::token::{TokenKind, ValidToken};
use crate::users::KnownUser;

/// What stands in for a credential in the context: policies may test that one is present
/// (and its scheme), but the credential itself never reaches a policy, a trace or a log.
pub use crate::resources::REDACTED;

/// The top-level keys of the context, in the order the whole context lists them. The token
/// sits at `jwt` or `token` (opaque), whichever it is.
pub const KEYS: [&str; 13] = [
    "request-method",
    "scheme",
    "uri",
    "query-string",
    "params",
    "headers",
    "remote-addr",
    "context-extensions",
    "namespace",
    "jwt",
    "token",
    "client",
    "user",
];

/// The request context of one request, built part by part as policies read it: a policy that
/// reads `uri` and `jwt.iss` costs neither a copy of the headers nor a parse of the User's
/// data. The token's claims are never copied: `jwt` (or `token`) is the validated claims
/// themselves, shared with the token cache.
pub struct RequestContext<'a> {
    request: &'a HttpRequest,
    token: Option<&'a ValidToken>,
    user: Option<&'a KnownUser>,
    parts: [OnceLock<Option<Value>>; KEYS.len()],
    whole: OnceLock<Value>,
}

impl<'a> RequestContext<'a> {
    pub fn new(
        request: &'a HttpRequest,
        token: Option<&'a ValidToken>,
        user: Option<&'a KnownUser>,
    ) -> Self {
        Self {
            request,
            token,
            user,
            parts: Default::default(),
            whole: OnceLock::new(),
        }
    }

    fn token_key(&self) -> Option<&'static str> {
        self.token.map(|t| match t.kind {
            TokenKind::Jwt => "jwt",
            TokenKind::Opaque => "token",
        })
    }

    /// The part at `KEYS[i]`, built.
    fn build(&self, i: usize) -> Option<Value> {
        let request = self.request;
        let (path, query) = request.split_path();
        Some(match KEYS[i] {
            "request-method" => Value::String(request.method.to_ascii_lowercase()),
            "scheme" => Value::String(request.scheme.clone()),
            "uri" => Value::String(path.to_string()),
            // Any `%` may hide an encoded `access_token` name (`access%5Ftoken`).
            "query-string" if query.contains("access_token=") || query.contains('%') => {
                Value::String(params_string(query))
            }
            "query-string" => Value::String(query.to_string()),
            "params" => Value::Object(params(query)),
            "headers" => Value::Object(headers(request)),
            "remote-addr" => Value::String(request.remote_addr.clone()?),
            "context-extensions" => Value::Object(
                request
                    .context_extensions
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect(),
            ),
            "namespace" => Value::String(request.namespace.clone()?),
            "client" => json!({ "id": self.token?.client_id()? }),
            "user" => self.user?.to_context(),
            _ => return None,
        })
    }
}

impl RequestContext<'_> {
    /// The whole context, owned: for an evaluation that leaves this request's borrows (the
    /// pool of costly evaluations). Built straight into the copy unless a policy built it
    /// already.
    pub fn to_owned_whole(&self) -> Value {
        self.whole.get().cloned().unwrap_or_else(|| whole(self))
    }

    /// The context's [`crate::resources::json_weight`], or a bound above it, without building it: the token's
    /// claims and the User were weighed when they were read; the request's own parts are
    /// weighed here, in one pass over the headers.
    pub fn weight(&self) -> u64 {
        let request = self.request;
        let (path, query) = request.split_path();
        let pairs = |list: &[(String, String)]| -> u64 {
            list.iter()
                .map(|(k, v)| u64::from(text_weight(k)) + u64::from(text_weight(v)))
                .sum()
        };
        // Each parameter is a key and a value, in `params` and again in `query-string`.
        let params = 2 * (query.bytes().filter(|&b| b == b'&').count() as u64 + 1);
        KEYS.len() as u64
            + u64::from(text_weight(path))
            + 2 * u64::from(text_weight(query))
            + params
            + pairs(&request.headers)
            + pairs(&request.context_extensions)
            + self.token.map_or(0, |t| u64::from(t.claims_weight))
            // The User's text bounds its values: each takes at least a byte of it.
            + self.user.map_or(0, |u| 8 + u.size() as u64)
    }
}

/// The whole context as one value, as json-schema policies and `explain` see it: a part
/// already built is copied, the others are built straight into it (not cached and copied).
fn whole(ctx: &RequestContext) -> Value {
    let mut map = Map::with_capacity(KEYS.len());
    for (i, key) in KEYS.into_iter().enumerate() {
        let part = match (ctx.token, ctx.parts[i].get()) {
            (Some(token), _) if ctx.token_key() == Some(key) => Some((*token.claims).clone()),
            (_, Some(built)) => built.clone(),
            (_, None) => ctx.build(i),
        };
        if let Some(v) = part {
            map.insert(key.to_string(), v);
        }
    }
    Value::Object(map)
}

impl Context for RequestContext<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        if let Some(token) = self.token {
            if self.token_key() == Some(key) {
                return Some(&token.claims);
            }
        }
        let i = KEYS.iter().position(|k| *k == key)?;
        self.parts[i].get_or_init(|| self.build(i)).as_ref()
    }

    fn whole(&self) -> &Value {
        self.whole.get_or_init(|| whole(self))
    }
}

/// The whole request context of a request (tests, fuzzing, tools).
pub fn build(request: &HttpRequest, token: Option<&ValidToken>, user: Option<&KnownUser>) -> Value {
    whole(&RequestContext::new(request, token, user))
}

/// The query string with the value of any `access_token` parameter redacted. The name is
/// compared decoded, as the application will read it: `access%5Ftoken` is `access_token`.
fn params_string(query: &str) -> String {
    query
        .split('&')
        .map(|pair| {
            let name = pair.split_once('=').map_or(pair, |(name, _)| name);
            match form_urlencoded::parse(name.as_bytes()).next() {
                Some((decoded, _)) if decoded == "access_token" => format!("{name}={REDACTED}"),
                _ => pair.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Query parameters; a repeated name becomes a list of its values.
fn params(query: &str) -> Map<String, Value> {
    let mut params = Map::new();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        // RFC 6750 §2.3 lets a client put its token in the query: never in the context.
        let v = if k == "access_token" {
            Value::String(REDACTED.into())
        } else {
            Value::String(v.into_owned())
        };
        match params.get_mut(k.as_ref()) {
            None => {
                params.insert(k.into_owned(), v);
            }
            Some(Value::Array(list)) => list.push(v),
            Some(first) => *first = Value::Array(vec![first.take(), v]),
        }
    }
    params
}

/// An authentication scheme of IANA's registry, or NTLM or AWS's, in any case. Only such a
/// word is shown before `[redacted]`: what a client sends before the first space is not
/// always a scheme, and may be the token itself (`<token> x`).
fn is_auth_scheme(word: &str) -> bool {
    const SCHEMES: [&str; 16] = [
        "aws4-hmac-sha256",
        "basic",
        "bearer",
        "concealed",
        "digest",
        "dpop",
        "gnap",
        "hoba",
        "mutual",
        "negotiate",
        "ntlm",
        "oauth",
        "privatetoken",
        "scram-sha-1",
        "scram-sha-256",
        "vapid",
    ];
    SCHEMES.iter().any(|s| s.eq_ignore_ascii_case(word))
}

/// Headers by lower-case name; repeated headers are joined with `,` as HTTP allows.
fn headers(request: &HttpRequest) -> Map<String, Value> {
    let mut out = Map::with_capacity(request.headers.len());
    for (k, v) in &request.headers {
        let v = match k.as_str() {
            "authorization" | "proxy-authorization" => match v.split_once(' ') {
                Some((scheme, _)) if is_auth_scheme(scheme) => [scheme, " ", REDACTED].concat(),
                _ => REDACTED.to_string(),
            },
            other if is_credential_header(other) => REDACTED.to_string(),
            _ => v.clone(),
        };
        match out.get_mut(k) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(&v);
            }
            _ => {
                out.insert(k.clone(), Value::String(v));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_the_documented_shape() {
        let req = HttpRequest {
            method: "GET".into(),
            scheme: "https".into(),
            host: "api.example.com".into(),
            path: "/fhir/Patient/pt-1?_count=1&tag=a&tag=b&q=a%20b".into(),
            headers: vec![
                ("authorization".into(), "Bearer secret-token".into()),
                (
                    "proxy-authorization".into(),
                    "Basic cHJveHktc2VjcmV0".into(),
                ),
                ("cookie".into(), "session=cookie-secret".into()),
                ("host".into(), "api.example.com".into()),
                ("x-multi".into(), "1".into()),
                ("x-multi".into(), "2".into()),
            ],
            remote_addr: Some("10.0.0.6".into()),
            context_extensions: vec![("route".into(), "fhir".into())],
            namespace: Some("team-a".into()),
        };
        let ctx = build(&req, None, None);
        assert_eq!(ctx["request-method"], "get");
        assert_eq!(ctx["uri"], "/fhir/Patient/pt-1");
        assert_eq!(ctx["query-string"], "_count=1&tag=a&tag=b&q=a%20b");
        assert_eq!(
            ctx["params"],
            json!({"_count": "1", "tag": ["a", "b"], "q": "a b"})
        );
        assert_eq!(ctx["headers"]["x-multi"], "1,2");
        assert_eq!(ctx["headers"]["authorization"], "Bearer [redacted]");
        assert_eq!(ctx["headers"]["proxy-authorization"], "Basic [redacted]");
        assert_eq!(ctx["headers"]["cookie"], "[redacted]");
        for secret in ["cHJveHktc2VjcmV0", "cookie-secret"] {
            assert!(!ctx.to_string().contains(secret), "{secret}");
        }
        assert_eq!(ctx["remote-addr"], "10.0.0.6");
        assert_eq!(ctx["context-extensions"], json!({"route": "fhir"}));
        assert_eq!(ctx["namespace"], "team-a");
        assert!(ctx.get("jwt").is_none() && ctx.get("user").is_none());
        assert!(!ctx.to_string().contains("secret-token"));
    }

    /// Only a known scheme is shown: a client may send its token where the scheme goes.
    #[test]
    fn an_authorization_without_a_known_scheme_is_redacted_whole() {
        let shown = |value: &str| {
            let req = HttpRequest {
                headers: vec![("authorization".into(), value.into())],
                ..HttpRequest::default()
            };
            build(&req, None, None)["headers"]["authorization"].clone()
        };
        assert_eq!(shown("eyJhbGciOi.eyJzdWIi.c2ln x"), REDACTED);
        assert_eq!(shown("opaque-token-value Bearer"), REDACTED);
        assert_eq!(shown("bearer eyJhbGciOi"), "bearer [redacted]");
        assert_eq!(shown("DPoP eyJhbGciOi"), "DPoP [redacted]");
        assert_eq!(shown("Negotiate YIIGhgYGKwYB"), "Negotiate [redacted]");
        assert_eq!(shown("eyJhbGciOi"), REDACTED);
    }

    /// A policy reading `uri` costs no copy of the headers, the query or anything else.
    #[test]
    fn builds_only_the_keys_read() {
        let req = HttpRequest {
            method: "GET".into(),
            path: "/x?a=1".into(),
            headers: vec![("x-big".into(), "v".repeat(1000))],
            ..Default::default()
        };
        let ctx = RequestContext::new(&req, None, None);
        assert_eq!(ctx.get("uri"), Some(&json!("/x")));
        let built: Vec<&str> = KEYS
            .iter()
            .zip(&ctx.parts)
            .filter(|(_, part)| part.get().is_some())
            .map(|(key, _)| *key)
            .collect();
        assert_eq!(built, ["uri"]);
        assert_eq!(ctx.get("remote-addr"), None, "absent, and stays absent");
        assert_eq!(ctx.whole()["params"], json!({"a": "1"}));
    }

    #[test]
    fn a_token_in_the_query_never_reaches_the_context() {
        let req = HttpRequest {
            method: "GET".into(),
            path: "/x?a=1&access_token=query-secret".into(),
            ..Default::default()
        };
        let ctx = build(&req, None, None);
        assert_eq!(ctx["params"]["access_token"], REDACTED);
        assert_eq!(ctx["query-string"], "a=1&access_token=[redacted]");
        assert!(!ctx.to_string().contains("query-secret"));
    }

    /// Percent-encoding the name must not smuggle the token past redaction.
    #[test]
    fn an_encoded_access_token_name_is_redacted_too() {
        for (path, name) in [
            ("/x?access%5Ftoken=query-secret&b=%20", "access%5Ftoken"),
            ("/x?b=2&%61ccess_token=query-secret", "%61ccess_token"),
            ("/x?access%5ftoken=query-secret", "access%5ftoken"),
        ] {
            let req = HttpRequest {
                method: "GET".into(),
                path: path.into(),
                ..Default::default()
            };
            let ctx = build(&req, None, None);
            assert!(!ctx.to_string().contains("query-secret"), "{path}: {ctx}");
            assert!(
                ctx["query-string"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("{name}={REDACTED}")),
                "{path}: {ctx}"
            );
            assert_eq!(ctx["params"]["access_token"], REDACTED, "{path}");
        }
    }
}
