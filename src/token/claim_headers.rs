//! `claimToHeaders`: claims of a validated token forwarded to the upstream as request
//! headers, checked when configuration loads.

use std::sync::Arc;

use serde_json::Value;

use crate::resources::checks::{self, CREDENTIAL_OR_ROUTING_HEADERS, RESERVED_HEADER_PREFIXES};
use crate::resources::{ClaimToHeader, FieldError};

/// One `claimToHeaders` entry, compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimHeader {
    pub header: Arc<str>,
    path: Vec<String>,
}

impl ClaimHeader {
    /// The header value for these claims: a string, number or boolean, or an array of
    /// them joined with `,`. Anything else (absent, null, an object, nested arrays, a
    /// control character) sets nothing.
    pub fn value(&self, claims: &Value) -> Option<String> {
        let (first, rest) = self.path.split_first()?;
        let mut v = claims.get(first)?;
        for key in rest {
            v = v.get(key.as_str())?;
        }
        let value = match v {
            Value::Array(items) => items
                .iter()
                .map(scalar)
                .collect::<Option<Vec<_>>>()?
                .join(","),
            other => scalar(other)?,
        };
        if value.len() > MAX_VALUE_BYTES {
            tracing::info!(
                header = %self.header,
                bytes = value.len(),
                limit = MAX_VALUE_BYTES,
                "claim not forwarded: its value is too long"
            );
            return None;
        }
        // A header value cannot hold a line break: a claim must not smuggle a header.
        (!value.chars().any(|c| c.is_control() && c != '\t')).then_some(value)
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Entries of one introspector's `claimToHeaders`.
pub const MAX_ENTRIES: usize = checks::MAX_CLAIM_TO_HEADERS;
/// A header name's length.
pub const MAX_HEADER_BYTES: usize = checks::MAX_HEADER_NAME_BYTES;
/// A claim path's length (`realm_access.roles`).
pub const MAX_CLAIM_BYTES: usize = checks::MAX_CLAIM_PATH_BYTES;
/// A forwarded value's length (an array's items joined); a longer claim is not forwarded
/// (and logged), as an absent one. With [`MAX_ENTRIES`], at most 256 KiB of headers.
pub const MAX_VALUE_BYTES: usize = 8 * 1024;

/// The entries of `claimToHeaders`, or an error naming each bad field.
pub fn compile(entries: &[ClaimToHeader], errors: &mut Vec<FieldError>) -> Vec<ClaimHeader> {
    if entries.len() > MAX_ENTRIES {
        let why = format!("{} entries: at most {MAX_ENTRIES}", entries.len());
        errors.push(FieldError::new("claimToHeaders".to_string(), why));
        return Vec::new();
    }
    let mut out: Vec<ClaimHeader> = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let field = |name: &str| format!("claimToHeaders[{i}].{name}");
        if entry.header.len() > MAX_HEADER_BYTES {
            let why = format!("{} bytes: at most {MAX_HEADER_BYTES}", entry.header.len());
            errors.push(FieldError::new(field("header"), why));
            continue;
        }
        if entry.claim.len() > MAX_CLAIM_BYTES {
            let why = format!("{} bytes: at most {MAX_CLAIM_BYTES}", entry.claim.len());
            errors.push(FieldError::new(field("claim"), why));
            continue;
        }
        if let Err(why) = check_header(&entry.header) {
            errors.push(FieldError::new(field("header"), why));
            continue;
        }
        if out.iter().any(|c| *c.header == *entry.header) {
            let why = checks::CLAIM_HEADER_ONCE.message;
            errors.push(FieldError::new(field("header"), why));
            continue;
        }
        let path: Vec<String> = entry.claim.split('.').map(str::to_owned).collect();
        if path.iter().any(String::is_empty) {
            errors.push(FieldError::new(field("claim"), checks::CLAIM_PATH.message));
            continue;
        }
        out.push(ClaimHeader {
            header: entry.header.as_str().into(),
            path,
        });
    }
    out
}

fn check_header(name: &str) -> Result<(), &'static str> {
    // RFC 9110 token characters, lower case (HTTP/2 and gRPC metadata require it).
    let token = !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b)
        });
    if !token {
        return Err(checks::CLAIM_HEADER_TOKEN.message);
    }
    if CREDENTIAL_OR_ROUTING_HEADERS.contains(&name) {
        return Err(checks::CLAIM_HEADER_CREDENTIALS.message);
    }
    // Only a header of the application's own: not one that Envoy, tracing or portcullis
    // sets, which a team could otherwise overwrite for every route it is allowed on.
    if !name.starts_with("x-") {
        return Err(checks::CLAIM_HEADER_X.message);
    }
    if RESERVED_HEADER_PREFIXES.iter().any(|p| name.starts_with(p)) {
        return Err(checks::CLAIM_HEADER_RESERVED.message);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(header: &str, claim: &str) -> ClaimToHeader {
        ClaimToHeader {
            header: header.into(),
            claim: claim.into(),
        }
    }

    #[test]
    fn values_are_scalars_or_lists_of_them() {
        let mut errors = Vec::new();
        let compiled = compile(
            &[
                entry("x-tenant", "tenant"),
                entry("x-roles", "realm_access.roles"),
                entry("x-age", "age"),
                entry("x-admin", "admin"),
                entry("x-obj", "realm_access"),
                entry("x-missing", "nope.deeper"),
                entry("x-evil", "evil"),
            ],
            &mut errors,
        );
        assert!(errors.is_empty(), "{errors:?}");
        let claims = json!({
            "tenant": "acme", "realm_access": {"roles": ["a", "b", 3]}, "age": 42,
            "admin": true, "evil": "a\r\nx-portcullis-user: root"
        });
        let values: Vec<Option<String>> = compiled.iter().map(|c| c.value(&claims)).collect();
        assert_eq!(
            values,
            [
                Some("acme".into()),
                Some("a,b,3".into()),
                Some("42".into()),
                Some("true".into()),
                None,
                None,
                None
            ]
        );
    }

    #[test]
    fn header_names_are_checked() {
        let mut errors = Vec::new();
        let compiled = compile(
            &[
                entry("X-Tenant", "t"),
                entry("authorization", "t"),
                entry("cookie", "t"),
                entry("host", "t"),
                entry(":path", "t"),
                entry("x-portcullis-user", "t"),
                entry("x-ok", "t"),
                entry("x-ok", "u"),
                entry("x-empty", "a..b"),
                entry("bad header", "t"),
                entry("content-type", "t"),
                entry("traceparent", "t"),
                entry("x-forwarded-for", "t"),
                entry("x-envoy-original-path", "t"),
                entry("x-request-id", "t"),
                entry("x-b3-traceid", "t"),
            ],
            &mut errors,
        );
        assert_eq!(compiled.len(), 1);
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "claimToHeaders[0].header",
                "claimToHeaders[1].header",
                "claimToHeaders[2].header",
                "claimToHeaders[3].header",
                "claimToHeaders[4].header",
                "claimToHeaders[5].header",
                "claimToHeaders[7].header",
                "claimToHeaders[8].claim",
                "claimToHeaders[9].header",
                "claimToHeaders[10].header",
                "claimToHeaders[11].header",
                "claimToHeaders[12].header",
                "claimToHeaders[13].header",
                "claimToHeaders[14].header",
                "claimToHeaders[15].header",
            ]
        );
    }

    #[test]
    fn claim_to_headers_is_bounded_in_entries_names_and_values() {
        let mut errors = Vec::new();
        let many: Vec<_> = (0..=MAX_ENTRIES)
            .map(|i| entry(&format!("x-c{i}"), "sub"))
            .collect();
        assert!(compile(&many, &mut errors).is_empty());
        assert_eq!(errors[0].field, "claimToHeaders", "{errors:?}");

        let mut errors = Vec::new();
        let long_header = format!("x-{}", "a".repeat(MAX_HEADER_BYTES));
        let long_claim = "a.".repeat(MAX_CLAIM_BYTES) + "b";
        compile(
            &[entry(&long_header, "sub"), entry("x-ok", &long_claim)],
            &mut errors,
        );
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["claimToHeaders[0].header", "claimToHeaders[1].claim"]
        );

        let mut errors = Vec::new();
        let compiled = compile(&[entry("x-big", "big")], &mut errors);
        let fits = json!({"big": "v".repeat(MAX_VALUE_BYTES)});
        let over = json!({"big": "v".repeat(MAX_VALUE_BYTES + 1)});
        let list = json!({"big": vec!["v".repeat(MAX_VALUE_BYTES / 2); 3]});
        assert_eq!(
            compiled[0].value(&fits).map(|v| v.len()),
            Some(MAX_VALUE_BYTES)
        );
        assert_eq!(compiled[0].value(&over), None, "not forwarded");
        assert_eq!(compiled[0].value(&list), None, "items joined count");
    }
}
