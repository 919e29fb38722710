//! Where a candidate policy is evaluated. Its worst case on this request is known before it
//! runs ([`crate::policy::Cost`]: each node of the policy, every `$ref` inlined, times the
//! weight of what the request context holds where it applies). A small worst case runs on
//! the async worker, as nearly every policy's does; a large one on a bounded pool of
//! blocking threads, within the decision deadline, so that it never holds a worker that
//! other requests wait for; past a ceiling it is not evaluated at all.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::Semaphore;

use crate::policy::{EvalContext, Explanation, Policy};

/// Visits that an async worker may spend on one policy: about a millisecond at the slowest
/// engine's pace. A hand-written policy on an ordinary request visits hundreds.
pub const INLINE_VISITS: u64 = 50_000;

/// Visits past which a policy is not evaluated: more than the decision deadline would
/// allow at any engine's pace.
pub const MAX_VISITS: u64 = 50_000_000;

/// Costly evaluations at once, in the whole process. Past them, a costly evaluation waits
/// for a place within the decision deadline; an ordinary request never waits for one.
pub const POOL_THREADS: usize = 2;

static POOL: Semaphore = Semaphore::const_new(POOL_THREADS);

/// Where one candidate runs on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lane {
    /// On the async worker, now.
    Inline,
    /// On the bounded pool of blocking threads.
    Pool,
    /// Not at all: its worst case is past [`MAX_VISITS`].
    Refused,
}

impl Lane {
    /// The lane of `policy` on the request of `eval`, and the most visits its evaluation
    /// may take. The context is weighed (`weigh`) only for a policy with sites, and looked
    /// into only when the policy's bound for a context of that weight is past
    /// [`INLINE_VISITS`]: the usual policy costs one comparison.
    pub(super) fn of(
        policy: &Policy,
        eval: &EvalContext,
        weigh: impl FnOnce() -> u64,
    ) -> (Lane, u64) {
        let cost = policy.cost();
        if cost.is_fixed() {
            return (Lane::by_visits(cost.nodes()), cost.nodes());
        }
        let weight = weigh();
        let bound = cost.bound(weight);
        let visits = if bound <= INLINE_VISITS {
            bound
        } else {
            cost.visits(eval, weight)
        };
        (Lane::by_visits(visits), visits)
    }

    fn by_visits(visits: u64) -> Lane {
        if visits <= INLINE_VISITS {
            Lane::Inline
        } else if visits <= MAX_VISITS {
            Lane::Pool
        } else {
            Lane::Refused
        }
    }

    /// The label of `portcullis_policy_costly_evaluations_total`.
    pub(super) fn label(self) -> &'static str {
        match self {
            Lane::Inline => "inline",
            Lane::Pool => "pool",
            Lane::Refused => "refused",
        }
    }
}

/// What one evaluation found: the engine's word, and when explaining, why.
pub(super) struct Judged {
    pub allowed: bool,
    pub explanation: Option<Explanation>,
}

impl Judged {
    pub(super) fn now(policy: &Policy, eval: &EvalContext, explain: bool) -> Judged {
        if explain {
            let explanation = policy.explain(eval);
            Judged {
                allowed: explanation.allowed,
                explanation: Some(explanation),
            }
        } else {
            Judged {
                allowed: policy.evaluate(eval),
                explanation: None,
            }
        }
    }
}

/// Evaluates `policy` against `context` (the whole request context, owned) on the pool.
/// `None` when the evaluation panicked: the caller fails closed. The wait for a place is
/// bounded by the deadline around the whole decision; a place is held until the evaluation
/// ends, even past that deadline, so that abandoned evaluations cannot pile up.
pub(super) async fn on_pool(policy: Arc<Policy>, context: Value, explain: bool) -> Option<Judged> {
    let place = POOL.acquire().await.ok()?;
    tokio::task::spawn_blocking(move || {
        // The place travels with the evaluation: freed when the thread is done with it.
        let _place = place;
        let eval = EvalContext::new(&context);
        Judged::now(&policy, &eval, explain)
    })
    .await
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::tests::{authorizer, request, token};
    use crate::decision::Outcome;
    use serde_json::json;

    fn policy(body: Value) -> Policy {
        crate::policy::compile(&body).unwrap()
    }

    #[test]
    fn the_lane_follows_the_worst_case_on_the_request() {
        assert_eq!(Lane::by_visits(INLINE_VISITS), Lane::Inline);
        assert_eq!(Lane::by_visits(INLINE_VISITS + 1), Lane::Pool);
        assert_eq!(Lane::by_visits(MAX_VISITS + 1), Lane::Refused);
        // Every scope is a regex scanning the scope: a site at `jwt.scope`.
        let scopes = policy(json!({"engine": "matcho", "matcho": {"jwt": {"scope": "#read"}}}));
        let short = json!({"jwt": {"scope": "read"}});
        let (lane, visits) = Lane::of(&scopes, &EvalContext::new(&short), || u64::MAX);
        assert_eq!(lane, Lane::Inline, "{visits}");
        let long = json!({"jwt": {"scope": "x".repeat(64 * 1_000_000)}});
        let (lane, _) = Lane::of(&scopes, &EvalContext::new(&long), || u64::MAX);
        assert_eq!(lane, Lane::Pool);
        // A plain value meets one value, however heavy the request.
        let uri = policy(json!({"engine": "matcho", "matcho": {"uri": "/a"}}));
        let (lane, visits) = Lane::of(&uri, &EvalContext::new(&long), || {
            unreachable!("a policy without sites is not weighed")
        });
        assert_eq!((lane, visits), (Lane::Inline, 2));
    }

    #[tokio::test]
    async fn the_pool_answers_as_the_worker_would() {
        let p = Arc::new(policy(json!({
            "engine": "json-schema",
            "schema": {"properties": {"uri": {"const": "/a"}}}
        })));
        let context = json!({"uri": "/a"});
        let judged = on_pool(p.clone(), context.clone(), true).await.unwrap();
        let eval = EvalContext::new(&context);
        assert_eq!(judged.allowed, p.evaluate(&eval));
        assert!(judged.allowed);
        assert!(judged.explanation.unwrap().allowed);
        let refused = on_pool(p, json!({"uri": "/b"}), false).await.unwrap();
        assert!(!refused.allowed);
    }

    /// Every group one of 200 names: about 200 schema nodes, each meeting every group.
    const CONFIG: &str = "
resourceType: TokenIntrospector
id: auth
type: jwt
jwt: {iss: https://auth.example.com, secret: very-secret}
---
resourceType: AccessPolicy
id: known-groups
engine: json-schema
schema: {required: [jwt], properties: {jwt: {required: [groups], properties: {groups: {items: {anyOf: ANY}}}}}}
---
resourceType: AccessPolicy
id: light
engine: matcho
matcho: {uri: /light}
";

    fn config() -> String {
        let any: Vec<Value> = (0..200)
            .map(|i| json!({"const": format!("g{i}")}))
            .collect();
        CONFIG.replace("ANY", &Value::Array(any).to_string())
    }

    fn groups(n: usize, stray: bool) -> Value {
        let mut groups: Vec<Value> = (0..n).map(|i| json!(format!("g{}", i % 200))).collect();
        if stray {
            groups.push(json!("stray"));
        }
        json!(groups)
    }

    fn costly(a: &crate::decision::Authorizer, lane: &str) -> String {
        let text = a.metrics.encode();
        text.lines()
            .find(|l| {
                l.starts_with("portcullis_policy_costly_evaluations_total")
                    && l.contains(&format!("lane=\"{lane}\""))
            })
            .map(str::to_owned)
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn a_costly_policy_is_judged_on_the_pool_with_the_same_answer() {
        let a = authorizer(&config());
        // 300 groups: 200 nodes x 300-odd values is past what a worker may spend.
        let member = token(json!({"groups": groups(300, false)}));
        let d = a.check(&request("GET", "/x", Some(&member))).await;
        assert_eq!(
            (d.outcome, d.policy.as_deref()),
            (Outcome::Allow, Some("known-groups"))
        );
        assert!(costly(&a, "pool").ends_with(" 1"), "{}", a.metrics.encode());
        let stray = token(json!({"groups": groups(300, true)}));
        let d = a.check(&request("GET", "/x", Some(&stray))).await;
        assert_eq!(
            (d.outcome, d.reason),
            (Outcome::Forbidden, "no_policy_allows")
        );
        // A small token meets the same policy on the worker, with the same answer.
        let few = token(json!({"groups": groups(3, false)}));
        let d = a.check(&request("GET", "/x", Some(&few))).await;
        assert_eq!(d.policy.as_deref(), Some("known-groups"));
        assert!(costly(&a, "pool").ends_with(" 2"), "{}", a.metrics.encode());
        // Explaining judges it on the pool too, and says why.
        let (d, trace) = a.explain(&request("GET", "/x", Some(&stray))).await;
        assert_eq!(d.reason, "no_policy_allows");
        let step = &trace.policies[0];
        assert_eq!(step.policy, "known-groups");
        assert!(!step.explanation.errors.is_empty(), "{trace:?}");
    }

    #[tokio::test]
    async fn a_policy_past_the_ceiling_is_not_evaluated_and_leaves_the_request_undecided() {
        let a = authorizer(&config());
        // Claims that stand validated, as `portcullis test` gives them: no token size limit.
        let claims = |uri_groups: usize| {
            let mut c = serde_json::Map::new();
            c.insert("iss".into(), json!("https://auth.example.com"));
            c.insert("groups".into(), groups(uri_groups, false));
            c
        };
        let huge = claims(300_000);
        let (d, trace) = a
            .explain_claims(&request("GET", "/x", None), huge.clone())
            .await;
        assert_eq!(
            (d.outcome, d.reason),
            (Outcome::Unavailable, "policy_too_costly")
        );
        let note = trace.policies[0].explanation.errors[0]
            .note
            .clone()
            .unwrap();
        assert!(note.starts_with("not evaluated"), "{note}");
        assert!(
            costly(&a, "refused").ends_with(" 1"),
            "{}",
            a.metrics.encode()
        );
        // Another policy that allows decides: the unjudged one could only have allowed too.
        let (d, _) = a
            .explain_claims(&request("GET", "/light", None), huge)
            .await;
        assert_eq!(
            (d.outcome, d.policy.as_deref()),
            (Outcome::Allow, Some("light"))
        );
    }
}
