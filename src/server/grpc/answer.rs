//! The answer to Envoy: `envoy.service.auth.v3.CheckResponse`, built from a decision.
//!
//! Same field numbers as the proto, so Envoy (and envoy-types) decode it as their own, with
//! two differences that cost an answer less:
//! - Text is `Bytes` (a `string` and a `bytes` field are the same on the wire): header
//!   names, metadata keys and the denial's content type are static, never copied.
//! - The dynamic metadata `Struct`'s map is its entries in a `Vec`, not a `HashMap`.
//!
//! A test decodes each kind of answer with envoy-types and compares it with the message
//! envoy-types would build.

use bytes::Bytes;
use prost::Message;

use crate::decision::{
    Decision, Outcome, HEADER_ISSUER, HEADER_POLICY, HEADER_SUBJECT, HEADER_USER, IDENTITY_HEADERS,
};

#[derive(Clone, PartialEq, Message)]
pub struct CheckResponse {
    /// `google.rpc.Status`.
    #[prost(message, optional, tag = "1")]
    pub status: Option<Status>,
    #[prost(oneof = "HttpResponse", tags = "2, 3")]
    pub http_response: Option<HttpResponse>,
    /// `google.protobuf.Struct`, under Envoy's `envoy.filters.http.ext_authz` namespace.
    #[prost(message, optional, tag = "4")]
    pub dynamic_metadata: Option<Struct>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum HttpResponse {
    #[prost(message, tag = "2")]
    Denied(DeniedHttpResponse),
    #[prost(message, tag = "3")]
    Ok(OkHttpResponse),
}

#[derive(Clone, PartialEq, Message)]
pub struct Status {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(bytes = "bytes", tag = "2")]
    pub message: Bytes,
}

#[derive(Clone, PartialEq, Message)]
pub struct OkHttpResponse {
    #[prost(message, repeated, tag = "2")]
    pub headers: Vec<HeaderValueOption>,
    #[prost(bytes = "bytes", repeated, tag = "5")]
    pub headers_to_remove: Vec<Bytes>,
}

#[derive(Clone, PartialEq, Message)]
pub struct DeniedHttpResponse {
    /// `envoy.type.v3.HttpStatus`.
    #[prost(message, optional, tag = "1")]
    pub status: Option<HttpStatus>,
    #[prost(message, repeated, tag = "2")]
    pub headers: Vec<HeaderValueOption>,
    #[prost(bytes = "bytes", tag = "3")]
    pub body: Bytes,
}

#[derive(Clone, PartialEq, Message)]
pub struct HttpStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct HeaderValueOption {
    #[prost(message, optional, tag = "1")]
    pub header: Option<HeaderValue>,
    /// `HeaderAppendAction`.
    #[prost(int32, tag = "3")]
    pub append_action: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct HeaderValue {
    #[prost(bytes = "bytes", tag = "1")]
    pub key: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
}

/// `google.protobuf.Struct`: `map<string, Value> fields = 1`, as its entries.
#[derive(Clone, PartialEq, Message)]
pub struct Struct {
    #[prost(message, repeated, tag = "1")]
    pub fields: Vec<Field>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Field {
    #[prost(bytes = "bytes", tag = "1")]
    pub key: Bytes,
    #[prost(message, optional, tag = "2")]
    pub value: Option<Value>,
}

/// `google.protobuf.Value`, of which only the string kind is sent. A oneof, so that an
/// empty string is still a string.
#[derive(Clone, PartialEq, Message)]
pub struct Value {
    #[prost(oneof = "Kind", tags = "3")]
    pub kind: Option<Kind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Kind {
    #[prost(bytes = "bytes", tag = "3")]
    String(Bytes),
}

/// `google.rpc.Code`.
const OK: i32 = 0;
const PERMISSION_DENIED: i32 = 7;
const UNAVAILABLE: i32 = 14;
const UNAUTHENTICATED: i32 = 16;
/// `HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD`: replaces a client-sent copy.
const OVERWRITE_IF_EXISTS_OR_ADD: i32 = 2;

fn header(key: Bytes, value: Bytes) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue { key, value }),
        append_action: OVERWRITE_IF_EXISTS_OR_ADD,
    }
}

/// Text that lives as long as the program is not copied.
fn text(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

/// One of portcullis's own header names is static; a `claimToHeaders` name is copied.
fn header_name(name: &str) -> Bytes {
    match IDENTITY_HEADERS.into_iter().find(|own| *own == name) {
        Some(own) => text(own),
        None => Bytes::copy_from_slice(name.as_bytes()),
    }
}

/// On allow: the identity and forwarded claims as upstream headers, the client's copies of
/// the headers not set removed, and the identity as dynamic metadata (`user`, `subject`,
/// `issuer`, `policy`, those that are set) for access logs and rate limits. On denial:
/// the HTTP status, a JSON body and, for a 401, the challenge. Takes the decision whole,
/// so that its text moves into the answer instead of being copied.
pub fn to_check_response(decision: Decision) -> CheckResponse {
    if decision.allowed() {
        let headers_to_remove = decision.headers_to_remove().map(header_name).collect();
        let mut headers = Vec::with_capacity(4 + decision.forwarded.len());
        let mut fields = Vec::with_capacity(4);
        let identity = [
            (HEADER_USER, "user", decision.user),
            (HEADER_SUBJECT, "subject", decision.subject),
            (HEADER_ISSUER, "issuer", decision.issuer),
            (HEADER_POLICY, "policy", decision.policy),
        ];
        for (name, key, value) in identity {
            let Some(value) = value else { continue };
            let value = Bytes::from(value);
            headers.push(header(text(name), value.clone()));
            fields.push(Field {
                key: text(key),
                value: Some(Value {
                    kind: Some(Kind::String(value)),
                }),
            });
        }
        headers.extend(
            decision
                .forwarded
                .into_iter()
                .map(|(name, value)| header(header_name(&name), Bytes::from(value))),
        );
        return CheckResponse {
            status: Some(Status {
                code: OK,
                message: Bytes::new(),
            }),
            http_response: Some(HttpResponse::Ok(OkHttpResponse {
                headers,
                headers_to_remove,
            })),
            dynamic_metadata: Some(Struct { fields }),
        };
    }
    let code = match decision.outcome {
        Outcome::Unauthenticated => UNAUTHENTICATED,
        Outcome::Unavailable => UNAVAILABLE,
        _ => PERMISSION_DENIED,
    };
    let mut headers = vec![header(text("content-type"), text("application/json"))];
    if let Some(challenge) = decision.www_authenticate() {
        headers.push(header(text("www-authenticate"), Bytes::from(challenge)));
    }
    CheckResponse {
        status: Some(Status {
            code,
            message: text(decision.reason),
        }),
        http_response: Some(HttpResponse::Denied(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: decision.http_status() as i32,
            }),
            headers,
            body: Bytes::from(decision.body()),
        })),
        dynamic_metadata: None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use envoy_types::ext_authz::v3::pb::{
        CheckResponse as EnvoyResponse, DeniedHttpResponse as EnvoyDenied, HeaderAppendAction,
        HeaderValue as EnvoyHeader, HeaderValueOption as EnvoyOption,
        HttpResponse as EnvoyHttpResponse, HttpStatus as EnvoyStatus, OkHttpResponse as EnvoyOk,
    };
    use envoy_types::pb::google::protobuf::{value, Struct as EnvoyStruct, Value as EnvoyValue};
    use envoy_types::pb::google::rpc;

    use super::*;

    /// What Envoy reads: the answer encoded here, decoded by envoy-types.
    fn as_envoy_reads(decision: &Decision) -> EnvoyResponse {
        EnvoyResponse::decode(&to_check_response(decision.clone()).encode_to_vec()[..]).unwrap()
    }

    fn envoy_header(key: &str, value: &str) -> EnvoyOption {
        EnvoyOption {
            header: Some(EnvoyHeader {
                key: key.into(),
                value: value.into(),
                ..Default::default()
            }),
            append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
            ..Default::default()
        }
    }

    fn decision(outcome: Outcome, reason: &'static str) -> Decision {
        Decision {
            outcome,
            reason,
            message: "the token has expired".into(),
            token_given: true,
            policy: None,
            user: None,
            subject: None,
            issuer: None,
            forwarded: vec![],
            claim_headers: None,
            dry_run_allows: Vec::new(),
            shadow: false,
        }
    }

    #[test]
    fn an_allow_reads_as_envoy_types_builds_it() {
        let allow = Decision {
            policy: Some("p".into()),
            // Empty, yet set: still a string in the metadata, and a header.
            subject: Some("".into()),
            issuer: Some("https://a".into()),
            forwarded: vec![("x-tenant".into(), "acme".into())],
            claim_headers: Some(vec!["x-tenant".into(), "x-org".into()].into()),
            ..decision(Outcome::Allow, "allowed")
        };
        let string = |s: &str| EnvoyValue {
            kind: Some(value::Kind::StringValue(s.into())),
        };
        let expected = EnvoyResponse {
            status: Some(rpc::Status {
                code: rpc::Code::Ok as i32,
                ..Default::default()
            }),
            http_response: Some(EnvoyHttpResponse::OkResponse(EnvoyOk {
                headers: vec![
                    envoy_header("x-portcullis-subject", ""),
                    envoy_header("x-portcullis-issuer", "https://a"),
                    envoy_header("x-portcullis-policy", "p"),
                    envoy_header("x-tenant", "acme"),
                ],
                headers_to_remove: vec!["x-portcullis-user".into(), "x-org".into()],
                ..Default::default()
            })),
            dynamic_metadata: Some(EnvoyStruct {
                fields: HashMap::from([
                    ("subject".into(), string("")),
                    ("issuer".into(), string("https://a")),
                    ("policy".into(), string("p")),
                ]),
            }),
        };
        assert_eq!(as_envoy_reads(&allow), expected);
    }

    #[test]
    fn denials_read_as_envoy_types_builds_them() {
        for (d, code, challenge) in [
            (
                decision(Outcome::Unauthenticated, "token_expired"),
                rpc::Code::Unauthenticated,
                Some(
                    r#"Bearer realm="portcullis", error="invalid_token", error_description="the token has expired""#,
                ),
            ),
            (
                decision(Outcome::Forbidden, "no_policy_allows"),
                rpc::Code::PermissionDenied,
                None,
            ),
            (
                decision(Outcome::Unavailable, "deadline_exceeded"),
                rpc::Code::Unavailable,
                None,
            ),
        ] {
            let mut headers = vec![envoy_header("content-type", "application/json")];
            headers.extend(challenge.map(|c| envoy_header("www-authenticate", c)));
            let expected = EnvoyResponse {
                status: Some(rpc::Status {
                    code: code as i32,
                    message: d.reason.into(),
                    ..Default::default()
                }),
                http_response: Some(EnvoyHttpResponse::DeniedResponse(EnvoyDenied {
                    status: Some(EnvoyStatus {
                        code: d.http_status() as i32,
                    }),
                    headers,
                    body: d.body(),
                })),
                dynamic_metadata: None,
            };
            assert_eq!(as_envoy_reads(&d), expected, "{}", d.reason);
        }
    }
}
