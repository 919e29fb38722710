use serde_json::{json, Value};

use super::*;
use crate::resources::{parse_spec, Condition, Kind};
use crate::snapshot::Compiler;

fn object(kind: Kind, name: &str, spec: Value, status: Option<ResourceStatus>) -> Object {
    Object {
        key: ObjectKey {
            kind,
            namespace: "team-a".into(),
            name: name.into(),
        },
        generation: 3,
        uid: 42,
        created: 1_700_000_000,
        spec: parse_spec(kind.name(), spec),
        status,
    }
}

fn ready(message: &str) -> ResourceStatus {
    ResourceStatus {
        observed_generation: Some(3),
        conditions: vec![Condition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: Some("Accepted".into()),
            message: Some(message.into()),
            last_transition_time: Some("2026-01-01T00:00:00Z".into()),
            observed_generation: Some(3),
        }],
    }
}

fn user(data: Value) -> Value {
    json!({"identifier": [{"system": "https://kc", "value": "u-1"},
                          {"system": "https://google", "value": "g-1"}],
           "data": data, "email": "ann@example.com", "inactive": false})
}

#[test]
fn a_user_is_kept_in_its_one_form_and_gives_its_object_back() {
    let statuses = Statuses::default();
    let read = object(
        Kind::User,
        "ann",
        user(json!({"name": "Ann", "roles": ["nurse"], "n": 1.5e300, "z": null})),
        Some(ready("serving")),
    );
    let held = HeldObject::new(read.clone(), &statuses);
    let Ok(HeldSpec::User(kept)) = &held.held.spec else {
        panic!("{:?}", held.held.spec);
    };
    assert_eq!(kept.name(), "team-a/ann", "named as the snapshot names it");
    assert_eq!(held.to_object(), read);
    // The few other kinds but AccessPolicy keep their spec as parsed.
    let provider = object(
        Kind::IdentityProvider,
        "kc",
        json!({"system": "https://kc"}),
        None,
    );
    let held = HeldObject::new(provider.clone(), &statuses);
    assert!(matches!(held.held.spec, Ok(HeldSpec::Config(_))));
    assert_eq!(held.to_object(), provider);
}

fn policy(spec: Value, dry_run: bool) -> Object {
    let mut o = object(Kind::AccessPolicy, "p", spec, None);
    if let Ok(Spec::AccessPolicy(p)) = &mut o.spec {
        p.dry_run = dry_run;
    }
    o
}

/// Every field of a policy, each engine, values JSON holds in more than one way.
fn policies() -> Vec<Object> {
    let specs = [
        json!({"engine": "allow"}),
        json!({"engine": "matcho", "matcho": {"uri": "#^/a/", "request-method": "get",
               "jwt": {"scope": ["$one-of", "read", "write"], "n": 1.5e300, "z": null,
                       "big": 18446744073709551615u64, "neg": -1, "f": 0.1}}}),
        json!({"engine": "json-schema", "description": "ünïcödé \"quoted\" \n line",
               "schema": {"required": ["jwt"], "properties": {"jwt": {"const": "x"}}}}),
        json!({"engine": "complex", "or": [{"engine": "matcho", "matcho": {"uri": "/a"}},
               {"engine": "allow"}], "and": [{"engine": "allow"}],
               "link": [{"reference": "User/ann"},
                        {"resourceType": "Client", "id": "c", "issuer": "https://i"}]}),
    ];
    let mut objects = Vec::new();
    for spec in specs {
        for dry_run in [false, true] {
            objects.push(policy(spec.clone(), dry_run));
        }
    }
    objects
}

#[test]
fn a_policy_is_kept_as_text_and_gives_its_spec_back_as_read() {
    let statuses = Statuses::default();
    for read in policies() {
        assert!(read.spec.is_ok(), "{:?}", read.spec);
        let held = HeldObject::new(read.clone(), &statuses);
        assert!(
            matches!(held.held.spec, Ok(HeldSpec::Policy(_))),
            "{:?}",
            held.held.spec
        );
        assert_eq!(held.to_object(), read);
    }
}

#[test]
fn two_versions_of_a_policy_are_equal_exactly_when_their_specs_are() {
    let statuses = Statuses::default();
    let objects = policies();
    for a in &objects {
        for b in &objects {
            let (ha, hb) = (
                HeldObject::new(a.clone(), &statuses).held.spec,
                HeldObject::new(b.clone(), &statuses).held.spec,
            );
            assert_eq!(ha == hb, a.spec == b.spec, "{:?} / {:?}", a.spec, b.spec);
        }
    }
}

/// The policy parsed again from its text compiles as the spec it was read as: the same
/// verdicts, and an invalid one refused with the same message.
#[test]
fn a_policy_kept_is_admitted_as_its_spec_would_be() {
    let mut objects = policies();
    objects.push(policy(
        json!({"engine": "matcho", "matcho": {"uri": "#("}}),
        false,
    ));
    objects.push(policy(json!({"engine": "complex"}), false));
    let statuses = Statuses::default();
    for o in &objects {
        let by_spec = super::super::judge::check(o, |_| unreachable!(), &mut Compiler::default());
        let held = HeldObject::new(o.clone(), &statuses);
        let by_kept = held.held.check(
            (&held.key.namespace, &held.key.name),
            |_| unreachable!(),
            &mut Compiler::default(),
        );
        assert_eq!(by_spec.map(Some), by_kept, "{:?}", o.spec);
    }
}

#[test]
fn a_spec_that_does_not_parse_is_kept_as_its_error() {
    let read = object(Kind::User, "bad", json!({"identifier": "not a list"}), None);
    let e = read.spec.clone().unwrap_err();
    let held = HeldObject::new(read.clone(), &Statuses::default());
    assert_eq!(held.held.spec, Err(Box::new(e)));
    assert_eq!(held.to_object(), read);
}

#[test]
fn two_versions_of_a_user_are_equal_exactly_when_their_specs_are() {
    let statuses = Statuses::default();
    let held = |data: Value| {
        let o = object(Kind::User, "ann", user(data), None);
        HeldObject::new(o, &statuses).held.spec
    };
    assert_eq!(held(json!({"a": 1})), held(json!({"a": 1})));
    for other in [
        json!({"a": 2}),
        json!({"a": "1"}),
        json!({"a": 1, "b": null}),
        json!(null),
    ] {
        assert_ne!(held(json!({"a": 1})), held(other.clone()), "{other}");
    }
    // A piece may not run into the next: the same text cut elsewhere differs.
    let ids = |system: &str, value: &str| {
        let spec = json!({"identifier": [{"system": system, "value": value}]});
        HeldObject::new(object(Kind::User, "ann", spec, None), &statuses)
            .held
            .spec
    };
    assert_ne!(ids("ab", "c"), ids("a", "bc"));
    let inactive = |inactive: Value| {
        let spec = json!({"inactive": inactive});
        HeldObject::new(object(Kind::User, "ann", spec, None), &statuses)
            .held
            .spec
    };
    assert_ne!(inactive(json!(false)), inactive(json!(null)));
}

#[test]
fn a_user_kept_is_admitted_as_its_spec_would_be() {
    // The same verdicts, one compiler fed the specs, the other the Users as kept.
    let objects: Vec<Object> = [
        (
            "old",
            1,
            json!({"identifier": [{"system": "s", "value": "1"}]}),
        ),
        (
            "clash",
            2,
            json!({"identifier": [{"system": "s", "value": "1"}]}),
        ),
        (
            "big",
            3,
            json!({"data": "x".repeat(crate::users::MAX_USER_BYTES)}),
        ),
        (
            "fine",
            4,
            json!({"identifier": [{"system": "s", "value": "2"}]}),
        ),
    ]
    .into_iter()
    .map(|(name, created, spec)| Object {
        created,
        ..object(Kind::User, name, spec, None)
    })
    .collect();
    let statuses = Statuses::default();
    let (mut from_specs, mut from_kept) = (Compiler::default(), Compiler::default());
    for o in &objects {
        let by_spec = super::super::judge::check(o, |_| unreachable!(), &mut from_specs);
        let held = HeldObject::new(o.clone(), &statuses);
        let by_kept = held.held.check(
            (&held.key.namespace, &held.key.name),
            |_| unreachable!(),
            &mut from_kept,
        );
        assert_eq!(by_spec.map(|_| ()), by_kept.map(|_| ()), "{}", o.key);
    }
    let (a, b) = (from_specs.into_users(), from_kept.into_users());
    let names = |users: &crate::users::UserIndex| {
        let mut names: Vec<String> = users.users().map(|u| u.name().to_string()).collect();
        names.sort();
        names
    };
    assert_eq!(names(&a), ["team-a/fine", "team-a/old"]);
    assert_eq!(names(&a), names(&b));
    // Admitted twice: the second is refused as defined twice, both ways.
    let again = HeldObject::new(objects[0].clone(), &statuses);
    let mut compiler = Compiler::default();
    again
        .held
        .check(
            (&again.key.namespace, &again.key.name),
            |_| unreachable!(),
            &mut compiler,
        )
        .unwrap();
    let twice = again.held.check(
        (&again.key.namespace, &again.key.name),
        |_| unreachable!(),
        &mut compiler,
    );
    assert_eq!(twice.unwrap_err().reason, "Conflict");
}

#[test]
fn objects_that_carry_the_same_status_share_it() {
    let statuses = Statuses::default();
    let held = |name: &str, message: &str| {
        let o = object(Kind::User, name, json!({}), Some(ready(message)));
        HeldObject::new(o, &statuses).held.status.unwrap()
    };
    let (a, b, c) = (
        held("a", "serving"),
        held("b", "serving"),
        held("c", "other"),
    );
    assert!(Arc::ptr_eq(&a, &b));
    assert!(!Arc::ptr_eq(&a, &c));
    assert_eq!(*c, ready("other"));
    assert_eq!(statuses.len(), 2);
}

#[test]
fn statuses_no_object_holds_are_dropped_as_new_ones_come() {
    let statuses = Statuses::default();
    let kept = statuses.share(ready("kept"));
    for i in 0..10 * SWEEP_FLOOR {
        // Each dropped at once, as when an object's status is written over.
        statuses.share(ready(&format!("gone {i}")));
        assert!(statuses.len() <= 2 * SWEEP_FLOOR + 1, "{}", statuses.len());
    }
    assert!(Arc::ptr_eq(&kept, &statuses.share(ready("kept"))));
}
