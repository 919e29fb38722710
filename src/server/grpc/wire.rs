//! The part of Envoy's `envoy.service.auth.v3.CheckRequest` that a decision reads, decoded
//! straight from the wire.
//!
//! Same field numbers as the proto, so the bytes Envoy sends decode here as they decode into
//! envoy-types' `CheckRequest`, with two differences that cost a `Check` less:
//! - Fields nothing reads (the destination's address, the request's time and id, TLS session,
//!   metadata contexts, ...) are skipped unread: no allocation, no UTF-8 check.
//! - A map (`headers`, `context_extensions`) arrives as its entries in a `Vec`, not a
//!   `HashMap` hashing every key; [`map_entries`] then keeps the last value of a repeated
//!   key, as the map would.
//!
//! A test encodes envoy-types' message with every field set and decodes it here.

use prost::Message;

#[derive(Clone, PartialEq, Message)]
pub struct CheckRequest {
    #[prost(message, optional, tag = "1")]
    pub attributes: Option<AttributeContext>,
}

#[derive(Clone, PartialEq, Message)]
pub struct AttributeContext {
    #[prost(message, optional, tag = "1")]
    pub source: Option<Peer>,
    #[prost(message, optional, tag = "2")]
    pub destination: Option<Destination>,
    #[prost(message, optional, tag = "4")]
    pub request: Option<Request>,
    /// `map<string, string> context_extensions = 10`.
    #[prost(message, repeated, tag = "10")]
    pub context_extensions: Vec<Entry>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Peer {
    #[prost(message, optional, tag = "1")]
    pub address: Option<Address>,
}

/// The destination `Peer`: only its `principal` (the workload's SPIFFE identity under
/// mTLS), which names the request's namespace when the route does not.
#[derive(Clone, PartialEq, Message)]
pub struct Destination {
    #[prost(string, tag = "4")]
    pub principal: String,
}

/// `envoy.config.core.v3.Address`: a oneof, so a pipe after a socket address replaces it.
#[derive(Clone, PartialEq, Message)]
pub struct Address {
    #[prost(oneof = "Kind", tags = "1, 2, 3")]
    pub kind: Option<Kind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Kind {
    #[prost(message, tag = "1")]
    SocketAddress(SocketAddress),
    #[prost(message, tag = "2")]
    Pipe(Unread),
    #[prost(message, tag = "3")]
    EnvoyInternalAddress(Unread),
}

#[derive(Clone, PartialEq, Message)]
pub struct SocketAddress {
    #[prost(string, tag = "2")]
    pub address: String,
}

/// A message whose content nothing reads.
#[derive(Clone, PartialEq, Message)]
pub struct Unread {}

#[derive(Clone, PartialEq, Message)]
pub struct Request {
    #[prost(message, optional, tag = "2")]
    pub http: Option<HttpRequest>,
}

#[derive(Clone, PartialEq, Message)]
pub struct HttpRequest {
    #[prost(string, tag = "2")]
    pub method: String,
    /// `map<string, string> headers = 3`.
    #[prost(message, repeated, tag = "3")]
    pub headers: Vec<Entry>,
    #[prost(string, tag = "4")]
    pub path: String,
    #[prost(string, tag = "5")]
    pub host: String,
    #[prost(string, tag = "6")]
    pub scheme: String,
    /// Set instead of `headers` when Envoy's `encode_raw_headers` is on.
    #[prost(message, optional, tag = "13")]
    pub header_map: Option<HeaderMap>,
}

/// An entry of a `map<string, string>`, as the wire carries it.
#[derive(Clone, PartialEq, Message)]
pub struct Entry {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct HeaderMap {
    #[prost(message, repeated, tag = "1")]
    pub headers: Vec<HeaderValue>,
}

#[derive(Clone, PartialEq, Message)]
pub struct HeaderValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
    #[prost(bytes = "vec", tag = "3")]
    pub raw_value: Vec<u8>,
}

/// A map's entries as the map holds them: one per key, the last one sent. The order is
/// the keys', which no reader relies on (a `HashMap` had none).
pub fn map_entries(mut entries: Vec<Entry>) -> impl Iterator<Item = (String, String)> {
    // Stable: of equal keys, the last sent stays last, and hands its value to the first.
    entries.sort_by(|a, b| a.key.cmp(&b.key));
    entries.dedup_by(|later, kept| {
        let same = later.key == kept.key;
        if same {
            std::mem::swap(&mut later.value, &mut kept.value);
        }
        same
    });
    entries.into_iter().map(|e| (e.key, e.value))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use envoy_types::pb::envoy::config::core::v3::{
        address, socket_address, Address, HeaderMap, HeaderValue as EnvoyHeader, Metadata, Pipe,
        SocketAddress,
    };
    use envoy_types::pb::envoy::service::auth::v3 as envoy;
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
        HttpRequest as Http, Peer, Request as EnvoyRequest, TlsSession,
    };
    use prost::Message;

    use super::*;
    use crate::decision::HttpRequest as Read;
    use crate::server::grpc::to_http_request;

    fn peer(address: address::Address) -> Peer {
        Peer {
            address: Some(Address {
                address: Some(address),
            }),
            service: "svc".into(),
            labels: HashMap::from([("app".into(), "web".into())]),
            principal: "spiffe://cluster.local/ns/default/sa/web".into(),
            certificate: "-----BEGIN CERTIFICATE-----".into(),
        }
    }

    fn socket(ip: &str) -> address::Address {
        address::Address::SocketAddress(SocketAddress {
            address: ip.into(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(41234)),
            resolver_name: "r".into(),
            ipv4_compat: true,
            ..Default::default()
        })
    }

    /// envoy-types' message with every field set, as the bytes Envoy sends.
    fn every_field(headers: HashMap<String, String>, raw: Vec<EnvoyHeader>) -> Vec<u8> {
        envoy::CheckRequest {
            attributes: Some(envoy::AttributeContext {
                source: Some(peer(socket("10.0.0.6"))),
                destination: Some(Peer {
                    principal: "spiffe://cluster.local/ns/team-a/sa/api".into(),
                    ..peer(socket("10.0.0.9"))
                }),
                request: Some(EnvoyRequest {
                    time: Some(Default::default()),
                    http: Some(Http {
                        id: "123".into(),
                        method: "POST".into(),
                        headers,
                        header_map: Some(HeaderMap { headers: raw }),
                        path: "/fhir/Patient?_count=1".into(),
                        host: "api.example.com".into(),
                        scheme: "https".into(),
                        query: "_count=1".into(),
                        fragment: "f".into(),
                        size: 12,
                        protocol: "HTTP/2".into(),
                        body: "{\"a\": 1}".into(),
                        raw_body: b"{\"a\": 1}".to_vec(),
                    }),
                }),
                context_extensions: HashMap::from([
                    ("route".into(), "fhir".into()),
                    ("tenant".into(), "acme".into()),
                ]),
                metadata_context: Some(Metadata::default()),
                route_metadata_context: Some(Metadata::default()),
                tls_session: Some(TlsSession { sni: "api".into() }),
            }),
        }
        .encode_to_vec()
    }

    fn decoded(bytes: &[u8]) -> Read {
        to_http_request(CheckRequest::decode(bytes).expect("decodes"))
    }

    fn sorted(mut pairs: Vec<(String, String)>) -> Vec<(String, String)> {
        pairs.sort();
        pairs
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn reads_what_envoy_types_encodes_and_skips_the_rest() {
        let headers = HashMap::from([
            ("Authorization".into(), "Bearer abc".into()),
            (":path".into(), "/fhir/Patient?_count=1".into()),
            ("x-tenant".into(), "acme".into()),
        ]);
        let raw = vec![
            EnvoyHeader {
                key: "X-Raw".into(),
                raw_value: b"r\xffw".to_vec(),
                ..Default::default()
            },
            EnvoyHeader {
                key: "x-text".into(),
                value: "t".into(),
                ..Default::default()
            },
        ];
        let request = decoded(&every_field(headers, raw));
        assert_eq!(
            (request.method.as_str(), request.scheme.as_str()),
            ("POST", "https")
        );
        assert_eq!(request.host, "api.example.com");
        assert_eq!(request.path, "/fhir/Patient?_count=1");
        assert_eq!(request.remote_addr.as_deref(), Some("10.0.0.6"));
        assert_eq!(
            sorted(request.headers),
            pairs(&[
                (":path", "/fhir/Patient?_count=1"),
                ("authorization", "Bearer abc"),
                ("x-raw", "r\u{fffd}w"),
                ("x-tenant", "acme"),
                ("x-text", "t"),
            ])
        );
        // No route namespace: the destination's SPIFFE identity names it (not the source's).
        assert_eq!(request.namespace.as_deref(), Some("team-a"));
        assert_eq!(
            sorted(request.context_extensions),
            pairs(&[("route", "fhir"), ("tenant", "acme")])
        );
    }

    #[test]
    fn a_map_keeps_the_last_value_of_a_repeated_key_as_envoy_types_does() {
        let entry = |k: &str, v: &str| Entry {
            key: k.into(),
            value: v.into(),
        };
        let bytes = HttpRequest {
            headers: vec![
                entry("authorization", "Bearer first"),
                entry("x-a", "1"),
                entry("authorization", "Bearer second"),
                entry("authorization", "Bearer last"),
            ],
            ..Default::default()
        }
        .encode_to_vec();
        let theirs = Http::decode(bytes.as_slice()).unwrap().headers;
        let ours: Vec<_> =
            map_entries(HttpRequest::decode(bytes.as_slice()).unwrap().headers).collect();
        assert_eq!(
            ours,
            pairs(&[("authorization", "Bearer last"), ("x-a", "1")])
        );
        assert_eq!(theirs["authorization"], "Bearer last");
    }

    #[test]
    fn a_pipe_after_a_socket_address_leaves_no_remote_address() {
        let mut bytes = every_field(HashMap::new(), vec![]);
        // A second `source` merges into the first: its address oneof is now a pipe.
        let pipe = envoy::AttributeContext {
            source: Some(peer(address::Address::Pipe(Pipe {
                path: "/run/envoy.sock".into(),
                mode: 0,
            }))),
            ..Default::default()
        };
        bytes.extend(
            envoy::CheckRequest {
                attributes: Some(pipe),
            }
            .encode_to_vec(),
        );
        let theirs = envoy::CheckRequest::decode(bytes.as_slice()).unwrap();
        let kind = theirs
            .attributes
            .unwrap()
            .source
            .unwrap()
            .address
            .unwrap()
            .address;
        assert!(matches!(kind, Some(address::Address::Pipe(_))));
        assert_eq!(decoded(&bytes).remote_addr, None);
    }
}
