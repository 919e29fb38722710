//! The pipeline's side of user resolution: its snapshot and validated token, as the plain
//! [`Subject`] that the users module's two verbs take.

use serde_json::Value;

use crate::resources::namespace_of;
use crate::snapshot::Snapshot;
use crate::token::ValidToken;
use crate::users::{Provider, ProviderRef, Resolution, Subject, UserResolver};

/// What `users` needs of the token, and of the IdentityProvider of its introspector.
pub(crate) fn subject<'a>(snapshot: &'a Snapshot, token: &'a ValidToken) -> Subject<'a> {
    let introspector = token.introspector.name.as_str();
    // Looked up directly, without building a message when there is none: this runs on
    // every decision.
    let provider = match token.introspector.identity_provider.as_deref() {
        None => ProviderRef::Unnamed,
        Some(name) => match snapshot.identity_provider(name) {
            Some(p) => ProviderRef::Defined(Provider {
                name: &p.name,
                spec: &p.spec,
                active: p.is_active(),
            }),
            None => ProviderRef::Undefined(name),
        },
    };
    Subject {
        name: token
            .claims
            .get("box_user")
            .and_then(Value::as_str)
            .or_else(|| token.subject()),
        sub: token.subject(),
        introspector,
        namespace: namespace_of(introspector),
        provider,
        claims: &token.claims,
    }
}

/// The User of a validated token: found (steps 1–2), else created (step 3). `raw` is the
/// token as presented, for the userinfo call; with `dry_run` (explain) nothing is fetched
/// or created. With `--users on-demand`, Users that the snapshot does not hold are read,
/// waiting at most until `until`; past it the request goes on without a User.
pub(crate) async fn resolve(
    users: &UserResolver,
    snapshot: &Snapshot,
    token: &ValidToken,
    raw: &str,
    dry_run: bool,
    until: tokio::time::Instant,
) -> Resolution {
    let subject = subject(snapshot, token);
    if let Some((user, found)) = users.find(&snapshot.users, &subject) {
        return Resolution::Found(user, found);
    }
    match users.look_up(&subject, until).await {
        Some(Ok(Some((user, found)))) => return Resolution::Found(user, found),
        Some(Err(failure)) => return Resolution::LookupFailed(failure),
        Some(Ok(None)) | None => {}
    }
    users.create(&snapshot.users, &subject, raw, dry_run).await
}
