//! Tenancy with plain data: what each namespace's requests may use, and who wins where two
//! namespaces want one issuer or system.

use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::resources::for_each_document;

const ROOT: &str = "platform";

fn doc(kind: &str, namespace: &str, name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: portcullis.dev/v1alpha1\nkind: {kind}\n\
         metadata: {{name: {name}, namespace: {namespace}}}\nspec: {spec}\n"
    )
}

fn jwt(namespace: &str, name: &str, iss: &str, secret: &str) -> String {
    doc(
        "TokenIntrospector",
        namespace,
        name,
        &format!("{{type: jwt, jwt: {{iss: \"{iss}\", secret: {secret}}}}}"),
    )
}

fn opaque(namespace: &str, name: &str, url: &str) -> String {
    doc(
        "TokenIntrospector",
        namespace,
        name,
        &format!("{{type: opaque, introspection_endpoint: {{url: \"{url}\"}}}}"),
    )
}

fn allow_all(namespace: &str, name: &str) -> String {
    doc("AccessPolicy", namespace, name, "{engine: allow}")
}

/// Compiled as `--root-namespace platform` compiles files: the root's first whatever
/// their order, conflicts and all.
fn compile(text: &str) -> Result<Snapshot, Vec<String>> {
    let mut compiler = Compiler::default().scoped(Some(ROOT.into()));
    for_each_document(Path::new("t.yaml"), text, |item| compiler.push(item));
    compiler
        .finish()
        .map_err(|es| es.iter().map(ToString::to_string).collect())
}

fn candidates(s: &Snapshot, namespace: Option<&str>) -> Vec<String> {
    s.view(namespace)
        .candidates(None, None)
        .iter()
        .map(|p| p.name.clone())
        .collect()
}

#[test]
fn a_teams_policy_applies_to_its_own_namespace_only_and_the_roots_to_all() {
    let s = compile(&format!(
        "{}{}{}",
        allow_all("team-a", "open"),
        allow_all(ROOT, "health"),
        doc(
            "AccessPolicy",
            "team-b",
            "read",
            "{engine: matcho, matcho: {request-method: get}}"
        ),
    ))
    .unwrap();
    // The root's first, then the namespace's, each by name.
    assert_eq!(
        candidates(&s, Some("team-a")),
        ["platform/health", "team-a/open"]
    );
    assert_eq!(
        candidates(&s, Some("team-b")),
        ["platform/health", "team-b/read"]
    );
    assert_eq!(candidates(&s, None), ["platform/health"]);
    assert_eq!(candidates(&s, Some("team-c")), ["platform/health"]);
    // A request of the root namespace is a request with the root's resources alone.
    assert_eq!(candidates(&s, Some(ROOT)), ["platform/health"]);
}

#[test]
fn tokens_are_trusted_within_the_scope_only() {
    let s = compile(&format!(
        "{}{}{}{}",
        jwt(ROOT, "corp", "https://corp", "c"),
        jwt("team-a", "a", "https://a", "a"),
        opaque("team-b", "b-introspect", "https://b/introspect"),
        opaque(ROOT, "corp-introspect", "https://corp/introspect"),
    ))
    .unwrap();
    let a = s.view(Some("team-a")).trust();
    assert!(a.for_issuer("https://a").is_some() && a.for_issuer("https://corp").is_some());
    let b = s.view(Some("team-b")).trust();
    assert!(b.for_issuer("https://a").is_none(), "another team's issuer");
    let names = |v: crate::token::TrustView<'_>| -> Vec<String> {
        v.opaque().map(|i| i.name.clone()).collect()
    };
    // An opaque token goes to the root's introspectors, then the namespace's; never to
    // another namespace's.
    assert_eq!(
        names(b),
        ["platform/corp-introspect", "team-b/b-introspect"]
    );
    assert_eq!(names(a), ["platform/corp-introspect"]);
    assert_eq!(names(s.view(None).trust()), ["platform/corp-introspect"]);
}

#[test]
fn the_root_keeps_its_issuer_and_system_whatever_the_order() {
    // The team's object comes first in the file, and would be older in a cluster.
    let errors = compile(&format!(
        "{}{}",
        jwt("team-a", "squat", "https://corp", "guess"),
        jwt(ROOT, "corp", "https://corp", "c"),
    ))
    .unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("TokenIntrospector/team-a/squat")
            && errors[0].contains("TokenIntrospector/platform/corp")
            && errors[0].contains("root namespace"),
        "{errors:?}"
    );
    let errors = compile(&format!(
        "{}{}",
        doc("IdentityProvider", "team-a", "kc", "{system: https://kc}"),
        doc("IdentityProvider", ROOT, "kc", "{system: https://kc}"),
    ))
    .unwrap_err();
    assert!(
        errors.len() == 1 && errors[0].contains("IdentityProvider/team-a/kc"),
        "{errors:?}"
    );
}

#[test]
fn two_teams_may_trust_one_issuer_each_with_its_own_settings() {
    let s = compile(&format!(
        "{}{}{}{}",
        jwt("team-a", "auth", "https://shared", "secret-a"),
        jwt("team-b", "auth", "https://shared", "secret-b"),
        doc("IdentityProvider", "team-a", "kc", "{system: https://kc}"),
        doc("IdentityProvider", "team-b", "kc", "{system: https://kc}"),
    ))
    .unwrap();
    let a = s.view(Some("team-a")).trust();
    let b = s.view(Some("team-b")).trust();
    let (a, b) = (
        a.for_issuer("https://shared").unwrap(),
        b.for_issuer("https://shared").unwrap(),
    );
    assert_eq!(
        (a.name.as_str(), b.name.as_str()),
        ("team-a/auth", "team-b/auth")
    );
    assert_ne!(a.fingerprint, b.fingerprint);
    assert!(s.identity_provider("team-b/kc").is_some());
    // Within one namespace, one issuer is still one introspector's.
    let errors = compile(&format!(
        "{}{}",
        jwt("team-a", "one", "https://shared", "x"),
        jwt("team-a", "two", "https://shared", "y"),
    ))
    .unwrap_err();
    assert!(
        errors.len() == 1 && errors[0].contains("team-a/two"),
        "{errors:?}"
    );
}

#[test]
fn only_the_scopes_claim_headers_are_stripped() {
    let with_header = |namespace: &str, name: &str, iss: &str, header: &str| {
        doc(
            "TokenIntrospector",
            namespace,
            name,
            &format!(
                "{{type: jwt, jwt: {{iss: \"{iss}\", secret: s}}, \
                 claimToHeaders: [{{claim: sub, header: {header}}}]}}"
            ),
        )
    };
    let s = compile(&format!(
        "{}{}{}",
        with_header(ROOT, "corp", "https://corp", "x-corp-sub"),
        with_header("team-a", "a", "https://a", "x-a-sub"),
        with_header("team-b", "b", "https://b", "x-b-sub"),
    ))
    .unwrap();
    let strip = |ns: Option<&str>| -> Vec<String> {
        (s.view(ns).claim_headers().as_deref().unwrap_or_default())
            .iter()
            .map(|h| h.to_string())
            .collect()
    };
    assert_eq!(strip(Some("team-a")), ["x-corp-sub", "x-a-sub"]);
    assert_eq!(strip(Some("team-b")), ["x-corp-sub", "x-b-sub"]);
    assert_eq!(strip(None), ["x-corp-sub"]);
}

#[test]
fn without_a_root_namespace_a_files_namespaces_are_one_flat_configuration() {
    let mut compiler = Compiler::default();
    let text = format!(
        "{}{}",
        allow_all("team-a", "open"),
        allow_all("team-b", "other")
    );
    for_each_document(Path::new("t.yaml"), &text, |item| compiler.push(item));
    let s = compiler.finish().unwrap();
    assert_eq!(candidates(&s, None), ["open", "other"]);
    assert!(s.namespaces.is_empty());
}

#[test]
fn a_rebuild_of_one_team_keeps_every_other_scope_as_it_is() {
    let s = Arc::new(
        compile(&format!(
            "{}{}{}",
            allow_all(ROOT, "health"),
            allow_all("team-a", "open"),
            allow_all("team-b", "open"),
        ))
        .unwrap(),
    );
    let mut compiler = Compiler::rebuilding(s.clone(), &["team-a".to_string()]);
    let text = doc(
        "AccessPolicy",
        "team-a",
        "read",
        "{engine: matcho, matcho: {request-method: get}}",
    );
    for_each_document(Path::new("t.yaml"), &text, |item| compiler.push(item));
    assert_eq!(compiler.compiled(), 1);
    let next = compiler.into_snapshot();
    assert!(Arc::ptr_eq(&next.root, &s.root));
    assert!(Arc::ptr_eq(
        &next.namespaces["team-b"],
        &s.namespaces["team-b"]
    ));
    assert_eq!(
        candidates(&next, Some("team-a")),
        ["platform/health", "team-a/read"]
    );
    // A resource of a scope the rebuild keeps is refused, not slipped in.
    let mut compiler = Compiler::rebuilding(s, &["team-a".to_string()]);
    let text = allow_all("team-b", "sneaky");
    for_each_document(Path::new("t.yaml"), &text, |item| compiler.push(item));
    assert!(compiler.finish().is_err());
}

#[test]
fn a_team_at_its_regex_budget_never_makes_another_teams_policy_invalid() {
    // Each pattern distinct and costly (a Unicode class, about 56 KB): a few fill 256 KiB.
    let regexes = |namespace: &str, n: usize| -> String {
        (0..n)
            .map(|i| {
                doc(
                    "AccessPolicy",
                    namespace,
                    &format!("p{i:02}"),
                    &format!("{{engine: matcho, matcho: {{uri: \"#^/{i}/\\\\w$\"}}}}"),
                )
            })
            .collect()
    };
    let mut compiler = Compiler::default()
        .scoped(Some(ROOT.into()))
        .max_regex_bytes(256 * 1024);
    let text = format!("{}{}", regexes("team-a", 40), regexes("team-b", 1));
    for_each_document(Path::new("t.yaml"), &text, |item| compiler.push(item));
    let errors: Vec<String> = match compiler.finish() {
        Ok(_) => panic!("team A's forty patterns fit 256 KiB"),
        Err(es) => es.iter().map(ToString::to_string).collect(),
    };
    assert!(!errors.is_empty());
    for e in &errors {
        assert!(
            e.contains("AccessPolicy/team-a/") && e.contains("field `matcho.uri`"),
            "{e}"
        );
        assert!(e.contains("--max-regex-bytes"), "{e}");
    }
    // The first policies fit; only those past the budget are refused.
    assert!(errors.len() < 40, "{errors:#?}");

    // Admitted one by one, as the cluster does: team A's first forty use up its budget,
    // and team B's policy, after them, is admitted all the same.
    let mut compiler = Compiler::default()
        .scoped(Some(ROOT.into()))
        .max_regex_bytes(256 * 1024);
    let (resources, errors) = crate::resources::parse_documents(Path::new("t.yaml"), &text);
    assert!(errors.is_empty(), "{errors:?}");
    let refused: Vec<String> = resources
        .iter()
        .filter(|r| compiler.admit(r).is_err())
        .map(|r| r.key())
        .collect();
    assert!(!refused.is_empty() && refused.iter().all(|k| k.starts_with("team-a/")));
    let s = compiler.into_snapshot();
    assert_eq!(candidates(&s, Some("team-b")), ["team-b/p00"]);
    assert!(s.namespaces["team-a"].regex.used() <= 256 * 1024);
}
