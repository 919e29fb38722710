use std::collections::HashMap;
use std::sync::Arc;

use super::policies::Links;
use super::{qualified, team_of, CompiledPolicy, CompiledProvider, PolicySet, Scope, Snapshot};
use crate::policy::{RegexBudget, DEFAULT_MAX_REGEX_BYTES};
use crate::resources::checks;
use crate::resources::{ConfigError, FieldError, Kind, Origin, Resource, SecretData, Spec};
use crate::resources::{PolicyEngine, TokenIntrospectorSpec};
use crate::resources::{SecretKeyRef, SecretProblem};
use crate::token::{Introspector, TrustStore};
use crate::users::{self, KnownUser, UserIndex};

/// Compile a complete set of resources. Any error rejects the whole set, so that the
/// caller keeps serving the last good snapshot; every error found is returned at once.
pub fn compile(resources: &[Resource]) -> Result<Snapshot, Vec<ConfigError>> {
    let mut compiler = Compiler::default();
    resources.iter().for_each(|r| compiler.push(Ok(r.clone())));
    compiler.finish()
}

/// [`compile`], one resource at a time: a source hands each resource over as it parses it,
/// so that 100,000 parsed Users never sit in memory beside their compiled form.
#[derive(Default)]
pub struct Compiler {
    /// See [`Compiler::scoped`]; `None`: everything is root.
    root_namespace: Option<Arc<str>>,
    /// The scopes being compiled: the root (`None`) and each team's namespace.
    scopes: HashMap<Option<String>, ScopeBuilder>,
    /// See [`Compiler::rebuilding`]: the snapshot whose other scopes stay as they are.
    kept: Option<Arc<Snapshot>>,
    /// TokenIntrospectors and IdentityProviders of teams, held back by [`Compiler::add`]
    /// until the root's are in, so that the root wins a conflict whatever the file order.
    deferred: Vec<Resource>,
    finishing: bool,
    /// How many resources were compiled (admitted or refused), for the rebuild counter.
    compiled: usize,
    /// See [`Compiler::max_regex_bytes`]; `None`: the default.
    max_regex_bytes: Option<usize>,
    /// Shared only when kept whole from an earlier load ([`Compiler::keeping_users`]).
    users: Arc<UserIndex>,
    warnings: Vec<ConfigError>,
    skipped: Vec<ConfigError>,
    errors: Vec<ConfigError>,
    /// Names are unique per kind: where each was first defined, but for the Users taken
    /// into `users`, which are in `user_origins`.
    seen: HashMap<(Kind, String), Origin>,
    /// Where each User of `users` was defined, by its position there: 100,000 names are
    /// not held a second time (a third of the memory a reload needs beside the snapshots).
    user_origins: UserOrigins,
    /// `identity_provider` references, checked once every IdentityProvider is known.
    provider_refs: Vec<(String, ConfigError)>,
    /// See [`Compiler::joining`].
    serving: Option<Arc<Snapshot>>,
    /// See [`Compiler::offline`]: the Secret manifests read so far, by (namespace, name),
    /// or `None` where Secrets are refused (`serve` in file mode).
    secrets: Option<Secrets>,
    /// TokenIntrospectors with Secret references, compiled in `finish` once every Secret
    /// manifest is known.
    with_secret_refs: Vec<Resource>,
    /// Each linked policy's links, checked in `finish` against the Users and issuers the
    /// configuration defines.
    link_checks: Vec<LinkCheck>,
    /// Users refused so far: until there is one, no User name is in `seen`.
    users_refused: usize,
    /// See [`Compiler::push_prepared`]: what compiling the policy being added gave.
    memo: Option<PolicyMemo>,
    /// Whether to keep a [`PolicyMemo`] of the policy being added.
    memoizing: bool,
}

/// A parsed item as a source keeps it from one load to the next (file mode), to push it
/// again with [`Compiler::push_prepared`] while its file has not changed: a User compiled
/// (held only until pushed: then the index holds it), a policy once compiled as what
/// compiling it gave, anything else as parsed.
pub struct Prepared(PreparedItem);

enum PreparedItem {
    /// Boxed: while a file's Users pass, its other items stay small.
    User(Box<(KnownUser, Origin)>),
    Other(Box<Result<Resource, ConfigError>>),
    Policy(Box<KeptPolicy>),
}

/// An AccessPolicy compiled and admitted, kept without its parsed spec: what
/// [`Compiler::add`] would find and make of it again while its resource is unchanged.
struct KeptPolicy {
    key: String,
    team: Option<String>,
    origin: Origin,
    dry_run: bool,
    /// For the warning of links that name nothing defined (see [`Compiler::link_check`]).
    link_targets: Vec<LinkTarget>,
    memo: PolicyMemo,
}

/// What compiling an AccessPolicy gave. Compiled, a policy depends on nothing but its
/// resource and the regex budget of its scope, which `regexes` pays again
/// ([`RegexBudget::repay`]).
struct PolicyMemo {
    policy: Arc<crate::policy::Policy>,
    links: Links,
    regexes: Vec<(Arc<str>, usize)>,
    warnings: Vec<ConfigError>,
}

/// A linked policy's links, `(field, User key or (issuer, client))`, with its scope.
type LinkCheck = (ConfigError, Option<String>, Vec<LinkTarget>);

impl Prepared {
    fn other(item: Result<Resource, ConfigError>) -> Self {
        Prepared(PreparedItem::Other(Box::new(item)))
    }

    /// A User: to be dropped once pushed, when its index is kept instead.
    pub fn is_user(&self) -> bool {
        matches!(self.0, PreparedItem::User(_))
    }

    /// The User, unboxed, to be kept in a more compact form ([`Compiler::push_user`]).
    pub fn into_user(self) -> Result<(KnownUser, Origin), Prepared> {
        match self.0 {
            PreparedItem::User(user) => Ok(*user),
            other => Err(Prepared(other)),
        }
    }

    /// Moves every place in a file it names (its origin, its warnings') by `documents` and
    /// `lines`: its text now lies there in the file, unchanged.
    pub fn shift(&mut self, documents: isize, lines: isize) {
        if documents == 0 && lines == 0 {
            return;
        }
        let origins: Vec<&mut Origin> = match &mut self.0 {
            PreparedItem::User(user) => vec![&mut user.1],
            PreparedItem::Other(other) => match &mut **other {
                Ok(r) => vec![&mut r.origin],
                Err(e) => vec![&mut e.origin],
            },
            PreparedItem::Policy(kept) => std::iter::once(&mut kept.origin)
                .chain(kept.memo.warnings.iter_mut().map(|w| &mut w.origin))
                .collect(),
        };
        for origin in origins {
            origin.shift(documents, lines);
        }
    }
}

/// One scope's part of a compilation.
#[derive(Default)]
struct ScopeBuilder {
    trust: TrustStore,
    identity_providers: HashMap<String, Arc<CompiledProvider>>,
    /// IdentityProvider system → its name.
    systems: HashMap<String, String>,
    policies: Vec<(CompiledPolicy, Links)>,
    regex: RegexBudget,
}

impl ScopeBuilder {
    fn new(regex: RegexBudget) -> Self {
        ScopeBuilder {
            regex,
            ..ScopeBuilder::default()
        }
    }

    fn build(self, root: Option<&Scope>) -> Scope {
        Scope::new(
            self.trust,
            PolicySet::build(self.policies),
            self.identity_providers,
            self.regex,
            root,
        )
    }
}

/// Secret manifests by (namespace, name), with where each was read.
type Secrets = HashMap<(Option<String>, String), (Origin, SecretData)>;

/// A link's field, and the User key (`Ok`) or client issuer (`Err`) it names.
type LinkTarget = (String, Result<String, String>);

/// Why [`Compiler::admit`] left a resource out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub reason: RejectReason,
    pub errors: Vec<FieldError>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectReason {
    /// The resource is wrong in itself, or references what does not exist.
    Invalid,
    /// Another resource already holds its issuer, system, identifier or name.
    Conflict,
}

impl Rejection {
    fn invalid(errors: Vec<FieldError>) -> Self {
        Rejection {
            reason: RejectReason::Invalid,
            errors,
        }
    }

    fn conflict(field: &str, message: String) -> Self {
        Rejection {
            reason: RejectReason::Conflict,
            errors: vec![FieldError::new(field, message)],
        }
    }
}

impl Compiler {
    /// Room for this many Users (those of the configuration a reload replaces), so that
    /// the index is not copied as it grows.
    pub fn with_user_capacity(users: usize) -> Self {
        let mut compiler = Compiler {
            users: Arc::new(UserIndex::with_capacity(users)),
            ..Compiler::default()
        };
        compiler.user_origins.places.reserve_exact(users);
        compiler
    }

    /// The Users of an earlier load, taken whole, with the files of created Users it passed
    /// over: a file source whose files holding Users are as they were pushes no User.
    pub fn keeping_users(mut self, users: Arc<UserIndex>, skipped: Vec<ConfigError>) -> Self {
        self.users = users;
        self.skipped = skipped;
        self
    }

    /// For the admission webhook: a compiler whose [`Compiler::admit`] also refuses what
    /// conflicts with the configuration that serves — another TokenIntrospector trusting
    /// the same issuer, another IdentityProvider with the same system, another User
    /// holding one of the identifiers — and finds the IdentityProviders it holds. What
    /// `serving` holds under the admitted resource's own name is an earlier version of it,
    /// not a conflict.
    pub fn joining(serving: Arc<Snapshot>) -> Self {
        Compiler {
            root_namespace: serving.root_namespace.clone(),
            serving: Some(serving),
            ..Compiler::default()
        }
    }

    /// Resources outside `root` apply only to requests of their own namespace (design.md,
    /// "Tenancy"); without it, every resource is root.
    pub fn scoped(mut self, root: Option<Arc<str>>) -> Self {
        self.root_namespace = root;
        self
    }

    /// Compiles only the scopes of `teams` (namespaces other than the root) anew; every
    /// other scope, the root's included, is taken from `previous` as it is. Admit only
    /// resources of those namespaces.
    pub fn rebuilding(previous: Arc<Snapshot>, teams: &[String]) -> Self {
        let limit = previous.root.regex.limit();
        let mut compiler = Compiler {
            root_namespace: previous.root_namespace.clone(),
            kept: Some(previous),
            max_regex_bytes: Some(limit),
            ..Compiler::default()
        };
        for team in teams {
            let scope = ScopeBuilder::new(RegexBudget::new(limit));
            compiler.scopes.insert(Some(team.clone()), scope);
        }
        compiler
    }

    /// How many resources were compiled so far (admitted or refused).
    pub fn compiled(&self) -> usize {
        self.compiled
    }

    /// The scope `r` belongs to: `None` is the root.
    fn team_of(&self, r: &Resource) -> Option<String> {
        team_of(self.root_namespace.as_deref(), r.scope()).map(str::to_owned)
    }

    /// The root's scope as compiled so far, or as kept.
    fn root_scope(&self) -> RootScope<'_> {
        match (self.scopes.get(&None), &self.kept) {
            (Some(b), _) => RootScope::Building(b),
            (None, Some(kept)) => RootScope::Kept(&kept.root),
            (None, None) => RootScope::Empty,
        }
    }

    fn builder(&mut self, team: Option<String>) -> &mut ScopeBuilder {
        // The webhook judges against what the scope serving has left.
        let serving = self
            .serving
            .as_deref()
            .map(|s| match s.scope(team.as_deref()) {
                Some(scope) => scope.regex.clone(),
                None => RegexBudget::new(s.root.regex.limit()),
            });
        let regex = serving.unwrap_or_else(|| self.regex_budget());
        self.scopes
            .entry(team)
            .or_insert_with(|| ScopeBuilder::new(regex))
    }

    /// `--max-regex-bytes`: what each scope's regexes may take.
    pub fn max_regex_bytes(mut self, bytes: usize) -> Self {
        self.max_regex_bytes = Some(bytes);
        self
    }

    fn regex_budget(&self) -> RegexBudget {
        RegexBudget::new(self.max_regex_bytes.unwrap_or(DEFAULT_MAX_REGEX_BYTES))
    }

    /// Whether an introspector of the root or of `team`'s scope trusts `issuer`.
    fn trusts(&self, team: &Option<String>, issuer: &str) -> bool {
        let root = match self.root_scope() {
            RootScope::Building(b) => b.trust.for_issuer(issuer).is_some(),
            RootScope::Kept(s) => s.trust.for_issuer(issuer).is_some(),
            RootScope::Empty => false,
        };
        root || (team.is_some()
            && self
                .scopes
                .get(team)
                .is_some_and(|b| b.trust.for_issuer(issuer).is_some()))
    }

    /// For `validate`, `explain` and `test`: core `v1` Secret manifests among the files
    /// stand in for the cluster's Secrets, so that the Kubernetes form with Secret
    /// references is checked offline. A reference that none of them holds is an error
    /// naming the field. (`serve` in file mode refuses Secrets and references alike.)
    pub fn offline() -> Self {
        Compiler {
            secrets: Some(HashMap::new()),
            ..Compiler::default()
        }
    }

    /// Whether an IdentityProvider of this name is admitted, or serves (see
    /// [`Compiler::joining`]).
    pub fn knows_provider(&self, name: &str) -> bool {
        let team = team_of(self.root_namespace.as_deref(), super::namespace_of(name));
        let known = match self.scopes.get(&team.map(str::to_owned)) {
            Some(b) => b.identity_providers.contains_key(name),
            // A scope not compiled anew stays as kept.
            None => (self.kept.as_ref()).is_some_and(|s| s.identity_provider(name).is_some()),
        };
        known || (self.serving.as_ref()).is_some_and(|s| s.identity_provider(name).is_some())
    }

    /// What compiled but is likely a mistake, so far.
    pub fn warnings(&self) -> &[ConfigError] {
        &self.warnings
    }

    /// A parsed item as a source keeps it (see [`Prepared`]): localized, a User compiled.
    pub fn prepare(&self, item: Result<Resource, ConfigError>) -> Prepared {
        let mut r = match item {
            Ok(r) => r,
            Err(e) => return Prepared::other(Err(e)),
        };
        self.localize(&mut r);
        match &r.spec {
            Spec::User(spec) => {
                let user = KnownUser::new(&r.key(), spec);
                Prepared(PreparedItem::User(Box::new((user, r.origin))))
            }
            _ => Prepared::other(Ok(r)),
        }
    }

    /// [`Compiler::push`] of a prepared item. A policy admitted is kept as compiled, to be
    /// taken again while its file is unchanged. `false`: a policy kept so no longer fits
    /// its scope's regex budget, which only compiling it can explain: compile every file
    /// anew, in a new compiler.
    #[must_use]
    pub fn push_prepared(&mut self, item: &mut Prepared) -> bool {
        match &item.0 {
            PreparedItem::User(user) => self.add_user(user.0.clone(), user.1.clone()),
            PreparedItem::Other(other) => match &**other {
                Ok(r) => {
                    self.memoizing = true;
                    self.add(r);
                    self.memoizing = false;
                    if let (Some(memo), Spec::AccessPolicy(spec)) = (self.memo.take(), &r.spec) {
                        let kept = KeptPolicy {
                            key: r.key(),
                            team: self.team_of(r),
                            origin: r.origin.clone(),
                            dry_run: spec.dry_run,
                            link_targets: self.link_check(r).map(|c| c.2).unwrap_or_default(),
                            memo,
                        };
                        *item = Prepared(PreparedItem::Policy(Box::new(kept)));
                    }
                }
                Err(e) => self.errors.push(e.clone()),
            },
            PreparedItem::Policy(kept) => return self.add_kept(kept),
        }
        true
    }

    /// [`Compiler::add`] of a policy kept as compiled; `false` when its regexes are over
    /// the budget now.
    fn add_kept(&mut self, kept: &KeptPolicy) -> bool {
        let at = |message: String| ConfigError {
            origin: kept.origin.clone(),
            resource: Some(format!("{}/{}", Kind::AccessPolicy.name(), kept.key)),
            field: None,
            message,
        };
        if let Some(first) = self.first_definition(Kind::AccessPolicy, &kept.key) {
            let e = at(format!("defined twice: also at {first}"));
            return {
                self.errors.push(e);
                true
            };
        }
        let seen = (Kind::AccessPolicy, kept.key.clone());
        if let Err(rejection) = self.outside_rebuild(&kept.team) {
            self.seen.insert(seen, kept.origin.clone());
            for e in rejection.errors {
                self.errors.push(ConfigError {
                    field: (!e.field.is_empty()).then_some(e.field),
                    ..at(e.message)
                });
            }
            return true;
        }
        self.compiled += 1;
        let builder = self.builder(kept.team.clone());
        if !builder.regex.repay(&kept.memo.regexes) {
            return false;
        }
        builder.policies.push((
            CompiledPolicy {
                name: kept.key.clone(),
                policy: kept.memo.policy.clone(),
                dry_run: kept.dry_run,
            },
            kept.memo.links.clone(),
        ));
        self.warnings.extend(kept.memo.warnings.iter().cloned());
        if !kept.link_targets.is_empty() {
            let targets = kept.link_targets.clone();
            self.link_checks
                .push((at(String::new()), kept.team.clone(), targets));
        }
        self.seen.insert(seen, kept.origin.clone());
        true
    }

    /// A resource, or the error its source found instead of one.
    pub fn push(&mut self, item: Result<Resource, ConfigError>) {
        match item {
            Ok(mut r) => {
                self.localize(&mut r);
                self.add(&r)
            }
            Err(e) => self.errors.push(e),
        }
    }

    /// A file's resources form one flat configuration, names plain, unless a root
    /// namespace is given: then `metadata.namespace` scopes them as in a cluster.
    /// A Secret reference resolves in the namespace as written: a Secret, and an
    /// introspector with references, keep theirs until resolved
    /// ([`Compiler::add_with_secret_refs`]).
    fn localize(&self, r: &mut Resource) {
        let resolves_later = self.secrets.is_some()
            && match &r.spec {
                Spec::Secret(_) => true,
                Spec::TokenIntrospector(spec) => !spec.secret_refs().is_empty(),
                _ => false,
            };
        if !resolves_later {
            self.flatten(r);
        }
    }

    fn flatten(&self, r: &mut Resource) {
        if self.root_namespace.is_none() && matches!(r.origin, Origin::File { .. }) {
            r.namespace = None;
        }
    }

    fn report(&mut self, r: &Resource, e: FieldError) {
        self.errors.push(error(r, e));
    }

    /// File mode: the resource, or every error in it, to be reported by [`Compiler::finish`].
    pub fn add(&mut self, r: &Resource) {
        let Some(kind) = r.spec.kind() else {
            return self.add_secret(r);
        };
        if let Spec::User(spec) = &r.spec {
            return self.add_user(KnownUser::new(&r.key(), spec), r.origin.clone());
        }
        if let Spec::TokenIntrospector(spec) = &r.spec {
            if self.secrets.is_some() && !spec.secret_refs().is_empty() && !self.finishing {
                return self.with_secret_refs.push(r.clone());
            }
        }
        let contested = matches!(kind, Kind::TokenIntrospector | Kind::IdentityProvider);
        if contested && !self.finishing && self.team_of(r).is_some() {
            return self.deferred.push(r.clone());
        }
        let key = r.key();
        if let Some(first) = self.first_definition(kind, &key) {
            let message = format!("defined twice: also at {first}");
            return self.report(r, FieldError::new("", message));
        }
        if let Spec::TokenIntrospector(spec) = &r.spec {
            // Checked in `finish`, once every IdentityProvider is known.
            if let Ok(Some(idp)) = provider_ref(r, spec) {
                let message = format!("IdentityProvider/{idp} is not defined");
                let e = error(r, FieldError::new("identity_provider", message));
                self.provider_refs.push((idp, e));
            }
        }
        let admitted = self.admit_unchecked(r);
        if admitted.is_ok() {
            self.remember_links(r);
        }
        self.remember(r, key, admitted.is_ok());
        if let Err(rejection) = admitted {
            for e in rejection.errors {
                self.report(r, e);
            }
        }
    }

    /// [`Compiler::push_prepared`] of a User taken out of its [`Prepared`]
    /// ([`Prepared::into_user`]).
    pub fn push_user(&mut self, user: KnownUser, origin: Origin) {
        self.add_user(user, origin)
    }

    /// With the Users taken whole ([`Compiler::keeping_users`]): the Users named `gone`
    /// taken out, each of `changed` put in place of the User of its name, each of `added`
    /// put in, all admitted as [`Compiler::push_user`] admits them; `false` at the first
    /// refused, or added under a name already held (the index then half changed: compile
    /// anew, to report it as a full read does). A User refused here clashes with another
    /// in the end, and so would be refused by a full read too: admitted so, every User is
    /// what a full read admits. Only the order of [`UserIndex::users`] differs (a User
    /// changed keeps its place, one added comes last), which nothing serving reads.
    #[must_use]
    pub fn patch_kept_users<'a>(
        &mut self,
        gone: impl IntoIterator<Item = &'a str>,
        changed: Vec<KnownUser>,
        added: Vec<KnownUser>,
    ) -> bool {
        let users = Arc::make_mut(&mut self.users);
        for name in gone {
            users.remove(name);
        }
        let changed = changed.into_iter().all(|user| {
            debug_assert!(self.users.position(user.name()).is_some());
            self.take_user(user).is_ok()
        });
        changed
            && added.into_iter().all(|user| {
                self.users.position(user.name()).is_none() && self.take_user(user).is_ok()
            })
    }

    /// [`Compiler::add`] of a User, compiled already.
    fn add_user(&mut self, user: KnownUser, origin: Origin) {
        let key = user.name();
        if let Some(first) = self.first_definition(Kind::User, key) {
            let message = format!("defined twice: also at {first}");
            let e = error_at(&origin, &user, FieldError::new("", message));
            return self.errors.push(e);
        }
        match self.take_user(user.clone()) {
            Ok(()) => self.user_origins.push(&origin),
            Err(rejection) => {
                self.users_refused += 1;
                let key = user.name().to_owned();
                self.seen.insert((Kind::User, key), origin.clone());
                for e in rejection.errors {
                    self.errors.push(error_at(&origin, &user, e));
                }
            }
        }
    }

    /// Takes a User in, as [`Compiler::admit_unchecked`] does.
    fn take_user(&mut self, user: KnownUser) -> Result<(), Rejection> {
        let team = team_of(
            self.root_namespace.as_deref(),
            super::namespace_of(user.name()),
        );
        self.outside_rebuild(&team.map(str::to_owned))?;
        self.compiled += 1;
        let serving = self.serving.as_deref().map(|s| &*s.users);
        Ok(users::admit_known(
            Arc::make_mut(&mut self.users),
            serving,
            user,
        )?)
    }

    /// A policy's links, to warn in `finish` of those that name nothing defined: a User
    /// may yet be created (`--create-users`), so it is a warning, not an error.
    fn remember_links(&mut self, r: &Resource) {
        self.link_checks.extend(self.link_check(r));
    }

    /// What [`Compiler::remember_links`] keeps of a policy, if it has links.
    fn link_check(&self, r: &Resource) -> Option<LinkCheck> {
        let Spec::AccessPolicy(spec) = &r.spec else {
            return None;
        };
        let targets: Vec<_> = (spec.link.iter().flatten().enumerate())
            .filter_map(|(i, link)| match (link.target(), &link.issuer) {
                (Ok(("User", name)), None) => {
                    Some((format!("link[{i}]"), Ok(qualified(r.scope(), name))))
                }
                (Ok(("Client", _)), Some(issuer)) => {
                    Some((format!("link[{i}].issuer"), Err(issuer.clone())))
                }
                _ => None,
            })
            .collect();
        if targets.is_empty() {
            return None;
        }
        let at = error(r, FieldError::new("", ""));
        Some((at, self.team_of(r), targets))
    }

    /// Links to Users that are not defined, or to clients of issuers no
    /// TokenIntrospector trusts: the policy can never apply through them.
    fn warn_of_dangling_links(&mut self) {
        for (at, team, targets) in std::mem::take(&mut self.link_checks) {
            for (field, target) in targets {
                let message = match target {
                    Ok(user) if self.users.position(&user).is_none() => format!(
                        "User/{user} is not defined: the policy applies to no one through this \
                         link until that User exists (created with --create-users?)"
                    ),
                    Err(issuer) if !self.trusts(&team, &issuer) => format!(
                        "no TokenIntrospector trusts issuer {issuer:?}: no token can name this \
                         client"
                    ),
                    _ => continue,
                };
                self.warnings.push(ConfigError {
                    field: Some(field),
                    message,
                    ..at.clone()
                });
            }
        }
    }

    /// A warning of the caller's own (an empty configuration), reported with the others.
    pub fn warn(&mut self, warning: ConfigError) {
        self.warnings.push(warning);
    }

    /// A Secret manifest: kept for [`Compiler::offline`], refused otherwise.
    fn add_secret(&mut self, r: &Resource) {
        let Spec::Secret(data) = &r.spec else { return };
        let Some(secrets) = &mut self.secrets else {
            let message = "serve reads no Secrets from files: give the values inline, or \
                           serve --kube; validate, explain and test read Secret manifests \
                           so that Secret references can be checked offline";
            return self.report(r, FieldError::new("kind", message));
        };
        let key = (r.namespace.clone(), r.name.clone());
        if let Some((first, _)) = secrets.get(&key) {
            let message = format!("defined twice: also at {first}");
            return self.report(r, FieldError::new("", message));
        }
        secrets.insert(key, (r.origin.clone(), data.clone()));
    }

    /// The TokenIntrospectors held back by [`Compiler::add`], their references filled from
    /// the Secret manifests, compiled as any other.
    /// The root's first (`teams` false), so that the root wins a conflict.
    fn add_with_secret_refs(&mut self, teams: bool) {
        let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.with_secret_refs)
            .into_iter()
            .partition(|r| self.team_of(r).is_some() == teams);
        self.with_secret_refs = later;
        for mut r in now {
            let Spec::TokenIntrospector(spec) = &mut r.spec else {
                continue;
            };
            let secrets = self.secrets.take().unwrap_or_default();
            let namespace = r.namespace.clone();
            let resolved = spec.resolve_secrets(|k| read_secret(&secrets, &namespace, k));
            self.secrets = Some(secrets);
            self.flatten(&mut r);
            match resolved {
                Ok(()) => self.add(&r),
                Err((field, problem)) => {
                    let message = match problem {
                        SecretProblem::Both => checks::BOTH_INLINE_AND_REFERENCE.to_string(),
                        SecretProblem::Read(message) => message,
                    };
                    self.report(&r, FieldError::new(field, message));
                }
            }
        }
    }

    /// Where a resource of this kind and name was defined before, if it was.
    fn first_definition(&self, kind: Kind, key: &str) -> Option<Origin> {
        let user = (kind == Kind::User)
            .then(|| self.users.position(key))
            .flatten();
        match user {
            Some(position) => self.user_origins.get(position),
            // A User is in `seen` only once refused: spare 100,000 lookups their key's copy.
            None if kind == Kind::User && self.users_refused == 0 => None,
            None => self.seen.get(&(kind, key.to_owned())).cloned(),
        }
    }

    /// Records where `r` was defined, once it was admitted (`taken`) or refused.
    fn remember(&mut self, r: &Resource, key: String, taken: bool) {
        if taken && matches!(r.spec, Spec::User(_)) {
            self.user_origins.push(&r.origin);
            debug_assert_eq!(self.user_origins.places.len(), self.users.len());
        } else {
            if let Some(kind) = r.spec.kind() {
                self.users_refused += usize::from(kind == Kind::User);
                self.seen.insert((kind, key), r.origin.clone());
            }
        }
    }

    /// Kubernetes mode: takes the resource in whole, or leaves the compiler as it was and
    /// says why. Admit IdentityProviders before the TokenIntrospectors that reference them,
    /// and the older of two conflicting resources first: the first one in wins.
    pub fn admit(&mut self, r: &Resource) -> Result<(), Rejection> {
        let key = r.key();
        let Some(kind) = r.spec.kind() else {
            let message = "a Secret is not a resource of portcullis";
            return Err(Rejection::invalid(vec![FieldError::new("kind", message)]));
        };
        if let Spec::User(spec) = &r.spec {
            return self.admit_user(KnownUser::new(&key, spec), &r.origin);
        }
        if self.first_definition(kind, &key).is_some() {
            let message = format!("{} is defined twice", r.id());
            return Err(Rejection::conflict("metadata.name", message));
        }
        if let Spec::TokenIntrospector(spec) = &r.spec {
            if let Ok(Some(idp)) = provider_ref(r, spec) {
                if !self.knows_provider(&idp) {
                    let message = format!("IdentityProvider/{idp} is not defined");
                    return Err(Rejection::invalid(vec![FieldError::new(
                        "identity_provider",
                        message,
                    )]));
                }
            }
        }
        self.admit_unchecked(r)?;
        self.remember(r, key, true);
        Ok(())
    }

    /// [`Compiler::admit`] of a User in its one form (its [`KnownUser::name`] the key), as
    /// the cluster keeps it: the same checks and the same refusals, with no spec to read.
    pub fn admit_user(&mut self, user: KnownUser, origin: &Origin) -> Result<(), Rejection> {
        if self.first_definition(Kind::User, user.name()).is_some() {
            let message = format!("User/{} is defined twice", user.name());
            return Err(Rejection::conflict("metadata.name", message));
        }
        self.take_user(user)?;
        self.user_origins.push(origin);
        Ok(())
    }

    /// Who else holds `introspector`'s issuer where the two would collide: the root (for
    /// a team's introspector: the root always wins), or the introspector's own scope, as
    /// compiled so far or as it serves (the admission webhook).
    fn issuer_conflict(
        &self,
        team: &Option<String>,
        introspector: &Introspector,
    ) -> Option<String> {
        let root = match (team, self.root_scope()) {
            (None, _) => None,
            (Some(_), RootScope::Building(b)) => b.trust.conflict(introspector),
            (Some(_), RootScope::Kept(s)) => s.trust.conflict(introspector),
            (Some(_), RootScope::Empty) => None,
        };
        let root =
            root.map(|c| format!("{c}, of the root namespace, which every namespace shares"));
        let serving = self.serving.as_deref().and_then(|s| {
            let root = team
                .as_ref()
                .and_then(|_| s.root.trust.conflict(introspector));
            let own = s.scope(introspector_namespace(introspector));
            root.or_else(|| own.and_then(|scope| scope.trust.conflict(introspector)))
        });
        root.or(serving)
    }

    /// The IdentityProvider (other than `key`) that holds `system` where the two would
    /// collide: in the root, for a team's provider, or in the provider's own scope.
    fn system_holder(&self, team: &Option<String>, system: &str, key: &str) -> Option<String> {
        let holds =
            |p: &&Arc<CompiledProvider>| p.spec.system.as_deref() == Some(system) && p.name != key;
        let in_root = match (team, self.root_scope()) {
            (None, _) | (Some(_), RootScope::Empty) => None,
            (Some(_), RootScope::Building(b)) => b.systems.get(system).cloned(),
            (Some(_), RootScope::Kept(s)) => s
                .identity_providers
                .values()
                .find(holds)
                .map(|p| p.name.clone()),
        };
        let own = (self.scopes.get(team)).and_then(|b| b.systems.get(system).cloned());
        let serving = self.serving.as_deref().and_then(|s| {
            let mut scopes = vec![s.scope(super::namespace_of(key))];
            if team.is_some() {
                scopes.push(Some(&s.root));
            }
            scopes
                .into_iter()
                .flatten()
                .find_map(|scope| scope.identity_providers.values().find(holds))
                .map(|p| p.name.clone())
        });
        in_root.or(own).or(serving)
    }

    /// Refuses what belongs to a scope that this rebuild keeps as it is.
    fn outside_rebuild(&self, team: &Option<String>) -> Result<(), Rejection> {
        if self.kept.is_some() && !self.scopes.contains_key(team) {
            return Err(kept_scope());
        }
        Ok(())
    }

    /// Takes the resource in when nothing is wrong with it; otherwise changes nothing.
    fn admit_unchecked(&mut self, r: &Resource) -> Result<(), Rejection> {
        let key = r.key();
        let team = self.team_of(r);
        self.outside_rebuild(&team)?;
        if r.spec.kind().is_some() {
            self.compiled += 1;
        }
        match &r.spec {
            Spec::IdentityProvider(spec) => {
                // Users are keyed by (namespace, system, sub): two providers of one
                // namespace sharing a system would merge their subjects into one another's
                // Users. The root's system is its own: a team's provider may not take it.
                if let Some(system) = spec.system.as_deref() {
                    if let Some(other) = self.system_holder(&team, system, &key) {
                        let message =
                            format!("{system:?} is already the system of IdentityProvider/{other}");
                        return Err(Rejection::conflict("system", message));
                    }
                    (self.builder(team.clone()).systems).insert(system.to_owned(), key.clone());
                }
                self.builder(team).identity_providers.insert(
                    key.clone(),
                    Arc::new(CompiledProvider {
                        name: key,
                        spec: spec.clone(),
                    }),
                );
            }
            Spec::TokenIntrospector(spec) => {
                let mut introspector =
                    Introspector::compile(&key, spec).map_err(Rejection::invalid)?;
                if let Ok(Some(idp)) = provider_ref(r, spec) {
                    introspector.identity_provider = Some(idp);
                }
                if let Some(conflict) = self.issuer_conflict(&team, &introspector) {
                    return Err(Rejection::conflict("jwt.iss", conflict));
                }
                (self.builder(team).trust)
                    .insert(introspector)
                    .map_err(|e| Rejection::conflict("jwt.iss", e))?;
            }
            Spec::AccessPolicy(spec) => {
                let links = match spec.link.as_deref().map(links).transpose() {
                    Ok(l) => l.unwrap_or_default(),
                    Err(e) => return Err(Rejection::invalid(vec![e])),
                }
                .in_namespace(r.scope());
                let memoizing = self.memoizing;
                let budget = &mut self.builder(team.clone()).regex;
                let body = spec.body();
                if memoizing {
                    budget.record();
                }
                let compiled = crate::policy::compile_within(&body, budget);
                let regexes = budget.take_record();
                let policy = Arc::new(compiled.map_err(|es| {
                    Rejection::invalid(
                        es.into_iter()
                            .map(|e| FieldError::new(e.path, e.message))
                            .collect(),
                    )
                })?);
                let warnings = policy_warnings(r, spec, &body, &links, &policy);
                self.warnings.extend(warnings.iter().cloned());
                (self.builder(team).policies).push((
                    CompiledPolicy {
                        name: key,
                        policy: policy.clone(),
                        dry_run: spec.dry_run,
                    },
                    links.clone(),
                ));
                if memoizing {
                    self.memo = Some(PolicyMemo {
                        policy,
                        links,
                        regexes,
                        warnings,
                    });
                }
            }
            Spec::User(spec) => {
                let serving = self.serving.as_deref().map(|s| &*s.users);
                users::admit(Arc::make_mut(&mut self.users), serving, &key, spec)?
            }
            Spec::Secret(_) => {
                let message = "a Secret is not a resource of portcullis";
                return Err(Rejection::invalid(vec![FieldError::new("kind", message)]));
            }
        }
        Ok(())
    }

    /// A resource from the directory of created Users (`--users-dir`). portcullis writes
    /// those files itself: one that is corrupt, misnamed, a duplicate or not a User is
    /// skipped and reported in [`Snapshot::skipped`], never a reason to refuse the whole
    /// configuration (nor, at start-up, to never become ready). Push these after every
    /// other resource, so that a User the configuration defines always wins.
    pub fn push_created_user(&mut self, item: Result<Resource, ConfigError>) {
        let prepared = self.prepare_created(item);
        self.push_created_prepared(&prepared)
    }

    /// [`Compiler::prepare`] of an item of the directory of created Users: what is not a
    /// User in a file of its name is kept as the error that passes it over.
    pub fn prepare_created(&self, item: Result<Resource, ConfigError>) -> Prepared {
        let mut r = match item {
            Ok(r) => r,
            Err(e) => return Prepared::other(Err(e)),
        };
        self.localize(&mut r);
        let skip = |field: &str, message: String| {
            Prepared::other(Err(error(&r, FieldError::new(field, message))))
        };
        let Spec::User(spec) = &r.spec else {
            let message = format!(
                "holds a {}: only Users are read from here",
                r.spec.kind_name()
            );
            return skip("", message);
        };
        if let Origin::File { path, .. } = &r.origin {
            if path.file_stem().and_then(|s| s.to_str()) != Some(r.name.as_str()) {
                let message = format!("a created User lives in {}.yaml", r.name);
                return skip("metadata.name", message);
            }
        }
        let user = KnownUser::new(&r.key(), spec);
        Prepared(PreparedItem::User(Box::new((user, r.origin))))
    }

    /// [`Compiler::push_created_user`] of an item from [`Compiler::prepare_created`].
    pub fn push_created_prepared(&mut self, item: &Prepared) {
        let (user, origin) = match &item.0 {
            PreparedItem::User(user) => (&user.0, &user.1),
            PreparedItem::Other(other) => match &**other {
                Err(e) => return self.skipped.push(e.clone()),
                // Not from `prepare_created`, which leaves no other resource: judged as it would.
                Ok(r) => return self.push_created_user(Ok(r.clone())),
            },
            PreparedItem::Policy(kept) => {
                let message = "holds a AccessPolicy: only Users are read from here";
                return self.skipped.push(ConfigError {
                    origin: kept.origin.clone(),
                    resource: Some(format!("{}/{}", Kind::AccessPolicy.name(), kept.key)),
                    field: None,
                    message: message.into(),
                });
            }
        };
        if let Some(first) = self.first_definition(Kind::User, user.name()) {
            let message = format!("defined twice: also at {first}");
            let e = error_at(origin, user, FieldError::new("", message));
            return self.skipped.push(e);
        }
        match self.take_user(user.clone()) {
            Ok(()) => self.user_origins.push(origin),
            Err(rejection) => {
                for e in rejection.errors {
                    self.skipped.push(error_at(origin, user, e));
                }
            }
        }
    }

    /// File mode: the snapshot, or every error found.
    pub fn finish(self) -> Result<Snapshot, Vec<ConfigError>> {
        self.finish_with_warnings().0
    }

    /// [`Compiler::finish`], and the warnings, which a refused configuration has too.
    pub fn finish_with_warnings(
        mut self,
    ) -> (Result<Snapshot, Vec<ConfigError>>, Vec<ConfigError>) {
        self.finishing = true;
        self.add_with_secret_refs(false);
        for r in std::mem::take(&mut self.deferred) {
            self.add(&r);
        }
        self.add_with_secret_refs(true);
        self.warn_of_dangling_links();
        let warnings = self.warnings.clone();
        let mut errors = self.errors.clone();
        for (idp, e) in &self.provider_refs {
            if !self.knows_provider(idp) {
                errors.push(e.clone());
            }
        }
        if !errors.is_empty() {
            return (Err(errors), warnings);
        }
        (Ok(self.into_snapshot()), warnings)
    }

    /// What [`Compiler::admit`] took in.
    pub fn into_snapshot(mut self) -> Snapshot {
        if let Some(users) = Arc::get_mut(&mut self.users) {
            users.shrink_to_fit();
        }
        let root = match (self.scopes.remove(&None), &self.kept) {
            (Some(b), _) => Arc::new(b.build(None)),
            (None, Some(kept)) => kept.root.clone(),
            (None, None) => Arc::new(ScopeBuilder::new(self.regex_budget()).build(None)),
        };
        let mut namespaces: HashMap<String, Arc<Scope>> = match &self.kept {
            Some(kept) => (kept.namespaces.iter())
                .filter(|(ns, _)| !self.scopes.contains_key(&Some(ns.to_string())))
                .map(|(ns, s)| (ns.clone(), s.clone()))
                .collect(),
            None => HashMap::new(),
        };
        let rebuilt: std::collections::HashSet<String> =
            self.scopes.keys().flatten().cloned().collect();
        for (team, b) in self.scopes {
            let scope = b.build(Some(&root));
            if let (Some(team), false) = (team, scope.is_empty()) {
                namespaces.insert(team, Arc::new(scope));
            }
        }
        let mut warnings = self.warnings;
        if let Some(kept) = &self.kept {
            // The kept scopes' warnings stand; those of the scopes compiled anew are new.
            let kept_scope = |w: &&ConfigError| {
                let namespace = w.resource.as_deref().and_then(|r| r.split('/').nth(1));
                namespace.is_none_or(|ns| !rebuilt.contains(ns))
            };
            warnings.extend(kept.warnings.iter().filter(kept_scope).cloned());
        }
        Snapshot {
            root,
            namespaces: Arc::new(namespaces),
            root_namespace: self.root_namespace,
            users: self.users,
            users_on_demand: false,
            warnings,
            skipped: self.skipped,
        }
    }

    /// Only the Users, for a snapshot whose other kinds stay as they are.
    pub fn into_users(self) -> UserIndex {
        let mut users = Arc::unwrap_or_clone(self.users);
        users.shrink_to_fit();
        users
    }
}

/// The root's scope, while a compiler builds it or keeps it.
enum RootScope<'a> {
    Building(&'a ScopeBuilder),
    Kept(&'a Scope),
    Empty,
}

/// The namespace of an introspector, from its qualified name.
fn introspector_namespace(introspector: &Introspector) -> Option<&str> {
    super::namespace_of(&introspector.name)
}

/// Where Users were defined, in 12 bytes each rather than an [`Origin`]'s 32.
#[derive(Default)]
struct UserOrigins {
    /// The files, each once; a cluster origin is `u32::MAX`.
    paths: Vec<Arc<std::path::Path>>,
    /// (path, document, line), or (`u32::MAX`, generation's low and high halves).
    places: Vec<(u32, u32, u32)>,
}

impl UserOrigins {
    fn push(&mut self, origin: &Origin) {
        let place = match origin {
            Origin::File {
                path,
                document,
                line,
            } => {
                if !self.paths.last().is_some_and(|p| Arc::ptr_eq(p, path)) {
                    self.paths.push(path.clone());
                }
                let n = |x: usize| u32::try_from(x).unwrap_or(u32::MAX);
                (n(self.paths.len() - 1), n(*document), n(*line))
            }
            Origin::Cluster { generation } => {
                (u32::MAX, *generation as u32, (*generation >> 32) as u32)
            }
        };
        self.places.push(place);
    }

    fn get(&self, position: usize) -> Option<Origin> {
        let &(path, a, b) = self.places.get(position)?;
        Some(match self.paths.get(path as usize) {
            Some(path) => Origin::File {
                path: path.clone(),
                document: a as usize,
                line: b as usize,
            },
            None => Origin::Cluster {
                generation: (i64::from(b) << 32) | i64::from(a),
            },
        })
    }
}

/// The fields, below a `request-method` key, of string values with an upper-case letter:
/// policies see the method in lower case, as Aidbox does. Regular expressions (`#...`) are
/// passed over: `(?i)` may be meant.
fn upper_case_methods(
    value: &serde_json::Value,
    path: String,
    method: bool,
    out: &mut Vec<String>,
) {
    use serde_json::Value;
    match value {
        Value::String(s)
            if method && !s.starts_with('#') && s.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            out.push(path)
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                upper_case_methods(item, format!("{path}[{i}]"), method, out);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                let at = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                upper_case_methods(v, at, method || k == "request-method", out);
            }
        }
        _ => {}
    }
}

/// The value a Secret reference of a resource in `namespace` names, from the Secret
/// manifests read; the message never holds a value.
fn read_secret(
    secrets: &Secrets,
    namespace: &Option<String>,
    r: &SecretKeyRef,
) -> Result<String, String> {
    let shown = qualified(namespace.as_deref(), &r.name);
    let (_, data) = secrets
        .get(&(namespace.clone(), r.name.clone()))
        .ok_or_else(|| {
            format!(
                "unresolved: no Secret manifest {shown} among the --config files (a reference \
                 resolves in the resource's own namespace); give the Secret beside it"
            )
        })?;
    let value = data
        .values
        .get(&r.key)
        .ok_or_else(|| format!("unresolved: Secret {shown} has no key {:?}", r.key))?;
    String::from_utf8(value.clone())
        .map_err(|_| format!("Secret {shown}, key {:?}: not UTF-8 text", r.key))
}

/// A resource of a scope that a rebuild keeps as it is ([`Compiler::rebuilding`]).
fn kept_scope() -> Rejection {
    let message = "compiled in a scope that this rebuild keeps as it is";
    Rejection::invalid(vec![FieldError::new("metadata.namespace", message)])
}

/// A User refused by [`users::admit`], as the status and `validate` report it.
impl From<users::Refused> for Rejection {
    fn from(refused: users::Refused) -> Self {
        match refused {
            users::Refused::TooLarge => {
                Rejection::invalid(vec![FieldError::new("", refused.to_string())])
            }
            users::Refused::IdentifierHeld { .. } => {
                Rejection::conflict("identifier", refused.to_string())
            }
        }
    }
}

/// The IdentityProvider a TokenIntrospector names, as the snapshot knows it (in the
/// introspector's namespace). A malformed reference is the introspector's own error.
fn provider_ref(r: &Resource, spec: &TokenIntrospectorSpec) -> Result<Option<String>, String> {
    match spec
        .identity_provider
        .as_ref()
        .map(|p| p.target())
        .transpose()?
    {
        Some(("IdentityProvider", name)) => Ok(Some(qualified(r.scope(), name))),
        _ => Ok(None),
    }
}

fn error(r: &Resource, e: FieldError) -> ConfigError {
    ConfigError {
        origin: r.origin.clone(),
        resource: Some(r.id()),
        field: (!e.field.is_empty()).then_some(e.field),
        message: e.message,
    }
}

/// [`error`] of a User compiled already.
fn error_at(origin: &Origin, user: &KnownUser, e: FieldError) -> ConfigError {
    ConfigError {
        origin: origin.clone(),
        resource: Some(format!("{}/{}", Kind::User.name(), user.name())),
        field: (!e.field.is_empty()).then_some(e.field),
        message: e.message,
    }
}

/// What a compiled policy is likely a mistake in: allowing every request unlinked, or
/// naming request methods in upper case.
fn policy_warnings(
    r: &Resource,
    spec: &crate::resources::AccessPolicySpec,
    body: &serde_json::Value,
    links: &Links,
    policy: &crate::policy::Policy,
) -> Vec<ConfigError> {
    let mut warnings = Vec::new();
    let unlinked = links.users.is_empty() && links.clients.is_empty();
    if unlinked && spec.engine != PolicyEngine::Allow && policy.allows_every_request() {
        let field = match spec.engine {
            PolicyEngine::Matcho => "matcho",
            PolicyEngine::JsonSchema => "schema",
            _ => "engine",
        };
        warnings.push(error(
            r,
            FieldError::new(
                field,
                "allows every request, with or without a token; \
                 say so with `engine: allow` if that is meant",
            ),
        ));
    }
    let mut upper = Vec::new();
    upper_case_methods(body, String::new(), false, &mut upper);
    for field in upper {
        warnings.push(error(
            r,
            FieldError::new(
                field,
                "request methods are lower case (`get`, `post`): this upper-case \
                 value never matches",
            ),
        ));
    }
    warnings
}

fn links(refs: &[crate::resources::Link]) -> Result<Links, FieldError> {
    if refs.is_empty() {
        // Read as "no link" this would apply the policy to everyone: say what was meant.
        return Err(FieldError::new("link", checks::LINK_NOT_EMPTY.message));
    }
    if refs.len() > checks::MAX_LINKS {
        let why = format!("{} links: at most {}", refs.len(), checks::MAX_LINKS);
        return Err(FieldError::new("link", why));
    }
    let mut links = Links::default();
    for (i, r) in refs.iter().enumerate() {
        let field = || format!("link[{i}]");
        match (
            r.target().map_err(|e| FieldError::new(field(), e))?,
            &r.issuer,
        ) {
            (("User", _), Some(_)) => {
                return Err(FieldError::new(
                    format!("link[{i}].issuer"),
                    checks::LINK_USER_NO_ISSUER.message,
                ))
            }
            (("User", name), None) => links.users.push(name.to_string()),
            (("Client", id), Some(issuer)) if !issuer.is_empty() => {
                links.clients.push((issuer.clone(), id.to_string()))
            }
            (("Client", _), _) => {
                // Any trusted issuer can mint a token naming any client id: the link must
                // say whose tokens name this client.
                return Err(FieldError::new(
                    format!("link[{i}].issuer"),
                    checks::LINK_CLIENT_ISSUER.message,
                ));
            }
            (_, _) => return Err(FieldError::new(field(), checks::LINK_KIND.message)),
        }
    }
    Ok(links)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{for_each_document, parse_documents};
    use crate::users::MAX_USER_BYTES;
    use std::path::Path;

    fn compile_text(text: &str) -> Result<Snapshot, Vec<ConfigError>> {
        let (resources, errors) = parse_documents(Path::new("c.yaml"), text);
        assert!(errors.is_empty(), "{errors:?}");
        compile(&resources)
    }

    #[test]
    fn compiles_the_quickstart_shapes() {
        let s = compile_text(
            "resourceType: TokenIntrospector\nid: t\ntype: jwt\njwt: {iss: https://a, secret: s}\n---\n\
             resourceType: AccessPolicy\nid: p\nengine: allow\n---\n\
             resourceType: User\nid: u\ndata: {sub: u}\n",
        )
        .unwrap();
        assert!(s.root.trust.for_issuer("https://a").is_some());
        assert_eq!(s.root.policies.len(), 1);
        assert!(s.users.by_name("u").is_some());
    }

    fn offline(text: &str) -> (Result<Snapshot, Vec<ConfigError>>, Vec<String>) {
        let mut compiler = Compiler::offline();
        for_each_document(Path::new("c.yaml"), text, |item| compiler.push(item));
        let (compiled, warnings) = compiler.finish_with_warnings();
        (compiled, warnings.iter().map(ToString::to_string).collect())
    }

    const SECRET_REF: &str = "apiVersion: portcullis.dev/v1alpha1\nkind: TokenIntrospector\n\
        metadata: {name: t, namespace: ns}\n\
        spec: {type: jwt, jwt: {iss: https://a, secretRef: {name: hmac, key: k}}}\n";

    #[test]
    fn secret_references_resolve_from_secret_manifests_offline() {
        let secret = "---\napiVersion: v1\nkind: Secret\nmetadata: {name: hmac, namespace: ns}\n\
                      stringData: {k: sup3r-s3cret}\n";
        let (compiled, _) = offline(&format!("{SECRET_REF}{secret}"));
        let s = compiled.unwrap();
        assert!(s.root.trust.for_issuer("https://a").is_some());

        // In another namespace, or without the key: unresolved, and nothing else.
        let elsewhere = secret.replace("namespace: ns", "namespace: other");
        let errs = offline(&format!("{SECRET_REF}{elsewhere}")).0.unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].to_string().starts_with(
                "c.yaml:1 (document 1): TokenIntrospector/t: field `jwt.secretRef`: \
                 unresolved: no Secret manifest ns/hmac"
            ),
            "{}",
            errs[0]
        );
        let no_key = secret.replace("{k:", "{other:");
        let errs = offline(&format!("{SECRET_REF}{no_key}")).0.unwrap_err();
        assert!(errs[0].message.contains("has no key \"k\""), "{errs:?}");
        assert!(!format!("{errs:?}").contains("sup3r"), "{errs:?}");
    }

    #[test]
    fn serve_refuses_secret_references_and_secrets_without_follow_on_errors() {
        let secret = "---\napiVersion: v1\nkind: Secret\nmetadata: {name: hmac, namespace: ns}\n\
                      stringData: {k: v}\n";
        let mut compiler = Compiler::default();
        for_each_document(
            Path::new("c.yaml"),
            &format!("{SECRET_REF}{secret}"),
            |item| compiler.push(item),
        );
        let errs = compiler.finish().unwrap_err();
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(errs.len(), 2, "{text:#?}");
        assert!(text[0].contains("field `jwt.secretRef`: Secret references are read only"));
        assert!(text[1].contains("Secret/hmac: field `kind`: serve reads no Secrets"));
    }

    #[test]
    fn warns_of_dangling_links_and_upper_case_methods_beside_errors() {
        let (compiled, warnings) = offline(
            "resourceType: AccessPolicy\nid: p\nengine: matcho\n\
             matcho: {request-method: GET, uri: '#^/a'}\nlink: [{reference: User/ghost}, \
             {reference: Client/c, issuer: https://nobody}]\n---\n\
             resourceType: AccessPolicy\nid: q\nengine: matcho\n\
             matcho: {request-method: {$one-of: [get, Post]}}\n---\n\
             resourceType: TokenIntrospector\nid: broken\ntype: nope\n",
        );
        assert_eq!(compiled.unwrap_err().len(), 1);
        assert_eq!(warnings.len(), 4, "{warnings:#?}");
        let has = |needle: &str| warnings.iter().any(|w| w.contains(needle));
        assert!(
            has("AccessPolicy/p: field `matcho.request-method`: request methods are lower case"),
            "{warnings:#?}"
        );
        assert!(
            has("AccessPolicy/q: field `matcho.request-method.$one-of[1]`"),
            "{warnings:#?}"
        );
        assert!(
            has("AccessPolicy/p: field `link[0]`: User/ghost is not defined"),
            "{warnings:#?}"
        );
        assert!(has("AccessPolicy/p: field `link[1].issuer`: no TokenIntrospector trusts issuer \"https://nobody\""), "{warnings:#?}");
    }

    #[test]
    fn reports_every_error_with_resource_and_field() {
        let errs = compile_text(
            "resourceType: TokenIntrospector\nid: both\ntype: jwt\njwt: {iss: https://a, secret: s}\njwks_uri: https://a/jwks\n---\n\
             resourceType: TokenIntrospector\nid: dup-iss\ntype: jwt\njwt: {iss: https://b, secret: s}\n---\n\
             resourceType: TokenIntrospector\nid: dup-iss2\ntype: jwt\njwt: {iss: https://b, secret: s}\n---\n\
             resourceType: TokenIntrospector\nid: idp\ntype: jwt\njwt: {iss: https://c, secret: s}\nidentity_provider: {reference: IdentityProvider/nope}\n---\n\
             resourceType: AccessPolicy\nid: l\nengine: allow\nlink: [{reference: Patient/x}]\n---\n\
             resourceType: User\nid: u\n---\nresourceType: User\nid: u\n---\n\
             resourceType: IdentityProvider\nid: kc1\nsystem: keycloak\n---\n\
             resourceType: IdentityProvider\nid: kc2\nsystem: keycloak\n",
        )
        .unwrap_err();
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        let has = |needle: &str| text.iter().any(|t| t.contains(needle));
        assert!(
            has("TokenIntrospector/both: field `jwt.secret`: set exactly one"),
            "{text:#?}"
        );
        assert!(has("TokenIntrospector/dup-iss2: field `jwt.iss`: issuer \"https://b\" is already trusted by TokenIntrospector/dup-iss"), "{text:#?}");
        assert!(has("TokenIntrospector/idp: field `identity_provider`: IdentityProvider/nope is not defined"), "{text:#?}");
        assert!(has("AccessPolicy/l: field `link[0]`"), "{text:#?}");
        assert!(has("User/u: defined twice: also at c.yaml:"), "{text:#?}");
        assert!(has("IdentityProvider/kc2: field `system`: \"keycloak\" is already the system of IdentityProvider/kc1"), "{text:#?}");
        assert_eq!(errs.len(), 6, "{text:#?}");
    }

    #[test]
    fn a_provider_may_be_defined_after_the_introspector_that_names_it() {
        let s = compile_text(
            "resourceType: TokenIntrospector\nid: t\ntype: jwt\njwt: {iss: https://a, secret: s}\nidentity_provider: {reference: IdentityProvider/kc}\n---\n\
             resourceType: IdentityProvider\nid: kc\nsystem: keycloak\n",
        )
        .unwrap();
        assert!(s.root.identity_providers.contains_key("kc"));
    }

    /// What `serve` and `validate` do: parse errors and compile errors come out of one pass,
    /// in file order, and either rejects the whole set.
    #[test]
    fn streaming_reports_parse_and_compile_errors_together() {
        let text = "resourceType: AccessPolicy\nid: p\nengine: matcho\nmatcho: {uri: '#('}\n---\n\
                    resourceType: Nonsense\nid: x\n---\n\
                    resourceType: User\nid: u\n";
        let mut compiler = Compiler::default();
        for_each_document(Path::new("c.yaml"), text, |item| compiler.push(item));
        let errs = compiler.finish().unwrap_err();
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(errs.len(), 2, "{text:#?}");
        assert!(text[0].contains("AccessPolicy/p") && text[0].contains("invalid regex"));
        assert!(text[1].contains("c.yaml:6") && text[1].contains("Nonsense"));
    }

    /// `link: []` once counted as "no link": a policy meant for nobody applied to everyone.
    #[test]
    fn refuses_empty_links_and_client_links_without_issuer() {
        let errs = compile_text(
            "resourceType: AccessPolicy\nid: empty\nengine: allow\nlink: []\n---\n\
             resourceType: AccessPolicy\nid: any-issuer\nengine: allow\nlink: [{reference: Client/app}]\n---\n\
             resourceType: AccessPolicy\nid: user-issuer\nengine: allow\nlink: [{reference: User/u, issuer: https://a}]\n",
        )
        .unwrap_err();
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(errs.len(), 3, "{text:#?}");
        assert!(
            text[0].contains("AccessPolicy/empty: field `link`: empty"),
            "{text:#?}"
        );
        assert!(
            text[1].contains("AccessPolicy/any-issuer: field `link[0].issuer`: required"),
            "{text:#?}"
        );
        assert!(
            text[2]
                .contains("AccessPolicy/user-issuer: field `link[0].issuer`: only a Client link"),
            "{text:#?}"
        );
        // A misspelt field of a link is refused, not ignored.
        let (_, errors) = parse_documents(
            Path::new("c.yaml"),
            "resourceType: AccessPolicy\nid: typo\nengine: allow\nlink: [{reference: Client/app, isuer: https://a}]\n",
        );
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].to_string().contains("isuer"), "{errors:?}");
        let ok = compile_text(
            "resourceType: AccessPolicy\nid: app\nengine: allow\n\
             link: [{reference: Client/app, issuer: https://a}, {resourceType: User, id: u}]\n",
        );
        assert!(ok.is_ok(), "{:?}", ok.err());
    }

    #[test]
    fn warns_of_policies_that_allow_every_request() {
        let s = compile_text(
            "resourceType: AccessPolicy\nid: open-matcho\nengine: matcho\nmatcho: {}\n---\n\
             resourceType: AccessPolicy\nid: open-schema\nengine: json-schema\nschema: true\n---\n\
             resourceType: AccessPolicy\nid: open-schema-doc\nengine: json-schema\nschema: {description: all}\n---\n\
             resourceType: AccessPolicy\nid: open-or\nengine: complex\n\
             or: [{engine: matcho, matcho: {uri: /x}}, {engine: json-schema, schema: {}}]\n---\n\
             resourceType: AccessPolicy\nid: said-so\nengine: allow\n---\n\
             resourceType: AccessPolicy\nid: linked\nengine: matcho\nmatcho: {}\nlink: [{reference: User/u}]\n---\n\
             resourceType: AccessPolicy\nid: narrow\nengine: complex\n\
             and: [{engine: matcho, matcho: {}}, {engine: matcho, matcho: {uri: /x}}]\n---\n\
             resourceType: AccessPolicy\nid: narrow-schema\nengine: json-schema\nschema: {required: [jwt]}\n---\n\
             resourceType: User\nid: u\n",
        )
        .unwrap();
        let warned: Vec<(&str, Option<&str>)> = s
            .warnings
            .iter()
            .map(|w| (w.resource.as_deref().unwrap(), w.field.as_deref()))
            .collect();
        assert_eq!(
            warned,
            [
                ("AccessPolicy/open-matcho", Some("matcho")),
                ("AccessPolicy/open-schema", Some("schema")),
                ("AccessPolicy/open-schema-doc", Some("schema")),
                ("AccessPolicy/open-or", Some("engine")),
            ]
        );
        assert!(s.warnings[0].message.contains("allows every request"));
    }

    #[test]
    fn refuses_a_user_over_the_size_limit() {
        let big = "x".repeat(MAX_USER_BYTES);
        let errs = compile_text(&format!(
            "resourceType: User\nid: big\ndata: {{blob: {big}}}\n"
        ))
        .unwrap_err();
        assert_eq!(errs.len(), 1);
        assert!(errs[0]
            .to_string()
            .contains("User/big: larger than 1048576 bytes"));
    }

    #[test]
    fn rejects_keys_that_do_not_fit_their_algorithm() {
        let errs = compile_text(
            "resourceType: TokenIntrospector\nid: k\ntype: jwt\njwt:\n  iss: https://a\n  keys:\n  - {kty: RSA, alg: HS256, k: x, format: plain}\n  - {kty: RSA, alg: RS256, pub: nonsense}\n",
        )
        .unwrap_err();
        assert_eq!(errs[0].field.as_deref(), Some("jwt.keys[0].alg"));
        assert_eq!(errs[1].field.as_deref(), Some("jwt.keys[1].pub"));
        assert!(
            !errs[1].message.contains("nonsense"),
            "key material must not be echoed"
        );
    }
}
