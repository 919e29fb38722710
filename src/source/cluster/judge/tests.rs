use serde_json::{json, Value};

use super::*;
use crate::resources::parse_spec;
use crate::source::cluster::index::ClusterIndex;

const NS: &str = "team-a";

fn candidate(kind: Kind, name: &str, spec: Value) -> Candidate {
    Candidate {
        kind,
        namespace: NS.into(),
        name: name.into(),
        spec: Some(spec),
        old_spec: None,
        annotations: None,
        old_annotations: None,
        labels: Default::default(),
    }
}

fn jwt(iss: &str) -> Value {
    json!({"type": "jwt", "jwt": {"iss": iss, "secret": "s3cret"}})
}

/// What serves after the index admitted these objects (namespace, kind, name, spec), the
/// oldest first.
fn serving(objects: &[(&str, Kind, &str, Value)]) -> Arc<Snapshot> {
    let mut index = ClusterIndex::default();
    for (i, (namespace, kind, name, spec)) in objects.iter().enumerate() {
        index.apply(Object {
            key: ObjectKey {
                kind: *kind,
                namespace: namespace.to_string(),
                name: name.to_string(),
            },
            generation: 1,
            uid: 0,
            created: i as i64,
            spec: parse_spec(kind.name(), spec.clone()),
            status: None,
        });
    }
    let (compiler, verdicts) = index.compile(&Kind::ALL);
    assert!(verdicts.iter().all(|v| v.ready.status), "{verdicts:#?}");
    Arc::new(compiler.into_snapshot())
}

fn cluster() -> Arc<Snapshot> {
    serving(&[
        (
            NS,
            Kind::IdentityProvider,
            "kc",
            json!({"system": "https://kc"}),
        ),
        (
            NS,
            Kind::TokenIntrospector,
            "auth",
            json!({"type": "jwt", "jwt": {"iss": "https://a", "secret": "s"},
                   "identity_provider": {"reference": "IdentityProvider/kc"}}),
        ),
        (
            NS,
            Kind::User,
            "alice",
            json!({"identifier": [{"system": "https://kc", "value": "sub-1"}]}),
        ),
        (
            NS,
            Kind::AccessPolicy,
            "read",
            json!({"engine": "matcho", "matcho": {"request-method": "get"}}),
        ),
    ])
}

fn refused(answer: &Answer) -> &Ready {
    answer.refused.as_ref().expect("refused")
}

#[test]
fn a_good_object_of_each_kind_is_allowed_without_warnings() {
    let serving = cluster();
    for c in [
        candidate(Kind::TokenIntrospector, "other", jwt("https://b")),
        candidate(
            Kind::AccessPolicy,
            "write",
            json!({"engine": "matcho", "matcho": {"request-method": "post"},
                   "link": [{"reference": "User/alice"}]}),
        ),
        candidate(
            Kind::IdentityProvider,
            "other",
            json!({"system": "https://other"}),
        ),
        candidate(
            Kind::User,
            "bob",
            json!({"identifier": [{"system": "https://kc", "value": "sub-2"}]}),
        ),
    ] {
        assert_eq!(review(&c, Some(&serving)), Answer::default(), "{c:?}");
    }
}

#[test]
fn a_bad_object_of_each_kind_is_refused_naming_the_field() {
    let serving = cluster();
    for (c, field) in [
        (
            candidate(
                Kind::TokenIntrospector,
                "t",
                json!({"type": "jwt", "jwt": {"secret": "s"}}),
            ),
            "field `jwt.iss`",
        ),
        (
            candidate(
                Kind::TokenIntrospector,
                "t",
                json!({"type": "jwt", "jwt": {"iss": "https://b", "secret": "s"},
                       "jwks_uri": "https://b/jwks"}),
            ),
            "field `jwt.secret`: set exactly one",
        ),
        (
            candidate(
                Kind::TokenIntrospector,
                "t",
                json!({"type": "jwt", "jwt": {"iss": "https://b", "keys": [
                    {"kty": "RSA", "alg": "RS256", "pub": "not a key"}]}}),
            ),
            "field `jwt.keys[0].pub`",
        ),
        (
            candidate(
                Kind::AccessPolicy,
                "p",
                json!({"engine": "matcho", "matcho": {"uri": "#(unclosed"}}),
            ),
            "invalid regex",
        ),
        (
            candidate(
                Kind::AccessPolicy,
                "p",
                json!({"engine": "json-schema", "schema": {"type": 12}}),
            ),
            "schema",
        ),
        (
            candidate(
                Kind::IdentityProvider,
                "i",
                json!({"userinfo-source": "carrier-pigeon"}),
            ),
            "field `userinfo-source`",
        ),
        (
            candidate(Kind::User, "u", json!({"identifier": [{"system": "x"}]})),
            "field `identifier[0]`",
        ),
    ] {
        let answer = review(&c, Some(&serving));
        let ready = refused(&answer);
        assert_eq!(ready.reason, "Invalid", "{c:?}: {ready:?}");
        assert!(ready.message.contains(field), "{c:?}: {ready:?}");
    }
}

/// The webhook's refusal is the `Ready` condition the index would give the object.
#[test]
fn the_webhook_says_what_the_status_would_say() {
    let spec = json!({"engine": "json-schema", "schema": {"type": 12}});
    let mut index = ClusterIndex::default();
    index.apply(Object {
        key: ObjectKey {
            kind: Kind::AccessPolicy,
            namespace: NS.into(),
            name: "p".into(),
        },
        generation: 1,
        uid: 0,
        created: 0,
        spec: parse_spec("AccessPolicy", spec.clone()),
        status: None,
    });
    let (_, verdicts) = index.compile(&Kind::CONFIG);
    let answer = review(&candidate(Kind::AccessPolicy, "p", spec), Some(&cluster()));
    assert_eq!(refused(&answer), &verdicts[0].ready);
}

#[test]
fn conflicts_with_what_serves_are_refused_naming_the_holder() {
    let serving = cluster();
    let answer = review(
        &candidate(Kind::TokenIntrospector, "impostor", jwt("https://a")),
        Some(&serving),
    );
    let ready = refused(&answer);
    assert_eq!(ready.reason, "Conflict");
    assert!(
        ready.message.contains("field `jwt.iss`")
            && ready.message.contains("TokenIntrospector/team-a/auth"),
        "{ready:?}"
    );

    let answer = review(
        &candidate(
            Kind::IdentityProvider,
            "kc2",
            json!({"system": "https://kc"}),
        ),
        Some(&serving),
    );
    let ready = refused(&answer);
    assert_eq!(ready.reason, "Conflict");
    assert!(
        ready.message.contains("field `system`")
            && ready.message.contains("IdentityProvider/team-a/kc"),
        "{ready:?}"
    );

    // An identifier is one User's within a namespace; another namespace's Users are
    // found apart, so it may hold the same one.
    let twin = candidate(
        Kind::User,
        "alice2",
        json!({"identifier": [{"system": "https://kc", "value": "sub-1"}]}),
    );
    let answer = review(&twin, Some(&serving));
    let ready = refused(&answer);
    assert_eq!(ready.reason, "Conflict");
    assert!(
        ready.message.contains("field `identifier`") && ready.message.contains("User/team-a/alice"),
        "{ready:?}"
    );
    let elsewhere = Candidate {
        namespace: "team-b".into(),
        ..candidate(
            Kind::User,
            "alice",
            json!({"identifier": [{"system": "https://kc", "value": "sub-1"}]}),
        )
    };
    assert_eq!(review(&elsewhere, Some(&serving)), Answer::default());
}

#[test]
fn an_update_of_the_holder_is_no_conflict() {
    let serving = cluster();
    for c in [
        candidate(
            Kind::TokenIntrospector,
            "auth",
            json!({"type": "jwt", "jwt": {"iss": "https://a", "secret": "new"},
                   "identity_provider": {"reference": "IdentityProvider/kc"}}),
        ),
        candidate(
            Kind::IdentityProvider,
            "kc",
            json!({"system": "https://kc", "title": "Keycloak"}),
        ),
        candidate(
            Kind::User,
            "alice",
            json!({"identifier": [{"system": "https://kc", "value": "sub-1"}],
                   "email": "alice@example.com"}),
        ),
    ] {
        assert_eq!(review(&c, Some(&serving)), Answer::default(), "{c:?}");
    }
}

#[test]
fn dangling_references_are_warnings() {
    let serving = cluster();
    let answer = review(
        &candidate(
            Kind::TokenIntrospector,
            "t",
            json!({"type": "jwt", "jwt": {"iss": "https://b", "secret": "s"},
                   "identity_provider": {"reference": "IdentityProvider/later"}}),
        ),
        Some(&serving),
    );
    assert_eq!(answer.refused, None);
    assert_eq!(answer.warnings.len(), 1, "{answer:?}");
    assert!(
        answer.warnings[0].contains("IdentityProvider/team-a/later does not exist (yet)"),
        "{answer:?}"
    );

    // The IdentityProvider of another namespace is not this one's.
    let elsewhere = Candidate {
        namespace: "team-b".into(),
        ..candidate(
            Kind::TokenIntrospector,
            "t",
            json!({"type": "jwt", "jwt": {"iss": "https://b", "secret": "s"},
                   "identity_provider": {"reference": "IdentityProvider/kc"}}),
        )
    };
    let answer = review(&elsewhere, Some(&serving));
    assert!(
        answer.warnings[0].contains("IdentityProvider/team-b/kc"),
        "{answer:?}"
    );

    let answer = review(
        &candidate(
            Kind::AccessPolicy,
            "p",
            json!({"engine": "allow", "link": [
                {"reference": "User/alice"},
                {"reference": "Client/app", "issuer": "https://a"},
                {"reference": "User/nobody"}]}),
        ),
        Some(&serving),
    );
    assert_eq!(answer.refused, None);
    assert_eq!(answer.warnings.len(), 1, "{answer:?}");
    assert!(
        answer.warnings[0].starts_with("field `link[2]`: User/team-a/nobody does not exist"),
        "{answer:?}"
    );

    // A reference that cannot be one stays an error.
    let answer = review(
        &candidate(
            Kind::TokenIntrospector,
            "t",
            json!({"type": "jwt", "jwt": {"iss": "https://b", "secret": "s"},
                   "identity_provider": {"reference": "User/alice"}}),
        ),
        Some(&serving),
    );
    assert!(
        refused(&answer)
            .message
            .contains("field `identity_provider`: must reference an IdentityProvider"),
        "{answer:?}"
    );
}

#[test]
fn secret_references_are_checked_without_reading_the_secret() {
    let serving = cluster();
    let answer = review(
        &candidate(
            Kind::TokenIntrospector,
            "t",
            json!({"type": "jwt", "jwt": {"iss": "https://b",
                   "secretRef": {"name": "not-yet", "key": "k"}}}),
        ),
        Some(&serving),
    );
    assert_eq!(answer, Answer::default());
    let answer = review(
        &candidate(
            Kind::TokenIntrospector,
            "t",
            json!({"type": "opaque", "introspection_endpoint": {"url": "https://i",
                   "authorizationRef": {"name": "s", "key": "k"}}}),
        ),
        Some(&serving),
    );
    assert_eq!(answer, Answer::default());

    // Everything else is still checked, and a value given twice is refused.
    let answer = review(
        &candidate(
            Kind::TokenIntrospector,
            "t",
            json!({"type": "jwt", "jwt": {"iss": "https://b", "secret": "inline",
                   "secretRef": {"name": "s", "key": "k"}}}),
        ),
        Some(&serving),
    );
    assert!(
        refused(&answer)
            .message
            .contains("field `jwt.secretRef`: the value is also given inline"),
        "{answer:?}"
    );
    let answer = review(
        &candidate(
            Kind::TokenIntrospector,
            "t",
            json!({"type": "jwt", "jwt": {"iss": "https://b",
                   "keys": [{"kty": "RSA", "alg": "HS256", "format": "plain",
                             "kRef": {"name": "s", "key": "k"}}]}}),
        ),
        Some(&serving),
    );
    assert!(
        refused(&answer).message.contains("field `jwt.keys[0].alg`"),
        "{answer:?}"
    );
}

#[test]
fn policies_that_allow_everyone_are_warned_of() {
    let answer = review(
        &candidate(
            Kind::AccessPolicy,
            "open",
            json!({"engine": "matcho", "matcho": {}}),
        ),
        Some(&cluster()),
    );
    assert_eq!(answer.refused, None);
    assert_eq!(answer.warnings.len(), 1, "{answer:?}");
    assert!(
        answer.warnings[0].starts_with("field `matcho`: allows every request"),
        "{answer:?}"
    );
}

#[test]
fn before_the_cluster_is_read_an_object_is_checked_alone() {
    let answer = review(
        &candidate(
            Kind::TokenIntrospector,
            "t",
            json!({"type": "jwt", "jwt": {"iss": "https://a", "secret": "s"},
                   "identity_provider": {"reference": "IdentityProvider/kc"}}),
        ),
        None,
    );
    assert_eq!(answer.refused, None);
    assert_eq!(answer.warnings.len(), 1, "{answer:?}");
    assert!(answer.warnings[0].contains("not read the cluster yet"));
    let answer = review(
        &candidate(Kind::TokenIntrospector, "t", json!({"type": "jwt"})),
        None,
    );
    assert!(refused(&answer).message.contains("field `jwt.iss`"));
}

#[test]
fn an_update_that_leaves_a_refused_spec_as_it_was_is_allowed_with_a_warning() {
    let serving = cluster();
    let conflicting = jwt("https://a");
    let relabelled = Candidate {
        old_spec: Some(conflicting.clone()),
        ..candidate(Kind::TokenIntrospector, "old-impostor", conflicting.clone())
    };
    let answer = review(&relabelled, Some(&serving));
    assert_eq!(answer.refused, None);
    assert!(
        answer.warnings[0]
            .starts_with("TokenIntrospector/team-a/old-impostor does not serve: field `jwt.iss`"),
        "{answer:?}"
    );
    // A change of the spec is reviewed in full.
    let changed = Candidate {
        old_spec: Some(jwt("https://c")),
        ..relabelled
    };
    assert_eq!(
        refused(&review(&changed, Some(&serving))).reason,
        "Conflict"
    );
}

#[test]
fn a_policys_dry_run_annotation_is_reviewed_with_its_spec() {
    let serving = cluster();
    let spec = json!({"engine": "allow"});
    let annotated = |value: &str| Some(json!({"portcullis.dev/dry-run": value, "other": "x"}));
    let dry = Candidate {
        annotations: annotated("true"),
        ..candidate(Kind::AccessPolicy, "p", spec.clone())
    };
    assert_eq!(review(&dry, Some(&serving)).refused, None);
    let bad = Candidate {
        annotations: annotated("yes"),
        ..dry.clone()
    };
    let ready = refused(&review(&bad, Some(&serving))).clone();
    assert_eq!(ready.reason, "Invalid");
    assert!(
        ready
            .message
            .starts_with(r#"field `metadata.annotations["portcullis.dev/dry-run"]`: "yes""#),
        "{ready:?}"
    );
    // The spec as it was, the annotation made bad: a change, refused.
    let edited = Candidate {
        old_spec: Some(spec.clone()),
        old_annotations: annotated("true"),
        ..bad.clone()
    };
    assert_eq!(refused(&review(&edited, Some(&serving))).reason, "Invalid");
    // Bad before and after, another annotation changed: allowed with a warning.
    let relabelled = Candidate {
        old_spec: Some(spec),
        old_annotations: annotated("yes"),
        annotations: Some(json!({"portcullis.dev/dry-run": "yes", "other": "y"})),
        ..bad
    };
    let answer = review(&relabelled, Some(&serving));
    assert_eq!(answer.refused, None);
    assert!(answer.warnings[0].contains("does not serve"), "{answer:?}");
}

#[test]
fn a_missing_spec_is_refused() {
    let answer = review(
        &Candidate {
            spec: None,
            ..candidate(Kind::User, "u", json!({}))
        },
        Some(&cluster()),
    );
    assert_eq!(refused(&answer).message, "field `spec`: missing");
}

/// The admission webhook judges conflicts where they collide: a team may not take the
/// root's issuer or system, and may share another team's.
#[test]
fn a_team_may_not_take_the_roots_issuer_but_may_share_another_teams() {
    let mut index = ClusterIndex::with_root(Some("platform"));
    for (i, (namespace, name, iss)) in [
        ("platform", "corp", "https://corp"),
        ("team-b", "auth", "https://shared"),
    ]
    .into_iter()
    .enumerate()
    {
        index.apply(Object {
            key: ObjectKey {
                kind: Kind::TokenIntrospector,
                namespace: namespace.into(),
                name: name.into(),
            },
            generation: 1,
            uid: 0,
            created: i as i64,
            spec: parse_spec("TokenIntrospector", jwt(iss)),
            status: None,
        });
    }
    let (compiler, verdicts) = index.compile(&Kind::ALL);
    assert!(verdicts.iter().all(|v| v.ready.status), "{verdicts:#?}");
    let serving = Arc::new(compiler.into_snapshot());
    let squat = review(
        &candidate(Kind::TokenIntrospector, "squat", jwt("https://corp")),
        Some(&serving),
    );
    let ready = refused(&squat);
    assert_eq!(ready.reason, "Conflict");
    assert!(ready.message.contains("platform/corp"), "{ready:?}");
    let shared = review(
        &candidate(Kind::TokenIntrospector, "auth", jwt("https://shared")),
        Some(&serving),
    );
    assert_eq!(shared, Answer::default());
    // The root may take what a team holds: the team's object is the one refused.
    let root = Candidate {
        namespace: "platform".into(),
        ..candidate(Kind::TokenIntrospector, "shared", jwt("https://shared"))
    };
    assert_eq!(review(&root, Some(&serving)), Answer::default());
}

/// With `--users on-demand` the serving snapshot holds no User: a link to one is no
/// warning, and a User whose `portcullis.dev/identifier` label is missing or wrong is
/// warned of (it would be found by name only), as `validate` and its status say.
#[test]
fn on_demand_users_are_not_held_and_their_label_is_checked() {
    let mut on_demand = Snapshot::clone(&cluster());
    on_demand.users = Default::default();
    on_demand.users_on_demand = true;
    let on_demand = Arc::new(on_demand);
    let linked = candidate(
        Kind::AccessPolicy,
        "p",
        json!({"engine": "allow", "link": [{"reference": "User/somebody"}]}),
    );
    assert_eq!(review(&linked, Some(&on_demand)), Answer::default());
    assert!(review(&linked, Some(&cluster())).warnings[0].contains("does not exist (yet)"));

    let spec = json!({"identifier": [{"system": "https://kc", "value": "sub-2"}]});
    let unlabelled = candidate(Kind::User, "bob", spec.clone());
    let answer = review(&unlabelled, Some(&on_demand));
    assert_eq!(answer.refused, None);
    assert!(
        answer.warnings[0]
            .starts_with("field `metadata.labels`: no label `portcullis.dev/identifier: ")
            && answer.warnings[0].contains("found by name only"),
        "{answer:?}"
    );
    // In watch mode the label does not matter.
    assert_eq!(review(&unlabelled, Some(&cluster())), Answer::default());
    let labelled = Candidate {
        labels: [(
            IDENTIFIER_LABEL.to_string(),
            crate::users::identifier_label("https://kc", "sub-2"),
        )]
        .into(),
        ..unlabelled
    };
    assert_eq!(review(&labelled, Some(&on_demand)), Answer::default());
}
