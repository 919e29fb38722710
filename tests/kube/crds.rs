//! The CRDs that deploy/ and the chart carry are exactly what `portcullis crds` prints, and
//! they are structural schemas the API server accepts. (What the schemas say — descriptions,
//! formats, bounds, columns, CEL rules — is tested beside the types, in
//! `src/resources/crd/tests.rs`.)

use crate::support;

fn crds_output() -> String {
    let out = support::portcullis::run(&["crds"]);
    assert_eq!(out.code, 0, "portcullis crds: {}", out.stderr);
    out.stdout
}

#[test]
fn deploy_crds_match_the_binary() {
    let output = crds_output();
    for path in ["deploy/crds.yaml", "charts/portcullis/crds/crds.yaml"] {
        let committed = std::fs::read_to_string(support::repo_path(path)).expect(path);
        assert!(
            committed == output,
            "{path} is stale: run `cargo run -- crds > {path}`"
        );
    }
}

#[test]
fn crds_are_namespaced_with_status_and_the_fixed_names() {
    let text = crds_output();
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let names: Vec<&str> = docs
        .iter()
        .map(|d| d["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "tokenintrospectors.portcullis.dev",
            "accesspolicies.portcullis.dev",
            "identityproviders.portcullis.dev",
            "users.portcullis.dev"
        ]
    );
    for d in &docs {
        assert_eq!(d["spec"]["scope"].as_str(), Some("Namespaced"));
        assert_eq!(
            d["spec"]["names"]["categories"][0].as_str(),
            Some("portcullis")
        );
        let version = &d["spec"]["versions"][0];
        assert_eq!(version["name"].as_str(), Some("v1alpha1"));
        assert!(version["subresources"]["status"].is_mapping());
    }
    assert!(text.contains("x-kubernetes-validations:"));
    assert!(!text.contains("format: uint"));
    // Structural schemas may not combine `properties` with `additionalProperties: false`.
    assert!(!text.contains("additionalProperties: false"));
    // Free-form bodies (matcho patterns, schemas, user data) must survive pruning.
    assert!(text.contains("x-kubernetes-preserve-unknown-fields: true"));
}
