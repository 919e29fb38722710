use std::collections::HashMap;
use std::sync::Arc;

use super::policies::Links;
use super::{CompiledPolicy, IdentityProvider, PolicySet, Snapshot};
use crate::source::{ConfigError, FieldError, Origin, Resource, Spec};
use crate::token::Introspector;
use crate::users::{User, MAX_USER_BYTES};

/// Compile a complete set of resources. Any error rejects the whole set, so that the
/// caller keeps serving the last good snapshot; every error found is returned at once.
pub fn compile(resources: &[Resource]) -> Result<Snapshot, Vec<ConfigError>> {
    let mut compiler = Compiler::default();
    resources.iter().for_each(|r| compiler.add(r));
    compiler.finish()
}

/// [`compile`], one resource at a time: a source hands each resource over as it parses it,
/// so that 100,000 parsed Users never sit in memory beside their compiled form.
#[derive(Default)]
pub struct Compiler {
    snapshot: Snapshot,
    policies: Vec<(CompiledPolicy, Links)>,
    errors: Vec<ConfigError>,
    /// Names are unique per kind: where each was first defined.
    seen: HashMap<(&'static str, String), Origin>,
    /// IdentityProvider system → its name.
    systems: HashMap<String, String>,
    /// `identity_provider` references, checked once every IdentityProvider is known.
    provider_refs: Vec<(String, ConfigError)>,
}

impl Compiler {
    /// A resource, or the error its source found instead of one.
    pub fn push(&mut self, item: Result<Resource, ConfigError>) {
        match item {
            Ok(r) => self.add(&r),
            Err(e) => self.errors.push(e),
        }
    }

    fn report(&mut self, r: &Resource, e: FieldError) {
        self.errors.push(error(r, e));
    }

    pub fn add(&mut self, r: &Resource) {
        if let Some(first) = self
            .seen
            .insert((r.spec.kind(), r.name.clone()), r.origin.clone())
        {
            let message = format!("defined twice: also at {first}");
            return self.report(r, FieldError::new("", message));
        }
        match &r.spec {
            Spec::IdentityProvider(spec) => {
                // Users are keyed by (system, sub): two providers sharing a system would
                // merge their subjects into one another's Users.
                if let Some(system) = spec.system.as_deref() {
                    if let Some(other) = self.systems.get(system) {
                        let message =
                            format!("{system:?} is already the system of IdentityProvider/{other}");
                        self.report(r, FieldError::new("system", message));
                    } else {
                        self.systems.insert(system.to_owned(), r.name.clone());
                    }
                }
                self.snapshot.identity_providers.insert(
                    r.name.clone(),
                    Arc::new(IdentityProvider {
                        name: r.name.clone(),
                        spec: spec.clone(),
                    }),
                );
            }
            Spec::TokenIntrospector(spec) => match Introspector::compile(&r.name, spec) {
                Ok(introspector) => {
                    if let Some(idp) = &introspector.identity_provider {
                        let message = format!("IdentityProvider/{idp} is not defined");
                        let e = error(r, FieldError::new("identity_provider", message));
                        self.provider_refs.push((idp.clone(), e));
                    }
                    if let Err(e) = self.snapshot.trust.insert(introspector) {
                        self.report(r, FieldError::new("jwt.iss", e));
                    }
                }
                Err(es) => es.into_iter().for_each(|e| self.report(r, e)),
            },
            Spec::AccessPolicy(spec) => {
                let links = match links(spec.link.as_deref().unwrap_or_default()) {
                    Ok(l) => l,
                    Err(e) => return self.report(r, e),
                };
                match crate::policy::compile(&spec.body()) {
                    Ok(policy) => self.policies.push((
                        CompiledPolicy {
                            name: r.name.clone(),
                            policy,
                        },
                        links,
                    )),
                    Err(es) => es
                        .into_iter()
                        .for_each(|e| self.report(r, FieldError::new(e.path, e.message))),
                }
            }
            Spec::User(spec) => {
                let user = User::new(&r.name, spec);
                if user.size() > MAX_USER_BYTES {
                    let message = format!("larger than {MAX_USER_BYTES} bytes");
                    return self.report(r, FieldError::new("", message));
                }
                if let Some(other) = self.snapshot.users.insert(user) {
                    let message = format!("already held by User/{other}");
                    self.report(r, FieldError::new("identifier", message));
                }
            }
        }
    }

    pub fn finish(mut self) -> Result<Snapshot, Vec<ConfigError>> {
        for (idp, e) in self.provider_refs {
            if !self.snapshot.identity_providers.contains_key(&idp) {
                self.errors.push(e);
            }
        }
        if !self.errors.is_empty() {
            return Err(self.errors);
        }
        self.snapshot.policies = PolicySet::build(self.policies);
        self.snapshot.users.shrink_to_fit();
        Ok(self.snapshot)
    }
}

fn error(r: &Resource, e: FieldError) -> ConfigError {
    ConfigError {
        origin: r.origin.clone(),
        resource: Some(r.id()),
        field: (!e.field.is_empty()).then_some(e.field),
        message: e.message,
    }
}

fn links(refs: &[crate::resources::Reference]) -> Result<Links, FieldError> {
    let mut links = Links::default();
    for (i, r) in refs.iter().enumerate() {
        let field = || format!("link[{i}]");
        match r.target().map_err(|e| FieldError::new(field(), e))? {
            ("User", name) => links.users.push(name.to_string()),
            ("Client", id) => links.clients.push(id.to_string()),
            (kind, _) => {
                return Err(FieldError::new(
                    field(),
                    format!("links point at a User or a Client, not a {kind}"),
                ))
            }
        }
    }
    Ok(links)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{for_each_document, parse_documents};
    use std::path::Path;

    fn compile_text(text: &str) -> Result<Snapshot, Vec<ConfigError>> {
        let (resources, errors) = parse_documents(Path::new("c.yaml"), text);
        assert!(errors.is_empty(), "{errors:?}");
        compile(&resources)
    }

    #[test]
    fn compiles_the_quickstart_shapes() {
        let s = compile_text(
            "resourceType: TokenIntrospector\nid: t\ntype: jwt\njwt: {iss: https://a, secret: s}\n---\n\
             resourceType: AccessPolicy\nid: p\nengine: allow\n---\n\
             resourceType: User\nid: u\ndata: {sub: u}\n",
        )
        .unwrap();
        assert!(s.trust.for_issuer("https://a").is_some());
        assert_eq!(s.policies.len(), 1);
        assert!(s.users.by_name("u").is_some());
    }

    #[test]
    fn reports_every_error_with_resource_and_field() {
        let errs = compile_text(
            "resourceType: TokenIntrospector\nid: both\ntype: jwt\njwt: {iss: https://a, secret: s}\njwks_uri: https://a/jwks\n---\n\
             resourceType: TokenIntrospector\nid: dup-iss\ntype: jwt\njwt: {iss: https://b, secret: s}\n---\n\
             resourceType: TokenIntrospector\nid: dup-iss2\ntype: jwt\njwt: {iss: https://b, secret: s}\n---\n\
             resourceType: TokenIntrospector\nid: idp\ntype: jwt\njwt: {iss: https://c, secret: s}\nidentity_provider: {reference: IdentityProvider/nope}\n---\n\
             resourceType: AccessPolicy\nid: l\nengine: allow\nlink: [{reference: Patient/x}]\n---\n\
             resourceType: User\nid: u\n---\nresourceType: User\nid: u\n---\n\
             resourceType: IdentityProvider\nid: kc1\nsystem: keycloak\n---\n\
             resourceType: IdentityProvider\nid: kc2\nsystem: keycloak\n",
        )
        .unwrap_err();
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        let has = |needle: &str| text.iter().any(|t| t.contains(needle));
        assert!(
            has("TokenIntrospector/both: field `jwt.secret`: set exactly one"),
            "{text:#?}"
        );
        assert!(has("TokenIntrospector/dup-iss2: field `jwt.iss`: issuer \"https://b\" is already trusted by TokenIntrospector/dup-iss"), "{text:#?}");
        assert!(has("TokenIntrospector/idp: field `identity_provider`: IdentityProvider/nope is not defined"), "{text:#?}");
        assert!(has("AccessPolicy/l: field `link[0]`"), "{text:#?}");
        assert!(has("User/u: defined twice: also at c.yaml:"), "{text:#?}");
        assert!(has("IdentityProvider/kc2: field `system`: \"keycloak\" is already the system of IdentityProvider/kc1"), "{text:#?}");
        assert_eq!(errs.len(), 6, "{text:#?}");
    }

    #[test]
    fn a_provider_may_be_defined_after_the_introspector_that_names_it() {
        let s = compile_text(
            "resourceType: TokenIntrospector\nid: t\ntype: jwt\njwt: {iss: https://a, secret: s}\nidentity_provider: {reference: IdentityProvider/kc}\n---\n\
             resourceType: IdentityProvider\nid: kc\nsystem: keycloak\n",
        )
        .unwrap();
        assert!(s.identity_providers.contains_key("kc"));
    }

    /// What `serve` and `validate` do: parse errors and compile errors come out of one pass,
    /// in file order, and either rejects the whole set.
    #[test]
    fn streaming_reports_parse_and_compile_errors_together() {
        let text = "resourceType: AccessPolicy\nid: p\nengine: matcho\nmatcho: {uri: '#('}\n---\n\
                    resourceType: Nonsense\nid: x\n---\n\
                    resourceType: User\nid: u\n";
        let mut compiler = Compiler::default();
        for_each_document(Path::new("c.yaml"), text, |item| compiler.push(item));
        let errs = compiler.finish().unwrap_err();
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(errs.len(), 2, "{text:#?}");
        assert!(text[0].contains("AccessPolicy/p") && text[0].contains("invalid regex"));
        assert!(text[1].contains("c.yaml:6") && text[1].contains("Nonsense"));
    }

    #[test]
    fn refuses_a_user_over_the_size_limit() {
        let big = "x".repeat(MAX_USER_BYTES);
        let errs = compile_text(&format!(
            "resourceType: User\nid: big\ndata: {{blob: {big}}}\n"
        ))
        .unwrap_err();
        assert_eq!(errs.len(), 1);
        assert!(errs[0]
            .to_string()
            .contains("User/big: larger than 1048576 bytes"));
    }

    #[test]
    fn rejects_keys_that_do_not_fit_their_algorithm() {
        let errs = compile_text(
            "resourceType: TokenIntrospector\nid: k\ntype: jwt\njwt:\n  iss: https://a\n  keys:\n  - {kty: RSA, alg: HS256, k: x, format: plain}\n  - {kty: RSA, alg: RS256, pub: nonsense}\n",
        )
        .unwrap_err();
        assert_eq!(errs[0].field.as_deref(), Some("jwt.keys[0].alg"));
        assert_eq!(errs[1].field.as_deref(), Some("jwt.keys[1].pub"));
        assert!(
            !errs[1].message.contains("nonsense"),
            "key material must not be echoed"
        );
    }
}
