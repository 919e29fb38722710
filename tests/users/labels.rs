//! `validate` says which Kubernetes-form Users `serve --kube --users on-demand` can find by
//! name only: those with identifiers whose `portcullis.dev/identifier` label is missing or
//! names none of them (docs/users.md, "Users on demand").

use crate::support;

use portcullis::users::identifier_label;

#[test]
fn validate_warns_of_users_whose_identifier_label_is_missing_or_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users.yaml");
    let user = |name: &str, labels: &str, identifier: &str| {
        format!(
            "apiVersion: portcullis.dev/v1alpha1\nkind: User\n\
             metadata: {{name: {name}, namespace: team-a{labels}}}\n\
             spec: {{identifier: {identifier}}}\n---\n"
        )
    };
    let kc = |sub: &str| format!("[{{system: keycloak, value: {sub}}}]");
    let label = |sub: &str| {
        format!(
            ", labels: {{portcullis.dev/identifier: '{}'}}",
            identifier_label("keycloak", sub)
        )
    };
    let text = [
        user("labelled", &label("ann"), &kc("ann")),
        user("unlabelled", "", &kc("bob")),
        user("mislabelled", &label("someone-else"), &kc("carol")),
        user("no-identifiers", "", "[]"),
        "resourceType: User\nid: aidbox-form\nidentifier: [{system: keycloak, value: dave}]\n"
            .to_string(),
    ]
    .concat();
    std::fs::write(&file, text).unwrap();
    let out = support::portcullis::run(&["validate", "--config", file.to_str().unwrap()]);
    assert_eq!(out.code, 0, "warnings only:\n{}{}", out.stdout, out.stderr);
    let warned: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("warning: "))
        .collect();
    assert_eq!(warned.len(), 2, "{}", out.stderr);
    let path = file.display().to_string();
    assert!(
        warned[0].contains(&format!(
            "{path}:6 (document 2): User/team-a/unlabelled: field `metadata.labels`: no label \
             `portcullis.dev/identifier: {}`",
            identifier_label("keycloak", "bob")
        )) && warned[0].contains("with `--users on-demand` it is found by name only"),
        "{warned:?}"
    );
    assert!(
        warned[1].contains("User/team-a/mislabelled")
            && warned[1].contains("names none of its identifiers"),
        "{warned:?}"
    );
}
