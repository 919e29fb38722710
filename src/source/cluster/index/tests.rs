use serde_json::{json, Value};

use super::*;
use crate::resources::{parse_spec, ResourceStatus, Spec};

fn object(kind: Kind, namespace: &str, name: &str, generation: i64, spec: Value) -> Object {
    Object {
        key: ObjectKey {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        },
        generation,
        uid: 0,
        created: generation * 10,
        spec: parse_spec(kind.name(), spec),
        status: None,
    }
}

fn jwt(namespace: &str, name: &str, iss: &str, created: i64) -> Object {
    Object {
        created,
        ..object(
            Kind::TokenIntrospector,
            namespace,
            name,
            1,
            json!({"type": "jwt", "jwt": {"iss": iss, "secret": "s3cret"}}),
        )
    }
}

fn policy(namespace: &str, name: &str, generation: i64, matcho: Value) -> Object {
    object(
        Kind::AccessPolicy,
        namespace,
        name,
        generation,
        json!({"engine": "matcho", "matcho": matcho}),
    )
}

fn verdict<'v>(verdicts: &'v [Verdict], name: &str) -> &'v Verdict {
    verdicts
        .iter()
        .find(|v| v.key.name == name)
        .unwrap_or_else(|| panic!("no verdict for {name}: {verdicts:?}"))
}

fn policy_names(index: &mut ClusterIndex) -> Vec<String> {
    let (compiler, _) = index.compile(&Kind::CONFIG);
    let snapshot = compiler.into_snapshot();
    snapshot
        .root
        .policies
        .iter()
        .map(|p| p.name.clone())
        .collect()
}

#[test]
fn names_are_qualified_by_namespace_and_every_object_gets_a_verdict() {
    let mut index = ClusterIndex::default();
    index.apply(policy("a", "read", 1, json!({"request-method": "get"})));
    index.apply(policy("b", "read", 1, json!({"request-method": "get"})));
    let (compiler, verdicts) = index.compile(&Kind::CONFIG);
    assert_eq!(verdicts.len(), 2);
    assert!(verdicts
        .iter()
        .all(|v| v.ready.status && v.ready.reason == "Accepted"));
    let snapshot = compiler.into_snapshot();
    let names: Vec<_> = snapshot
        .root
        .policies
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(names, ["a/read", "b/read"]);
}

#[test]
fn a_new_invalid_object_stays_out_and_names_its_field() {
    let mut index = ClusterIndex::default();
    index.apply(policy("a", "good", 1, json!({"request-method": "get"})));
    index.apply(object(
        Kind::AccessPolicy,
        "a",
        "bad",
        1,
        json!({"engine": "json-schema", "schema": {"type": 12}}),
    ));
    let (_, verdicts) = index.compile(&Kind::CONFIG);
    let bad = verdict(&verdicts, "bad");
    assert!(!bad.ready.status);
    assert_eq!(bad.ready.reason, "Invalid");
    assert!(
        bad.ready.message.contains("schema"),
        "{}",
        bad.ready.message
    );
    assert!(!bad.previous_serves);
    assert_eq!(policy_names(&mut index), ["a/good"]);
}

#[test]
fn an_unparsable_spec_is_invalid_with_the_path_of_the_field() {
    let mut index = ClusterIndex::default();
    index.apply(object(
        Kind::TokenIntrospector,
        "a",
        "ti",
        1,
        json!({"type": "jwt", "jwt": {"iss": "x", "keys": [{"kty": "RSA", "alg": "RS999"}]}}),
    ));
    let (_, verdicts) = index.compile(&Kind::CONFIG);
    let v = verdict(&verdicts, "ti");
    assert_eq!(v.ready.reason, "Invalid");
    assert!(
        v.ready.message.contains("jwt.keys[0].alg"),
        "{}",
        v.ready.message
    );
}

#[test]
fn an_invalid_edit_keeps_the_previous_version_serving_and_a_deletion_applies() {
    let mut index = ClusterIndex::default();
    index.apply(policy("a", "p", 1, json!({"request-method": "get"})));
    assert_eq!(policy_names(&mut index), ["a/p"]);

    index.apply(object(
        Kind::AccessPolicy,
        "a",
        "p",
        2,
        json!({"engine": "matcho", "matcho": {"uri": "#not-a-regex("}}),
    ));
    let (compiler, verdicts) = index.compile(&Kind::CONFIG);
    let v = verdict(&verdicts, "p");
    assert_eq!((v.ready.reason, v.generation), ("Invalid", 2));
    assert!(v.previous_serves, "the last good version must keep serving");
    assert_eq!(compiler.into_snapshot().root.policies.len(), 1);

    let dirty = index.delete(&v.key.clone());
    assert!(dirty.config && !dirty.users);
    assert!(policy_names(&mut index).is_empty());
}

#[test]
fn the_older_of_two_introspectors_with_one_issuer_serves() {
    let mut index = ClusterIndex::default();
    index.apply(jwt("b", "newer", "https://issuer", 200));
    index.apply(jwt("a", "older", "https://issuer", 100));
    let (compiler, verdicts) = index.compile(&Kind::CONFIG);
    assert!(verdict(&verdicts, "older").ready.status);
    let newer = verdict(&verdicts, "newer");
    assert_eq!(newer.ready.reason, "Conflict");
    assert!(
        newer.ready.message.contains("a/older"),
        "{}",
        newer.ready.message
    );
    assert_eq!(compiler.into_snapshot().root.trust.len(), 1);

    // The winner goes: the other serves at the next build.
    index.delete(&verdict(&verdicts, "older").key.clone());
    let (_, verdicts) = index.compile(&Kind::CONFIG);
    assert!(verdict(&verdicts, "newer").ready.status);
}

#[test]
fn identity_providers_with_one_system_conflict_across_namespaces() {
    let mut index = ClusterIndex::default();
    let idp = |ns: &str, created| Object {
        created,
        ..object(
            Kind::IdentityProvider,
            ns,
            "kc",
            1,
            json!({"system": "https://kc", "userinfo_endpoint": "https://kc/userinfo"}),
        )
    };
    index.apply(idp("late", 50));
    index.apply(idp("early", 5));
    let (_, verdicts) = index.compile(&Kind::CONFIG);
    let late = verdicts.iter().find(|v| v.key.namespace == "late").unwrap();
    assert_eq!(late.ready.reason, "Conflict");
    assert!(
        late.ready.message.contains("early/kc"),
        "{}",
        late.ready.message
    );
}

#[test]
fn references_resolve_in_the_referencing_objects_namespace() {
    let mut index = ClusterIndex::default();
    index.apply(object(
        Kind::IdentityProvider,
        "a",
        "kc",
        1,
        json!({"system": "https://kc"}),
    ));
    let ti = |ns: &str, iss: &str| {
        object(
            Kind::TokenIntrospector,
            ns,
            "ti",
            1,
            json!({"type": "jwt", "jwt": {"iss": iss, "secret": "s"},
                   "identity_provider": {"reference": "IdentityProvider/kc"}}),
        )
    };
    index.apply(ti("a", "https://one"));
    index.apply(ti("b", "https://two"));
    let (compiler, verdicts) = index.compile(&Kind::CONFIG);
    let in_a = verdicts
        .iter()
        .find(|v| v.key.namespace == "a" && v.key.kind == Kind::TokenIntrospector)
        .unwrap();
    let in_b = verdicts.iter().find(|v| v.key.namespace == "b").unwrap();
    assert!(in_a.ready.status, "{in_a:?}");
    assert_eq!(in_b.ready.reason, "Invalid");
    assert!(
        in_b.ready
            .message
            .contains("IdentityProvider/b/kc is not defined"),
        "{}",
        in_b.ready.message
    );
    let snapshot = compiler.into_snapshot();
    let introspector = snapshot.root.trust.for_issuer("https://one").unwrap();
    assert_eq!(introspector.identity_provider.as_deref(), Some("a/kc"));
}

#[test]
fn secret_references_follow_the_secret() {
    let mut index = ClusterIndex::default();
    index.apply(object(
        Kind::TokenIntrospector,
        "a",
        "ti",
        1,
        json!({"type": "jwt", "jwt": {"iss": "https://i", "secretRef": {"name": "hs", "key": "secret"}}}),
    ));
    assert_eq!(
        index.secret_refs().into_iter().collect::<Vec<_>>(),
        [("a".to_string(), "hs".to_string())]
    );
    let (_, verdicts) = index.compile(&Kind::CONFIG);
    let v = verdict(&verdicts, "ti");
    assert_eq!(v.ready.reason, "SecretNotFound");
    assert!(v.ready.message.contains("jwt.secretRef") && v.ready.message.contains("a/hs"));

    let data = |value: &str| Some([("secret".to_string(), value.as_bytes().to_vec())].into());
    assert!(index.set_secret("a", "hs", data("first")).config);
    let (compiler, verdicts) = index.compile(&Kind::CONFIG);
    assert!(verdict(&verdicts, "ti").ready.status);
    let key = |c: Compiler| {
        c.into_snapshot()
            .root
            .trust
            .for_issuer("https://i")
            .unwrap()
            .fingerprint
    };
    let first = key(compiler);

    assert!(
        !index.set_secret("a", "hs", data("first")).any(),
        "no change, no rebuild"
    );
    index.set_secret("a", "hs", data("second"));
    let (compiler, _) = index.compile(&Kind::CONFIG);
    assert_ne!(key(compiler), first, "a new key serves");
}

#[test]
fn a_field_given_inline_and_by_reference_is_invalid() {
    let mut index = ClusterIndex::default();
    index.apply(object(
        Kind::TokenIntrospector,
        "a",
        "ti",
        1,
        json!({"type": "jwt", "jwt": {"iss": "https://i", "secret": "x",
               "secretRef": {"name": "hs", "key": "secret"}}}),
    ));
    index.set_secret(
        "a",
        "hs",
        Some([("secret".to_string(), b"y".to_vec())].into()),
    );
    let (_, verdicts) = index.compile(&Kind::CONFIG);
    let v = verdict(&verdicts, "ti");
    assert_eq!(v.ready.reason, "Invalid");
    assert!(
        v.ready.message.contains("jwt.secretRef"),
        "{}",
        v.ready.message
    );
}

#[test]
fn a_relist_applies_deletions_missed_while_the_watch_was_down() {
    let mut index = ClusterIndex::default();
    index.relist(
        Kind::AccessPolicy,
        None,
        vec![
            policy("a", "kept", 1, json!({"request-method": "get"})),
            policy("a", "gone", 1, json!({"request-method": "get"})),
        ],
    );
    index.apply(policy(
        "b",
        "elsewhere",
        1,
        json!({"request-method": "get"}),
    ));
    // A relist of namespace `a` alone leaves `b` as it is.
    let dirty = index.relist(
        Kind::AccessPolicy,
        Some("a"),
        vec![policy("a", "kept", 1, json!({"request-method": "get"}))],
    );
    assert!(dirty.config);
    assert_eq!(policy_names(&mut index), ["a/kept", "b/elsewhere"]);

    // The status writer is told of each removal once, a deletion's like a relist's.
    index.delete(&policy("b", "elsewhere", 1, json!({})).key);
    index.delete(&policy("b", "never-there", 1, json!({})).key);
    let removed: Vec<String> = index
        .take_removed()
        .iter()
        .map(|k| format!("{}/{}", k.namespace, k.name))
        .collect();
    assert_eq!(removed, ["a/gone", "b/elsewhere"]);
    assert!(index.take_removed().is_empty());
}

#[test]
fn users_compile_apart_from_the_rest() {
    let mut index = ClusterIndex::default();
    let user = |name: &str, value: &str, created| Object {
        created,
        ..object(
            Kind::User,
            "a",
            name,
            1,
            json!({"identifier": [{"system": "https://kc", "value": value}]}),
        )
    };
    let dirty = index.apply(user("alice", "1", 1));
    assert_eq!(
        dirty,
        Dirty {
            users: true,
            ..Dirty::default()
        }
    );
    index.apply(user("impostor", "1", 2));
    let (compiler, verdicts) = index.compile(&[Kind::User]);
    assert_eq!(verdicts.len(), 2);
    assert_eq!(verdict(&verdicts, "impostor").ready.reason, "Conflict");
    let users = compiler.into_users();
    assert_eq!(users.len(), 1);
    let alice = users.by_identifier(Some("a"), "https://kc", "1").unwrap();
    assert_eq!((alice.name(), alice.object_name()), ("a/alice", "alice"));
}

#[test]
fn a_status_change_alone_rebuilds_nothing() {
    let mut index = ClusterIndex::default();
    let p = policy("a", "p", 1, json!({"request-method": "get"}));
    index.apply(p.clone());
    let with_status = Object {
        status: Some(ResourceStatus {
            observed_generation: Some(1),
            conditions: vec![],
        }),
        ..p
    };
    assert!(!index.apply(with_status).any());
}

/// An annotation change leaves `metadata.generation` as it was: the dry-run flag read from
/// it is part of the spec compared, so flipping it rebuilds, and the next snapshot has it.
#[test]
fn flipping_a_policys_dry_run_annotation_rebuilds() {
    let mut index = ClusterIndex::default();
    let p = policy("a", "p", 1, json!({"request-method": "get"}));
    index.apply(p.clone());
    let dry_run_of = |index: &mut ClusterIndex| {
        let (compiler, _) = index.compile(&Kind::CONFIG);
        let snapshot = compiler.into_snapshot();
        let dry_run = snapshot
            .root
            .policies
            .iter()
            .map(|p| p.dry_run)
            .collect::<Vec<_>>();
        dry_run
    };
    assert_eq!(dry_run_of(&mut index), [false]);
    let mut dry = p.clone();
    if let Ok(Spec::AccessPolicy(spec)) = &mut dry.spec {
        spec.dry_run = true;
    }
    assert!(
        index.apply(dry.clone()).config,
        "same generation, yet a change"
    );
    assert_eq!(dry_run_of(&mut index), [true]);
    assert!(!index.apply(dry).any(), "the same again: no change");
    assert!(index.apply(p).config);
    assert_eq!(dry_run_of(&mut index), [false]);
}

#[test]
fn user_changes_apply_in_place_until_a_clash_needs_a_full_compile() {
    let mut index = ClusterIndex::default();
    let user = |name: &str, value: &str, created| Object {
        created,
        ..object(
            Kind::User,
            "a",
            name,
            created,
            json!({"identifier": [{"system": "https://kc", "value": value}]}),
        )
    };
    index.apply(user("alice", "1", 1));
    let (compiler, _) = index.compile(&[Kind::User]);
    let mut users = compiler.into_users();

    // Added, edited, deleted: each in place.
    let bob = user("bob", "2", 2);
    index.apply(bob.clone());
    let changed: BTreeSet<ObjectKey> = [bob.key.clone()].into();
    let verdicts = index.update_users(&mut users, &changed).unwrap();
    assert!(verdicts[0].ready.status);
    assert_eq!(
        users
            .by_identifier(Some("a"), "https://kc", "2")
            .unwrap()
            .name(),
        "a/bob"
    );

    index.apply(user("bob", "3", 3));
    index.update_users(&mut users, &changed).unwrap();
    assert!(users.by_identifier(Some("a"), "https://kc", "2").is_none());
    assert_eq!(
        users
            .by_identifier(Some("a"), "https://kc", "3")
            .unwrap()
            .name(),
        "a/bob"
    );

    // An invalid edit keeps the previous version.
    index.apply(object(
        Kind::User,
        "a",
        "bob",
        4,
        json!({"identifier": "not a list"}),
    ));
    let verdicts = index.update_users(&mut users, &changed).unwrap();
    assert_eq!(verdicts[0].ready.reason, "Invalid");
    assert!(verdicts[0].previous_serves);
    assert!(users.by_name("a/bob").is_some());

    index.delete(&bob.key);
    assert!(index.update_users(&mut users, &changed).unwrap().is_empty());
    assert!(users.by_name("a/bob").is_none());
    assert_eq!(users.len(), 1);

    // A clash is settled by age in a full compile.
    let eve = user("eve", "1", 5);
    index.apply(eve.clone());
    let changed: BTreeSet<ObjectKey> = [eve.key.clone()].into();
    assert!(index.update_users(&mut users, &changed).is_none());
    let (_, verdicts) = index.compile(&[Kind::User]);
    assert_eq!(verdict(&verdicts, "eve").ready.reason, "Conflict");
    // While a User is refused for a clash, every change compiles them all.
    assert!(index.update_users(&mut users, &changed).is_none());
}

#[test]
fn an_index_two_changes_behind_catches_up_to_the_last_good_version() {
    let mut index = ClusterIndex::default();
    let bob = |generation, value: &str| {
        object(
            Kind::User,
            "a",
            "bob",
            generation,
            json!({"identifier": [{"system": "https://kc", "value": value}]}),
        )
    };
    index.apply(bob(1, "1"));
    let (compiler, _) = index.compile(&[Kind::User]);
    let mut spare = compiler.into_users();
    let mut current = spare.clone();
    let changed: BTreeSet<ObjectKey> = [bob(1, "1").key].into();

    // A good edit reaches the served index; the spare misses it.
    index.apply(bob(2, "2"));
    index.update_users(&mut current, &changed).unwrap();
    // Then a bad edit: the spare, catching up, must hold the good edit, not its own.
    index.apply(object(Kind::User, "a", "bob", 3, json!({"identifier": 7})));
    let verdicts = index.update_users(&mut spare, &changed).unwrap();
    assert_eq!(verdicts[0].ready.reason, "Invalid");
    assert!(verdicts[0].previous_serves);
    assert_eq!(
        spare.by_name("a/bob").unwrap().identifiers().next(),
        Some(("https://kc", "2"))
    );
    assert!(spare.by_identifier(Some("a"), "https://kc", "1").is_none());
}

fn secret_ref_introspector(namespace: &str, name: &str, secret: &str) -> Object {
    object(
        Kind::TokenIntrospector,
        namespace,
        name,
        1,
        json!({"type": "jwt", "jwt": {"iss": format!("https://{namespace}-{name}"),
               "secretRef": {"name": secret, "key": "secret"}}}),
    )
}

fn secret_data(value: &str) -> SecretData {
    [("secret".to_string(), value.as_bytes().to_vec())].into()
}

fn labelled(namespace: &str, name: &str, value: &str) -> (String, String, SecretData) {
    (namespace.into(), name.into(), secret_data(value))
}

#[test]
fn a_secret_not_among_the_labelled_reads_as_not_found_and_is_named_for_the_log() {
    let mut index = ClusterIndex::default();
    index.apply(secret_ref_introspector("a", "ti", "hs"));
    index.relist_secrets(Some("a"), vec![labelled("a", "other", "x")]);
    let (_, verdicts) = index.compile(&Kind::CONFIG);
    let missing = verdict(&verdicts, "ti").ready.clone();
    assert_eq!(missing.reason, "SecretNotFound");
    assert!(
        missing.message.contains("Secret a/hs not found"),
        "{missing:?}"
    );
    let ti = ObjectKey {
        kind: Kind::TokenIntrospector,
        namespace: "a".into(),
        name: "ti".into(),
    };
    assert_eq!(
        index
            .unlabelled_secret_refs()
            .into_iter()
            .collect::<Vec<_>>(),
        [(ti.clone(), "hs".to_string())]
    );

    // Labelled: read, and it serves.
    assert!(index.set_secret("a", "hs", Some(secret_data("k"))).config);
    let (_, verdicts) = index.compile(&Kind::CONFIG);
    assert!(verdict(&verdicts, "ti").ready.status);
    assert!(index.unlabelled_secret_refs().is_empty());

    // Unlabelled again (the watch deletes it): the same status as a missing one, and the
    // version read while it was labelled serves on.
    assert!(index.set_secret("a", "hs", None).config);
    let (compiler, verdicts) = index.compile(&Kind::CONFIG);
    let v = verdict(&verdicts, "ti");
    assert_eq!(v.ready, missing, "unlabelled reads as missing");
    assert!(v.previous_serves);
    assert!(compiler
        .into_snapshot()
        .root
        .trust
        .for_issuer("https://a-ti")
        .is_some());
    assert_eq!(index.unlabelled_secret_refs().len(), 1);
}

#[test]
fn only_referenced_secrets_keep_their_data() {
    let mut index = ClusterIndex::default();
    let key = |name: &str| ("a".to_string(), name.to_string());
    // Listed before anything references them: names only, and nothing to rebuild.
    assert!(!index
        .relist_secrets(
            Some("a"),
            vec![labelled("a", "hs", "k"), labelled("a", "spare", "s")]
        )
        .any());
    assert_eq!(index.secrets[&key("hs")], None);
    assert!(
        !index.set_secret("a", "spare", Some(secret_data("t"))).any(),
        "an unreferenced Secret changes nothing"
    );

    // A new reference to a labelled Secret whose data was not kept: its namespace is read
    // again, which fills it in.
    index.apply(secret_ref_introspector("a", "ti", "hs"));
    assert_eq!(
        index.retain_secrets().into_iter().collect::<Vec<_>>(),
        ["a"]
    );
    assert!(
        index
            .relist_secrets(
                Some("a"),
                vec![labelled("a", "hs", "k"), labelled("a", "spare", "s")]
            )
            .config
    );
    assert!(index.retain_secrets().is_empty());
    assert_eq!(index.secrets[&key("hs")], Some(secret_data("k")));
    assert_eq!(index.secrets[&key("spare")], None);
    let (_, verdicts) = index.compile(&Kind::CONFIG);
    assert!(verdict(&verdicts, "ti").ready.status);

    // No longer referenced: the data goes, the name stays.
    index.delete(&ObjectKey {
        kind: Kind::TokenIntrospector,
        namespace: "a".into(),
        name: "ti".into(),
    });
    assert!(index.retain_secrets().is_empty());
    assert_eq!(index.secrets[&key("hs")], None);
}

#[test]
fn a_relist_of_secrets_replaces_its_namespace_only() {
    let mut index = ClusterIndex::default();
    index.apply(secret_ref_introspector("a", "ti", "hs"));
    index.apply(secret_ref_introspector("b", "ti", "hs"));
    index.relist_secrets(Some("a"), vec![labelled("a", "hs", "1")]);
    index.relist_secrets(Some("b"), vec![labelled("b", "hs", "2")]);
    assert!(index.unlabelled_secret_refs().is_empty());
    assert!(
        !index
            .relist_secrets(Some("a"), vec![labelled("a", "hs", "1")])
            .any(),
        "the same list, nothing to rebuild"
    );
    // The Secret of `a` went while the watch was down.
    assert!(index.relist_secrets(Some("a"), vec![]).config);
    let gone: Vec<_> = index
        .unlabelled_secret_refs()
        .into_iter()
        .map(|(key, name)| format!("{}/{name}", key.namespace))
        .collect();
    assert_eq!(gone, ["a/hs"]);
    // One list of every namespace replaces all.
    index.relist_secrets(None, vec![labelled("a", "hs", "3")]);
    let gone: Vec<_> = index
        .unlabelled_secret_refs()
        .into_iter()
        .map(|(key, _)| key.namespace)
        .collect();
    assert_eq!(gone, ["b"]);
}

fn user_object(name: &str, generation: i64, created: i64, spec: Value) -> Object {
    Object {
        created,
        ..object(Kind::User, "a", name, generation, spec)
    }
}

fn id(value: &str) -> Value {
    json!({"identifier": [{"system": "https://kc", "value": value}]})
}

/// Users are kept in their compact form: an edit that does not serve leaves the earlier
/// version serving, whether all Users are compiled again or changed in place.
#[test]
fn a_users_earlier_version_serves_on_when_its_edit_does_not() {
    let mut index = ClusterIndex::default();
    index.apply(user_object("alice", 1, 1, id("1")));
    index.apply(user_object("bob", 1, 2, id("2")));
    let (compiler, verdicts) = index.compile(&[Kind::User]);
    assert!(verdicts.iter().all(|v| v.ready.status));
    let mut users = compiler.into_users();

    // An edit that does not parse, changed in place: bob as he was serves.
    index.apply(user_object("bob", 2, 2, json!({"identifier": "1"})));
    let changed = BTreeSet::from([user_object("bob", 2, 2, json!({})).key]);
    let verdicts = index.update_users(&mut users, &changed).unwrap();
    let bob = verdict(&verdicts, "bob");
    assert_eq!((bob.ready.reason, bob.previous_serves), ("Invalid", true));
    let held = users.by_identifier(Some("a"), "https://kc", "2").unwrap();
    assert_eq!(held.name(), "a/bob");

    // An edit that takes alice's identifier: bob's earlier version again, in a full compile
    // (a clash may shift another User's standing).
    index.apply(user_object("bob", 3, 2, id("1")));
    assert!(index.update_users(&mut users, &changed).is_none());
    let (compiler, verdicts) = index.compile(&[Kind::User]);
    let bob = verdict(&verdicts, "bob");
    assert_eq!((bob.ready.reason, bob.previous_serves), ("Conflict", true));
    let users = compiler.into_users();
    let by = |value| users.by_identifier(Some("a"), "https://kc", value).unwrap();
    assert_eq!((by("1").name(), by("2").name()), ("a/alice", "a/bob"));

    // A relist without alice: bob's edit now serves, found by alice's old identifier.
    index.relist(Kind::User, None, vec![user_object("bob", 3, 2, id("1"))]);
    let (compiler, verdicts) = index.compile(&[Kind::User]);
    assert_eq!(verdicts.len(), 1);
    assert!(verdict(&verdicts, "bob").ready.status);
    let users = compiler.into_users();
    let bob = users.by_identifier(Some("a"), "https://kc", "1").unwrap();
    assert_eq!(bob.name(), "a/bob");
    assert_eq!(
        index.take_removed(),
        [user_object("alice", 1, 1, json!({})).key]
    );
}

fn accepted_status(generation: i64) -> ResourceStatus {
    ResourceStatus {
        observed_generation: Some(generation),
        conditions: vec![crate::resources::Condition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: Some("Accepted".into()),
            message: Some("serving".into()),
            last_transition_time: Some("2026-01-01T00:00:00Z".into()),
            observed_generation: Some(generation),
        }],
    }
}

/// A restart finds most objects saying already that they serve: their verdicts are not
/// sent. Any other verdict is, and so is the next one on the same object; a verdict the
/// writer's full queue dropped is sent again.
#[test]
fn verdicts_that_the_status_already_says_are_not_sent_again() {
    let names = |verdicts: &[Verdict]| -> Vec<String> {
        verdicts.iter().map(|v| v.key.name.clone()).collect()
    };
    let says = |o: Object| Object {
        status: Some(accepted_status(o.generation)),
        ..o
    };
    let mut index = ClusterIndex::default();
    index.apply(says(user_object("said", 1, 1, id("1"))));
    index.apply(user_object("unsaid", 1, 2, id("2")));
    index.apply(says(user_object("refused", 1, 3, id("1"))));
    let (_, verdicts) = index.compile(&[Kind::User]);
    assert_eq!(names(&verdicts), ["unsaid", "refused"]);

    // Objects after the first verdicts are judged once before being passed over.
    index.apply(says(user_object("late", 1, 4, id("4"))));
    let (_, verdicts) = index.compile(&[Kind::User]);
    assert_eq!(names(&verdicts), ["unsaid", "refused", "late"]);
    let (_, verdicts) = index.compile(&[Kind::User]);
    assert_eq!(names(&verdicts), ["unsaid", "refused"]);

    // A new generation is judged again; its status says the old one.
    index.apply(Object {
        status: Some(accepted_status(1)),
        ..user_object("said", 2, 1, id("1"))
    });
    let (_, verdicts) = index.compile(&[Kind::User]);
    assert_eq!(names(&verdicts), ["said", "unsaid", "refused"]);
    assert!(verdict(&verdicts, "said").observed.is_some());

    // Dropped on the way to the writer: sent again, though the status says it.
    index.apply(says(user_object("said", 2, 1, id("1"))));
    let (_, verdicts) = index.compile(&[Kind::User]);
    assert_eq!(names(&verdicts), ["said", "unsaid", "refused"]);
    index.undelivered(&verdicts);
    let (_, verdicts) = index.compile(&[Kind::User]);
    assert_eq!(names(&verdicts), ["said", "unsaid", "refused"]);
    let (_, verdicts) = index.compile(&[Kind::User]);
    assert_eq!(names(&verdicts), ["unsaid", "refused"]);
}

/// Users are kept apart, by their name: a relist, a deletion and an edit that does not
/// parse find them as they find any other object.
#[test]
fn users_are_found_by_name_through_relists_deletions_and_specs_that_do_not_parse() {
    let user =
        |namespace: &str, name: &str, spec: Value| object(Kind::User, namespace, name, 1, spec);
    let mut index = ClusterIndex::default();
    index.relist(
        Kind::User,
        None,
        vec![
            user("a", "kept", id("1")),
            user("a", "gone", id("2")),
            user("b", "other", id("3")),
        ],
    );
    index.apply(policy("a", "gone", 1, json!({"request-method": "get"})));
    let dirty = index.relist(Kind::User, Some("a"), vec![user("a", "kept", id("1"))]);
    assert!(dirty.users && !dirty.config);
    assert_eq!(index.take_removed(), [user("a", "gone", json!({})).key]);
    assert!(
        index.contains(&policy("a", "gone", 1, json!({})).key),
        "another kind"
    );
    assert!(
        index.contains(&user("b", "other", json!({})).key),
        "another namespace"
    );
    assert_eq!(index.len(), 3);

    // A spec that does not parse: the User keeps its name, and is still deleted by it.
    index.apply(user("b", "other", json!({"identifier": 7})));
    let (compiler, verdicts) = index.compile(&[Kind::User]);
    assert_eq!(verdict(&verdicts, "other").ready.reason, "Invalid");
    assert_eq!(verdict(&verdicts, "other").key.namespace, "b");
    assert_eq!(compiler.into_users().len(), 1);
    assert!(index.delete(&user("b", "other", json!({})).key).users);
    assert!(!index.delete(&user("b", "other", json!({})).key).any());
    assert_eq!(index.len(), 2);
}

/// A list comes in parts as it is read: each part applies as events would, and what the
/// list lacked goes at its end, in its namespace only.
#[test]
fn a_list_read_in_parts_deletes_what_it_lacked_at_its_end() {
    let user = |namespace: &str, name: &str, generation| {
        object(Kind::User, namespace, name, generation, id(name))
    };
    let held = |objects: Vec<Object>| -> Vec<HeldObject> {
        let statuses = Statuses::default();
        objects
            .into_iter()
            .map(|o| HeldObject::new(o, &statuses))
            .collect()
    };
    let mut index = ClusterIndex::default();
    index.relist(
        Kind::User,
        None,
        vec![user("a", "x", 1), user("a", "y", 1), user("b", "z", 1)],
    );
    index.begin_list(Kind::User, Some("a"));
    assert!(
        !index.list_part(held(vec![user("a", "x", 1)])).any(),
        "unchanged"
    );
    assert!(index.list_part(held(vec![user("a", "new", 1)])).users);
    assert!(
        index.contains(&user("a", "y", 1).key),
        "gone only once the list ends"
    );
    assert!(index.end_list(Kind::User, Some("a"), held(vec![])).users);
    assert_eq!(index.take_removed(), [user("a", "y", 1).key]);
    assert!(index.contains(&user("b", "z", 1).key));
    assert_eq!(index.len(), 3);
    // A list that lacks nothing changes nothing.
    index.begin_list(Kind::User, None);
    let all = held(vec![
        user("a", "x", 1),
        user("a", "new", 1),
        user("b", "z", 1),
    ]);
    assert!(!index.end_list(Kind::User, None, all).any());
}
