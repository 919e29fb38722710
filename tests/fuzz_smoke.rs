//! The fuzz targets' smoke run, for CI: every body of `fuzz/bodies/` (the whole of each
//! cargo-fuzz target, see `scripts/fuzz.sh`) over its seed corpus (`fuzz/seeds/<target>/`)
//! and a few thousand deterministic mutations of it, in the ordinary test build (no
//! libFuzzer, no sanitizer). A panic fails the test, naming the target and the input, and
//! leaves the input in `target/fuzz-smoke/` to be added to the seeds once fixed.
//!
//! `WRITE_SEEDS=1 cargo test --test fuzz_smoke generated_seeds` rewrites the generated seeds;
//! without it, that test fails when a committed seed differs from what it would write.

// Each body includes `common.rs` itself, as a cargo-fuzz target must stand alone; here that
// makes one copy per body, which is what the targets compile too.
#![allow(clippy::duplicate_mod)]

#[path = "../fuzz/bodies/admission_review.rs"]
mod admission_review;
#[path = "../fuzz/bodies/check_request.rs"]
mod check_request;
#[path = "../fuzz/bodies/config_json.rs"]
mod config_json;
#[path = "../fuzz/bodies/config_yaml.rs"]
mod config_yaml;
#[path = "../fuzz/bodies/json_schema.rs"]
mod json_schema;
#[path = "../fuzz/bodies/matcho.rs"]
mod matcho;
#[path = "../fuzz/bodies/token.rs"]
mod token;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Mutated inputs per target, at most; and the time each target may take for them.
const MUTATIONS: usize = 3000;
const BUDGET: Duration = Duration::from_secs(4);

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = repo().join("fuzz/seeds").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect()
}

/// xorshift64*: deterministic, so that a failure reproduces.
struct Rng(u64);

impl Rng {
    fn new(target: &str) -> Self {
        // FNV-1a of the target's name: each target its own sequence.
        let seed = target.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes that matter to the bodies' formats: the part separator, JSON and YAML syntax.
const INTERESTING: &[u8] = b"\xff\x00{}[]\":,.-#$\\\n \t'&?=/*|>!%0019aZ\x7f\x80";

/// One seed changed by one to four edits.
fn mutate(rng: &mut Rng, corpus: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut input = corpus[rng.below(corpus.len())].1.clone();
    for _ in 0..1 + rng.below(4) {
        let len = input.len();
        match rng.below(8) {
            // Flip a bit.
            0 if len > 0 => {
                let at = rng.below(len);
                input[at] ^= 1 << rng.below(8);
            }
            // Put an interesting byte somewhere.
            1 if len > 0 => {
                let at = rng.below(len);
                input[at] = INTERESTING[rng.below(INTERESTING.len())];
            }
            // Insert a byte.
            2 => {
                let at = rng.below(len + 1);
                let b = if rng.below(2) == 0 {
                    INTERESTING[rng.below(INTERESTING.len())]
                } else {
                    rng.next() as u8
                };
                input.insert(at, b);
            }
            // Delete a few bytes.
            3 if len > 0 => {
                let at = rng.below(len);
                let n = (1 + rng.below(8)).min(len - at);
                input.drain(at..at + n);
            }
            // Truncate.
            4 if len > 0 => input.truncate(rng.below(len)),
            // Splice: a piece of another seed in place of the tail.
            5 => {
                let other = &corpus[rng.below(corpus.len())].1;
                let from = rng.below(other.len() + 1);
                let to = from + rng.below(other.len() - from + 1);
                let at = rng.below(len + 1);
                input.truncate(at);
                input.extend_from_slice(&other[from..to]);
            }
            // Duplicate a piece in place (deeper nesting, repeated keys).
            6 if len > 0 => {
                let from = rng.below(len);
                let to = from + rng.below((len - from).min(64) + 1);
                let piece = input[from..to].to_vec();
                let at = rng.below(len + 1);
                input.splice(at..at, piece);
            }
            // Overwrite a byte with an arithmetic neighbour.
            _ if len > 0 => {
                let at = rng.below(len);
                input[at] = input[at].wrapping_add(if rng.below(2) == 0 { 1 } else { 255 });
            }
            _ => input.push(rng.next() as u8),
        }
    }
    input
}

fn run_one(target: &str, body: fn(&[u8]), what: &str, input: &[u8]) {
    if catch_unwind(AssertUnwindSafe(|| body(input))).is_err() {
        let dir = repo().join("target/fuzz-smoke");
        let _ = std::fs::create_dir_all(&dir);
        let file = dir.join(format!("{target}-{}", what.replace(['/', ' '], "_")));
        let _ = std::fs::write(&file, input);
        let shown = String::from_utf8_lossy(&input[..input.len().min(400)]).into_owned();
        panic!(
            "fuzz body `{target}` panicked on {what} (saved in {}): {shown:?}",
            file.display()
        );
    }
}

fn smoke(target: &str, body: fn(&[u8])) {
    let corpus = seeds(target);
    assert!(!corpus.is_empty(), "no seeds for {target}");
    for (name, input) in &corpus {
        run_one(target, body, &format!("seed {name}"), input);
    }
    let mut rng = Rng::new(target);
    let started = Instant::now();
    let mut runs = 0;
    while runs < MUTATIONS && started.elapsed() < BUDGET {
        let input = mutate(&mut rng, &corpus);
        run_one(target, body, &format!("mutation {runs}"), &input);
        runs += 1;
    }
    eprintln!(
        "{target}: {} seeds, {runs} mutations in {:.1} s",
        corpus.len(),
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn token() {
    smoke("token", token::run);
}

#[test]
fn matcho() {
    smoke("matcho", matcho::run);
}

#[test]
fn json_schema() {
    smoke("json_schema", json_schema::run);
}

#[test]
fn config_yaml() {
    smoke("config_yaml", config_yaml::run);
}

#[test]
fn config_json() {
    smoke("config_json", config_json::run);
}

#[test]
fn check_request() {
    smoke("check_request", check_request::run);
}

#[test]
fn admission_review() {
    smoke("admission_review", admission_review::run);
}

/// The mutator itself: deterministic, and it changes things.
#[test]
fn mutations_are_deterministic() {
    let corpus = vec![("a".to_string(), b"{\"a\": [1, 2]}".to_vec())];
    let run = || {
        let mut rng = Rng::new("x");
        (0..50)
            .map(|_| mutate(&mut rng, &corpus))
            .collect::<Vec<_>>()
    };
    let first = run();
    assert_eq!(first, run());
    assert!(first.iter().any(|m| m != &corpus[0].1));
}

/// The generated seeds (tokens, protobuf, JSON) and the repository's configuration
/// examples copied into `fuzz/seeds/` are what the generator makes now: a fixture or a
/// format that changed is a seed to rewrite (`WRITE_SEEDS=1`), not one silently stale.
#[test]
fn generated_seeds_are_current() {
    seeds_gen::write_all();
}

mod seeds_gen {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use envoy_types::ext_authz::v3::pb::CheckRequest;
    use envoy_types::pb::envoy::config::core::v3::{
        address, Address, HeaderMap, HeaderValue, SocketAddress,
    };
    use envoy_types::pb::envoy::service::auth::v3::{attribute_context, AttributeContext};
    use jsonwebtoken::{Algorithm, EncodingKey};
    use prost::Message;
    use serde_json::{json, Value};

    /// In 2100: the seeds' tokens stay valid.
    const EXP: u64 = 4_102_444_800;
    const SEP: u8 = 0xFF;

    fn write(target: &str, name: &str, bytes: &[u8]) {
        let dir = repo().join("fuzz/seeds").join(target);
        if std::env::var_os("WRITE_SEEDS").is_some() {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(name), bytes).unwrap();
            return;
        }
        let committed = std::fs::read(dir.join(name)).unwrap_or_default();
        assert!(
            committed == bytes,
            "fuzz/seeds/{target}/{name} is not what the generator writes: rerun with WRITE_SEEDS=1"
        );
    }

    fn parts(parts: &[&[u8]]) -> Vec<u8> {
        parts.join(&SEP)
    }

    fn key(file: &str) -> String {
        std::fs::read_to_string(repo().join("tests/fixtures/keys").join(file)).unwrap()
    }

    fn jwt(header: &Value, claims: &Value, alg: Algorithm, key: &EncodingKey) -> String {
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).unwrap();
        format!("{message}.{signature}")
    }

    fn hs(secret: &str) -> EncodingKey {
        EncodingKey::from_secret(secret.as_bytes()).unwrap()
    }

    pub fn write_all() {
        tokens();
        policies();
        configs();
        check_requests();
        admission_reviews();
    }

    fn tokens() {
        let rsa = EncodingKey::from_rsa_pem(key("rsa-a.key.pem").as_bytes()).unwrap();
        let ec = EncodingKey::from_ec_pem(key("ec-p256.key.pem").as_bytes()).unwrap();
        let claims =
            |iss: &str| json!({"iss": iss, "sub": "basic", "exp": EXP, "iat": 1_700_000_000u64});
        let raw = |name: &str, token: &str| {
            let mode = token::Mode::Raw.byte();
            write("token", name, &[&[mode][..], token.as_bytes()].concat())
        };
        raw(
            "raw-hs256",
            &jwt(
                &json!({"alg": "HS256", "typ": "JWT"}),
                &claims(token::HMAC_ISS),
                Algorithm::HS256,
                &hs(token::HMAC_SECRET),
            ),
        );
        let mut aud = claims(token::AUD_ISS);
        aud["aud"] = json!([token::AUD, "other"]);
        raw(
            "raw-aud",
            &jwt(
                &json!({"alg": "HS256"}),
                &aud,
                Algorithm::HS256,
                &hs(token::AUD_SECRET),
            ),
        );
        raw(
            "raw-rs256-kid",
            &jwt(
                &json!({"alg": "RS256", "kid": "rsa-a"}),
                &claims(token::KEYS_ISS),
                Algorithm::RS256,
                &rsa,
            ),
        );
        raw(
            "raw-es256-kid",
            &jwt(
                &json!({"alg": "ES256", "kid": "ec-p256"}),
                &claims(token::KEYS_ISS),
                Algorithm::ES256,
                &ec,
            ),
        );
        raw(
            "raw-hs384-oct",
            &jwt(
                &json!({"alg": "HS384", "kid": "oct"}),
                &claims(token::KEYS_ISS),
                Algorithm::HS384,
                &hs(token::OCT_KEY),
            ),
        );
        let mut expired = claims(token::HMAC_ISS);
        expired["exp"] = json!(1_000_000_000u64);
        raw(
            "raw-expired",
            &jwt(
                &json!({"alg": "HS256"}),
                &expired,
                Algorithm::HS256,
                &hs(token::HMAC_SECRET),
            ),
        );
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(claims(token::HMAC_ISS).to_string())
        );
        raw("raw-alg-none", &none);
        raw("raw-opaque", "an-opaque-token-0123456789");
        let structured =
            |name: &str, mode: token::Mode, header: &str, claims: &Value, tweak: &[u8]| {
                let claims = claims.to_string();
                let mut parts_: Vec<&[u8]> = vec![header.as_bytes(), claims.as_bytes()];
                if !tweak.is_empty() {
                    parts_.push(tweak);
                }
                write(
                    "token",
                    name,
                    &[&[mode.byte()][..], &parts(&parts_)].concat(),
                );
            };
        let mut rich = claims(token::HMAC_ISS);
        rich["nbf"] = json!(1_600_000_000u64);
        rich["tenant"] = json!("acme");
        rich["aud"] = json!("x");
        structured(
            "signed-hmac",
            token::Mode::Hmac,
            r#"{"alg":"HS256","typ":"JWT"}"#,
            &rich,
            b"",
        );
        structured(
            "signed-wrong-secret",
            token::Mode::WrongSecret,
            r#"{"alg":"HS512"}"#,
            &claims(token::HMAC_ISS),
            b"",
        );
        structured(
            "signed-rsa",
            token::Mode::Rsa,
            r#"{"alg":"PS256"}"#,
            &claims(token::KEYS_ISS),
            b"",
        );
        structured(
            "signed-ec",
            token::Mode::Ec,
            r#"{"alg":"ES256","kid":"ec-p256"}"#,
            &claims(token::KEYS_ISS),
            b"",
        );
        structured(
            "signed-confusion",
            token::Mode::Confusion,
            r#"{"alg":"HS256","kid":"rsa-a"}"#,
            &claims(token::KEYS_ISS),
            b"",
        );
        structured(
            "signed-tweaked",
            token::Mode::Tweak,
            r#"{"alg":"HS256"}"#,
            &claims(token::HMAC_ISS),
            b"\x00\x50x",
        );
        structured(
            "signed-crit",
            token::Mode::Hmac,
            r#"{"alg":"HS256","crit":["exp"]}"#,
            &claims(token::HMAC_ISS),
            b"",
        );
    }

    fn policies() {
        let matcho: [(&str, Value); 10] = [
            (
                "uri-method",
                json!({"uri": "#^/fhir/.*", "request-method": "get"}),
            ),
            (
                "issuer",
                json!({"jwt": {"iss": "https://auth.example.com"}}),
            ),
            (
                "enum",
                json!({"headers": {"x-role": {"$enum": ["admin", "editor"]}}}),
            ),
            (
                "contains",
                json!({"user": {"data": {"roles": {"$contains": "admin"}}}}),
            ),
            (
                "one-of",
                json!({"$one-of": [{"uri": "/a"}, {"uri": "#^/fhir/"}]}),
            ),
            (
                "reference",
                json!({"params": {"x": ".jwt.sub"}, "user": {"id": ".jwt.sub"}}),
            ),
            ("every", json!({"jwt": {"roles": {"$every": "not-blank?"}}})),
            (
                "not",
                json!({"jwt": {"email": {"$not": "nil?"}}, "client": "present?"}),
            ),
            (
                "array",
                json!({"jwt": {"aud": ["api"]}, "user": {"identifier": [{"system": "https://auth.example.com"}]}}),
            ),
            ("everything", json!({})),
        ];
        for (name, pattern) in &matcho {
            write("matcho", name, pattern.to_string().as_bytes());
        }
        let ctx = json!({"uri": "/a", "request-method": "post", "jwt": {"sub": "x", "roles": ["", "a"]}, "params": {"x": "x"}});
        write(
            "matcho",
            "with-context",
            &parts(&[
                matcho[4].1.to_string().as_bytes(),
                ctx.to_string().as_bytes(),
            ]),
        );

        let schemas: [(&str, Value); 9] = [
            (
                "quickstart",
                json!({"required": ["jwt"], "properties": {"jwt": {"required": ["iss"], "properties": {"iss": {"constant": "https://auth.example.com"}}}}}),
            ),
            (
                "pattern",
                json!({"properties": {"uri": {"type": "string", "pattern": "^/fhir/(Patient|Observation)"}}}),
            ),
            (
                "enum-method",
                json!({"properties": {"request-method": {"enum": ["get", "head"]}}, "required": ["request-method"]}),
            ),
            (
                "any-of",
                json!({"anyOf": [{"required": ["user"]}, {"properties": {"jwt": {"properties": {"roles": {"contains": {"const": "admin"}}}}}}]}),
            ),
            (
                "if-then",
                json!({"if": {"properties": {"request-method": {"const": "post"}}}, "then": {"required": ["user"]}, "else": true}),
            ),
            (
                "ref",
                json!({"definitions": {"iss": {"type": "string", "format": "uri"}}, "properties": {"jwt": {"properties": {"iss": {"$ref": "#/definitions/iss"}}}}}),
            ),
            (
                "strict",
                json!({"type": "object", "additionalProperties": false, "properties": {"uri": {"minLength": 1, "maxLength": 64}}}),
            ),
            (
                "pattern-properties",
                json!({"properties": {"headers": {"patternProperties": {"^x-": {"type": "string"}}, "propertyNames": {"pattern": "^[a-z-]+$"}}}}),
            ),
            (
                "not-numbers",
                json!({"not": {"properties": {"jwt": {"properties": {"exp": {"minimum": 0, "multipleOf": 0.5}}}}}}),
            ),
        ];
        for (name, schema) in &schemas {
            write("json_schema", name, schema.to_string().as_bytes());
        }
        let ctx = json!({"request-method": "post", "user": {"id": "u"}, "headers": {"x-a": "b"}, "jwt": {"exp": 3}});
        write(
            "json_schema",
            "with-context",
            &parts(&[
                schemas[4].1.to_string().as_bytes(),
                ctx.to_string().as_bytes(),
            ]),
        );
    }

    fn configs() {
        for dir in ["examples/quickstart", "deploy/examples/aidbox"] {
            let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join(dir))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            for file in files {
                let name = file.file_name().unwrap().to_string_lossy().into_owned();
                let prefix = dir.rsplit('/').next().unwrap();
                write(
                    "config_yaml",
                    &format!("{prefix}-{name}"),
                    &std::fs::read(&file).unwrap(),
                );
            }
        }
        let quickstart: Vec<String> = ["token-introspector", "access-policy", "user"]
            .iter()
            .map(|f| {
                std::fs::read_to_string(repo().join(format!("examples/quickstart/{f}.yaml")))
                    .unwrap()
            })
            .collect();
        write(
            "config_yaml",
            "quickstart-all.yaml",
            quickstart.join("---\n").as_bytes(),
        );
        write(
            "config_yaml",
            "errors.yaml",
            b"resourceType: TokenIntrospector\nid: t\ntype: jwt\njwt: {iss: x, keys: [{kty: RSA, alg: RS999, pub: k}]}\n---\n\
              apiVersion: portcullis.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: p}\nspec: {engine: matcho, matcho: {uri: '#('}}\n---\n\
              resourceType: User\nid: u\nidentifier: [{system: s, value: v}]\n---\nresourceType: User\nid: u\n",
        );
        // Read in pieces as a large file is: markers with comments and flow content, a
        // marker-like line inside a block scalar, CRLF, a directive, and a quote left open
        // across a document's end.
        write(
            "config_yaml",
            "pieces.yaml",
            b"# leading comment\nresourceType: User\nid: a\n--- # marked\nresourceType: User\nid: b\ndata: {note: \"--- text\"}\n\
              ---\nresourceType: AccessPolicy\nid: p\nengine: matcho\nmatcho:\n  uri: |\n    ---\n    /x\n\
              --- {resourceType: User, id: flow}\n---\r\nresourceType: User\r\nid: crlf\r\n...\n%YAML 1.2\n---\nresourceType: User\nid: d\n\
              ---\nresourceType: User\nid: e\ndata: \"open\n---\nresourceType: User\nid: f\n",
        );
        write(
            "config_yaml",
            "anchors.yaml",
            b"resourceType: AccessPolicy\nid: a\nengine: complex\nor:\n  - &m {engine: matcho, matcho: {uri: /a}}\n  - *m\n  - {engine: json-schema, schema: {required: [jwt]}}\n",
        );

        let rsa_pub = key("rsa-a.pub.pem");
        let json_configs: [(&str, Value); 6] = [
            (
                "aidbox-array.json",
                json!([
                    {"resourceType": "TokenIntrospector", "id": "auth", "type": "jwt", "jwt": {"iss": "https://auth.example.com", "secret": "very-secret", "leewaySeconds": 10},
                     "claimToHeaders": [{"header": "x-tenant", "claim": "tenant"}]},
                    {"resourceType": "AccessPolicy", "id": "p", "engine": "json-schema", "schema": {"required": ["jwt"]}},
                    {"resourceType": "User", "id": "basic", "email": "basic@example.com", "data": {"roles": ["a"]}}
                ]),
            ),
            (
                "kube-list.json",
                json!({"apiVersion": "v1", "kind": "List", "items": [
                    {"apiVersion": "portcullis.dev/v1alpha1", "kind": "IdentityProvider", "metadata": {"name": "kc", "namespace": "a"},
                     "spec": {"system": "https://kc", "userinfo_endpoint": "https://kc/userinfo", "userinfo-source": "id-token", "scopes": ["openid"]}},
                    {"apiVersion": "portcullis.dev/v1alpha1", "kind": "TokenIntrospector", "metadata": {"name": "kc"},
                     "spec": {"type": "jwt", "jwt": {"iss": "https://kc"}, "jwks_uri": "https://kc/certs", "identity_provider": {"reference": "IdentityProvider/kc"}}}
                ]}),
            ),
            (
                "keys.json",
                json!({"resourceType": "TokenIntrospector", "id": "keys", "type": "jwt",
                "jwt": {"iss": "https://keys", "allowedAudiences": ["api"], "keys": [
                    {"kty": "RSA", "alg": "RS256", "format": "PEM", "pub": rsa_pub, "kid": "a"},
                    {"kty": "OCT", "alg": "HS512", "format": "plain", "k": "oct-secret"}]}}),
            ),
            (
                "opaque.json",
                json!({"resourceType": "TokenIntrospector", "id": "op", "type": "opaque", "cache_ttl": 60,
                "introspection_endpoint": {"url": "https://idp/introspect", "authorization": "Basic Y2xpZW50OnNlY3JldA=="}}),
            ),
            (
                "complex-links.json",
                json!([
                    {"resourceType": "AccessPolicy", "id": "c", "engine": "complex", "and": [
                        {"engine": "matcho", "matcho": {"uri": "#^/fhir/"}},
                        {"engine": "complex", "or": [{"engine": "allow"}, {"engine": "json-schema", "schema": {"not": {"required": ["user"]}}}]}],
                     "link": [{"reference": "User/basic"}, {"resourceType": "Client", "id": "web", "issuer": "https://auth.example.com"}]},
                    {"resourceType": "User", "id": "basic"}
                ]),
            ),
            (
                "conflict.json",
                json!([
                    {"resourceType": "TokenIntrospector", "id": "a", "type": "jwt", "jwt": {"iss": "https://same", "secret": "one"}},
                    {"resourceType": "TokenIntrospector", "id": "b", "type": "jwt", "jwt": {"iss": "https://same", "secret": "two"}},
                    {"resourceType": "IdentityProvider", "id": "i1", "system": "s"},
                    {"resourceType": "IdentityProvider", "id": "i2", "system": "s"}
                ]),
            ),
        ];
        for (name, config) in &json_configs {
            write(
                "config_json",
                name,
                serde_json::to_string_pretty(config).unwrap().as_bytes(),
            );
        }
        // Structured: bytes that common::Gen::configuration turns into resources.
        write(
            "config_json",
            "generated",
            b"\x01\x02\x01\x00\x01\x01\x02\x00\x05\x01\x01\x03",
        );
    }

    fn check_request(
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        raw_headers: &[(&str, &[u8])],
        extensions: &[(&str, &str)],
    ) -> Vec<u8> {
        let http = attribute_context::HttpRequest {
            id: "req-1".into(),
            method: method.into(),
            scheme: "https".into(),
            host: if headers.iter().any(|(k, _)| *k == ":authority") {
                String::new()
            } else {
                "api.example.com".into()
            },
            path: path.into(),
            protocol: "HTTP/1.1".into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            header_map: (!raw_headers.is_empty()).then(|| HeaderMap {
                headers: raw_headers
                    .iter()
                    .map(|(k, v)| HeaderValue {
                        key: k.to_string(),
                        raw_value: v.to_vec(),
                        ..Default::default()
                    })
                    .collect(),
            }),
            ..Default::default()
        };
        let source = attribute_context::Peer {
            address: Some(Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: "10.1.2.3".into(),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        };
        CheckRequest {
            attributes: Some(AttributeContext {
                source: Some(source),
                request: Some(attribute_context::Request {
                    http: Some(http),
                    ..Default::default()
                }),
                context_extensions: extensions
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            }),
        }
        .encode_to_vec()
    }

    fn check_requests() {
        let secret = hs(check_request::SECRET);
        let token = |claims: Value| {
            jwt(
                &json!({"alg": "HS256", "typ": "JWT"}),
                &claims,
                Algorithm::HS256,
                &secret,
            )
        };
        let basic = token(
            json!({"iss": check_request::ISS, "sub": "basic", "exp": EXP, "tenant": "acme",
                                  "realm_access": {"roles": ["a", "b"]}}),
        );
        let admin = token(
            json!({"iss": check_request::ISS, "sub": "someone", "exp": EXP, "roles": ["admin"], "tenant": "t1"}),
        );
        let root = token(json!({"iss": check_request::ISS, "sub": "root", "exp": EXP}));
        let evil = token(
            json!({"iss": check_request::ISS, "sub": "basic", "exp": EXP, "tenant": "a\r\nx-portcullis-user: root"}),
        );
        let expired =
            token(json!({"iss": check_request::ISS, "sub": "basic", "exp": 1_000_000_000u64}));
        let bearer = |t: &str| format!("Bearer {t}");
        let seeds: Vec<(&str, Vec<u8>)> = vec![
            (
                "public",
                check_request("GET", "/public/index.html?x=1", &[], &[], &[]),
            ),
            (
                "no-token",
                check_request(
                    "GET",
                    "/fhir/Patient",
                    &[("accept", "application/json")],
                    &[],
                    &[],
                ),
            ),
            (
                "fhir-reader",
                check_request(
                    "GET",
                    "/fhir/Patient?_count=1",
                    &[("authorization", &bearer(&basic))],
                    &[],
                    &[],
                ),
            ),
            (
                "admin",
                check_request(
                    "DELETE",
                    "/admin?_tenant=t1&access_token=abc",
                    &[("authorization", &bearer(&admin)), ("X-Role", "admin")],
                    &[],
                    &[],
                ),
            ),
            (
                "linked-user",
                check_request(
                    "POST",
                    "/other",
                    &[("authorization", &bearer(&basic))],
                    &[],
                    &[("route", "basic")],
                ),
            ),
            (
                "inactive-user",
                check_request(
                    "GET",
                    "/fhir/x",
                    &[("authorization", &bearer(&root))],
                    &[],
                    &[],
                ),
            ),
            (
                "raw-header-map",
                check_request(
                    "GET",
                    "/fhir/Observation",
                    &[(":authority", "h.example")],
                    &[
                        ("authorization", bearer(&basic).as_bytes()),
                        ("cookie", b"session=s3cret-cookie-value"),
                    ],
                    &[],
                ),
            ),
            (
                "claim-smuggling",
                check_request(
                    "GET",
                    "/fhir/Patient",
                    &[("authorization", &bearer(&evil))],
                    &[],
                    &[],
                ),
            ),
            (
                "expired",
                check_request(
                    "GET",
                    "/fhir/Patient",
                    &[("authorization", &bearer(&expired))],
                    &[],
                    &[],
                ),
            ),
            (
                "two-tokens",
                check_request(
                    "GET",
                    "/fhir/Patient",
                    &[("authorization", &format!("Bearer {basic},Bearer {admin}"))],
                    &[],
                    &[],
                ),
            ),
            (
                "basic-auth",
                check_request(
                    "GET",
                    "/public",
                    &[("authorization", "Basic dXNlcjpwYXNzd29yZA==")],
                    &[],
                    &[],
                ),
            ),
        ];
        for (name, bytes) in seeds {
            // Protobuf maps are written in hash order: keep a seed that says the same.
            let file = repo().join("fuzz/seeds/check_request").join(name);
            let same = std::fs::read(&file).ok().is_some_and(|old| {
                CheckRequest::decode(old.as_slice()).ok()
                    == CheckRequest::decode(bytes.as_slice()).ok()
            });
            if !same {
                write("check_request", name, &bytes);
            }
        }
    }

    fn admission_reviews() {
        let review = |uid: &str,
                      operation: &str,
                      kind: &str,
                      name: &str,
                      spec: Value,
                      old: Option<Value>| {
            let object = |spec: Value| {
                json!({"apiVersion": "portcullis.dev/v1alpha1", "kind": kind,
                "metadata": {"name": name, "namespace": "team-a"}, "spec": spec})
            };
            let mut request = json!({"uid": uid, "kind": {"group": "portcullis.dev", "version": "v1alpha1", "kind": kind},
                "resource": {"group": "portcullis.dev", "version": "v1alpha1", "resource": "x"},
                "name": name, "namespace": "team-a", "operation": operation, "object": object(spec)});
            if let Some(old) = old {
                request["oldObject"] = object(old);
            }
            serde_json::to_vec_pretty(&json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})).unwrap()
        };
        let jwt = |iss: &str| json!({"type": "jwt", "jwt": {"iss": iss, "secret": "a-long-secret-value"}});
        let seeds: Vec<(&str, Vec<u8>)> = vec![
            (
                "introspector-create",
                review(
                    "u1",
                    "CREATE",
                    "TokenIntrospector",
                    "new",
                    jwt("https://new.example"),
                    None,
                ),
            ),
            (
                "introspector-conflict",
                review(
                    "u2",
                    "CREATE",
                    "TokenIntrospector",
                    "other",
                    jwt("https://auth.example.com"),
                    None,
                ),
            ),
            (
                "introspector-secret-ref",
                review(
                    "u3",
                    "UPDATE",
                    "TokenIntrospector",
                    "auth",
                    json!({"type": "jwt", "jwt": {"iss": "https://auth.example.com", "secretRef": {"name": "s", "key": "k"}}, "identity_provider": {"reference": "IdentityProvider/missing"}}),
                    Some(jwt("https://auth.example.com")),
                ),
            ),
            (
                "policy-bad-regex",
                review(
                    "u4",
                    "CREATE",
                    "AccessPolicy",
                    "p",
                    json!({"engine": "matcho", "matcho": {"uri": "#("}}),
                    None,
                ),
            ),
            (
                "policy-unchanged",
                review(
                    "u5",
                    "UPDATE",
                    "AccessPolicy",
                    "p",
                    json!({"engine": "nope"}),
                    Some(json!({"engine": "nope"})),
                ),
            ),
            (
                "policy-links",
                review(
                    "u6",
                    "CREATE",
                    "AccessPolicy",
                    "p",
                    json!({"engine": "allow", "link": [{"reference": "User/ghost"}, {"reference": "User/basic"}]}),
                    None,
                ),
            ),
            (
                "user-identifier-taken",
                review(
                    "u7",
                    "CREATE",
                    "User",
                    "u2",
                    json!({"identifier": [{"system": "https://auth.example.com", "value": "basic"}]}),
                    None,
                ),
            ),
            (
                "provider-system",
                review(
                    "u8",
                    "CREATE",
                    "IdentityProvider",
                    "idp2",
                    json!({"system": "https://auth.example.com"}),
                    None,
                ),
            ),
            (
                "delete",
                review("u9", "DELETE", "User", "basic", json!({}), None),
            ),
        ];
        for (name, bytes) in seeds {
            write("admission_review", name, &bytes);
        }
        write("admission_review", "v1beta1", br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"b1","kind":{"group":"portcullis.dev","kind":"User"},"operation":"CREATE"}}"#);
        write(
            "admission_review",
            "not-a-review",
            br#"{"request":{"uid":"x1"},"kind":7}"#,
        );
        write(
            "admission_review",
            "generated",
            b"\x01\x00\x02\x01\x01\x03\x01",
        );
    }
}
