//! The command line and the configuration lifecycle, against the real binary:
//! `validate` names file, line, resource and field; `explain` names the failing path;
//! `serve` reloads on change and keeps the last good configuration through a broken edit.

use crate::support;

use support::ext_authz::http_status as status_of;
use support::portcullis::{self as serve, Portcullis};
use support::replace_file as write;
use support::tokens::Jwt;

const ISS: &str = "https://auth.example.com";
const SECRET: &str = "very-secret";

/// `portcullis <args>`: exit code, stdout, stderr.
fn run(args: &[&str]) -> (i32, String, String) {
    let out = serve::run(args);
    (out.code, out.stdout, out.stderr)
}

#[test]
fn validate_accepts_the_quickstart() {
    let quickstart = support::repo_path("examples/quickstart");
    let (code, stdout, stderr) = run(&["validate", "--config", quickstart.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.starts_with("ok: 3 resources"), "{stdout}");
}

#[test]
fn validate_names_file_line_resource_and_field_of_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "resourceType: AccessPolicy\nid: fine\nengine: allow\n---\n\
         resourceType: TokenIntrospector\nid: broken-keys\ntype: jwt\njwt:\n  iss: https://a\n  keys:\n  - {kty: RSA, alg: RS256, format: PEM}\n---\n\
         apiVersion: portcullis.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: broken-matcho}\nspec:\n  engine: matcho\n  matcho: {uri: {$one-of: ['#a'], x: 1}}\n",
    )
    .unwrap();
    let (code, _, stderr) = run(&["validate", "--config", file.to_str().unwrap()]);
    assert_eq!(code, 1, "{stderr}");
    let path = file.display().to_string();
    assert!(
        stderr.contains(&format!(
            // The field's line (the key list's item), not the document's first.
            "{path}:11 (document 2): TokenIntrospector/broken-keys: field `jwt.keys[0].pub`"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{path}:18 (document 3): AccessPolicy/broken-matcho: field `matcho.uri"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("2 error(s)"), "{stderr}");
}

/// A policy that allows every request without saying so is served, but flagged.
#[test]
fn validate_warns_of_a_policy_that_allows_every_request() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("open.yaml");
    std::fs::write(
        &file,
        "resourceType: AccessPolicy\nid: wide-open\nengine: json-schema\nschema: {}\n---\n\
         resourceType: AccessPolicy\nid: said-so\nengine: allow\n",
    )
    .unwrap();
    let (code, stdout, stderr) = run(&["validate", "--config", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stderr.contains("warning: ")
            && stderr.contains("AccessPolicy/wide-open: field `schema`: allows every request"),
        "{stderr}"
    );
    assert!(!stderr.contains("said-so"), "{stderr}");
}

#[test]
fn explain_names_the_failing_path_of_a_denied_request() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("c.yaml"),
        "resourceType: TokenIntrospector\nid: t\ntype: jwt\njwt: {iss: https://auth.example.com, secret: very-secret}\n---\n\
         resourceType: AccessPolicy\nid: admins-only\nengine: matcho\nmatcho: {jwt: {role: admin}, request-method: get}\n",
    )
    .unwrap();
    let token = Jwt::new(ISS, "bob")
        .claim("role", "viewer")
        .sign_hs256(SECRET);
    let (code, stdout, stderr) = run(&[
        "explain",
        "--config",
        dir.path().to_str().unwrap(),
        "--token",
        &token,
        "--path",
        "/fhir/Patient",
        "--output",
        "json",
    ]);
    assert_eq!(code, 2, "a denial exits 2: {stdout}{stderr}");
    assert!(stderr.contains("DENY 403 (no_policy_allows)"), "{stderr}");
    let trace: serde_json::Value = serde_json::from_str(&stdout).expect("trace is JSON");
    let policy = &trace["policies"][0];
    assert_eq!(policy["policy"], "admins-only");
    assert_eq!(policy["allowed"], false);
    let mismatch = &policy["explanation"]["errors"][0];
    assert_eq!(mismatch["path"], "jwt.role");
    assert_eq!(mismatch["expected"], "admin");
    assert_eq!(mismatch["but"], "viewer");
    assert!(!stdout.contains(&token) && !stderr.contains(&token));

    // The default is a tree for people, with the same facts.
    let (code, tree, _) = run(&[
        "explain",
        "--config",
        dir.path().to_str().unwrap(),
        "--token",
        &token,
        "--path",
        "/fhir/Patient",
    ]);
    assert_eq!(code, 2);
    for line in [
        "token: valid jwt (TokenIntrospector/t)",
        "  admins-only: denies (matcho)",
        "    jwt.role: expected \"admin\", found \"viewer\"",
    ] {
        assert!(tree.lines().any(|l| l == line), "missing {line:?}:\n{tree}");
    }
    assert!(!tree.contains(&token));
}

#[test]
fn serve_refuses_user_creation_without_a_users_dir() {
    let quickstart = support::repo_path("examples/quickstart");
    let out = serve::run_refused(
        &[
            "serve",
            "--config",
            quickstart.to_str().unwrap(),
            "--create-users",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ],
        "--users-dir",
    );
    assert_eq!(out.code, 1);
}

/// `portcullis_config_last_load_ok`.
async fn last_load_ok(p: &Portcullis) -> u64 {
    p.metrics()
        .await
        .counter("portcullis_config_last_load_ok", &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_edit_keeps_the_last_good_configuration_serving() {
    let dir = tempfile::tempdir().unwrap();
    let introspector = "resourceType: TokenIntrospector\nid: t\ntype: jwt\njwt: {iss: https://auth.example.com, secret: very-secret}\n";
    write(dir.path(), "introspector.yaml", introspector);
    write(
        dir.path(),
        "policy.yaml",
        "resourceType: AccessPolicy\nid: p\nengine: matcho\nmatcho: {jwt: {role: admin}}\n",
    );
    let p = Portcullis::builder().config(dir.path()).start().await;
    let admin = Jwt::new(ISS, "a").claim("role", "admin").sign_hs256(SECRET);
    let viewer = Jwt::new(ISS, "v")
        .claim("role", "viewer")
        .sign_hs256(SECRET);
    assert_eq!(status_of(&p, &admin).await, 200);
    assert_eq!(status_of(&p, &viewer).await, 403);

    // A good edit is picked up without a restart.
    write(
        dir.path(),
        "policy.yaml",
        "resourceType: AccessPolicy\nid: p\nengine: matcho\nmatcho: {jwt: {role: viewer}}\n",
    );
    support::eventually("the edited policy to serve", || async {
        (status_of(&p, &viewer).await == 200).then_some(())
    })
    .await;
    assert_eq!(status_of(&p, &admin).await, 403);
    assert_eq!(last_load_ok(&p).await, 1);

    // A broken edit: the last good configuration keeps serving, and says so.
    write(dir.path(), "policy.yaml", "resourceType: AccessPolicy\nid: p\nengine: matcho\nmatcho: {uri: {$no-such-operator: 1}}\n");
    support::eventually("the broken edit to be reported", || async {
        (last_load_ok(&p).await == 0).then_some(())
    })
    .await;
    assert_eq!(
        status_of(&p, &viewer).await,
        200,
        "last good configuration still serves"
    );
    let log = p.log();
    assert!(
        log.contains("AccessPolicy/p"),
        "the error names the resource:\n{log}"
    );
    assert!(
        log.contains("the last good configuration keeps serving"),
        "{log}"
    );
    assert_eq!(p.readyz().await, 200, "still ready: it is still serving");

    // Deleting a file is a change too: without the introspector no token is trusted.
    std::fs::remove_file(dir.path().join("policy.yaml")).unwrap();
    std::fs::remove_file(dir.path().join("introspector.yaml")).unwrap();
    support::eventually("the deletion to serve", || async {
        (status_of(&p, &viewer).await == 401).then_some(())
    })
    .await;
}

/// portcullis writes `--users-dir` itself; one bad file there (corrupt, misnamed, a
/// duplicate, not a User) is skipped and reported, and never keeps the rest from serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_files_of_created_users_are_skipped_and_reported() {
    let config = tempfile::tempdir().unwrap();
    write(
        config.path(),
        "config.yaml",
        "resourceType: TokenIntrospector\nid: t\ntype: jwt\njwt: {iss: https://auth.example.com, secret: very-secret}\n---\n\
         resourceType: AccessPolicy\nid: alice-only\nengine: allow\nlink: [{reference: User/alice}]\n",
    );
    let users = tempfile::tempdir().unwrap();
    let user = |name: &str| {
        format!("apiVersion: portcullis.dev/v1alpha1\nkind: User\nmetadata: {{name: {name}}}\nspec: {{data: {{}}}}\n")
    };
    write(users.path(), "alice.yaml", &user("alice"));
    write(users.path(), "broken.yaml", "kind: [");
    write(users.path(), "bob.yaml", &user("alice"));
    write(
        users.path(),
        "policy.yaml",
        "resourceType: AccessPolicy\nid: smuggled\nengine: allow\n",
    );
    let p = Portcullis::builder()
        .config(config.path())
        .create_users(users.path())
        .start()
        .await;
    let alice = Jwt::new(ISS, "alice").sign_hs256(SECRET);
    let mallory = Jwt::new(ISS, "mallory").sign_hs256(SECRET);
    assert_eq!(status_of(&p, &alice).await, 200, "{}", p.log_report());
    assert_eq!(status_of(&p, &mallory).await, 403, "no smuggled policy");
    assert_eq!(
        p.metrics()
            .await
            .counter("portcullis_user_files_skipped", &[]),
        3
    );
    let log = p.log();
    for file in ["broken.yaml", "bob.yaml", "policy.yaml"] {
        assert!(
            log.lines()
                .any(|l| l.contains("created User file skipped") && l.contains(file)),
            "{file} is not reported:\n{log}"
        );
    }
}

/// The decision lines of a log, and whether each is an allow.
fn decision_lines(log: &str) -> Vec<(bool, &str)> {
    log.lines()
        .filter(|l| l.contains(" decision "))
        .map(|l| {
            let allow = l.contains("outcome=\"allow\"") || l.contains("outcome=allow");
            let deny = l.contains("outcome=\"deny\"") || l.contains("outcome=deny");
            assert!(allow != deny, "a decision line without its outcome: {l}");
            (allow, l)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_decision_log_has_one_line_per_decision_and_never_the_token() {
    let p = Portcullis::builder()
        .config("examples/quickstart")
        .arg("--decision-log-allow-sample")
        .arg("1")
        .start()
        .await;
    let good = Jwt::new(ISS, "basic").sign_hs256(SECRET);
    let expired = Jwt::new(ISS, "basic").expired().sign_hs256(SECRET);
    assert_eq!(status_of(&p, &good).await, 200);
    assert_eq!(status_of(&p, &expired).await, 401);
    // A decision is logged before it is answered.
    let log = p.log();
    let decisions = decision_lines(&log);
    assert_eq!(decisions.len(), 2, "{log}");
    assert!(decisions[0].0, "{log}");
    assert!(decisions[0].1.contains("external-auth-server"), "{log}");
    assert!(!decisions[1].0, "{log}");
    assert!(decisions[1].1.contains("token_expired"), "{log}");
    for token in [&good, &expired] {
        let signature = token.rsplit('.').next().unwrap();
        assert!(!log.contains(signature), "a token reached the log:\n{log}");
    }
}

/// By default only denials are logged (a line per allow would cost a fifth of the
/// throughput, BENCHMARKS.md); the decision counter still counts the allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_the_decision_log_has_the_denials_only() {
    let p = Portcullis::builder()
        .config("examples/quickstart")
        .start()
        .await;
    let good = Jwt::new(ISS, "basic").sign_hs256(SECRET);
    let expired = Jwt::new(ISS, "basic").expired().sign_hs256(SECRET);
    assert_eq!(status_of(&p, &good).await, 200);
    assert_eq!(status_of(&p, &good).await, 200);
    assert_eq!(status_of(&p, &expired).await, 401);
    let log = p.log();
    let decisions = decision_lines(&log);
    assert_eq!(decisions.len(), 1, "{log}");
    assert!(decisions[0].1.contains("token_expired"), "{log}");
    let allowed = p.metrics().await.counter(
        "portcullis_decisions_total",
        &[("outcome", "allow"), ("reason", "allowed")],
    );
    assert_eq!(allowed, 2);
}

/// `--decision-log-allow-sample 3`: one allow in three is logged, every denial is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_decision_log_samples_allows_and_keeps_every_denial() {
    let p = Portcullis::builder()
        .config("examples/quickstart")
        .arg("--decision-log-allow-sample")
        .arg("3")
        .start()
        .await;
    let expired = Jwt::new(ISS, "basic").expired().sign_hs256(SECRET);
    let forged = Jwt::new(ISS, "basic").sign_hs256("not-the-secret");
    for i in 0..9 {
        let good = Jwt::new(ISS, "basic").claim("n", i).sign_hs256(SECRET);
        assert_eq!(status_of(&p, &good).await, 200);
        // Denials in between count for nothing in the sampling.
        if i % 3 == 1 {
            let denied = if i == 4 { &forged } else { &expired };
            assert_eq!(status_of(&p, denied).await, 401);
        }
    }
    let log = p.log();
    let decisions = decision_lines(&log);
    let allows = decisions.iter().filter(|(allow, _)| *allow).count();
    let denials = decisions.len() - allows;
    assert_eq!(allows, 3, "9 allows sampled 1 in 3:\n{log}");
    assert_eq!(denials, 3, "every denial logged:\n{log}");
    assert_eq!(
        p.metrics().await.checks(),
        12,
        "every decision was made, logged or not"
    );
}

/// Hostile files, as a careless or malicious author might write them: each is refused by
/// `validate` with an error that names the file and says what is wrong, in bounded time
/// and never by a panic. (The bound is a hang detector, far above the milliseconds each
/// takes.)
#[test]
fn hostile_configuration_files_are_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let policy = "resourceType: AccessPolicy\nid: p\nlink: [{resourceType: User, id: u}]\n";
    // Billion laughs: nine aliases of nine, nine levels deep.
    let mut laughs = String::from("a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for (prev, name) in ('a'..='i').zip('b'..='j') {
        let refs = vec![format!("*{prev}"); 9].join(", ");
        laughs.push_str(&format!("{name}: &{name} [{refs}]\n"));
    }
    let block_nesting: String = (0..200)
        .map(|i| format!("{}k{i}:\n", "  ".repeat(i)))
        .collect();
    let huge = format!("# {}\n{policy}engine: allow\n", "x".repeat(17 << 20));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("laughs.yaml", laughs.into_bytes(), "repetition limit exceeded"),
        ("block.yaml", block_nesting.into_bytes(), "recursion limit exceeded"),
        ("flow.yaml", format!("a: {}{}\n", "[".repeat(5000), "]".repeat(5000)).into_bytes(), "nested deeper than 256 levels"),
        ("huge.yaml", huge.into_bytes(), "larger than the 16 MiB limit"),
        ("latin1.yaml", [policy.as_bytes(), b"description: caf\xe9\n"].concat(), "latin1.yaml:4: not UTF-8: invalid byte at column 17"),
        ("dup.yaml", format!("{policy}engine: allow\nengine: matcho\n").into_bytes(), "duplicate entry with key \"engine\""),
        ("dup.json", br#"{"resourceType": "User", "id": "a", "id": "b"}"#.to_vec(), "duplicate entry with key \"id\""),
        ("regex.yaml", format!("{policy}engine: matcho\nmatcho: {{uri: \"#((a{{100}}){{100}}){{100}}\"}}\n").into_bytes(), "AccessPolicy/p: field `matcho.uri`: invalid regex"),
        ("schema.yaml", format!("{policy}engine: json-schema\nschema: {{properties: {{uri: {{pattern: \"((a{{100}}){{100}}){{100}}\"}}}}}}\n").into_bytes(), "AccessPolicy/p: field `schema`: invalid schema"),
    ];
    for (name, bytes, expected) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes).unwrap();
        let started = std::time::Instant::now();
        let (code, stdout, stderr) = run(&["validate", "--config", path.to_str().unwrap()]);
        let took = started.elapsed();
        assert_eq!(code, 1, "{name}: refused\n{stdout}{stderr}");
        assert!(
            stdout.contains(name) || stderr.contains(name),
            "{name}: the error names the file\n{stdout}{stderr}"
        );
        assert!(
            stdout.contains(expected) || stderr.contains(expected),
            "{name}: says `{expected}`\n{stdout}{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        assert!(
            took < std::time::Duration::from_secs(20),
            "{name}: took {took:?}"
        );
    }
}

/// The same files as an edit to a serving configuration: each is reported, counted in
/// `portcullis_config_last_load_ok`, and the last good configuration keeps deciding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_edits_keep_the_last_good_configuration_serving() {
    let dir = tempfile::tempdir().unwrap();
    let introspector = "resourceType: TokenIntrospector\nid: t\ntype: jwt\njwt: {iss: https://auth.example.com, secret: very-secret}\n";
    write(dir.path(), "introspector.yaml", introspector);
    let good = "resourceType: AccessPolicy\nid: p\nengine: matcho\nmatcho: {jwt: {role: admin}}\n";
    write(dir.path(), "policy.yaml", good);
    let p = Portcullis::builder().config(dir.path()).start().await;
    let admin = Jwt::new(ISS, "a").claim("role", "admin").sign_hs256(SECRET);
    assert_eq!(status_of(&p, &admin).await, 200);
    let edits = [
        "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n".to_string(),
        format!("# {}\n{good}", "x".repeat(17 << 20)),
        format!("{good}engine: allow\n"),
    ];
    for edit in edits {
        write(dir.path(), "policy.yaml", &edit);
        support::eventually("the hostile edit to be reported", || async {
            (last_load_ok(&p).await == 0).then_some(())
        })
        .await;
        assert_eq!(
            status_of(&p, &admin).await,
            200,
            "last good configuration serves"
        );
        write(dir.path(), "policy.yaml", good);
        support::eventually("the good file to load again", || async {
            (last_load_ok(&p).await == 1).then_some(())
        })
        .await;
    }
}
