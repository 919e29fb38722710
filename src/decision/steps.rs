//! The steps of one decision. Each fills in the [`Decision`] what it learned, tells the
//! trace what it did, and either hands on what the next step needs or ends the decision
//! with a [`Verdict`].

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::shadow::Evaluations;
use super::trace::TraceSink;
use super::{context, header_safe, Authorizer, Credential, Decision, HttpRequest, Outcome};
use super::{TokenStep, Trace, UserStep};
use crate::policy::EvalContext;
use crate::snapshot::{Client, View};
use crate::token::{TokenError, TokenKind, ValidToken};
use crate::users::{KnownUser, Resolution};

/// Where a decision's token comes from.
pub(super) enum Presented {
    /// The request's `Authorization` header, validated for real.
    Request,
    /// JWT claims that stand validated (`portcullis test`).
    Claims(Map<String, Value>),
}

/// How a decision ends; the rest of the [`Decision`] is what the steps before learned.
pub(super) struct Verdict {
    outcome: Outcome,
    reason: &'static str,
    message: Cow<'static, str>,
}

impl Verdict {
    const fn new(outcome: Outcome, reason: &'static str, message: &'static str) -> Self {
        Verdict {
            outcome,
            reason,
            message: Cow::Borrowed(message),
        }
    }

    const NOT_READY: Self = Self::new(
        Outcome::Unavailable,
        "not_ready",
        "no configuration loaded yet",
    );

    /// 401, or 503 when the fault is ours (an identity provider down).
    fn refused(e: &TokenError) -> Self {
        Verdict {
            outcome: if e.is_internal() {
                Outcome::Unavailable
            } else {
                Outcome::Unauthenticated
            },
            reason: e.reason(),
            message: e.to_string().into(),
        }
    }
}

/// A validated token, and the token as presented (creating a User sends it to userinfo).
struct Token<'r> {
    valid: ValidToken,
    raw: &'r str,
}

/// Ends the decision with a step's `Verdict`, as `?` would in a function of its own.
macro_rules! step {
    ($label:lifetime, $result:expr) => {
        match $result {
            Ok(value) => value,
            Err(verdict) => break $label verdict,
        }
    };
}

impl Authorizer {
    /// The steps in order; a read of a User on demand waits at most until `until`. The
    /// awaits stand here, in one `async fn`, not in the steps: each
    /// level of `async fn` between `decide` and a call would copy that call's (large)
    /// future once more on every request.
    pub(super) async fn decide(
        &self,
        request: &HttpRequest,
        trace: Option<&mut Trace>,
        presented: Presented,
        until: tokio::time::Instant,
    ) -> Decision {
        // Read once: the header scan and the token syntax check are per-request work.
        let credential = request.credential();
        let given = !matches!(credential, Credential::None);
        let mut decision = Decision::unavailable(given, "not_ready", "no configuration loaded yet");
        let mut trace = TraceSink::new(trace);
        let verdict = 'decided: {
            let snapshot = step!('decided, self.snapshots.load().ok_or(Verdict::NOT_READY));
            // What the request's namespace may use: the root's resources and its own.
            let view = snapshot.view(request.namespace.as_deref());
            if let Presented::Claims(_) = presented {
                decision.token_given = true;
            }
            let token = match presented_token(view, credential, presented) {
                Ok(Presentation::Bearer(raw)) => {
                    match self.tokens.validate(view.trust(), raw).await {
                        Ok(valid) => Ok(Some(Token { valid, raw })),
                        Err(e) => Err(e),
                    }
                }
                Ok(Presentation::Validated(token)) => Ok(token),
                Err(e) => Err(e),
            };
            let token = step!('decided, token_step(token, &mut trace));
            let valid = token.as_ref().map(|t| &t.valid);
            step!('decided, identity_step(valid, &mut decision));
            // After the claims checks: a refused token must not create a User.
            let user = match &token {
                Some(Token { valid, raw }) => {
                    let dry_run = trace.explaining();
                    let resolution =
                        super::user::resolve(&self.users, &snapshot, valid, raw, dry_run, until)
                            .await;
                    step!('decided, user_step(&resolution, &mut decision, &mut trace))
                }
                None => None,
            };
            // Counted on the request path only, not when explaining.
            let counts = self
                .metrics
                .policy_evaluations()
                .filter(|_| !trace.explaining());
            let mut seen = Evaluations::new(counts);
            let policy = policy_step(view, request, valid, user.as_ref(), &mut trace, &mut seen);
            decision.dry_run_allows = seen.dry_run_allows();
            verdict_step(view, valid, policy, &mut decision)
        };
        decision.outcome = verdict.outcome;
        decision.reason = verdict.reason;
        decision.message = verdict.message;
        decision
    }
}

/// What the request presents: a bearer token still to validate, or a token already
/// validated (claims that stand validated), or none.
enum Presentation<'r> {
    Bearer(&'r str),
    Validated(Option<Token<'r>>),
}

fn presented_token<'r>(
    view: View<'_>,
    credential: Credential<'r>,
    presented: Presented,
) -> Result<Presentation<'r>, TokenError> {
    match (presented, credential) {
        (Presented::Claims(claims), _) => {
            let valid = claims_token(view, claims)?;
            Ok(Presentation::Validated(Some(Token { valid, raw: "" })))
        }
        (Presented::Request, Credential::None) => Ok(Presentation::Validated(None)),
        (Presented::Request, Credential::Unreadable(why)) => Err(TokenError::Malformed(why.into())),
        (Presented::Request, Credential::Bearer(raw)) => Ok(Presentation::Bearer(raw)),
    }
}

/// The token, as the trace tells it; a refused one ends the decision.
fn token_step<'r>(
    token: Result<Option<Token<'r>>, TokenError>,
    trace: &mut TraceSink<'_>,
) -> Result<Option<Token<'r>>, Verdict> {
    match token {
        Ok(token) => {
            if let Some(t) = &token {
                trace.token(|| TokenStep::valid(&t.valid));
            }
            Ok(token)
        }
        Err(e) => {
            trace.token(|| TokenStep::refused(&e));
            Err(Verdict::refused(&e))
        }
    }
}

/// The User resolved, if any; an inactive one ends the decision. `explain` (a trace) never
/// creates a User: it says which one it would create.
fn user_step(
    resolution: &Resolution,
    decision: &mut Decision,
    trace: &mut TraceSink<'_>,
) -> Result<Option<KnownUser>, Verdict> {
    trace.user(|| UserStep::from_resolution(resolution));
    let user = resolution.user().cloned();
    // `namespace/name` from the cluster, where two namespaces may hold one name.
    decision.user = user.as_ref().map(|u| u.name().to_owned());
    match user {
        Some(u) if !u.is_active() => Err(Verdict::new(
            Outcome::Forbidden,
            "user_inactive",
            "the User is inactive",
        )),
        user => Ok(user),
    }
}

/// The TokenIntrospector whose `jwt.iss` is the claims' `iss` vouches for them.
fn claims_token(view: View<'_>, claims: Map<String, Value>) -> Result<ValidToken, TokenError> {
    let iss = claims.get("iss").and_then(Value::as_str).unwrap_or("");
    let Some(introspector) = view.trust().for_issuer(iss).cloned() else {
        return Err(TokenError::untrusted_issuer(iss));
    };
    Ok(ValidToken {
        kind: TokenKind::Jwt,
        introspector,
        expires_at: claims.get("exp").and_then(Value::as_u64),
        claims: Arc::new(Value::Object(claims)),
    })
}

/// `sub` and `iss` become upstream request headers: a control character would let a claim
/// smuggle a header, and Envoy refuses such values anyway.
fn identity_step(valid: Option<&ValidToken>, decision: &mut Decision) -> Result<(), Verdict> {
    let Some(v) = valid else {
        return Ok(());
    };
    decision.subject = v.subject().map(str::to_string);
    decision.issuer = v.issuer().map(str::to_string);
    let identity = [&decision.subject, &decision.issuer];
    if identity.into_iter().flatten().all(|s| header_safe(s)) {
        return Ok(());
    }
    Err(Verdict::new(
        Outcome::Unauthenticated,
        "token_claims_unsafe",
        "`sub` or `iss` holds control characters",
    ))
}

/// The first candidate that allows (a dry-run one never does). Explaining evaluates them
/// all, so that the operator sees every one; the request path stops at the first that
/// allows.
fn policy_step(
    view: View<'_>,
    request: &HttpRequest,
    valid: Option<&ValidToken>,
    user: Option<&KnownUser>,
    trace: &mut TraceSink<'_>,
    seen: &mut Evaluations<'_>,
) -> Option<String> {
    let context = context::RequestContext::new(request, valid, user);
    let eval = EvalContext::new(&context);
    let client = valid.and_then(|v| {
        Some(Client {
            issuer: v.trusted_issuer()?,
            id: v.client_id()?,
        })
    });
    let mut allowing = None;
    for candidate in view.candidates(user.map(|u| u.name()), client) {
        let allowed = seen.evaluate(candidate, &eval, trace);
        if allowed && allowing.is_none() {
            allowing = Some(candidate.name.clone());
            if !trace.explaining() {
                break;
            }
        }
    }
    allowing
}

/// On allow, the claims the token's introspector forwards go with the identity headers.
fn verdict_step(
    view: View<'_>,
    valid: Option<&ValidToken>,
    policy: Option<String>,
    decision: &mut Decision,
) -> Verdict {
    if policy.is_none() {
        return match valid {
            Some(_) => Verdict::new(
                Outcome::Forbidden,
                "no_policy_allows",
                "no AccessPolicy allows this request",
            ),
            None => Verdict::new(
                Outcome::Unauthenticated,
                "no_credentials",
                "no AccessPolicy allows anonymous access to this request",
            ),
        };
    }
    decision.policy = policy;
    decision.claim_headers = view.claim_headers();
    if let Some(v) = valid {
        decision.forwarded = forwarded_claims(v);
    }
    Verdict::new(Outcome::Allow, "allowed", "allowed")
}

fn forwarded_claims(token: &ValidToken) -> Vec<(Arc<str>, String)> {
    let claims = &token.introspector.claim_headers;
    claims
        .iter()
        .filter_map(|c| Some((c.header.clone(), c.value(&token.claims)?)))
        .collect()
}
