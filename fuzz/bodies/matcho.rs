//! Fuzz body `matcho`: a matcho pattern compiled from the input, evaluated against a
//! request context.
//!
//! Input: `PATTERN [0xFF CONTEXT]`. Each part is read as JSON text, or, when it is not JSON,
//! built from its bytes by `common::Gen` (keys, operators, regexes and references the
//! engine knows). Without a context part, the realistic context of
//! `common::request_context` is used. Properties: no panic; `explain` agrees with
//! `evaluate`; a pattern said to match everything matches; no explanation carries a
//! credential of the context.

#[path = "common.rs"]
mod common;

use portcullis::policy::EvalContext;
use serde_json::json;

pub fn run(data: &[u8]) {
    let parts = common::split(data, 2);
    let pattern = common::json_from(parts[0], 6);
    let names_secret = pattern.to_string().contains(common::SECRET_TOKEN);
    let body = json!({"engine": "matcho", "matcho": pattern});
    let policy = match portcullis::policy::compile(&body) {
        Ok(policy) => policy,
        Err(errors) => {
            assert!(!errors.is_empty(), "a refused pattern with no error");
            for e in &errors {
                let _ = e.to_string();
            }
            return;
        }
    };
    assert_eq!(policy.engine(), "matcho");
    // The same body alone under `complex` (`and` and `or` of one) decides the same.
    let and = portcullis::policy::compile(&json!({"engine": "complex", "and": [&body]}))
        .expect("a policy that compiles compiles inside `and`");
    let or = portcullis::policy::compile(&json!({"engine": "complex", "or": [&body]}))
        .expect("a policy that compiles compiles inside `or`");
    let mut contexts = vec![(common::request_context(), names_secret)];
    if !parts[1].is_empty() {
        // The context is the input's own: it may hold anything, credentials included.
        contexts.push((common::context_from(parts[1]), true));
    }
    for (ctx, names_secret) in &contexts {
        common::check_policy(&policy, ctx, *names_secret);
        let eval = EvalContext::new(ctx);
        let allowed = policy.evaluate(&eval);
        assert_eq!(
            and.evaluate(&eval),
            allowed,
            "`and` of one policy differs from it"
        );
        assert_eq!(
            or.evaluate(&eval),
            allowed,
            "`or` of one policy differs from it"
        );
    }
}
