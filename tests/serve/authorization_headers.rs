//! A request with two `Authorization` headers names two credentials: which one is
//! meant is not for portcullis to guess, so a policy that requires a valid token must not
//! allow it, whichever the order, over the HTTP flavour of ext_authz and over gRPC
//! (`header_map`, where Envoy sends repeated headers as they came).

use crate::support;

use support::ext_authz::{check_request, http_check, send};
use support::portcullis::Portcullis;
use support::tokens::{bearer, Jwt};

/// The quickstart: TokenIntrospector `external-auth-server` (HS256) and a policy that
/// requires a valid token of its issuer.
const QUICKSTART: &str = "examples/quickstart";
const ISS: &str = "https://auth.example.com";
const SECRET: &str = "very-secret";

/// Pairs of `Authorization` values, each pair with at least one valid token.
fn pairs() -> Vec<(&'static str, [String; 2])> {
    let valid = bearer(&Jwt::new(ISS, "basic").sign_hs256(SECRET));
    let other = bearer(&Jwt::new(ISS, "someone-else").sign_hs256(SECRET));
    let forged = bearer(&Jwt::new(ISS, "admin").sign_hs256("not-the-secret"));
    let garbage = bearer("not-a-token");
    vec![
        ("valid then forged", [valid.clone(), forged.clone()]),
        ("forged then valid", [forged, valid.clone()]),
        ("valid then garbage", [valid.clone(), garbage]),
        ("two valid tokens of two subjects", [valid, other]),
    ]
}

/// Two credentials: which one would the application read? Refused (401), over both edges,
/// whatever the order: a valid token followed by a forged one, garbage, or another
/// subject's token once passed on the first one alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_authorization_headers_are_never_allowed() {
    let p = Portcullis::builder().config(QUICKSTART).start().await;
    let mut client = p.ext_authz_client().await;
    // The harness works: one valid token alone is allowed either way.
    let valid = bearer(&Jwt::new(ISS, "basic").sign_hs256(SECRET));
    let one = [("authorization", valid.as_str())];
    assert_eq!(http_check(&p, "/fhir/Patient", &one).await.status, 200);
    let alone = send(
        &mut client,
        check_request("GET", "/fhir/Patient", &one, true),
    )
    .await;
    assert!(alone.allowed, "{alone:?}");

    let mut allowed = Vec::new();
    for (name, [first, second]) in pairs() {
        let headers = [
            ("authorization", first.as_str()),
            ("authorization", second.as_str()),
        ];
        let answer = http_check(&p, "/fhir/Patient", &headers).await;
        // Refused as an unreadable credential: 401, not merely "not allowed".
        if answer.status != 401 {
            allowed.push(format!("HTTP ext_authz, {name}: {}", answer.status));
        }
        let checked = send(
            &mut client,
            check_request("GET", "/fhir/Patient", &headers, true),
        )
        .await;
        if checked.allowed {
            allowed.push(format!("gRPC header_map, {name}"));
        }
    }
    assert!(
        allowed.is_empty(),
        "requests with two Authorization headers were not refused with 401:\n  {}",
        allowed.join("\n  ")
    );
}
