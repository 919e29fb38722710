//! The traps of `validate` and the command line, each against the real binary: the exit
//! code (0 good, warnings or not; 1 errors; 2 a wrong command line) and the message, with
//! file, line, resource and field.

use crate::support;

use support::portcullis as serve;

/// Writes `text` to `name` in a new directory; `validate --config` on it: the file's path,
/// exit code, stdout and stderr.
fn validate(name: &str, text: &str) -> (String, i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(name);
    std::fs::write(&file, text).unwrap();
    let out = serve::run(&["validate", "--config", file.to_str().unwrap()]);
    (file.display().to_string(), out.code, out.stdout, out.stderr)
}

const POLICY: &str = "resourceType: AccessPolicy\nid: p\nengine: allow\n";

#[test]
fn another_api_group_is_an_error_naming_file_and_line() {
    let (path, code, stdout, stderr) = validate(
        "mixed.yaml",
        &format!(
            "{POLICY}---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec: {{}}\n"
        ),
    );
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!(
            "{path}:5 (document 2): field `apiVersion`: \"apps/v1\" Deployment/web is not read by portcullis"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("keep other manifests out of --config paths"),
        "{stderr}"
    );
}

const INTROSPECTOR: &str = "apiVersion: portcullis.dev/v1alpha1\nkind: TokenIntrospector\n\
    metadata: {name: hs, namespace: team-a}\n\
    spec:\n  type: jwt\n  jwt:\n    iss: https://auth.example.com\n    secretRef: {name: hmac, key: secret}\n";

#[test]
fn the_kubernetes_form_with_secret_references_validates_offline() {
    let secret = "---\napiVersion: v1\nkind: Secret\nmetadata: {name: hmac, namespace: team-a}\n\
                  data: {secret: c3VwZXItc2VjcmV0LXZhbHVl}\n";
    let (_, code, stdout, stderr) = validate("k8s.yaml", &format!("{INTROSPECTOR}{secret}"));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.starts_with("ok: "), "{stdout}");
    assert!(stdout.contains("1 token introspectors"), "{stdout}");
}

#[test]
fn an_unresolved_secret_reference_is_one_error_and_no_follow_on() {
    let (path, code, stdout, stderr) = validate("k8s.yaml", INTROSPECTOR);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!(
            "{path}:8 (document 1): TokenIntrospector/hs: field `jwt.secretRef`: unresolved: \
             no Secret manifest team-a/hmac among the --config files"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("set exactly one"), "{stderr}");
    assert!(stderr.contains("1 error(s)"), "{stderr}");
}

#[test]
fn a_secret_value_never_appears_in_a_message() {
    let secret = "---\napiVersion: v1\nkind: Secret\nmetadata: {name: hmac, namespace: team-a}\n\
                  data: {secret: 'plain-text-not-base64!'}\n";
    let (_, code, stdout, stderr) = validate("k8s.yaml", &format!("{INTROSPECTOR}{secret}"));
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains("Secret/hmac: field `data.secret`: not base64"),
        "{stderr}"
    );
    assert!(!stderr.contains("plain-text-not-base64"), "{stderr}");
}

#[test]
fn a_dangling_link_is_a_warning_and_a_dangling_identity_provider_an_error() {
    let (path, code, stdout, stderr) = validate(
        "links.yaml",
        "resourceType: AccessPolicy\nid: p\nengine: allow\nlink: [{reference: User/ghost}]\n",
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!(
            "warning: {path}:4 (document 1): AccessPolicy/p: field `link[0]`: User/ghost is not defined"
        )),
        "{stderr}"
    );
    let (path, code, stdout, stderr) = validate(
        "idp.yaml",
        "resourceType: TokenIntrospector\nid: t\ntype: jwt\njwt: {iss: https://a, secret: s}\n\
         identity_provider: {reference: IdentityProvider/nope}\n",
    );
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!(
            "{path}:5 (document 1): TokenIntrospector/t: field `identity_provider`: IdentityProvider/nope is not defined"
        )),
        "{stderr}"
    );
}

#[test]
fn an_upper_case_request_method_is_a_warning() {
    let (path, code, stdout, stderr) = validate(
        "get.yaml",
        "resourceType: AccessPolicy\nid: reads\nengine: matcho\nmatcho: {request-method: GET}\n",
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!(
            "warning: {path}:4 (document 1): AccessPolicy/reads: field `matcho.request-method`: \
             request methods are lower case"
        )),
        "{stderr}"
    );
}

#[test]
fn an_empty_configuration_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let out = serve::run(&["validate", "--config", dir.path().to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(
        out.stderr.contains(&format!(
            "warning: {}: no resources: every request would be denied",
            dir.path().display()
        )),
        "{out:#?}"
    );
    assert!(out.stdout.starts_with("ok: 0 resources"), "{out:#?}");
}

#[test]
fn warnings_are_shown_beside_errors() {
    let (_, code, stdout, stderr) = validate(
        "both.yaml",
        "resourceType: AccessPolicy\nid: reads\nengine: matcho\nmatcho: {request-method: GET}\n---\n\
         resourceType: AccessPolicy\nid: broken\nengine: nope\n",
    );
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains("warning: ") && stderr.contains("AccessPolicy/reads"),
        "{stderr}"
    );
    assert!(stderr.contains("1 error(s), 1 warning(s)"), "{stderr}");
}

#[test]
fn a_wrong_command_line_exits_2() {
    let out = serve::run(&["validate"]);
    assert_eq!(out.code, 2, "{out:#?}");
    assert!(out.stderr.contains("--config"), "{out:#?}");
}

#[test]
fn explain_prints_the_decision_once() {
    let quickstart = support::repo_path("examples/quickstart");
    let out = serve::run(&["explain", "--config", quickstart.to_str().unwrap()]);
    assert_eq!(out.code, 2, "an anonymous request is denied: {out:#?}");
    let said = format!("{}{}", out.stdout, out.stderr);
    assert_eq!(said.matches("DENY").count(), 1, "{said}");
    assert!(out.stdout.contains("decision: DENY"), "{said}");
}

#[test]
fn each_subcommand_shows_only_its_flags() {
    for command in ["validate", "crds", "explain", "test"] {
        let out = serve::run(&[command, "--help"]);
        assert_eq!(out.code, 0, "{out:#?}");
        assert!(
            !out.stdout.contains("--otlp-endpoint"),
            "{command}: {}",
            out.stdout
        );
    }
    let out = serve::run(&["serve", "--help"]);
    assert!(out.stdout.contains("--otlp-endpoint"), "{}", out.stdout);
    let out = serve::run(&[
        "validate",
        "--otlp-endpoint",
        "http://x:4317",
        "--config",
        ".",
    ]);
    assert_eq!(out.code, 2, "{out:#?}");
}

#[test]
fn logs_to_a_file_or_pipe_carry_no_colour_codes() {
    // Refused at start-up, with the error logged to stderr, which is a pipe here.
    let out = serve::run_refused(
        &["serve", "--config", "examples/quickstart", "--create-users"],
        "--users-dir",
    );
    assert!(!out.stderr.contains('\u{1b}'), "{:?}", out.stderr);
}

/// The dry-run annotation is `"true"` or `"false"`: anything else fails `validate`, naming
/// file, line, policy and the annotation; good values pass.
#[test]
fn a_dry_run_annotation_other_than_true_or_false_is_an_error_naming_it() {
    let policy = |name: &str, annotation: &str| {
        format!(
            "apiVersion: portcullis.dev/v1alpha1\nkind: AccessPolicy\n\
             metadata:\n  name: {name}\n  annotations:\n    {annotation}\n\
             spec: {{engine: allow}}\n"
        )
    };
    let (path, code, stdout, stderr) = validate(
        "dry-run.yaml",
        &[
            policy("good", "portcullis.dev/dry-run: \"true\""),
            policy("istio", "istio.io/dry-run: \"false\""),
            policy("bad", "portcullis.dev/dry-run: \"yes\""),
        ]
        .join("---\n"),
    );
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!(
            "{path}:17 (document 3): AccessPolicy/bad: field \
             `metadata.annotations[\"portcullis.dev/dry-run\"]`: \"yes\" is neither \"true\" \
             nor \"false\""
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("AccessPolicy/good") && !stderr.contains("AccessPolicy/istio"));

    let (_, code, stdout, stderr) = validate(
        "dry-run.yaml",
        &policy("good", "portcullis.dev/dry-run: \"true\""),
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
}
