//! The steps of one decision. Each fills in the [`Decision`] what it learned, tells the
//! trace what it did, and either hands on what the next step needs or ends the decision
//! with a [`Verdict`].

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::costly::{self, Judged, Lane};
use super::shadow::Evaluations;
use super::trace::TraceSink;
use super::{context, header_safe, Authorizer, Credential, Decision, HttpRequest, Outcome};
use super::{TokenStep, Trace, UserStep};
use crate::policy::{EvalContext, Explanation, Mismatch, Policy};
use crate::resources::json_weight;
use crate::snapshot::{Client, CompiledPolicy, View};
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
            let mut walk = Walk::default();
            // A costly candidate is judged on the pool; the walk then goes on past it. Boxed:
            // the request path's future stays as small as before.
            while let Some(job) = policy_step(
                view,
                request,
                valid,
                user.as_ref(),
                &mut trace,
                &mut seen,
                &mut walk,
            ) {
                self.metrics.costly_policies(Lane::Pool.label(), 1);
                walk.pooled = Some(Box::pin(job.run()).await);
            }
            if walk.refused > 0 {
                self.metrics
                    .costly_policies(Lane::Refused.label(), walk.refused);
            }
            decision.dry_run_allows = seen.dry_run_allows();
            step!('decided, walk.undecided());
            verdict_step(view, valid, walk.allowing, &mut decision)
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
    let expires_at = claims.get("exp").and_then(Value::as_u64);
    let claims = Value::Object(claims);
    Ok(ValidToken {
        kind: TokenKind::Jwt,
        introspector,
        expires_at,
        claims_weight: json_weight(&claims),
        claims: Arc::new(claims),
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

/// How far the candidates of one decision have been evaluated.
#[derive(Default)]
struct Walk {
    /// The next candidate to evaluate.
    next: usize,
    /// The first candidate that allowed.
    allowing: Option<String>,
    /// The judgement of candidate `next`, made on the pool.
    pooled: Option<Option<Judged>>,
    /// A candidate that could have allowed went unjudged: why.
    undecided: Option<Verdict>,
    /// Candidates not evaluated, being too costly.
    refused: u64,
}

impl Walk {
    /// Unless a candidate allowed, a candidate left unjudged leaves the request undecided:
    /// 503, never a 403 that the unjudged policy might have turned into an allow.
    fn undecided(&mut self) -> Result<(), Verdict> {
        match self.undecided.take() {
            Some(verdict) if self.allowing.is_none() => Err(verdict),
            _ => Ok(()),
        }
    }
}

/// A costly candidate's evaluation, with what it needs and nothing borrowed.
struct Job {
    policy: Arc<Policy>,
    context: Value,
    explain: bool,
}

impl Job {
    async fn run(self) -> Option<Judged> {
        costly::on_pool(self.policy, self.context, self.explain).await
    }
}

/// The candidates in order from `walk.next`, up to the first that allows (a dry-run one
/// never does), or to one too costly for this worker, which is handed back to be judged on
/// the pool; the next call takes its judgement from `walk.pooled` and goes on. Explaining
/// evaluates them all, so that the operator sees every one.
fn policy_step(
    view: View<'_>,
    request: &HttpRequest,
    valid: Option<&ValidToken>,
    user: Option<&KnownUser>,
    trace: &mut TraceSink<'_>,
    seen: &mut Evaluations<'_>,
    walk: &mut Walk,
) -> Option<Job> {
    let context = context::RequestContext::new(request, valid, user);
    let eval = EvalContext::new(&context);
    let client = valid.and_then(|v| {
        Some(Client {
            issuer: v.trusted_issuer()?,
            id: v.client_id()?,
        })
    });
    let candidates = view.candidates(user.map(|u| u.name()), client);
    let mut weight = None;
    while let Some(&candidate) = candidates.get(walk.next) {
        let allowed = match walk.pooled.take() {
            Some(Some(judged)) => seen.record(candidate, judged, trace),
            Some(None) => {
                tracing::error!(policy = %candidate.name, "a policy's evaluation panicked");
                walk.undecided = Some(Verdict::new(
                    Outcome::Unavailable,
                    "internal_error",
                    "internal error",
                ));
                false
            }
            None => {
                let weigh = || *weight.get_or_insert_with(|| context.weight());
                match Lane::of(&candidate.policy, &eval, weigh) {
                    (Lane::Inline, _) => seen.evaluate(candidate, &eval, trace),
                    (Lane::Pool, _) => {
                        return Some(Job {
                            policy: candidate.policy.clone(),
                            context: context.to_owned_whole(),
                            explain: trace.explaining(),
                        })
                    }
                    (Lane::Refused, visits) => refuse(candidate, visits, trace, seen, walk),
                }
            }
        };
        walk.next += 1;
        if allowed && walk.allowing.is_none() {
            walk.allowing = Some(candidate.name.clone());
            if !trace.explaining() {
                break;
            }
        }
    }
    None
}

/// A candidate whose worst case on this request is past [`costly::MAX_VISITS`]: not
/// evaluated, counted, and explained as such.
fn refuse(
    candidate: &CompiledPolicy,
    visits: u64,
    trace: &mut TraceSink<'_>,
    seen: &mut Evaluations<'_>,
    walk: &mut Walk,
) -> bool {
    walk.refused += 1;
    tracing::warn!(
        policy = %candidate.name,
        visits,
        "a policy's worst case on this request is too costly to evaluate"
    );
    if !candidate.dry_run {
        walk.undecided.get_or_insert(Verdict::new(
            Outcome::Unavailable,
            "policy_too_costly",
            "a policy's worst case on this request is too costly to evaluate",
        ));
    }
    let explanation = trace.explaining().then(|| Explanation {
        allowed: false,
        engine: candidate.policy.engine(),
        errors: vec![Mismatch::new(
            "",
            json!(format!("at most {} visits", costly::MAX_VISITS)),
            Some(&json!(format!(
                "{visits} visits (the policy's {} nodes, each times what the request holds where it applies)",
                candidate.policy.cost().nodes()
            ))),
            Some("not evaluated: the policy's worst case on this request is too costly".into()),
        )],
        children: Vec::new(),
        notes: Vec::new(),
    });
    seen.record(
        candidate,
        Judged {
            allowed: false,
            explanation,
        },
        trace,
    )
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
