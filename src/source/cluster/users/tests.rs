//! Judging and picking the Users read on demand, on objects as the API server sends them.

use serde_json::{json, Value};

use super::*;

fn user(name: &str, created: &str, ids: Value, label: Option<&str>) -> DynamicObject {
    let mut o = json!({
        "apiVersion": "portcullis.dev/v1alpha1", "kind": "User",
        "metadata": {"name": name, "namespace": "team", "uid": format!("uid-{name}"),
                     "generation": 1, "creationTimestamp": created},
        "spec": {"identifier": ids, "data": {"name": name}},
    });
    if let Some(label) = label {
        o["metadata"]["labels"] = json!({ IDENTIFIER_LABEL: label });
    }
    serde_json::from_value(o).unwrap()
}

fn ann() -> Value {
    json!([{"system": "kc", "value": "ann"}])
}

#[test]
fn a_user_serves_and_its_status_says_whether_its_label_finds_it() {
    let labelled = judge(user(
        "a",
        "2026-01-01T00:00:00Z",
        ann(),
        Some(&identifier_label("kc", "ann")),
    ));
    assert_eq!(labelled.user.as_ref().unwrap().name(), "team/a");
    assert_eq!(labelled.ready, Ready::accepted());

    let unlabelled = judge(user("b", "2026-01-01T00:00:00Z", ann(), None));
    assert!(unlabelled.user.is_some());
    assert!(unlabelled.ready.status);
    assert_eq!(unlabelled.ready.reason, "Accepted");
    assert!(
        unlabelled
            .ready
            .message
            .starts_with("serving, found by name only: no label")
            && unlabelled
                .ready
                .message
                .contains(&identifier_label("kc", "ann")),
        "{}",
        unlabelled.ready.message
    );

    let wrong = judge(user("c", "2026-01-01T00:00:00Z", ann(), Some("0123")));
    assert!(
        wrong
            .ready
            .message
            .contains("names none of its identifiers"),
        "{:?}",
        wrong.ready
    );

    // Without identifiers there is nothing to find it by but its name.
    let plain = judge(user("d", "2026-01-01T00:00:00Z", json!([]), None));
    assert_eq!(plain.ready, Ready::accepted());

    let invalid = judge(user("e", "2026-01-01T00:00:00Z", json!("not a list"), None));
    assert!(invalid.user.is_none());
    assert_eq!(invalid.ready.reason, "Invalid");
}

#[test]
fn the_oldest_holder_is_found_and_a_younger_one_is_a_conflict() {
    let label = identifier_label("kc", "ann");
    let judged = vec![
        judge(user("younger", "2026-02-01T00:00:00Z", ann(), Some(&label))),
        judge(user("older", "2026-01-01T00:00:00Z", ann(), Some(&label))),
        // Labelled for ann, holding someone else's identifier: not hers.
        judge(user(
            "mislabelled",
            "2025-01-01T00:00:00Z",
            json!([{"system": "kc", "value": "bob"}]),
            Some(&label),
        )),
    ];
    let (found, verdicts) = pick(judged, "kc", "ann");
    assert_eq!(found.unwrap().name(), "team/older");
    let by_name = |name: &str| verdicts.iter().find(|v| v.key.name == name).unwrap();
    assert_eq!(by_name("older").ready, Ready::accepted());
    let younger = &by_name("younger").ready;
    assert_eq!((younger.status, younger.reason), (false, "Conflict"));
    assert!(younger.message.contains("team/older"), "{younger:?}");
    assert!(by_name("mislabelled")
        .ready
        .message
        .contains("names none of its identifiers"));

    let (none, _) = pick(Vec::new(), "kc", "ann");
    assert!(none.is_none());
}

#[test]
fn selectors_are_joined() {
    assert_eq!(joined(Some("a=1"), Some("b=2")).as_deref(), Some("a=1,b=2"));
    assert_eq!(joined(Some("a=1"), None).as_deref(), Some("a=1"));
    assert_eq!(joined(None, Some("")), None);
}
