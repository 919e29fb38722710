//! What several fuzz bodies share: an async runtime, a splitter of the input into parts, a
//! generator of JSON values from raw bytes (so that inputs that are not JSON text still
//! reach deep into the engines), and a realistic request context.
//!
//! Each body includes this file as its own `mod common`, so that a body stays one
//! self-contained module (for `fuzz_targets/` and `tests/fuzz_smoke.rs` alike).
#![allow(dead_code)]

use std::future::Future;

use serde_json::{json, Map, Value};

/// Runs `future` to completion on this thread's runtime (current-thread, time and IO on),
/// built once per thread.
pub fn block_on<F: Future>(future: F) -> F::Output {
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime");
    }
    RUNTIME.with(|rt| rt.block_on(future))
}

/// The byte that separates the parts of an input: never found in UTF-8 text, so that JSON
/// or YAML parts keep their own bytes.
pub const SEPARATOR: u8 = 0xFF;

/// The input cut at [`SEPARATOR`] bytes into `n` parts (the last takes the rest; missing
/// parts are empty).
pub fn split(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut parts: Vec<&[u8]> = data.splitn(n, |&b| b == SEPARATOR).collect();
    parts.resize(n, &[]);
    parts
}

/// Reads raw bytes as choices: each read takes what is left, and zeros once it runs out.
pub struct Gen<'a> {
    data: &'a [u8],
    pos: usize,
}

/// Words the engines and the configuration care about: keys, operators, references.
pub const KEYS: &[&str] = &[
    "uri",
    "request-method",
    "scheme",
    "query-string",
    "params",
    "headers",
    "remote-addr",
    "context-extensions",
    "jwt",
    "token",
    "client",
    "user",
    "iss",
    "sub",
    "aud",
    "exp",
    "id",
    "data",
    "roles",
    "email",
    "identifier",
    "system",
    "value",
    "authorization",
    "x-role",
    "$enum",
    "$one-of",
    "$contains",
    "$every",
    "$not",
    "type",
    "properties",
    "required",
    "const",
    "constant",
    "enum",
    "pattern",
    "patternProperties",
    "items",
    "additionalProperties",
    "anyOf",
    "allOf",
    "oneOf",
    "not",
    "if",
    "then",
    "else",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "multipleOf",
    "format",
    "$ref",
    "definitions",
    "dependencies",
    "propertyNames",
    "uniqueItems",
    "contains",
    "engine",
    "matcho",
    "schema",
    "and",
    "or",
    "link",
    "0",
    "1",
    "",
];

pub const STRINGS: &[&str] = &[
    "present?",
    "nil?",
    "not-blank?",
    "#^/fhir/.*",
    "#^/public(/|$)",
    "#[a-z]+",
    "#(",
    "#a{2,5}b?",
    "#(?i)admin",
    ".jwt.sub",
    ".user.id",
    ".params.x",
    ".headers.x-role",
    ".jwt.roles.0",
    ".",
    "..a",
    "get",
    "post",
    "/fhir/Patient",
    "/public",
    "https://auth.example.com",
    "admin",
    "basic",
    "string",
    "object",
    "array",
    "integer",
    "number",
    "boolean",
    "null",
    "#/definitions/a",
    "#",
    "email",
    "uri",
    "date-time",
    "regex",
    "allow",
    "matcho",
    "json-schema",
    "complex",
    "User/basic",
    "Client/web",
    "",
    " ",
    "[redacted]",
];

impl<'a> Gen<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Gen { data, pos: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    pub fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    pub fn below(&mut self, n: usize) -> usize {
        usize::from(self.byte()) % n.max(1)
    }

    pub fn u64(&mut self) -> u64 {
        (0..8).fold(0, |acc, _| acc << 8 | u64::from(self.byte()))
    }

    pub fn pick<'w>(&mut self, words: &[&'w str]) -> &'w str {
        words[self.below(words.len())]
    }

    /// Up to 16 bytes of the input as text.
    pub fn raw_string(&mut self) -> String {
        let len = self.below(17);
        let start = self.pos.min(self.data.len());
        let end = (start + len).min(self.data.len());
        self.pos += len;
        String::from_utf8_lossy(&self.data[start..end]).into_owned()
    }

    pub fn string(&mut self) -> String {
        match self.below(4) {
            0 => self.raw_string(),
            1 => self.pick(KEYS).to_string(),
            _ => self.pick(STRINGS).to_string(),
        }
    }

    pub fn key(&mut self) -> String {
        match self.below(8) {
            0 => self.raw_string(),
            1 => self.pick(STRINGS).to_string(),
            _ => self.pick(KEYS).to_string(),
        }
    }

    /// A JSON value at most `depth` levels deep.
    pub fn value(&mut self, depth: usize) -> Value {
        let choice = if depth == 0 {
            self.below(5)
        } else {
            self.below(8)
        };
        match choice {
            0 => Value::Null,
            1 => Value::Bool(self.byte() & 1 == 1),
            2 => match self.below(4) {
                0 => json!(self.u64()),
                1 => json!(self.u64() as i64),
                2 => json!(i64::from(self.byte()) - 128),
                _ => serde_json::Number::from_f64(f64::from_bits(self.u64()))
                    .map_or(Value::Null, Value::Number),
            },
            3 | 4 => Value::String(self.string()),
            5 => {
                let n = self.below(5);
                Value::Array((0..n).map(|_| self.value(depth - 1)).collect())
            }
            _ => {
                let n = self.below(6);
                let mut map = Map::new();
                for _ in 0..n {
                    let key = self.key();
                    let value = self.value(depth - 1);
                    map.insert(key, value);
                }
                Value::Object(map)
            }
        }
    }
}

/// A JSON value from the input: the input itself if it is JSON text, otherwise one built by
/// [`Gen`] from its bytes.
pub fn json_from(data: &[u8], depth: usize) -> Value {
    match serde_json::from_slice(data) {
        Ok(v) => v,
        Err(_) => Gen::new(data).value(depth),
    }
}

/// A request context from the input: an object, as every request context is.
pub fn context_from(data: &[u8]) -> Value {
    match json_from(data, 6) {
        ctx @ Value::Object(_) => ctx,
        other => json!({"uri": "/", "data": other}),
    }
}

/// A credential that must never appear in an explanation, log or trace.
pub const SECRET_TOKEN: &str = "SECRET-TOKEN-must-not-leak";

/// A request context as `decision::context::build` makes it, with JWT claims and a User.
pub fn request_context() -> Value {
    use portcullis::decision::{context, HttpRequest};
    let request = HttpRequest {
        method: "GET".into(),
        scheme: "https".into(),
        host: "api.example.com".into(),
        path: "/fhir/Patient/1?x=1&x=2&_count=10&access_token=SECRET-TOKEN-must-not-leak".into(),
        headers: vec![
            ("authorization".into(), format!("Bearer {SECRET_TOKEN}")),
            ("x-role".into(), "admin".into()),
            ("cookie".into(), format!("session={SECRET_TOKEN}")),
            ("host".into(), "api.example.com".into()),
        ],
        remote_addr: Some("10.0.0.1".into()),
        context_extensions: vec![("tenant".into(), "acme".into())],
        namespace: None,
    };
    let mut ctx = context::build(&request, None, None);
    if let Value::Object(map) = &mut ctx {
        map.insert(
            "jwt".into(),
            json!({"iss": "https://auth.example.com", "sub": "basic", "aud": ["api"],
                   "roles": ["admin", "reader"], "exp": 4102444800u64, "email": ""}),
        );
        map.insert("client".into(), json!({"id": "web"}));
        map.insert(
            "user".into(),
            json!({"id": "basic", "data": {"roles": ["admin"], "tenant": "acme"},
                   "identifier": [{"system": "https://auth.example.com", "value": "basic"}]}),
        );
    }
    ctx
}

/// What must hold of any compiled policy on any context: `explain` agrees with `evaluate`,
/// a policy said to allow every request allows this one, a denial says why, and neither the
/// explanation nor its JSON carries a credential of `ctx` (unless the policy itself names
/// it, `names_secret`).
pub fn check_policy(policy: &portcullis::policy::Policy, ctx: &Value, names_secret: bool) {
    use portcullis::policy::EvalContext;
    let eval = EvalContext::new(ctx);
    let allowed = policy.evaluate(&eval);
    let explanation = policy.explain(&EvalContext::new(ctx));
    assert_eq!(
        allowed,
        explanation.allowed,
        "explain disagrees with evaluate ({} policy)",
        policy.engine()
    );
    if policy.allows_every_request() {
        assert!(allowed, "a policy that allows every request denied one");
    }
    let text = serde_json::to_string(&explanation).expect("an explanation serialises");
    if !names_secret {
        assert!(
            !text.contains(SECRET_TOKEN),
            "an explanation carries a credential: {text}"
        );
    }
}

/// A spec as the JSON a manifest's `spec` holds.
pub fn spec_value(spec: &portcullis::resources::Spec) -> Value {
    use portcullis::resources::Spec;
    match spec {
        Spec::TokenIntrospector(s) => serde_json::to_value(s),
        Spec::AccessPolicy(s) => serde_json::to_value(s),
        Spec::IdentityProvider(s) => serde_json::to_value(s),
        Spec::User(s) => serde_json::to_value(s),
        Spec::Secret(s) => Ok(json!({ "keys": s.values.keys().collect::<Vec<_>>() })),
    }
    .expect("a parsed spec serialises")
}

/// Resources as a YAML stream of Kubernetes manifests, one document each.
pub fn to_manifests(resources: &[portcullis::resources::Resource]) -> String {
    let mut out = String::new();
    for r in resources {
        let mut metadata = Map::new();
        metadata.insert("name".into(), Value::String(r.name.clone()));
        if let Some(ns) = &r.namespace {
            metadata.insert("namespace".into(), Value::String(ns.clone()));
        }
        let manifest = json!({
            "apiVersion": "portcullis.dev/v1alpha1",
            "kind": r.spec.kind_name(),
            "metadata": metadata,
            "spec": spec_value(&r.spec),
        });
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&manifest).expect("a manifest serialises as YAML"));
    }
    out
}

/// The configuration loader on one file's text, as `validate` and the file source run it
/// (`source::for_each_document` into a `snapshot::Compiler`). Properties: no panic; an error
/// of either stage fails the whole; every parsed spec serialises and reads back as itself;
/// a configuration that compiles, written back out as manifests, loads and compiles again
/// to the same resources; its policies evaluate on a request context.
pub fn check_config(file: &str, text: &str) -> Option<portcullis::snapshot::Snapshot> {
    use portcullis::resources::{for_each_document, parse_documents, parse_spec, Resource};
    use portcullis::snapshot::Compiler;
    use std::path::Path;

    let mut compiler = Compiler::default();
    let mut resources: Vec<Resource> = Vec::new();
    let mut parse_errors = 0;
    for_each_document(Path::new(file), text, |item| {
        match &item {
            Ok(r) => resources.push(r.clone()),
            Err(e) => {
                parse_errors += 1;
                let _ = e.to_string();
            }
        }
        compiler.push(item);
    });
    // A Secret is refused by the file source's compiler below: not a spec to read back.
    for r in resources.iter().filter(|r| r.spec.kind().is_some()) {
        let value = spec_value(&r.spec);
        let back = parse_spec(r.spec.kind_name(), value)
            .unwrap_or_else(|e| panic!("{} does not read back: {e:?}", r.id()));
        assert_eq!(back, r.spec, "{} reads back as another spec", r.id());
    }
    let snapshot = match compiler.finish() {
        Ok(snapshot) => snapshot,
        Err(errors) => {
            assert!(!errors.is_empty(), "a refused configuration with no error");
            for e in &errors {
                let _ = e.to_string();
            }
            return None;
        }
    };
    assert_eq!(parse_errors, 0, "a file with errors compiled");
    let _ = snapshot.summary();
    for w in &snapshot.warnings {
        let _ = w.to_string();
    }

    let written = to_manifests(&resources);
    let (again, errors) = parse_documents(Path::new("written.yaml"), &written);
    assert!(
        errors.is_empty(),
        "a configuration that compiled, written out, does not read back: {errors:?}\n{written}"
    );
    let key = |r: &Resource| (r.spec.kind_name(), r.name.clone(), r.namespace.clone());
    assert_eq!(
        again.iter().map(|r| (key(r), &r.spec)).collect::<Vec<_>>(),
        resources
            .iter()
            .map(|r| (key(r), &r.spec))
            .collect::<Vec<_>>(),
        "a configuration written out reads back as another"
    );
    if let Err(errors) = portcullis::snapshot::compile(&again) {
        panic!("a configuration that compiled, written out, does not compile: {errors:?}");
    }

    let ctx = request_context();
    for p in snapshot.root.policies.iter() {
        check_policy(&p.policy, &ctx, true);
    }
    Some(snapshot)
}

/// The four kinds, as `kind` and `resourceType` name them.
pub const KINDS: [&str; 4] = [
    "TokenIntrospector",
    "AccessPolicy",
    "IdentityProvider",
    "User",
];

const RSA_PUB: &str = include_str!("../../tests/fixtures/keys/rsa-a.pub.pem");
const EC_PUB: &str = include_str!("../../tests/fixtures/keys/ec-p256.pub.pem");
const ED_PUB: &str = include_str!("../../tests/fixtures/keys/ed25519.pub.pem");

impl Gen<'_> {
    /// Often the right thing (`good`), sometimes any value at all.
    fn or_any(&mut self, good: Value) -> Value {
        if self.below(8) == 0 {
            self.value(2)
        } else {
            good
        }
    }

    fn maybe(
        &mut self,
        map: &mut Map<String, Value>,
        key: &str,
        value: impl FnOnce(&mut Self) -> Value,
    ) {
        if self.byte() & 1 == 1 {
            let v = value(self);
            let v = self.or_any(v);
            map.insert(key.into(), v);
        }
    }

    fn one_of(&mut self, words: &[&str]) -> Value {
        Value::String(self.pick(words).to_string())
    }

    fn policy_body(&mut self, depth: usize) -> Value {
        let mut m = Map::new();
        let engine = self.pick(&["allow", "matcho", "json-schema", "complex", "none"]);
        m.insert("engine".into(), Value::String(engine.into()));
        match engine {
            "matcho" => {
                let v = self.value(4);
                m.insert("matcho".into(), v);
            }
            "json-schema" => {
                let v = self.value(4);
                m.insert("schema".into(), v);
            }
            "complex" if depth > 0 => {
                let key = self.pick(&["and", "or"]);
                let n = self.below(3);
                let items = (0..n).map(|_| self.policy_body(depth - 1)).collect();
                m.insert(key.into(), Value::Array(items));
            }
            _ => {}
        }
        Value::Object(m)
    }

    /// A spec of `kind`, with fields of the right names and mostly the right shapes.
    pub fn spec(&mut self, kind: &str) -> Value {
        let mut m = Map::new();
        match kind {
            "TokenIntrospector" => {
                let t = self.one_of(&["jwt", "opaque"]);
                m.insert("type".into(), t);
                self.maybe(&mut m, "jwt", |g| {
                    let mut jwt = Map::new();
                    g.maybe(&mut jwt, "iss", |g| {
                        g.one_of(&["https://auth.example.com", "https://other.example", ""])
                    });
                    g.maybe(&mut jwt, "secret", |g| g.one_of(&["very-secret", ""]));
                    g.maybe(&mut jwt, "keys", |g| {
                        let n = g.below(3);
                        Value::Array((0..n).map(|_| g.jwt_key()).collect())
                    });
                    g.maybe(&mut jwt, "allowedAudiences", |g| json!([g.string()]));
                    g.maybe(&mut jwt, "leewaySeconds", |g| json!(g.u64() % 400));
                    g.maybe(&mut jwt, "secretRef", |_| json!({"name": "s", "key": "k"}));
                    Value::Object(jwt)
                });
                self.maybe(&mut m, "jwks_uri", |g| {
                    g.one_of(&["https://idp.example/jwks", "ftp://x", "http://"])
                });
                self.maybe(&mut m, "openidDiscovery", |g| {
                    Value::Bool(g.byte() & 1 == 1)
                });
                self.maybe(&mut m, "introspection_endpoint", |g| {
                    let url = g.one_of(&["https://idp.example/introspect", "nope"]);
                    let auth = g.one_of(&["Basic abc", "bad\nvalue", "Bearer x"]);
                    json!({"url": url, "authorization": auth})
                });
                self.maybe(&mut m, "identity_provider", |g| match g.below(3) {
                    0 => json!({"reference": "IdentityProvider/idp"}),
                    1 => json!({"resourceType": "IdentityProvider", "id": g.string()}),
                    _ => json!({"reference": g.string()}),
                });
                self.maybe(&mut m, "cache_ttl", |g| json!(g.u64() % 100_000));
                self.maybe(&mut m, "claimToHeaders", |g| {
                    let header = g.one_of(&[
                        "x-tenant",
                        "authorization",
                        "X-Up",
                        ":path",
                        "x-portcullis-user",
                        "",
                    ]);
                    let claim = g.one_of(&["tenant", "realm_access.roles", "", "a..b"]);
                    json!([{"header": header, "claim": claim}])
                });
            }
            "AccessPolicy" => {
                if let Value::Object(body) = self.policy_body(2) {
                    m.extend(body);
                }
                self.maybe(&mut m, "link", |g| match g.below(3) {
                    0 => json!([{"reference": "User/basic"}]),
                    1 => json!([{"resourceType": "Client", "id": "web", "issuer": "https://auth.example.com"}]),
                    _ => json!([{"reference": g.string()}]),
                });
                self.maybe(&mut m, "description", |g| Value::String(g.string()));
            }
            "IdentityProvider" => {
                self.maybe(&mut m, "system", |g| {
                    g.one_of(&["https://auth.example.com", ""])
                });
                self.maybe(&mut m, "userinfo_endpoint", |g| {
                    g.one_of(&["https://idp.example/userinfo", "x"])
                });
                self.maybe(&mut m, "userinfo-source", |g| {
                    g.one_of(&["userinfo-endpoint", "id-token", "other"])
                });
                self.maybe(&mut m, "userinfo_header", |g| {
                    g.one_of(&["Bearer", "DPoP", "bad header"])
                });
                self.maybe(&mut m, "scopes", |g| json!([g.string()]));
                self.maybe(&mut m, "title", |g| Value::String(g.string()));
                self.maybe(&mut m, "active", |g| Value::Bool(g.byte() & 1 == 1));
                self.maybe(&mut m, "type", |g| Value::String(g.string()));
            }
            _ => {
                self.maybe(&mut m, "data", |g| g.value(3));
                self.maybe(&mut m, "identifier", |g| {
                    let n = g.below(3);
                    Value::Array(
                        (0..n)
                            .map(|_| {
                                let system = g.one_of(&["https://auth.example.com", ""]);
                                json!({"system": system, "value": g.string()})
                            })
                            .collect(),
                    )
                });
                self.maybe(&mut m, "email", |g| Value::String(g.string()));
                self.maybe(&mut m, "inactive", |g| Value::Bool(g.byte() & 1 == 1));
            }
        }
        Value::Object(m)
    }

    fn jwt_key(&mut self) -> Value {
        let mut m = Map::new();
        let kty = self.one_of(&["RSA", "EC", "OCT", "oct", "OKP", "DSA"]);
        m.insert("kty".into(), kty);
        let alg = self.one_of(&[
            "HS256", "HS384", "HS512", "RS256", "PS384", "ES256", "ES384", "EdDSA", "none",
        ]);
        m.insert("alg".into(), alg);
        self.maybe(&mut m, "format", |g| {
            g.one_of(&["PEM", "pem", "plain", "DER"])
        });
        self.maybe(&mut m, "pub", |g| match g.below(4) {
            0 => Value::String(RSA_PUB.into()),
            1 => Value::String(EC_PUB.into()),
            2 => Value::String(ED_PUB.into()),
            _ => Value::String(format!(
                "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
                g.raw_string()
            )),
        });
        self.maybe(&mut m, "k", |g| Value::String(g.string()));
        self.maybe(&mut m, "kid", |g| Value::String(g.string()));
        Value::Object(m)
    }

    /// One resource document, in either form.
    pub fn resource(&mut self) -> Value {
        let kind = self.pick(&KINDS);
        let name = match self.below(4) {
            0 => self.raw_string(),
            1 => "basic".to_string(),
            2 => "idp".to_string(),
            _ => format!("r{}", self.byte()),
        };
        let spec = self.spec(kind);
        if self.byte() & 1 == 1 {
            let mut metadata = json!({"name": name});
            if self.byte() & 1 == 1 {
                metadata["namespace"] = Value::String(self.pick(&["default", "team-a"]).into());
            }
            json!({"apiVersion": "portcullis.dev/v1alpha1", "kind": kind, "metadata": metadata, "spec": spec})
        } else {
            let mut m = match spec {
                Value::Object(m) => m,
                _ => Map::new(),
            };
            m.insert("resourceType".into(), Value::String(kind.into()));
            m.insert("id".into(), Value::String(name));
            Value::Object(m)
        }
    }

    /// A configuration file's content: one resource, a list of them, or a `List`.
    pub fn configuration(&mut self) -> Value {
        match self.below(3) {
            0 => self.resource(),
            1 => {
                let n = 1 + self.below(5);
                Value::Array((0..n).map(|_| self.resource()).collect())
            }
            _ => {
                let n = 1 + self.below(5);
                let items: Vec<Value> = (0..n).map(|_| self.resource()).collect();
                json!({"apiVersion": "v1", "kind": "List", "items": items})
            }
        }
    }
}
