//! An identity provider behind a private CA (a cluster's own): its HTTPS is not trusted
//! until `--ca-file` names the CA, and the error says so.

use crate::support;

use serde_json::json;
use support::ext_authz::check;
use support::portcullis::{run, Portcullis};
use support::stub_idp::StubIdp;
use support::tls::TestCa;
use support::tokens::{jwks, rs256};

const ISS: &str = "https://idp.example";
const UNTRUSTED: &str = "certificate not trusted: add the CA with --ca-file";

/// `portcullis <args>`, off the test's runtime (the stub serves on it meanwhile).
async fn run_off_runtime(args: Vec<String>) -> support::portcullis::Output {
    tokio::task::spawn_blocking(move || run(&args.iter().map(String::as_str).collect::<Vec<_>>()))
        .await
        .expect("portcullis ran")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_idp_of_a_private_ca_needs_its_ca_file() {
    let ca = TestCa::new("cluster CA");
    let idp = StubIdp::start_https(jwks(&["rsa-a"]), &ca.serving("idp")).await;
    assert!(idp.jwks_uri().starts_with("https://127.0.0.1:"));
    let config = tempfile::tempdir().unwrap();
    std::fs::write(
        config.path().join("config.yaml"),
        format!(
            "resourceType: TokenIntrospector\nid: idp\ntype: jwt\njwt: {{iss: {ISS}}}\n\
             jwks_uri: {}\n---\nresourceType: AccessPolicy\nid: idp-users\nengine: matcho\n\
             matcho: {{jwt: {{iss: {ISS}}}}}\n",
            idp.jwks_uri()
        ),
    )
    .unwrap();
    let certs = tempfile::tempdir().unwrap();
    let ca_file = certs.path().join("ca.crt");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let config = config.path().to_str().unwrap().to_string();
    let ca_file = ca_file.to_str().unwrap().to_string();
    let token = rs256(ISS, json!({}));

    // explain: without the CA the provider is unavailable, and the trace says why.
    let explain = |extra: &[&str]| {
        let mut args: Vec<String> = ["explain", "--config", &config, "--token", &token]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        run_off_runtime(args)
    };
    let out = explain(&[]).await;
    assert_eq!(out.code, 2, "{out:#?}");
    assert!(out.stdout.contains("decision: DENY 503"), "{out:#?}");
    assert!(out.stdout.contains(UNTRUSTED), "{out:#?}");
    assert!(!out.stdout.contains(&token) && !out.stderr.contains(&token));
    assert_eq!(idp.jwks_fetches(), 0, "no request got past the handshake");

    let out = explain(&["--ca-file", &ca_file]).await;
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(out.stdout.contains("decision: ALLOW 200"), "{out:#?}");
    assert_eq!(idp.jwks_fetches(), 1);

    // serve: the same, through ext_authz and the log.
    let without = Portcullis::builder().config(&config).start().await;
    let mut client = without.ext_authz_client().await;
    assert_eq!(
        check(&mut client, "GET", "/", Some(&token)).await.status,
        503
    );
    support::eventually("the reason in the log", || async {
        without.log().contains(UNTRUSTED).then_some(())
    })
    .await;
    assert!(!without.log().contains(&token));

    let with = Portcullis::builder()
        .config(&config)
        .arg("--ca-file")
        .arg(&ca_file)
        .start()
        .await;
    let mut client = with.ext_authz_client().await;
    assert_eq!(
        check(&mut client, "GET", "/", Some(&token)).await.status,
        200
    );
    assert_eq!(idp.jwks_fetches(), 2);
}

/// A `--ca-file` that cannot be used stops `serve`, `explain` and `test` before anything
/// else, naming the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_file_without_a_certificate_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let empty = empty.to_str().unwrap().to_string();
    let missing = dir.path().join("missing.pem");
    let missing = missing.to_str().unwrap().to_string();
    let quickstart = support::repo_path("examples/quickstart");
    let quickstart = quickstart.to_str().unwrap();
    let tests = support::repo_path("examples/quickstart-tests.yaml");
    let tests = tests.to_str().unwrap().to_string();
    for (file, says) in [
        (&empty, "holds no PEM certificate"),
        (&missing, "cannot be read"),
    ] {
        let mention = format!("--ca-file {file}: {says}");
        for command in [
            &["serve", "--config", quickstart][..],
            &["explain", "--config", quickstart],
            &["test", "--config", quickstart, &tests],
        ] {
            let args = [command, &["--ca-file", file]].concat();
            support::portcullis::run_refused(&args, &mention);
        }
    }
}
