//! Fuzz body `json_schema`: a `json-schema` AccessPolicy compiled from the input (draft-07,
//! with Aidbox's `constant`), evaluated against a request context.
//!
//! Input: `SCHEMA [0xFF CONTEXT]`, each part JSON text or, when it is not JSON, built from
//! its bytes by `common::Gen`. Without a context part, `common::request_context` is used.
//! Properties: no panic; `explain` agrees with `evaluate`; a schema said to accept
//! everything accepts; no explanation carries a credential of the context.

#[path = "common.rs"]
mod common;

use serde_json::json;

pub fn run(data: &[u8]) {
    let parts = common::split(data, 2);
    let schema = common::json_from(parts[0], 6);
    let names_secret = schema.to_string().contains(common::SECRET_TOKEN);
    let body = json!({"engine": "json-schema", "schema": schema});
    let policy = match portcullis::policy::compile(&body) {
        Ok(policy) => policy,
        Err(errors) => {
            assert!(!errors.is_empty(), "a refused schema with no error");
            for e in &errors {
                let _ = e.to_string();
            }
            return;
        }
    };
    assert_eq!(policy.engine(), "json-schema");
    common::check_policy(&policy, &common::request_context(), names_secret);
    if !parts[1].is_empty() {
        let ctx = common::context_from(parts[1]);
        common::check_policy(&policy, &ctx, true);
    }
}
