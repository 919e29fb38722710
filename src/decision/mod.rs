//! The decision pipeline: token → user → policies → allow or deny.
//!
//! Plain data in ([`HttpRequest`]), plain data out ([`Decision`]); the gRPC and HTTP edges
//! only translate. The same code path produces an `explain` [`Trace`] on demand.

pub mod context;
mod log;
mod request;
mod trace;
pub(crate) mod user;

use std::borrow::Cow;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;

use serde_json::{json, Map, Value};

pub use log::DecisionLog;
pub use request::{Credential, HttpRequest};
pub use trace::{PolicyStep, TokenStep, Trace, UserStep};

use crate::metrics::Metrics;
use crate::policy::EvalContext;
use crate::snapshot::{Client, Snapshot, SnapshotStore};
use crate::token::{TokenError, TokenKind, TokenVerifier, ValidToken};
use crate::users::{KnownUser, Resolution, UserResolver};

/// The request headers portcullis owns. Client-sent copies never reach the upstream.
pub const HEADER_USER: &str = "x-portcullis-user";
pub const HEADER_SUBJECT: &str = "x-portcullis-subject";
pub const HEADER_ISSUER: &str = "x-portcullis-issuer";
pub const HEADER_POLICY: &str = "x-portcullis-policy";
pub const IDENTITY_HEADERS: [&str; 4] = [HEADER_USER, HEADER_SUBJECT, HEADER_ISSUER, HEADER_POLICY];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allow,
    /// No or bad credentials: 401.
    Unauthenticated,
    /// Good credentials, no policy allows: 403.
    Forbidden,
    /// We could not decide (an identity provider is down, no configuration yet): 503.
    Unavailable,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub outcome: Outcome,
    /// A short stable word for metrics and logs (`allowed`, `no_policy_allows`, `token_expired`, ...).
    pub reason: &'static str,
    /// For the caller: safe to show, never a token, secret or key. Mostly a fixed text:
    /// no allocation on the request path.
    pub message: Cow<'static, str>,
    pub token_given: bool,
    pub policy: Option<String>,
    pub user: Option<String>,
    pub subject: Option<String>,
    pub issuer: Option<String>,
    /// On allow: claims forwarded to the upstream (`claimToHeaders` of the introspector
    /// that accepted the token), as `(header, value)`.
    pub forwarded: Vec<(Arc<str>, String)>,
    /// On allow: every header some TokenIntrospector forwards claims into. Those not in
    /// `forwarded` are removed: a client's copy must not pass for portcullis's.
    pub claim_headers: Option<Arc<[Arc<str>]>>,
}

impl Decision {
    fn unavailable(token_given: bool, reason: &'static str, message: &'static str) -> Self {
        Decision {
            outcome: Outcome::Unavailable,
            reason,
            message: message.into(),
            token_given,
            policy: None,
            user: None,
            subject: None,
            issuer: None,
            forwarded: Vec::new(),
            claim_headers: None,
        }
    }

    pub fn allowed(&self) -> bool {
        self.outcome == Outcome::Allow
    }

    pub fn http_status(&self) -> u16 {
        match self.outcome {
            Outcome::Allow => 200,
            Outcome::Unauthenticated => 401,
            Outcome::Forbidden => 403,
            Outcome::Unavailable => 503,
        }
    }

    /// The headers to set on the upstream request, on allow: identity, then claims.
    pub fn upstream_headers(&self) -> impl Iterator<Item = (&str, &str)> {
        [
            (HEADER_USER, &self.user),
            (HEADER_SUBJECT, &self.subject),
            (HEADER_ISSUER, &self.issuer),
            (HEADER_POLICY, &self.policy),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.as_deref().map(|v| (name, v)))
        .chain(self.forwarded.iter().map(|(h, v)| (&**h, v.as_str())))
    }

    /// Headers portcullis owns but does not set this time: the client's copies must go.
    pub fn headers_to_remove(&self) -> impl Iterator<Item = &str> {
        let claims = self.claim_headers.as_deref().unwrap_or_default();
        IDENTITY_HEADERS
            .into_iter()
            .chain(claims.iter().map(|h| &**h))
            .filter(|h| !self.upstream_headers().any(|(name, _)| name == *h))
    }

    /// RFC 6750 challenge for a 401.
    pub fn www_authenticate(&self) -> Option<String> {
        (self.outcome == Outcome::Unauthenticated).then(|| {
            if self.token_given {
                // RFC 6750: the description is printable ASCII without quote or backslash.
                let description: String = self
                    .message
                    .chars()
                    .map(|c| match c {
                        '"' | '\\' => '\'',
                        ' '..='~' => c,
                        _ => '?',
                    })
                    .collect();
                format!(r#"Bearer realm="portcullis", error="invalid_token", error_description="{description}""#)
            } else {
                r#"Bearer realm="portcullis""#.to_string()
            }
        })
    }

    /// The JSON body of a denial.
    pub fn body(&self) -> String {
        let error = match self.outcome {
            Outcome::Allow => "none",
            Outcome::Unauthenticated if self.token_given => "invalid_token",
            Outcome::Unauthenticated => "unauthorized",
            Outcome::Forbidden => "forbidden",
            Outcome::Unavailable => "temporarily_unavailable",
        };
        json!({ "error": error, "reason": self.reason, "message": self.message }).to_string()
    }
}

fn header_safe(value: &str) -> bool {
    !value.chars().any(|c| c.is_control() && c != '\t')
}

/// Everything the request path needs, shared by the gRPC and HTTP edges.
pub struct Authorizer {
    pub snapshots: Arc<SnapshotStore>,
    pub tokens: TokenVerifier,
    pub metrics: Arc<Metrics>,
    pub log: DecisionLog,
    /// Finds, and with `--create-users` creates, the User behind a token.
    pub users: UserResolver,
    /// The longest a decision may take: past it, deny with 503 rather than let Envoy's own
    /// timeout fire (which `failure_mode_allow` would turn into an allow).
    pub deadline: Duration,
}

/// Where a decision's token comes from.
enum Presented {
    /// The request's `Authorization` header, validated for real.
    Request,
    /// JWT claims that stand validated (`portcullis test`).
    Claims(Map<String, Value>),
}

/// Below the 1 s ext_authz timeout that deploy/ configures for Envoy.
pub const DEFAULT_DEADLINE: Duration = Duration::from_millis(900);

impl Authorizer {
    pub async fn check(&self, request: &HttpRequest) -> Decision {
        self.check_within(request, None).await
    }

    /// [`Authorizer::check`], answering within `budget` (the caller's own deadline, such
    /// as Envoy's `grpc-timeout`) when that is shorter than [`Authorizer::deadline`].
    /// A panic or a missed deadline is a 503 denial, never an allow.
    pub async fn check_within(&self, request: &HttpRequest, budget: Option<Duration>) -> Decision {
        let started = Instant::now();
        let deadline = budget.map_or(self.deadline, |b| b.min(self.deadline));
        let decide =
            AssertUnwindSafe(self.decide(request, None, Presented::Request)).catch_unwind();
        let decision = match tokio::time::timeout(deadline, decide).await {
            Ok(Ok(decision)) => decision,
            Ok(Err(_)) => {
                tracing::error!("a decision panicked; denying");
                Decision::unavailable(request.has_credential(), "internal_error", "internal error")
            }
            Err(_) => Decision::unavailable(
                request.has_credential(),
                "deadline_exceeded",
                "could not decide in time (an identity provider may be slow)",
            ),
        };
        let elapsed = started.elapsed();
        self.metrics
            .observe_decision(decision.allowed(), decision.reason, elapsed);
        self.log.record(&decision, request, elapsed);
        decision
    }

    /// Decide, and say why at every step. Every candidate policy is evaluated, so that the
    /// operator sees all of them, but the decision is the same as [`Authorizer::check`]'s.
    pub async fn explain(&self, request: &HttpRequest) -> (Decision, Trace) {
        self.explain_presented(request, Presented::Request).await
    }

    /// [`Authorizer::explain`] for a request whose JWT claims stand validated already, by
    /// the TokenIntrospector whose `jwt.iss` is their `iss` (none: 401, as in `serve`).
    /// `portcullis test` cases written as `jwt:` claims take this way.
    pub async fn explain_claims(
        &self,
        request: &HttpRequest,
        claims: Map<String, Value>,
    ) -> (Decision, Trace) {
        self.explain_presented(request, Presented::Claims(claims))
            .await
    }

    async fn explain_presented(
        &self,
        request: &HttpRequest,
        presented: Presented,
    ) -> (Decision, Trace) {
        let mut trace = Trace::default();
        let decision = self.decide(request, Some(&mut trace), presented).await;
        trace.decision = Some(trace::DecisionStep::from(&decision));
        (decision, trace)
    }

    async fn decide(
        &self,
        request: &HttpRequest,
        mut trace: Option<&mut Trace>,
        presented: Presented,
    ) -> Decision {
        // Read once: the header scan and the token syntax check are per-request work.
        let credential = request.credential();
        let given = !matches!(credential, Credential::None);
        let mut decision = Decision::unavailable(given, "not_ready", "no configuration loaded yet");
        let Some(snapshot) = self.snapshots.load() else {
            return decision;
        };
        let mut refused = |decision, e: TokenError| {
            if let Some(t) = trace.as_deref_mut() {
                t.token = TokenStep::refused(&e);
            }
            self.refuse(decision, &e)
        };
        // The token, validated, and as presented (creating a User sends it to userinfo).
        let (valid, raw) = match presented {
            Presented::Claims(claims) => {
                decision.token_given = true;
                let iss = claims.get("iss").and_then(Value::as_str).unwrap_or("");
                let Some(introspector) = snapshot.trust.for_issuer(iss).cloned() else {
                    return refused(decision, TokenError::untrusted_issuer(iss));
                };
                let valid = ValidToken {
                    kind: TokenKind::Jwt,
                    introspector,
                    expires_at: claims.get("exp").and_then(Value::as_u64),
                    claims: Arc::new(Value::Object(claims)),
                };
                (Some(valid), "")
            }
            Presented::Request => match credential {
                Credential::None => (None, ""),
                Credential::Bearer(raw) => match self.tokens.validate(&snapshot.trust, raw).await {
                    Ok(valid) => (Some(valid), raw),
                    Err(e) => return refused(decision, e),
                },
                Credential::Unreadable(why) => {
                    return refused(decision, TokenError::Malformed(why.into()))
                }
            },
        };
        if let (Some(t), Some(v)) = (trace.as_deref_mut(), &valid) {
            t.token = TokenStep::valid(v);
        }
        if let Some(v) = &valid {
            decision.subject = v.subject().map(str::to_string);
            decision.issuer = v.issuer().map(str::to_string);
            // These become upstream request headers: a control character would let a
            // claim smuggle a header, and Envoy refuses such values anyway.
            if ![&decision.subject, &decision.issuer]
                .into_iter()
                .flatten()
                .all(|s| header_safe(s))
            {
                decision.outcome = Outcome::Unauthenticated;
                decision.reason = "token_claims_unsafe";
                decision.message = "`sub` or `iss` holds control characters".into();
                return decision;
            }
        }
        // After the claims checks: a refused token must not create a User.
        let user = match &valid {
            Some(v) => {
                self.resolve_user(&snapshot, v, raw, trace.as_deref_mut())
                    .await
            }
            None => None,
        };
        decision.user = user.as_ref().map(|u| u.object_name().to_owned());
        if user.as_ref().is_some_and(|u| !u.is_active()) {
            decision.outcome = Outcome::Forbidden;
            decision.reason = "user_inactive";
            decision.message = "the User is inactive".into();
            return decision;
        }

        let context = context::RequestContext::new(request, valid.as_ref(), user.as_ref());
        let eval = EvalContext::new(&context);
        let client = valid.as_ref().and_then(|v| {
            Some(Client {
                issuer: v.trusted_issuer()?,
                id: v.client_id()?,
            })
        });
        let candidates = snapshot
            .policies
            .candidates(user.as_ref().map(|u| u.name()), client);
        for candidate in candidates {
            let allowed = match trace.as_deref_mut() {
                None => candidate.policy.evaluate(&eval),
                Some(t) => {
                    let explanation = candidate.policy.explain(&eval);
                    let allowed = explanation.allowed;
                    t.policies.push(PolicyStep {
                        policy: candidate.name.clone(),
                        allowed,
                        explanation,
                    });
                    allowed
                }
            };
            if allowed && decision.policy.is_none() {
                decision.policy = Some(candidate.name.clone());
                if trace.is_none() {
                    break;
                }
            }
        }

        if decision.policy.is_some() {
            decision.outcome = Outcome::Allow;
            decision.reason = "allowed";
            decision.message = "allowed".into();
            decision.claim_headers = snapshot.trust.claim_headers();
            if let Some(v) = &valid {
                decision.forwarded = v
                    .introspector
                    .claim_headers
                    .iter()
                    .filter_map(|c| Some((c.header.clone(), c.value(&v.claims)?)))
                    .collect();
            }
        } else if valid.is_some() {
            decision.outcome = Outcome::Forbidden;
            decision.reason = "no_policy_allows";
            decision.message = "no AccessPolicy allows this request".into();
        } else {
            decision.outcome = Outcome::Unauthenticated;
            decision.reason = "no_credentials";
            decision.message = "no AccessPolicy allows anonymous access to this request".into();
        }
        decision
    }

    fn refuse(&self, mut decision: Decision, e: &TokenError) -> Decision {
        decision.outcome = if e.is_internal() {
            Outcome::Unavailable
        } else {
            Outcome::Unauthenticated
        };
        decision.reason = e.reason();
        decision.message = e.to_string().into();
        decision
    }

    /// `explain` (a trace) never creates a User: it says which one it would create.
    async fn resolve_user(
        &self,
        snapshot: &Snapshot,
        token: &ValidToken,
        raw: &str,
        trace: Option<&mut Trace>,
    ) -> Option<KnownUser> {
        let resolution: Resolution =
            user::resolve(&self.users, snapshot, token, raw, trace.is_some()).await;
        if let Some(t) = trace {
            t.user = Some(UserStep::from_resolution(&resolution));
        }
        resolution.user().cloned()
    }
}

#[cfg(test)]
mod tests;
