//! The compiled, immutable configuration that the request path reads.
//!
//! Sources produce [`Resource`]s; [`compile`] turns a complete set of them into a
//! [`Snapshot`], or into every error found ([`Compiler`] does the same one resource at a
//! time, as a source parses them). [`SnapshotStore`] swaps snapshots atomically,
//! so a request sees one whole configuration, never half of an update.

mod compile;
mod policies;
mod store;

use std::collections::HashMap;
use std::sync::Arc;

pub use crate::resources::{namespace_of, object_name, qualified};
pub use compile::{compile, Compiler, Prepared, RejectReason, Rejection};
pub use policies::{Client, CompiledPolicy, PolicySet};
pub use store::SnapshotStore;

use crate::policy::RegexBudget;
use crate::resources::ConfigError;
use crate::resources::IdentityProviderSpec;
use crate::token::{TrustStore, TrustView};
use crate::users::UserIndex;

/// Each part sits behind its own `Arc`, so that a change to the Users alone (a User event
/// from the cluster), or to one team's namespace, makes a new snapshot without recompiling
/// the rest.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// What applies to every request: the root namespace's resources (every resource, in
    /// file mode without `--root-namespace`).
    pub root: Arc<Scope>,
    /// What applies only to requests of one namespace, by namespace.
    pub namespaces: Arc<HashMap<String, Arc<Scope>>>,
    /// The root namespace; `None`: one flat configuration, everything root.
    pub root_namespace: Option<Arc<str>>,
    pub users: Arc<UserIndex>,
    /// `--users on-demand`: the Users are read when a request needs them, not held in
    /// `users` (which stays empty): a User that `users` lacks may exist.
    pub users_on_demand: bool,
    /// What compiled but is likely a mistake (a policy that allows every request): served,
    /// and reported by `validate`, the log and a metric.
    pub warnings: Vec<ConfigError>,
    /// Files of created Users that were passed over (see [`Compiler::push_created_user`]).
    pub skipped: Vec<ConfigError>,
}

/// The introspectors, policies and IdentityProviders of one scope: the root, or one
/// team's namespace.
#[derive(Debug, Default)]
pub struct Scope {
    pub trust: TrustStore,
    pub policies: PolicySet,
    /// By qualified name.
    pub identity_providers: HashMap<String, Arc<CompiledProvider>>,
    /// The headers stripped from a request of this scope's namespace: those the root's
    /// introspectors and this scope's forward claims into.
    strip: Option<Arc<[Arc<str>]>>,
    /// What its policies' regexes cost, against `--max-regex-bytes`: the admission webhook
    /// judges a new policy against what the scope has left.
    pub regex: RegexBudget,
}

impl Scope {
    /// A team's scope also strips the headers of the root's introspectors.
    pub fn new(
        trust: TrustStore,
        policies: PolicySet,
        identity_providers: HashMap<String, Arc<CompiledProvider>>,
        regex: RegexBudget,
        root: Option<&Scope>,
    ) -> Self {
        let own = trust.claim_headers();
        let strip = match (root.and_then(|r| r.strip.clone()), own) {
            (None, own) => own,
            (inherited, None) => inherited,
            (Some(inherited), Some(own)) => {
                let mut all: Vec<Arc<str>> = inherited.to_vec();
                all.extend(own.iter().filter(|h| !inherited.contains(h)).cloned());
                Some(all.into())
            }
        };
        Scope {
            trust,
            policies,
            identity_providers,
            strip,
            regex,
        }
    }

    pub fn len(&self) -> usize {
        self.trust.len() + self.policies.len() + self.identity_providers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What applies to one request: the root's scope and its namespace's, never another's.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    pub root: &'a Scope,
    pub team: Option<&'a Scope>,
}

impl<'a> View<'a> {
    pub fn trust(&self) -> TrustView<'a> {
        TrustView::new(&self.root.trust, self.team.map(|t| &t.trust))
    }

    /// The candidate policies, in evaluation order: the root's by name, then the team's
    /// by name.
    pub fn candidates(
        &self,
        user: Option<&str>,
        client: Option<Client<'_>>,
    ) -> Vec<&'a CompiledPolicy> {
        let mut candidates = self.root.policies.candidates(user, client);
        if let Some(team) = self.team {
            candidates.extend(team.policies.candidates(user, client));
        }
        candidates
    }

    /// The headers to strip from the client's request: those the view's introspectors
    /// forward claims into.
    pub fn claim_headers(&self) -> Option<Arc<[Arc<str>]>> {
        self.team.unwrap_or(self.root).strip.clone()
    }
}

/// The scope a resource of `namespace` belongs to under `root`: `None` is the root (every
/// resource when there is no root namespace, and namespace-less ones always).
pub fn team_of<'a>(root: Option<&str>, namespace: Option<&'a str>) -> Option<&'a str> {
    match (root, namespace) {
        (Some(root), Some(ns)) if root != ns => Some(ns),
        _ => None,
    }
}

/// An IdentityProvider as the snapshot holds it: its name and spec.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledProvider {
    pub name: String,
    pub spec: IdentityProviderSpec,
}

impl CompiledProvider {
    pub fn is_active(&self) -> bool {
        self.spec.active.unwrap_or(true)
    }
}

impl Snapshot {
    /// The same configuration with other Users.
    pub fn with_users(&self, users: Arc<UserIndex>) -> Snapshot {
        Snapshot {
            users,
            ..self.clone()
        }
    }

    /// What applies to a request of `namespace` (`None`: a request whose namespace is
    /// not known, which only the root's resources apply to).
    pub fn view(&self, namespace: Option<&str>) -> View<'_> {
        let team = team_of(self.root_namespace.as_deref(), namespace)
            .and_then(|ns| self.namespaces.get(ns))
            .map(|s| &**s);
        View {
            root: &self.root,
            team,
        }
    }

    /// The scope that resources of `namespace` compile into, if it holds any.
    pub fn scope(&self, namespace: Option<&str>) -> Option<&Scope> {
        match team_of(self.root_namespace.as_deref(), namespace) {
            None => Some(&self.root),
            Some(ns) => self.namespaces.get(ns).map(|s| &**s),
        }
    }

    /// An IdentityProvider by qualified name, from the scope of its namespace.
    pub fn identity_provider(&self, name: &str) -> Option<&Arc<CompiledProvider>> {
        self.scope(namespace_of(name))?.identity_providers.get(name)
    }

    /// The root's scope, then each namespace's by name.
    pub fn scopes(&self) -> impl Iterator<Item = (Option<&str>, &Scope)> {
        let mut teams: Vec<_> = self.namespaces.iter().collect();
        teams.sort_by(|a, b| a.0.cmp(b.0));
        std::iter::once((None, &*self.root))
            .chain(teams.into_iter().map(|(ns, s)| (Some(ns.as_str()), &**s)))
    }

    /// Counts by kind, for logs and metrics.
    pub fn summary(&self) -> String {
        let (mut trust, mut policies, mut providers) = (0, 0, 0);
        for (_, scope) in self.scopes() {
            trust += scope.trust.len();
            policies += scope.policies.len();
            providers += scope.identity_providers.len();
        }
        let scopes = match self.namespaces.len() {
            0 => String::new(),
            n => format!(" in the root and {n} namespaces"),
        };
        let users = match self.users_on_demand {
            true => "users read on demand".to_string(),
            false => format!("{} users", self.users.len()),
        };
        format!(
            "{trust} token introspectors, {policies} access policies, {providers} identity \
             providers{scopes}, {users}"
        )
    }
}

#[cfg(test)]
mod scope_tests;
