//! AccessPolicy engines: `allow`, `matcho`, `json-schema` and `complex`.
//!
//! A policy body is compiled once when configuration loads ([`compile`]) and evaluated per
//! request against the request context ([`EvalContext`]). Compilation reports every problem
//! it finds, each with its path inside the body, so a bad resource is rejected with all its
//! mistakes at once instead of one per reload.
//!
//! Decisions where Aidbox's docs are silent (see also `matcho.rs` and `json_schema.rs`):
//! - numbers compare by value: `1 == 1.0`; integers compare exactly, an integer and a float
//!   compare exactly when the float is integral, otherwise as `f64`;
//! - in equality an absent value counts as `null`;
//! - [`Explanation`]s never carry the credential headers (`authorization`,
//!   `proxy-authorization`, `cookie`): the request context holds them redacted already, and
//!   an explanation replaces whatever it finds there by `[redacted]` again, because
//!   explanations end up in logs.

use std::sync::OnceLock;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::resources::checks;
use crate::resources::{is_credential_header, REDACTED};

mod budget;
mod cost;
mod json_schema;
mod matcho;
mod pattern;

pub use budget::{RegexBudget, DEFAULT_MAX_REGEX_BYTES};
pub use cost::Cost;

#[cfg(test)]
mod tests;

use json_schema::JsonSchema;
use matcho::Matcho;

/// The engines a policy body may name, in the order error messages list them.
pub const ENGINES: [&str; 4] = ["allow", "matcho", "json-schema", "complex"];

/// A compiled AccessPolicy body. Built once when configuration loads; evaluated per request.
#[derive(Debug)]
pub struct Policy {
    kind: Kind,
    /// Where in the request context its nodes apply: what one evaluation may cost.
    cost: Cost,
}

#[derive(Debug)]
enum Kind {
    Allow,
    Matcho(Matcho),
    JsonSchema(Box<JsonSchema>),
    And(Vec<Policy>),
    Or(Vec<Policy>),
}

/// A problem found while compiling a policy body.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct PolicyError {
    /// Where in the body, e.g. `matcho.headers.x-role`, `and[1].schema`, `matcho.uri ($one-of)`.
    pub path: String,
    pub message: String,
}

impl PolicyError {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Why a policy allowed or denied a request.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub allowed: bool,
    pub engine: &'static str,
    /// What did not match; empty when allowed.
    pub errors: Vec<Mismatch>,
    /// Sub-policies of a `complex` policy, in order, up to the one that decided (short-circuit).
    pub children: Vec<Explanation>,
    /// Matches that passed for a reason users trip on (`null = null` through a `.path`
    /// reference, `$not` on an absent field). Kept apart from `errors` because they did match.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<Mismatch>,
}

/// One failed (or, in [`Explanation::notes`], suspicious) comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Mismatch {
    /// Dotted path in the request context, e.g. `jwt.iss`, `user.identifier.0.system`; `""` is
    /// the context itself.
    pub path: String,
    pub expected: Value,
    /// The value found, `null` when absent.
    pub but: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Mismatch {
    /// Builds a mismatch with `but` redacted when `path` reaches a secret header.
    pub(crate) fn new(
        path: &str,
        expected: Value,
        but: Option<&Value>,
        note: Option<String>,
    ) -> Self {
        let but = redact(path, but.cloned().unwrap_or(Value::Null));
        Self {
            path: path.to_owned(),
            expected,
            but,
            note,
        }
    }
}

/// The request context as policies read it: top-level key by key, so that a context can
/// build only the parts some policy reads (the request path builds none of it for a policy
/// that reads, say, only `uri` and `jwt`), or as one value, for the engines that take the
/// whole of it (json-schema, explain).
pub trait Context: Sync {
    /// The value at a top-level key of the context; `None` when absent.
    fn get(&self, key: &str) -> Option<&Value>;
    /// The whole context, one JSON object.
    fn whole(&self) -> &Value;
}

impl Context for Value {
    fn get(&self, key: &str) -> Option<&Value> {
        self.as_object()?.get(key)
    }

    fn whole(&self) -> &Value {
        self
    }
}

/// The request context, with the empty-stripped copy for json-schema computed at most once per
/// request, lazily.
pub struct EvalContext<'a> {
    ctx: &'a dyn Context,
    // OnceLock rather than OnceCell so that an EvalContext can be shared across threads.
    stripped: OnceLock<Value>,
}

impl std::fmt::Debug for EvalContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvalContext").finish_non_exhaustive()
    }
}

impl<'a> EvalContext<'a> {
    pub fn new(ctx: &'a dyn Context) -> Self {
        Self {
            ctx,
            stripped: OnceLock::new(),
        }
    }

    /// The value at a top-level key, built if need be.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.ctx.get(key)
    }

    /// The whole request context as built from the request.
    pub fn value(&self) -> &'a Value {
        self.ctx.whole()
    }

    /// The context with empty values removed, as json-schema policies see it.
    pub fn stripped(&self) -> &Value {
        self.stripped.get_or_init(|| strip_empty_root(self.value()))
    }

    /// Whether the stripped copy has been built (only json-schema policies need it).
    pub fn is_stripped(&self) -> bool {
        self.stripped.get().is_some()
    }
}

/// Compile the body of an AccessPolicy: a JSON object with `engine` ("allow" | "matcho" |
/// "json-schema" | "complex") and its body key (`matcho`, `schema`, `and`/`or`). Other keys
/// (`link`, `description`, `id`, `resourceType`) are ignored here.
pub fn compile(body: &Value) -> Result<Policy, Vec<PolicyError>> {
    compile_within(body, &mut RegexBudget::unlimited())
}

/// [`compile`], its regexes paid for from `budget` (its scope's); a refused policy pays
/// nothing.
pub fn compile_within(body: &Value, budget: &mut RegexBudget) -> Result<Policy, Vec<PolicyError>> {
    let mut errors = Vec::new();
    budget.begin();
    match compile_at(body, "", budget, &mut errors) {
        Some(policy) if errors.is_empty() => {
            budget.commit();
            Ok(policy)
        }
        _ => {
            budget.rollback();
            Err(errors)
        }
    }
}

impl Policy {
    /// The engine this policy runs: one of [`ENGINES`].
    pub fn engine(&self) -> &'static str {
        match self.kind {
            Kind::Allow => "allow",
            Kind::Matcho(_) => "matcho",
            Kind::JsonSchema(_) => "json-schema",
            Kind::And(_) | Kind::Or(_) => "complex",
        }
    }

    /// Whether the body allows every request whatever it holds: `engine: allow`, a root
    /// `matcho: {}`, a schema of `true` or annotations only, and `and`/`or` of those. A
    /// safe under-approximation: `false` does not prove that some request is refused.
    pub fn allows_every_request(&self) -> bool {
        match &self.kind {
            Kind::Allow => true,
            Kind::Matcho(m) => m.matches_everything(),
            Kind::JsonSchema(s) => s.accepts_everything(),
            Kind::And(ps) => ps.iter().all(Policy::allows_every_request),
            Kind::Or(ps) => ps.iter().any(Policy::allows_every_request),
        }
    }

    /// What one evaluation may cost on a request ([`Cost`]): the decision runs a policy on
    /// an async worker only when that is small.
    pub fn cost(&self) -> &Cost {
        &self.cost
    }

    pub fn evaluate(&self, ctx: &EvalContext) -> bool {
        match &self.kind {
            Kind::Allow => true,
            Kind::Matcho(m) => m.matches(ctx),
            Kind::JsonSchema(s) => s.is_valid(ctx.stripped()),
            Kind::And(ps) => ps.iter().all(|p| p.evaluate(ctx)),
            Kind::Or(ps) => ps.iter().any(|p| p.evaluate(ctx)),
        }
    }

    /// Same answer as [`Policy::evaluate`], plus why. Slower: meant for denials and debugging.
    pub fn explain(&self, ctx: &EvalContext) -> Explanation {
        let mut out = Explanation {
            allowed: false,
            engine: self.engine(),
            errors: Vec::new(),
            children: Vec::new(),
            notes: Vec::new(),
        };
        out.allowed = match &self.kind {
            Kind::Allow => true,
            Kind::Matcho(m) => m.explain(ctx, &mut out.errors, &mut out.notes),
            Kind::JsonSchema(s) => s.explain(ctx, &mut out.errors),
            Kind::And(ps) => explain_children(ps, ctx, false, &mut out.children),
            Kind::Or(ps) => explain_children(ps, ctx, true, &mut out.children),
        };
        out
    }
}

/// Explains children until one returns `stop_on`, mirroring the short-circuit of `evaluate`.
fn explain_children(
    ps: &[Policy],
    ctx: &EvalContext,
    stop_on: bool,
    out: &mut Vec<Explanation>,
) -> bool {
    for p in ps {
        let e = p.explain(ctx);
        let allowed = e.allowed;
        out.push(e);
        if allowed == stop_on {
            return stop_on;
        }
    }
    !stop_on
}

fn compile_at(
    body: &Value,
    prefix: &str,
    budget: &mut RegexBudget,
    errors: &mut Vec<PolicyError>,
) -> Option<Policy> {
    let Some(obj) = body.as_object() else {
        let at = if prefix.is_empty() { "(body)" } else { prefix };
        errors.push(PolicyError::new(at, "a policy must be a JSON object"));
        return None;
    };
    let field = |name: &str| join_field(prefix, name);
    let allowed = || {
        ENGINES
            .iter()
            .map(|e| format!("\"{e}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let engine = match obj.get("engine") {
        None => {
            errors.push(PolicyError::new(
                field("engine"),
                format!("missing; expected one of {}", allowed()),
            ));
            return None;
        }
        Some(Value::String(s)) => s.as_str(),
        Some(other) => {
            errors.push(PolicyError::new(
                field("engine"),
                format!("must be a string, one of {}; got {other}", allowed()),
            ));
            return None;
        }
    };
    let (kind, cost) = match engine {
        "allow" => (Kind::Allow, Cost::fixed(1)),
        "matcho" => {
            let pattern = body_key(obj, "matcho", engine, prefix, errors)?;
            let matcho = Matcho::compile(pattern, &field("matcho"), budget, errors)?;
            (Kind::Matcho(matcho), matcho::cost(pattern))
        }
        "json-schema" => {
            let schema = body_key(obj, "schema", engine, prefix, errors)?;
            let schema = JsonSchema::compile(schema, &field("schema"), budget, errors)?;
            let cost = schema.cost().clone();
            (Kind::JsonSchema(Box::new(schema)), cost)
        }
        "complex" => {
            let kind = compile_complex(obj, prefix, budget, errors)?;
            let mut cost = Cost::fixed(1);
            if let Kind::And(ps) | Kind::Or(ps) = &kind {
                for p in ps {
                    cost.add(p.cost.clone());
                }
            }
            (kind, cost)
        }
        other => {
            errors.push(PolicyError::new(
                field("engine"),
                format!("unknown engine \"{other}\"; expected one of {}", allowed()),
            ));
            return None;
        }
    };
    Some(Policy { kind, cost })
}

fn body_key<'v>(
    obj: &'v Map<String, Value>,
    key: &str,
    engine: &str,
    prefix: &str,
    errors: &mut Vec<PolicyError>,
) -> Option<&'v Value> {
    let v = obj.get(key);
    if v.is_none() {
        let message = checks::body_required(key)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("missing; engine \"{engine}\" needs \"{key}\""));
        errors.push(PolicyError::new(join_field(prefix, key), message));
    }
    v
}

fn compile_complex(
    obj: &Map<String, Value>,
    prefix: &str,
    budget: &mut RegexBudget,
    errors: &mut Vec<PolicyError>,
) -> Option<Kind> {
    let (key, list) = match (obj.get("and"), obj.get("or")) {
        (Some(_), Some(_)) => {
            errors.push(PolicyError::new(
                join_field(prefix, "and"),
                checks::AND_OR_BOTH.message,
            ));
            return None;
        }
        (None, None) => {
            errors.push(PolicyError::new(
                join_field(prefix, "and"),
                checks::COMPLEX_BODY.message,
            ));
            return None;
        }
        (Some(l), None) => ("and", l),
        (None, Some(l)) => ("or", l),
    };
    let path = join_field(prefix, key);
    let Some(items) = list.as_array() else {
        errors.push(PolicyError::new(path, "must be a list of policies"));
        return None;
    };
    if items.is_empty() {
        // An empty `and` would allow everything and an empty `or` nothing: both are mistakes.
        errors.push(PolicyError::new(path, checks::AND_NOT_EMPTY.message));
        return None;
    }
    let before = errors.len();
    let children: Vec<Policy> = items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| compile_at(item, &format!("{path}[{i}]"), budget, errors))
        .collect();
    if errors.len() > before || children.len() != items.len() {
        return None;
    }
    Some(if key == "and" {
        Kind::And(children)
    } else {
        Kind::Or(children)
    })
}

pub(crate) fn join_field(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

/// JSON equality where numbers compare by value (`1 == 1.0`) and object key order is ignored.
pub(crate) fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => num_eq(x, y),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

fn num_eq(x: &serde_json::Number, y: &serde_json::Number) -> bool {
    fn int(n: &serde_json::Number) -> Option<i128> {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    }
    // Compares a float with an integer without rounding the integer through f64.
    fn int_float(i: i128, f: f64) -> bool {
        f.fract() == 0.0 && f.abs() < 1e38 && f as i128 == i
    }
    match (int(x), int(y)) {
        (Some(a), Some(b)) => a == b,
        (Some(a), None) => y.as_f64().is_some_and(|f| int_float(a, f)),
        (None, Some(b)) => x.as_f64().is_some_and(|f| int_float(b, f)),
        (None, None) => x.as_f64() == y.as_f64(),
    }
}

/// Whether a value counts as empty for json-schema: `null`, `""`, `[]`, `{}`.
pub(crate) fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Bool(_) | Value::Number(_) => false,
    }
}

/// The context without empty values. The root itself is kept (as `{}` at worst) because a
/// schema needs an instance to validate.
fn strip_empty_root(v: &Value) -> Value {
    strip_empty(v).unwrap_or_else(|| match v {
        Value::Array(_) => Value::Array(Vec::new()),
        Value::Object(_) => Value::Object(Map::new()),
        _ => Value::Null,
    })
}

/// Removes empty values recursively; a container left empty by that is removed too, so
/// `{"user": {"data": {}}}` loses `user` altogether. Array elements are removed (not nulled),
/// which shifts the positions of the ones after them.
fn strip_empty(v: &Value) -> Option<Value> {
    let out = match v {
        Value::Array(a) => Value::Array(a.iter().filter_map(strip_empty).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .filter_map(|(k, v)| strip_empty(v).map(|v| (k.clone(), v)))
                .collect(),
        ),
        other => other.clone(),
    };
    (!is_empty_value(&out)).then_some(out)
}

/// Splits a dotted context path into its segments; `""` is the root.
fn segments(path: &str) -> Vec<&str> {
    if path.is_empty() {
        Vec::new()
    } else {
        path.split('.').collect()
    }
}

/// Replaces credential header values inside `v`, the value found at context path `path`.
pub(crate) fn redact(path: &str, v: Value) -> Value {
    redact_telling(path, v).0
}

/// Like [`redact`], also telling whether anything was replaced.
pub(crate) fn redact_telling(path: &str, mut v: Value) -> (Value, bool) {
    let segs = segments(path);
    let replaced = match segs.as_slice() {
        [] => v
            .get_mut("headers")
            .and_then(Value::as_object_mut)
            .is_some_and(redact_headers),
        ["headers"] => v.as_object_mut().is_some_and(redact_headers),
        ["headers", name, ..] if is_credential_header(name) && !v.is_null() => {
            v = Value::String(REDACTED.to_owned());
            true
        }
        _ => false,
    };
    (v, replaced)
}

fn redact_headers(headers: &mut Map<String, Value>) -> bool {
    let mut replaced = false;
    for (k, v) in headers.iter_mut() {
        if is_credential_header(k) && !v.is_null() {
            *v = Value::String(REDACTED.to_owned());
            replaced = true;
        }
    }
    replaced
}
