//! The decision pipeline: token → user → policies → allow or deny.
//!
//! Plain data in ([`HttpRequest`]), plain data out ([`Decision`]); the gRPC and HTTP edges
//! only translate. The same code path produces an `explain` [`Trace`] on demand.

pub mod context;
mod costly;
mod log;
mod request;
mod shadow;
mod steps;
mod trace;
pub(crate) mod user;

use std::borrow::Cow;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;

use serde_json::{json, Map, Value};

pub use log::DecisionLog;
pub use request::{request_namespace, Credential, HttpRequest, NAMESPACE_EXTENSION};
use steps::Presented;
pub use trace::{DryRunStep, PolicyStep, TokenStep, Trace, UserStep};

use crate::metrics::Metrics;
use crate::snapshot::SnapshotStore;
use crate::token::TokenVerifier;
use crate::users::UserResolver;

/// The request headers portcullis owns. Client-sent copies never reach the upstream.
pub const HEADER_USER: &str = "x-portcullis-user";
pub const HEADER_SUBJECT: &str = "x-portcullis-subject";
pub const HEADER_ISSUER: &str = "x-portcullis-issuer";
pub const HEADER_POLICY: &str = "x-portcullis-policy";
pub const IDENTITY_HEADERS: [&str; 4] = [HEADER_USER, HEADER_SUBJECT, HEADER_ISSUER, HEADER_POLICY];

/// What a client is told when portcullis cannot decide; the reason code says which case.
pub const UNAVAILABLE_MESSAGE: &str = "the request could not be authorized now; try again later";

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
    /// When [`Decision::shadow`], the denial's.
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
    /// Dry-run policies that would have allowed, among the candidates evaluated (on the
    /// request path, those before the policy that allowed, if one did).
    pub dry_run_allows: Vec<String>,
    /// `serve --shadow` answered allow to this denial: `reason` and `message` are the
    /// denial's, and no identity is set.
    pub shadow: bool,
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
            dry_run_allows: Vec::new(),
            shadow: false,
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

    /// The JSON body of a denial, for the client: the stable `reason` and a message.
    ///
    /// 401 and 403 keep their message: it speaks of the client's own token (expired, bad
    /// signature, its `iss` not trusted) and holds no configuration. A 503's message can
    /// name internal things (a provider's host, the `--outbound-allow-host` list, a
    /// timeout): the client gets [`UNAVAILABLE_MESSAGE`] instead, and the detail goes to
    /// the decision log and to `explain`.
    pub fn body(&self) -> String {
        let error = match self.outcome {
            Outcome::Allow => "none",
            Outcome::Unauthenticated if self.token_given => "invalid_token",
            Outcome::Unauthenticated => "unauthorized",
            Outcome::Forbidden => "forbidden",
            Outcome::Unavailable => "temporarily_unavailable",
        };
        let message = match self.outcome {
            Outcome::Unavailable => UNAVAILABLE_MESSAGE,
            _ => &self.message,
        };
        json!({ "error": error, "reason": self.reason, "message": message }).to_string()
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
    /// `serve --shadow`: every denial is counted and logged as it is, then answered allow.
    pub shadow: bool,
}

/// Below the 1 s ext_authz timeout that deploy/ configures for Envoy.
pub const DEFAULT_DEADLINE: Duration = Duration::from_millis(900);

impl Authorizer {
    pub async fn check(&self, request: &HttpRequest) -> Decision {
        self.check_within(request, None).await
    }

    /// [`Authorizer::check`], answering within `budget` (the caller's own deadline, such
    /// as Envoy's `grpc-timeout`) when that is shorter than [`Authorizer::deadline`].
    /// A panic or a missed deadline is a 503 denial, never an allow (but under
    /// [`Authorizer::shadow`], where every denial is answered allow once counted and
    /// logged).
    pub async fn check_within(&self, request: &HttpRequest, budget: Option<Duration>) -> Decision {
        let started = Instant::now();
        let deadline = budget.map_or(self.deadline, |b| b.min(self.deadline));
        let until = lookup_deadline(deadline);
        let decide =
            AssertUnwindSafe(self.decide(request, None, Presented::Request, until)).catch_unwind();
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
        let shadow = self.shadow && !decision.allowed();
        self.log.record(&decision, request, elapsed, shadow);
        if shadow {
            return self.shadow_allow(decision, request.namespace.as_deref());
        }
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
        // Within the decision deadline, as a check: an explain never holds a worker or a
        // connection to an identity provider longer than a check would.
        let until = lookup_deadline(self.deadline);
        // Not a request: counted as an explanation, never in `decisions` nor in the
        // request token events (docs/observability.md, "Explanations").
        let decide = self.decide(request, Some(&mut trace), presented, until);
        let decision =
            match tokio::time::timeout(self.deadline, self.metrics.explaining(decide)).await {
                Ok(decision) => decision,
                Err(_) => Decision::unavailable(
                    request.has_credential(),
                    "deadline_exceeded",
                    "could not decide in time (an identity provider may be slow)",
                ),
            };
        trace.decision = Some(trace::DecisionStep::from(&decision));
        (decision, trace)
    }
}

/// How long a decision that began now may wait to read a User on demand
/// (`--users on-demand`): its deadline less a tenth, left for the policies, so that a slow
/// API server makes the request go on without a User rather than fail.
fn lookup_deadline(deadline: Duration) -> tokio::time::Instant {
    tokio::time::Instant::now() + deadline - deadline / 10
}

#[cfg(test)]
mod tests;
