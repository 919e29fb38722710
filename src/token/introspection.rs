//! RFC 7662 introspection of opaque tokens.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::{jwt, Introspector, TokenError, MAX_RESPONSE_BYTES};
use crate::metrics::Metrics;
use crate::outbound::IdpClient;

/// Ask one introspection endpoint about a token. `Ok` only for `active: true` (the JSON
/// boolean, not a string), unexpired, and with an accepted audience when one is required.
pub(crate) async fn introspect(
    http: &IdpClient,
    metrics: &Metrics,
    introspector: &Arc<Introspector>,
    url: &str,
    authorization: Option<&str>,
    token: &str,
) -> Result<Map<String, Value>, TokenError> {
    metrics.token_event("introspection_call");
    let form = [("token", token), ("token_type_hint", "access_token")];
    let answer = http
        .post_form_json(url, &form, authorization, MAX_RESPONSE_BYTES)
        .await
        .map_err(|e| failed(metrics, introspector, &e.to_string()))?;
    if answer.get("active") != Some(&Value::Bool(true)) {
        metrics.token_event("introspection_inactive");
        return Err(TokenError::Inactive);
    }
    if let Some(exp) = answer.get("exp") {
        // An active token past its `exp` is the endpoint's mistake; refuse it anyway.
        match exp.as_u64() {
            Some(exp) if exp > jwt::now() => {}
            Some(_) => return Err(TokenError::Expired),
            None => {
                return Err(TokenError::Malformed(
                    "introspection answer has a non-numeric `exp`".into(),
                ))
            }
        }
    }
    if let Some(allowed) = &introspector.allowed_audiences {
        if !audience_fits(answer.get("aud"), allowed) {
            return Err(TokenError::BadAudience);
        }
    }
    Ok(answer)
}

fn failed(metrics: &Metrics, introspector: &Introspector, e: &str) -> TokenError {
    metrics.token_event("introspection_error");
    tracing::warn!(introspector = %introspector.name, error = %e, "introspection failed");
    TokenError::Unavailable(format!(
        "the introspection endpoint of TokenIntrospector/{} failed: {e}",
        introspector.name
    ))
}

/// `aud` is a string or a list of strings (RFC 7662 section 2.2, RFC 7519 section 4.1.3).
fn audience_fits(aud: Option<&Value>, allowed: &[String]) -> bool {
    let fits = |a: &Value| a.as_str().is_some_and(|a| allowed.iter().any(|x| x == a));
    match aud {
        Some(Value::Array(list)) => list.iter().any(fits),
        Some(a) => fits(a),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn token_introspection_audience_is_a_string_or_a_list() {
        let allowed = vec!["api".to_string()];
        assert!(audience_fits(Some(&json!("api")), &allowed));
        assert!(audience_fits(Some(&json!(["other", "api"])), &allowed));
        assert!(!audience_fits(Some(&json!(["other"])), &allowed));
        assert!(!audience_fits(Some(&json!(7)), &allowed));
        assert!(!audience_fits(None, &allowed));
    }
}
