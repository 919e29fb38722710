//! The checks of one object that the object alone decides, in one table: the bounds of its
//! numbers, lists and strings, and the rules between its fields.
//!
//! Two readers, one text:
//!
//! - the Rust checks that `validate`, file mode, an object's `Ready` condition and the
//!   admission webhook share (`token/introspector.rs`, `token/claim_headers.rs`,
//!   `policy/`, `snapshot/compile.rs`, `resources/reference.rs`) take their bounds and
//!   their messages from here;
//! - the CRDs (`crd.rs`) carry the bounds as `minimum`/`maximum`/`maxItems`/`maxLength`
//!   and each [`Rule`] as a CEL `x-kubernetes-validations` entry with the same message, so
//!   that `kubectl apply` refuses those mistakes even where no webhook runs.
//!
//! A rule is plain CEL (no Kubernetes library functions), and reads only what its own
//! object holds: checks that need other objects (conflicts, references), parsing (PEM keys,
//! regexes, JSON Schemas, matcho) or dynamic messages stay with the webhook. Every rule is
//! evaluated in this crate's tests against the samples that `validate` refuses and the
//! shipped examples (`crd/tests.rs`); admission by a real API server (its cost estimator,
//! its CEL libraries) is not checked there.

use super::Kind;

// ---- Bounds. The schema states each one; the Rust check refuses past it. ----

/// `cache_ttl`, in seconds.
pub const MIN_CACHE_TTL_SECONDS: u32 = 1;
pub const MAX_CACHE_TTL_SECONDS: u32 = 86_400;
/// `jwt.leewaySeconds`: more would keep expired tokens alive.
pub const MAX_LEEWAY_SECONDS: u32 = 300;
/// `jwt.keys`: each token may be tried against every key of its `alg`.
pub const MAX_JWT_KEYS: usize = 16;
/// `jwt.allowedAudiences`.
pub const MAX_AUDIENCES: usize = 32;
/// `claimToHeaders` entries of one introspector.
pub const MAX_CLAIM_TO_HEADERS: usize = 32;
/// A `claimToHeaders` header name's length.
pub const MAX_HEADER_NAME_BYTES: usize = 128;
/// A `claimToHeaders` claim path's length (`realm_access.roles`).
pub const MAX_CLAIM_PATH_BYTES: usize = 256;
/// `link` entries of one AccessPolicy.
pub const MAX_LINKS: usize = 1024;
/// A `reference: Kind/name` (a Kubernetes name is at most 253 bytes).
pub const MAX_REFERENCE_BYTES: usize = 512;
/// A reference's `resourceType` (a kind's name).
pub const MAX_KIND_BYTES: usize = 63;
/// The [`super::json_weight`] of one object's `spec`: its values, a string counting one
/// more per 32 bytes. An allow-list of 10,000 e-mails weighs about 20,000, a 3 MiB PEM
/// key about 100,000; a million small numbers (3 MiB too) would cost the webhook and
/// every replica hundreds of MiB to read and compile. Checked before the spec is read
/// into its type, and by the webhook before the object is parsed at all.
pub const MAX_SPEC_WEIGHT: u32 = 100_000;
/// What an object's `metadata` may add to it, as the webhook weighs the whole object:
/// the API server allows 256 KiB of annotations.
pub const MAX_METADATA_WEIGHT: u32 = 16_384;

/// Request headers that carry credentials, and `host`: never set from a claim.
pub const CREDENTIAL_OR_ROUTING_HEADERS: [&str; 4] =
    ["authorization", "proxy-authorization", "cookie", "host"];

/// `x-` headers that are not the application's: set by Envoy, tracing or portcullis.
pub const RESERVED_HEADER_PREFIXES: [&str; 5] = [
    "x-forwarded-",
    "x-envoy-",
    "x-request-id",
    "x-b3-",
    "x-portcullis-",
];

// ---- Rules between fields. ----

/// One check of one object, as the Rust code and the CRD both state it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// A short name, unique, for tests and docs.
    pub id: &'static str,
    pub kind: Kind,
    /// Where in the object the rule stands, from its root: `spec`, `spec.jwt`, and `[]`
    /// for each item of a list (`spec.jwt.keys[]`). CEL's `self` is the value there.
    pub at: &'static str,
    /// The field that the message is about, relative to `at` (the CRD's `fieldPath`), when
    /// it is one field.
    pub field: Option<&'static str>,
    /// The CEL expression, true when the object is right.
    pub cel: &'static str,
    /// What `validate`, the webhook, status and the API server say when it is false.
    pub message: &'static str,
}

const TI: Kind = Kind::TokenIntrospector;
const AP: Kind = Kind::AccessPolicy;

/// The message of every value given both inline and by Secret reference.
const BOTH: &str = "the value is also given inline: keep one of the two";
const URL: &str = "not an http(s) URL";

pub const KEY_SOURCE: Rule = Rule {
    id: "ti-one-key-source",
    kind: TI,
    at: "spec",
    field: None,
    cel: "self.type != 'jwt' || \
          (has(self.jwt) && (has(self.jwt.secret) || has(self.jwt.secretRef)) ? 1 : 0) + \
          (has(self.jwt) && has(self.jwt.keys) ? 1 : 0) + \
          (has(self.jwks_uri) ? 1 : 0) + \
          (has(self.openidDiscovery) && self.openidDiscovery ? 1 : 0) == 1",
    message: "set exactly one key source: jwt.secret (or jwt.secretRef), jwt.keys, jwks_uri, \
              or openidDiscovery: true",
};

pub const ISSUER_REQUIRED: Rule = Rule {
    id: "ti-jwt-issuer",
    kind: TI,
    at: "spec",
    field: Some(".jwt.iss"),
    cel: "self.type != 'jwt' || has(self.jwt) && has(self.jwt.iss) && size(self.jwt.iss) > 0",
    message: "required for type: jwt (a JWT is matched to its introspector by issuer)",
};

pub const ENDPOINT_ONLY_OPAQUE: Rule = Rule {
    id: "ti-jwt-no-introspection",
    kind: TI,
    at: "spec",
    field: Some(".introspection_endpoint"),
    cel: "self.type != 'jwt' || !has(self.introspection_endpoint)",
    message: "only for type: opaque",
};

pub const OPAQUE_NO_KEYS: Rule = Rule {
    id: "ti-opaque-no-keys",
    kind: TI,
    at: "spec",
    field: Some(".type"),
    cel: "self.type != 'opaque' || !has(self.jwks_uri) && !(has(self.jwt) && \
          (has(self.jwt.secret) || has(self.jwt.secretRef) || has(self.jwt.keys)))",
    message: "opaque introspectors take introspection_endpoint, not JWT keys",
};

pub const OPAQUE_ENDPOINT: Rule = Rule {
    id: "ti-opaque-endpoint",
    kind: TI,
    at: "spec",
    field: Some(".introspection_endpoint.url"),
    cel: "self.type != 'opaque' || has(self.introspection_endpoint)",
    message: "required for type: opaque",
};

pub const KEYS_NOT_EMPTY: Rule = Rule {
    id: "ti-keys-not-empty",
    kind: TI,
    at: "spec",
    field: Some(".jwt.keys"),
    cel: "self.type != 'jwt' || !has(self.jwt) || !has(self.jwt.keys) || \
          size(self.jwt.keys) > 0",
    message: "empty list: no token could verify",
};

pub const JWKS_URL: Rule = Rule {
    id: "ti-jwks-url",
    kind: TI,
    at: "spec.jwks_uri",
    field: None,
    cel: "self.startsWith('http://') && size(self) > 7 || \
          self.startsWith('https://') && size(self) > 8",
    message: URL,
};

pub const ENDPOINT_URL: Rule = Rule {
    id: "ti-introspection-url",
    kind: TI,
    at: "spec.introspection_endpoint.url",
    ..JWKS_URL
};

pub const SECRET_BOTH: Rule = Rule {
    id: "ti-secret-inline-or-ref",
    kind: TI,
    at: "spec.jwt",
    field: Some(".secretRef"),
    cel: "!(has(self.secret) && has(self.secretRef))",
    message: BOTH,
};

pub const SECRET_NOT_EMPTY: Rule = Rule {
    id: "ti-secret-not-empty",
    kind: TI,
    at: "spec.jwt",
    field: Some(".secret"),
    cel: "!has(self.secret) || size(self.secret) > 0",
    message: "empty: a shared secret must have at least one byte",
};

pub const AUDIENCES_NOT_EMPTY: Rule = Rule {
    id: "ti-audiences-not-empty",
    kind: TI,
    at: "spec.jwt",
    field: Some(".allowedAudiences"),
    cel: "!has(self.allowedAudiences) || size(self.allowedAudiences) > 0",
    message: "empty list would refuse every token; omit it to accept any audience",
};

pub const KEY_ALG_FITS: Rule = Rule {
    id: "ti-key-alg-fits-kty",
    kind: TI,
    at: "spec.jwt.keys[]",
    field: Some(".alg"),
    cel: "self.kty == 'RSA' && self.alg in ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512'] || \
          self.kty == 'EC' && self.alg in ['ES256', 'ES384'] || \
          self.kty == 'OKP' && self.alg == 'EdDSA' || \
          self.kty in ['OCT', 'oct'] && self.alg in ['HS256', 'HS384', 'HS512']",
    message: "does not fit the key's kty: RSA takes RS256, RS384, RS512, PS256, PS384 or PS512; \
              EC takes ES256 or ES384; OKP takes EdDSA; OCT takes HS256, HS384 or HS512",
};

pub const KEY_OCT_PLAIN: Rule = Rule {
    id: "ti-key-oct-plain",
    kind: TI,
    at: "spec.jwt.keys[]",
    field: Some(".format"),
    cel: "!(self.kty in ['OCT', 'oct']) || has(self.format) && self.format == 'plain'",
    message: "an OCT key is a plain secret in `k`: use format: plain",
};

pub const KEY_PUBLIC_PEM: Rule = Rule {
    id: "ti-key-public-pem",
    kind: TI,
    at: "spec.jwt.keys[]",
    field: Some(".format"),
    cel: "self.kty in ['OCT', 'oct'] || !has(self.format) || self.format != 'plain'",
    message: "public keys are given as PEM in `pub`: use format: PEM",
};

pub const KEY_PUB_REQUIRED: Rule = Rule {
    id: "ti-key-pub",
    kind: TI,
    at: "spec.jwt.keys[]",
    field: Some(".pub"),
    cel: "self.kty in ['OCT', 'oct'] || has(self.format) && self.format == 'plain' || \
          has(self.pub)",
    message: "required: the PEM public key",
};

pub const KEY_K_REQUIRED: Rule = Rule {
    id: "ti-key-k",
    kind: TI,
    at: "spec.jwt.keys[]",
    field: Some(".k"),
    cel: "!(self.kty in ['OCT', 'oct'] && has(self.format) && self.format == 'plain') || \
          has(self.kRef) || has(self.k) && size(self.k) > 0",
    message: "required for an OCT key with format: plain",
};

pub const K_BOTH: Rule = Rule {
    id: "ti-k-inline-or-ref",
    kind: TI,
    at: "spec.jwt.keys[]",
    field: Some(".kRef"),
    cel: "!(has(self.k) && has(self.kRef))",
    message: BOTH,
};

pub const AUTHORIZATION_BOTH: Rule = Rule {
    id: "ti-authorization-inline-or-ref",
    kind: TI,
    at: "spec.introspection_endpoint",
    field: Some(".authorizationRef"),
    cel: "!(has(self.authorization) && has(self.authorizationRef))",
    message: BOTH,
};

pub const PROVIDER_REF_SHAPE: Rule = Rule {
    id: "ti-provider-reference-shape",
    kind: TI,
    at: "spec.identity_provider",
    field: None,
    cel: "has(self.reference) ? !has(self.resourceType) && !has(self.id) : \
          has(self.resourceType) == has(self.id)",
    message: "use either `reference: Kind/name` or `resourceType` with `id`, not both",
};

pub const PROVIDER_REF_EMPTY: Rule = Rule {
    id: "ti-provider-reference-empty",
    kind: TI,
    at: "spec.identity_provider",
    field: None,
    cel: "has(self.reference) || has(self.resourceType) || has(self.id)",
    message: "empty reference",
};

pub const PROVIDER_REF_FORM: Rule = Rule {
    id: "ti-provider-reference-form",
    kind: TI,
    at: "spec.identity_provider",
    field: Some(".reference"),
    cel: "!has(self.reference) || self.reference.matches('^[^/]+/[^/]+$')",
    message: "not of the form Kind/name",
};

pub const PROVIDER_REF_KIND: Rule = Rule {
    id: "ti-provider-reference-kind",
    kind: TI,
    at: "spec.identity_provider",
    field: None,
    cel: "has(self.reference) ? self.reference.startsWith('IdentityProvider/') : \
          !has(self.resourceType) || self.resourceType == 'IdentityProvider'",
    message: "must reference an IdentityProvider",
};

pub const CLAIM_HEADER_TOKEN: Rule = Rule {
    id: "ti-claim-header-name",
    kind: TI,
    at: "spec.claimToHeaders[]",
    field: Some(".header"),
    cel: r#"self.header.matches("^[a-z0-9!#$%&'*+.^_`|~-]+$")"#,
    message: "not a lower-case HTTP header name",
};

pub const CLAIM_HEADER_CREDENTIALS: Rule = Rule {
    id: "ti-claim-header-credentials",
    kind: TI,
    at: "spec.claimToHeaders[]",
    field: Some(".header"),
    cel: "!(self.header in ['authorization', 'proxy-authorization', 'cookie', 'host'])",
    message: "not for claims: it carries credentials or routing",
};

pub const CLAIM_HEADER_X: Rule = Rule {
    id: "ti-claim-header-x",
    kind: TI,
    at: "spec.claimToHeaders[]",
    field: Some(".header"),
    cel: "self.header.startsWith('x-')",
    message: "claims go only into `x-` headers of the application's own",
};

pub const CLAIM_HEADER_RESERVED: Rule = Rule {
    id: "ti-claim-header-reserved",
    kind: TI,
    at: "spec.claimToHeaders[]",
    field: Some(".header"),
    cel: "!(self.header.startsWith('x-forwarded-') || self.header.startsWith('x-envoy-') || \
          self.header.startsWith('x-request-id') || self.header.startsWith('x-b3-') || \
          self.header.startsWith('x-portcullis-'))",
    message: "x-forwarded-*, x-envoy-*, x-request-id, x-b3-* and x-portcullis-* headers \
              belong to Envoy, tracing or portcullis",
};

pub const CLAIM_HEADER_ONCE: Rule = Rule {
    id: "ti-claim-header-once",
    kind: TI,
    at: "spec.claimToHeaders",
    field: None,
    cel: "self.all(e, self.exists_one(f, f.header == e.header))",
    message: "set by an earlier entry: each header once",
};

pub const CLAIM_PATH: Rule = Rule {
    id: "ti-claim-path",
    kind: TI,
    at: "spec.claimToHeaders[]",
    field: Some(".claim"),
    cel: "self.claim.matches('^[^.]+([.][^.]+)*$')",
    message: "a claim name, or a dotted path to a nested claim (`realm_access.roles`)",
};

pub const AND_OR_BOTH: Rule = Rule {
    id: "ap-and-or-not-both",
    kind: AP,
    at: "spec",
    field: Some(".and"),
    cel: "self.engine != 'complex' || !(has(self.and) && has(self.or))",
    message: "both \"and\" and \"or\" given; engine \"complex\" takes exactly one",
};

pub const COMPLEX_BODY: Rule = Rule {
    id: "ap-complex-body",
    kind: AP,
    at: "spec",
    field: Some(".and"),
    cel: "self.engine != 'complex' || has(self.and) || has(self.or)",
    message: "missing; engine \"complex\" needs exactly one of \"and\", \"or\"",
};

pub const AND_NOT_EMPTY: Rule = Rule {
    id: "ap-and-not-empty",
    kind: AP,
    at: "spec",
    field: Some(".and"),
    cel: "self.engine != 'complex' || !has(self.and) || size(self.and) > 0",
    message: "must not be empty",
};

pub const OR_NOT_EMPTY: Rule = Rule {
    id: "ap-or-not-empty",
    field: Some(".or"),
    cel: "self.engine != 'complex' || !has(self.or) || size(self.or) > 0",
    ..AND_NOT_EMPTY
};

pub const MATCHO_BODY: Rule = Rule {
    id: "ap-matcho-body",
    kind: AP,
    at: "spec",
    field: Some(".matcho"),
    cel: "self.engine != 'matcho' || has(self.matcho)",
    message: "missing; engine \"matcho\" needs \"matcho\"",
};

pub const SCHEMA_BODY: Rule = Rule {
    id: "ap-json-schema-body",
    kind: AP,
    at: "spec",
    field: Some(".schema"),
    cel: "self.engine != 'json-schema' || has(self.schema)",
    message: "missing; engine \"json-schema\" needs \"schema\"",
};

pub const LINK_NOT_EMPTY: Rule = Rule {
    id: "ap-link-not-empty",
    kind: AP,
    at: "spec",
    field: Some(".link"),
    cel: "!has(self.link) || size(self.link) > 0",
    message: "empty: name at least one User or Client, or remove `link` to apply the policy \
              to every request",
};

pub const LINK_SHAPE: Rule = Rule {
    id: "ap-link-reference-shape",
    kind: AP,
    at: "spec.link[]",
    ..PROVIDER_REF_SHAPE
};

pub const LINK_EMPTY: Rule = Rule {
    id: "ap-link-reference-empty",
    kind: AP,
    at: "spec.link[]",
    ..PROVIDER_REF_EMPTY
};

pub const LINK_FORM: Rule = Rule {
    id: "ap-link-reference-form",
    kind: AP,
    at: "spec.link[]",
    ..PROVIDER_REF_FORM
};

pub const LINK_KIND: Rule = Rule {
    id: "ap-link-kind",
    kind: AP,
    at: "spec.link[]",
    field: None,
    cel: "has(self.reference) ? \
          self.reference.startsWith('User/') || self.reference.startsWith('Client/') : \
          !has(self.resourceType) || self.resourceType in ['User', 'Client']",
    message: "a link points at a User or a Client, nothing else",
};

pub const LINK_USER_NO_ISSUER: Rule = Rule {
    id: "ap-link-user-issuer",
    kind: AP,
    at: "spec.link[]",
    field: Some(".issuer"),
    cel: "!has(self.issuer) || !(has(self.reference) ? self.reference.startsWith('User/') : \
          has(self.resourceType) && self.resourceType == 'User')",
    message: "only a Client link takes `issuer`: a User is found through its own identifiers",
};

pub const LINK_CLIENT_ISSUER: Rule = Rule {
    id: "ap-link-client-issuer",
    kind: AP,
    at: "spec.link[]",
    field: Some(".issuer"),
    cel: "!(has(self.reference) ? self.reference.startsWith('Client/') : \
          has(self.resourceType) && self.resourceType == 'Client') || \
          has(self.issuer) && size(self.issuer) > 0",
    message: "required on a Client link: the jwt.iss whose tokens may name this client, as \
              in {reference: Client/<id>, issuer: https://auth.example.com}",
};

/// Every rule, in the order the CRDs list them.
pub const RULES: &[Rule] = &[
    KEY_SOURCE,
    ISSUER_REQUIRED,
    ENDPOINT_ONLY_OPAQUE,
    OPAQUE_NO_KEYS,
    OPAQUE_ENDPOINT,
    KEYS_NOT_EMPTY,
    JWKS_URL,
    ENDPOINT_URL,
    SECRET_BOTH,
    SECRET_NOT_EMPTY,
    AUDIENCES_NOT_EMPTY,
    KEY_ALG_FITS,
    KEY_OCT_PLAIN,
    KEY_PUBLIC_PEM,
    KEY_PUB_REQUIRED,
    KEY_K_REQUIRED,
    K_BOTH,
    AUTHORIZATION_BOTH,
    PROVIDER_REF_SHAPE,
    PROVIDER_REF_EMPTY,
    PROVIDER_REF_FORM,
    PROVIDER_REF_KIND,
    CLAIM_HEADER_TOKEN,
    CLAIM_HEADER_CREDENTIALS,
    CLAIM_HEADER_X,
    CLAIM_HEADER_RESERVED,
    CLAIM_HEADER_ONCE,
    CLAIM_PATH,
    AND_OR_BOTH,
    COMPLEX_BODY,
    AND_NOT_EMPTY,
    OR_NOT_EMPTY,
    MATCHO_BODY,
    SCHEMA_BODY,
    LINK_NOT_EMPTY,
    LINK_SHAPE,
    LINK_EMPTY,
    LINK_FORM,
    LINK_KIND,
    LINK_USER_NO_ISSUER,
    LINK_CLIENT_ISSUER,
];

/// What the Rust check says when a value is given both inline and by Secret reference.
pub const BOTH_INLINE_AND_REFERENCE: &str = BOTH;
/// What the Rust check says of a URL that is not `http(s)://` and more.
pub const NOT_A_URL: &str = URL;

/// The message for an engine's missing body key (`matcho`, `schema`).
pub fn body_required(key: &str) -> Option<&'static str> {
    match key {
        "matcho" => Some(MATCHO_BODY.message),
        "schema" => Some(SCHEMA_BODY.message),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_ids_are_unique_and_every_rule_is_listed_once() {
        let mut ids: Vec<&str> = RULES.iter().map(|r| r.id).collect();
        ids.sort_unstable();
        let before = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), before, "duplicate rule ids");
        assert!(RULES.iter().all(|r| r.at.starts_with("spec")));
    }

    /// The CEL of the header rules names the same headers as the Rust check.
    #[test]
    fn header_rules_name_the_lists_the_code_uses() {
        for h in CREDENTIAL_OR_ROUTING_HEADERS {
            assert!(
                CLAIM_HEADER_CREDENTIALS.cel.contains(&format!("'{h}'")),
                "{h}"
            );
        }
        for prefix in RESERVED_HEADER_PREFIXES {
            let quoted = format!("startsWith('{prefix}')");
            assert!(CLAIM_HEADER_RESERVED.cel.contains(&quoted), "{prefix}");
            assert!(CLAIM_HEADER_RESERVED
                .message
                .contains(prefix.trim_end_matches('-')));
        }
        for h in crate::resources::CREDENTIAL_HEADERS {
            assert!(CREDENTIAL_OR_ROUTING_HEADERS.contains(&h), "{h}");
        }
    }
}
