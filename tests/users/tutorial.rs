//! The Aidbox tutorial "Keycloak: auto-create users" (docs/users.md),
//! replayed against the real binary over ext_authz gRPC, with a stub Keycloak realm.

use crate::support;

use serde_json::json;
use support::ext_authz::{check, check_once};
use support::portcullis::{self as serve, Portcullis};
use support::stub_idp::{sub_of, StubIdp, TUTORIAL_CLIENT, TUTORIAL_SUB};
use support::tokens::forge_rs256;
use support::users::{
    keycloak_user_name as user_name, serve_creating_users, user_files, write_tutorial_config,
};

struct World {
    idp: StubIdp,
    dir: tempfile::TempDir,
}

impl World {
    async fn new(extra_config: &str) -> Self {
        let idp = StubIdp::keycloak().await;
        let dir = tempfile::tempdir().unwrap();
        write_tutorial_config(&dir.path().join("config"), &idp, extra_config);
        World { idp, dir }
    }

    fn config(&self) -> std::path::PathBuf {
        self.dir.path().join("config")
    }

    fn users(&self) -> std::path::PathBuf {
        self.dir.path().join("users")
    }

    async fn serve(&self) -> Portcullis {
        serve_creating_users(&self.config(), &self.users()).await
    }
}

fn assert_no_token_in(log: &str, token: &str) {
    // The signature alone is enough to replay nothing, but no part may be logged.
    let signature = token.rsplit('.').next().unwrap();
    assert!(
        !log.contains(signature),
        "the token appears in the log:\n{log}"
    );
}

#[tokio::test]
async fn first_request_creates_the_tutorials_user() {
    let world = World::new("").await;
    let portcullis = world.serve().await;
    let token = world.idp.client_credentials(TUTORIAL_CLIENT).await;
    let mut client = portcullis.ext_authz_client().await;

    let first = check(&mut client, "GET", "/fhir/Patient", Some(&token)).await;
    assert!(first.allowed, "{first:?}");
    let name = user_name(TUTORIAL_SUB);
    assert_eq!(first.header("x-portcullis-user"), Some(name.as_str()));
    assert_eq!(first.header("x-portcullis-subject"), Some(TUTORIAL_SUB));
    assert_eq!(
        first.header("x-portcullis-policy"),
        Some("keycloak-users-policy")
    );

    // The tutorial's "Verify created User", as a Kubernetes manifest.
    let files = user_files(&world.users());
    assert_eq!(files.len(), 1, "{files:?}");
    let user = &files[&format!("{name}.yaml")];
    assert_eq!(user["apiVersion"], "portcullis.dev/v1alpha1");
    assert_eq!(user["kind"], "User");
    assert_eq!(user["metadata"]["name"], name.as_str());
    // Labelled with the hash of its identifier, so that `--users on-demand` finds it
    // should the file be applied to a cluster.
    assert_eq!(
        user["metadata"]["labels"]["portcullis.dev/identifier"],
        portcullis::users::identifier_label("keycloak", TUTORIAL_SUB)
    );
    assert_eq!(
        user["spec"],
        json!({
            "data": {
                "sub": TUTORIAL_SUB,
                "email_verified": false,
                "preferred_username": "service-account-my-client"
            },
            "identifier": [{"system": "keycloak", "value": TUTORIAL_SUB}]
        })
    );
    assert_eq!(world.idp.userinfo_calls(TUTORIAL_SUB), 1);

    // Later requests find it: no second call, no second file.
    for _ in 0..3 {
        let again = check(&mut client, "GET", "/fhir/Patient", Some(&token)).await;
        assert_eq!(again.header("x-portcullis-user"), Some(name.as_str()));
    }
    assert_eq!(world.idp.userinfo_calls(TUTORIAL_SUB), 1);
    assert_eq!(user_files(&world.users()).len(), 1);
    let metrics = portcullis.metrics().await;
    assert_eq!(metrics.user_event("created"), 1);
    assert_eq!(metrics.user_event("userinfo_call"), 1);
    // The key came from the tutorial's jwks_uri, fetched once and then cached.
    assert_eq!(world.idp.jwks_fetches(), 1);

    // A client-sent copy of the header never survives; without a token there is no user.
    let anonymous = check(&mut client, "GET", "/fhir/Patient", None).await;
    assert!(!anonymous.allowed);
    assert_eq!(anonymous.status, 401);

    assert_no_token_in(&portcullis.stop(), &token);
}

#[tokio::test]
async fn twenty_concurrent_first_requests_create_one_user() {
    let world = World::new("").await;
    let portcullis = world.serve().await;
    let token = world.idp.client_credentials("burst-client").await;
    let sub = sub_of("burst-client");
    let client = portcullis.ext_authz_client().await;

    let requests = (0..20).map(|_| {
        let mut client = client.clone();
        let token = token.clone();
        tokio::spawn(async move { check(&mut client, "GET", "/fhir/Patient", Some(&token)).await })
    });
    let answers = futures::future::join_all(requests).await;
    let name = user_name(&sub);
    for answer in answers {
        let answer = answer.unwrap();
        assert!(answer.allowed, "{answer:?}");
        assert_eq!(answer.header("x-portcullis-user"), Some(name.as_str()));
    }
    assert_eq!(world.idp.userinfo_calls(&sub), 1);
    let files = user_files(&world.users());
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        [&format!("{name}.yaml")],
        "exactly one User file"
    );
    assert_eq!(portcullis.metrics().await.user_event("created"), 1);
    // Concurrent requests that all need the realm's keys share one JWKS fetch.
    assert_eq!(world.idp.jwks_fetches(), 1);
}

#[tokio::test]
async fn after_a_restart_the_user_is_found_without_userinfo() {
    let world = World::new("").await;
    let token = world.idp.client_credentials(TUTORIAL_CLIENT).await;
    let name = user_name(TUTORIAL_SUB);

    let first = world.serve().await;
    let answer = check_once(&first, "/fhir/Patient", Some(&token)).await;
    assert_eq!(answer.header("x-portcullis-user"), Some(name.as_str()));
    first.stop();
    assert_eq!(world.idp.userinfo_calls(TUTORIAL_SUB), 1);

    let second = world.serve().await;
    // Read back at start-up: the snapshot holds it, nothing is fetched or written.
    let answer = check_once(&second, "/fhir/Patient", Some(&token)).await;
    assert!(answer.allowed, "{answer:?}");
    assert_eq!(answer.header("x-portcullis-user"), Some(name.as_str()));
    assert_eq!(world.idp.userinfo_calls(TUTORIAL_SUB), 1);
    let metrics = second.metrics().await;
    metrics.assert_no_user_event("userinfo_call");
    metrics.assert_no_user_event("found_in_store");
    assert_eq!(user_files(&world.users()).len(), 1);
    // Each process fetched the realm's keys itself.
    assert_eq!(world.idp.jwks_fetches(), 2);
    assert!(
        second.log().contains("1 users"),
        "the snapshot should count the User read back:\n{}",
        second.log()
    );
}

#[tokio::test]
async fn a_policy_linked_to_the_created_user_applies_to_it_alone() {
    // The tutorial's policy is narrowed to /fhir; /admin is only for the created User.
    let name = user_name(TUTORIAL_SUB);
    let world = World::new(&format!(
        "  uri: \"#^/fhir/\"\n---\nresourceType: AccessPolicy\nid: admin-for-my-client\n\
         engine: allow\nlink:\n  - reference: User/{name}\n"
    ))
    .await;
    let portcullis = world.serve().await;
    let mut client = portcullis.ext_authz_client().await;
    let mine = world.idp.client_credentials(TUTORIAL_CLIENT).await;
    let other = world.idp.client_credentials("other-client").await;

    // The first request creates the User, and the link applies to it at once.
    let answer = check(&mut client, "GET", "/admin", Some(&mine)).await;
    assert!(answer.allowed, "{answer:?}");
    assert_eq!(answer.header("x-portcullis-user"), Some(name.as_str()));
    assert_eq!(
        answer.header("x-portcullis-policy"),
        Some("admin-for-my-client")
    );

    let answer = check(&mut client, "GET", "/admin", Some(&other)).await;
    assert!(!answer.allowed, "{answer:?}");
    assert_eq!(answer.status, 403);
    let answer = check(&mut client, "GET", "/fhir/Patient", Some(&other)).await;
    assert!(answer.allowed, "{answer:?}");
    assert_eq!(
        answer.header("x-portcullis-user"),
        Some(user_name(&sub_of("other-client")).as_str())
    );
    assert_eq!(user_files(&world.users()).len(), 2);
}

#[tokio::test]
async fn a_failing_userinfo_leaves_the_request_without_a_user() {
    let world = World::new("").await;
    let portcullis = world.serve().await;
    let token = world.idp.client_credentials("flaky-client").await;
    let sub = sub_of("flaky-client");
    world.idp.fail_userinfo_for(&sub);

    let answer = check_once(&portcullis, "/fhir/Patient", Some(&token)).await;
    // The tutorial's policy needs only the issuer: allowed, but with no user.
    assert!(answer.allowed, "{answer:?}");
    assert_eq!(answer.header("x-portcullis-user"), None);
    assert_eq!(answer.header("x-portcullis-subject"), Some(sub.as_str()));
    assert_eq!(world.idp.userinfo_calls(&sub), 2, "one retry, no more");
    assert_eq!(portcullis.metrics().await.user_event("userinfo_error"), 1);
    assert!(user_files(&world.users()).is_empty());
    let log = portcullis.stop();
    assert!(log.contains("User not created"), "{log}");
    assert_no_token_in(&log, &token);
}

#[tokio::test]
async fn only_the_realms_signing_key_verifies() {
    let world = World::new("").await;
    let portcullis = world.serve().await;
    let mut client = portcullis.ext_authz_client().await;
    let genuine = world.idp.client_credentials(TUTORIAL_CLIENT).await;
    // The same claims, signed with the key behind the realm's published RSA-OAEP
    // (`use: enc`) key, under its kid: an encryption key never verifies a signature.
    let forged = forge_rs256(&genuine, "rsa-b", Some("users-rsa-oaep"));

    let answer = check(&mut client, "GET", "/fhir/Patient", Some(&forged)).await;
    assert!(!answer.allowed, "{answer:?}");
    assert_eq!(answer.status, 401, "{answer:?}");
    assert_eq!(world.idp.userinfo_total(), 0, "no User for a refused token");
    assert!(user_files(&world.users()).is_empty());

    let answer = check(&mut client, "GET", "/fhir/Patient", Some(&genuine)).await;
    assert!(answer.allowed, "{answer:?}");
    assert_no_token_in(&portcullis.stop(), &forged);
}

#[test]
fn create_users_without_a_users_dir_is_a_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        "resourceType: AccessPolicy\nid: p\nengine: allow\n",
    )
    .unwrap();
    serve::run_refused(
        &[
            "serve",
            "--create-users",
            "--config",
            dir.path().to_str().unwrap(),
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ],
        "--users-dir",
    );
    assert!(!dir.path().join("users").exists());
}
