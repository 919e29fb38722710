//! The `matcho` engine: a pattern compiled once into a [`Node`] tree.
//!
//! Decisions where Aidbox's docs are silent:
//! - `"not-blank?"` follows Clojure's `blank?`, which Aidbox uses: a string made only of
//!   whitespace is blank, so it does not match; neither does any non-string.
//! - `"#regex"` only ever matches strings (a number is not searched as text).
//! - a `null` pattern matches `null` and an absent value (absent compares as `null`).
//! - a map pattern with ordinary keys needs an object; `$` operators apply to the value
//!   itself and may sit beside ordinary keys, except `$one-of`, which must stand alone.
//! - `$one-of` is "at least one of", not "exactly one".
//! - `$contains` and `$every` need an array: on an absent field both fail (an absent list is
//!   not vacuously "every element matches", which would be a silent allow).
//! - there is no escape for a literal string starting with `#` or `.`: use `{$enum: ["#x"]}`,
//!   whose values are compared literally.

use std::borrow::Cow;

use serde_json::{json, Map, Value};

use super::budget::{Refusal, RegexBudget};
use super::cost::Cost;
use super::pattern::Pattern;
use super::{json_eq, redact, EvalContext, Mismatch, PolicyError};
use crate::resources::json_weight;

const OPERATORS: &str = "$enum, $one-of, $contains, $every, $not";

#[derive(Debug)]
pub(crate) struct Matcho {
    root: Node,
}

#[derive(Debug)]
enum Node {
    Eq(Value),
    Regex(Pattern),
    Present,
    Nil,
    NotBlank,
    /// A `.a.b.0.c` reference into the request context; `raw` keeps the source for explain.
    Ref {
        raw: String,
        segs: Vec<Seg>,
    },
    /// Ordinary keys, each matched against the same key of an object, and `$` operators,
    /// each matched against the value itself.
    Map {
        keys: Box<[(String, Node)]>,
        ops: Box<[Node]>,
    },
    Array(Vec<Node>),
    Enum(Vec<Value>),
    OneOf(Vec<Node>),
    Contains(Box<Node>),
    Every(Box<Node>),
    Not(Box<Node>),
}

#[derive(Debug)]
struct Seg {
    key: String,
    /// Parsed once so that indexing an array costs no parsing per request.
    index: Option<usize>,
}

impl Matcho {
    pub(crate) fn compile(
        pattern: &Value,
        path: &str,
        budget: &mut RegexBudget,
        errors: &mut Vec<PolicyError>,
    ) -> Option<Self> {
        let before = errors.len();
        let root = compile_node(pattern, path, budget, errors);
        (errors.len() == before).then_some(Self { root })
    }

    pub(crate) fn matches(&self, ctx: &EvalContext) -> bool {
        match &self.root {
            // The usual root, `{uri: ..., jwt: {...}}`: each key reads only its own part of
            // the context, which is then all the request path builds.
            Node::Map { keys, ops } if ops.is_empty() => keys
                .iter()
                .all(|(k, n)| n.eval(ctx.get(k), ctx, &(), &mut Quiet)),
            root => root.eval(Some(ctx.value()), ctx, &(), &mut Quiet),
        }
    }

    /// Whether the pattern is `{}`, which every request context matches.
    pub(crate) fn matches_everything(&self) -> bool {
        matches!(&self.root, Node::Map { keys, ops } if keys.is_empty() && ops.is_empty())
    }

    pub(crate) fn explain(
        &self,
        ctx: &EvalContext,
        errors: &mut Vec<Mismatch>,
        notes: &mut Vec<Mismatch>,
    ) -> bool {
        let mut found = Findings::default();
        let ok = self
            .root
            .eval(Some(ctx.value()), ctx, &String::new(), &mut found);
        errors.append(&mut found.errors);
        notes.append(&mut found.notes);
        ok
    }
}

/// Where each node of a pattern applies in the request context. Map keys and array
/// positions go down one step each and meet one value; `$contains` and `$every` meet every
/// element of the list there, a regex (`#...`) scans the string there, and a `.path`
/// reference is compared with the value there: those are sites. `$enum` and plain values
/// cost their own size, compared with one value.
pub(crate) fn cost(pattern: &Value) -> Cost {
    fn place<'p>(pattern: &'p Value, at: &mut Vec<Cow<'p, str>>, out: &mut Cost) {
        match pattern {
            Value::Object(map) => {
                out.add_fixed(1);
                for (key, value) in map {
                    match key.as_str() {
                        "$contains" | "$every" => out.add_site(at, u64::from(json_weight(value))),
                        "$one-of" => match value {
                            Value::Array(alternatives) => {
                                for alternative in alternatives {
                                    place(alternative, at, out);
                                }
                            }
                            other => place(other, at, out),
                        },
                        "$not" => place(value, at, out),
                        k if k.starts_with('$') => out.add_fixed(u64::from(json_weight(value))),
                        k => {
                            at.push(Cow::Borrowed(k));
                            place(value, at, out);
                            at.pop();
                        }
                    }
                }
            }
            Value::Array(items) => {
                out.add_fixed(1);
                for (i, item) in items.iter().enumerate() {
                    at.push(Cow::Owned(i.to_string()));
                    place(item, at, out);
                    at.pop();
                }
            }
            Value::String(s) if s.starts_with('#') || s.starts_with('.') => out.add_site(at, 1),
            other => out.add_fixed(u64::from(json_weight(other))),
        }
    }
    let mut out = Cost::default();
    place(pattern, &mut Vec::new(), &mut out);
    out
}

fn compile_node(
    p: &Value,
    path: &str,
    budget: &mut RegexBudget,
    errors: &mut Vec<PolicyError>,
) -> Node {
    match p {
        Value::String(s) => compile_string(s, path, budget, errors),
        Value::Array(items) => Node::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| compile_node(item, &format!("{path}[{i}]"), budget, errors))
                .collect(),
        ),
        Value::Object(map) => compile_map(map, path, budget, errors),
        scalar => Node::Eq(scalar.clone()),
    }
}

fn compile_string(
    s: &str,
    path: &str,
    budget: &mut RegexBudget,
    errors: &mut Vec<PolicyError>,
) -> Node {
    match s {
        "present?" => Node::Present,
        "nil?" => Node::Nil,
        "not-blank?" => Node::NotBlank,
        _ => {
            if let Some(src) = s.strip_prefix('#') {
                match Pattern::new(src, budget) {
                    Ok(re) => Node::Regex(re),
                    Err(Refusal::Invalid(e)) => {
                        errors.push(PolicyError::new(path, format!("invalid regex: {e}")));
                        Node::Nil
                    }
                    Err(Refusal::OverBudget(e)) => {
                        errors.push(PolicyError::new(path, e));
                        Node::Nil
                    }
                    Err(Refusal::Exhausted) => Node::Nil,
                }
            } else if let Some(rest) = s.strip_prefix('.') {
                let segs: Vec<Seg> = rest
                    .split('.')
                    .map(|key| Seg {
                        key: key.to_owned(),
                        index: key.parse().ok(),
                    })
                    .collect();
                if segs.iter().any(|s| s.key.is_empty()) {
                    errors.push(PolicyError::new(
                        path,
                        format!("invalid reference \"{s}\": empty segment"),
                    ));
                }
                Node::Ref {
                    raw: s.to_owned(),
                    segs,
                }
            } else {
                Node::Eq(Value::String(s.to_owned()))
            }
        }
    }
}

fn compile_map(
    map: &Map<String, Value>,
    path: &str,
    budget: &mut RegexBudget,
    errors: &mut Vec<PolicyError>,
) -> Node {
    if map.contains_key("$one-of") && map.len() > 1 {
        let others: Vec<&str> = map
            .keys()
            .filter(|k| *k != "$one-of")
            .map(String::as_str)
            .collect();
        errors.push(PolicyError::new(
            format!("{path} ($one-of)"),
            format!(
                "$one-of may not stand beside other keys (found {})",
                others.join(", ")
            ),
        ));
    }
    let mut keys = Vec::new();
    let mut ops = Vec::new();
    for (k, v) in map {
        let here = format!("{path}.{k}");
        if !k.starts_with('$') {
            keys.push((k.clone(), compile_node(v, &here, budget, errors)));
            continue;
        }
        let op = match k.as_str() {
            "$enum" => match v.as_array() {
                Some(vals) => Node::Enum(vals.clone()),
                None => {
                    errors.push(PolicyError::new(here, "must be a list of values"));
                    continue;
                }
            },
            "$one-of" => match v.as_array() {
                Some(ps) if !ps.is_empty() => Node::OneOf(
                    ps.iter()
                        .enumerate()
                        .map(|(i, p)| compile_node(p, &format!("{here}[{i}]"), budget, errors))
                        .collect(),
                ),
                _ => {
                    errors.push(PolicyError::new(
                        here,
                        "must be a non-empty list of patterns",
                    ));
                    continue;
                }
            },
            "$contains" => Node::Contains(Box::new(compile_node(v, &here, budget, errors))),
            "$every" => Node::Every(Box::new(compile_node(v, &here, budget, errors))),
            "$not" => Node::Not(Box::new(compile_node(v, &here, budget, errors))),
            _ => {
                errors.push(PolicyError::new(
                    here,
                    format!("unknown operator; expected one of {OPERATORS}"),
                ));
                continue;
            }
        };
        ops.push(op);
    }
    if keys.is_empty() && ops.len() == 1 {
        return ops.pop().expect("one operator");
    }
    // Boxed slices: exactly as long as the pattern, where a grown Vec keeps spare room.
    Node::Map {
        keys: keys.into(),
        ops: ops.into(),
    }
}

fn resolve<'v>(root: &EvalContext<'v>, segs: &[Seg]) -> Option<&'v Value> {
    let (first, rest) = segs.split_first()?;
    rest.iter()
        .try_fold(root.get(&first.key)?, |cur, seg| match cur {
            Value::Object(o) => o.get(&seg.key),
            Value::Array(a) => seg.index.and_then(|i| a.get(i)),
            _ => None,
        })
}

fn absent(v: Option<&Value>) -> bool {
    v.is_none_or(Value::is_null)
}

fn eq_opt(v: Option<&Value>, expected: Option<&Value>) -> bool {
    json_eq(v.unwrap_or(&Value::Null), expected.unwrap_or(&Value::Null))
}

fn not_blank(v: Option<&Value>) -> bool {
    matches!(v, Some(Value::String(s)) if !s.trim().is_empty())
}

/// A map pattern made only of operators applies them to any value; `{}` or ordinary keys
/// need an object.
fn needs_object(keys: &[(String, Node)], ops: &[Node]) -> bool {
    !keys.is_empty() || ops.is_empty()
}

/// A reference matches when both sides are equal; both absent is a match worth a note.
fn eval_ref<S: Sink>(
    raw: &str,
    target: Option<&Value>,
    v: Option<&Value>,
    at: &S::Path,
    sink: &mut S,
) -> bool {
    let ok = eq_opt(v, target);
    if ok && absent(v) && absent(target) {
        let note = || format!("both sides absent: null = null (reference {raw}); this matched");
        sink.note(at, || Value::Null, v, note);
    } else if !ok {
        let expected = || {
            let found = target.cloned().unwrap_or(Value::Null);
            redact(raw.trim_start_matches('.'), found)
        };
        let note = || {
            Some(if absent(target) {
                format!("reference {raw} is absent (null)")
            } else {
                format!("value of reference {raw}")
            })
        };
        sink.error(at, expected, v, note);
    }
    ok
}

fn regex_note(v: Option<&Value>) -> Option<String> {
    match v {
        Some(Value::String(_)) => None,
        _ => Some("not a string: a regex only matches strings".to_owned()),
    }
}

fn not_blank_note(v: Option<&Value>) -> Option<String> {
    match v {
        Some(Value::String(s)) if !s.is_empty() => {
            Some("whitespace only counts as blank".to_owned())
        }
        Some(Value::String(_)) | None | Some(Value::Null) => None,
        Some(_) => Some("not a string".to_owned()),
    }
}

/// Where evaluation reports what did not match. [`Quiet`] keeps nothing: with it
/// [`Node::eval`] is the plain boolean walk of the request path, short-circuits included.
trait Sink {
    /// Where a value sits in the context: a dotted path when explaining, `()` otherwise,
    /// so that the request path builds no strings.
    type Path;
    /// A thorough sink hears every failure, so evaluation does not stop at the first.
    const THOROUGH: bool;
    /// For sub-patterns whose own findings are not the story (`$not`, `$one-of`,
    /// `$contains` report on the whole value instead).
    type Scratch: Sink<Path = Self::Path>;

    fn child(path: &Self::Path, key: &str) -> Self::Path;
    fn index(path: &Self::Path, i: usize) -> Self::Path;
    fn error(
        &mut self,
        path: &Self::Path,
        expected: impl FnOnce() -> Value,
        found: Option<&Value>,
        note: impl FnOnce() -> Option<String>,
    );
    fn note(
        &mut self,
        path: &Self::Path,
        expected: impl FnOnce() -> Value,
        found: Option<&Value>,
        note: impl FnOnce() -> String,
    );
    fn scratch(&self) -> Self::Scratch;
    /// A scratch's notes say why a sub-pattern matched, which the whole may need to tell.
    fn keep_notes(&mut self, scratch: Self::Scratch);
}

/// The request path's sink: zero-sized, every method a no-op.
struct Quiet;

impl Sink for Quiet {
    type Path = ();
    const THOROUGH: bool = false;
    type Scratch = Quiet;

    fn child(_: &(), _: &str) {}
    fn index(_: &(), _: usize) {}
    fn error(
        &mut self,
        _: &(),
        _: impl FnOnce() -> Value,
        _: Option<&Value>,
        _: impl FnOnce() -> Option<String>,
    ) {
    }
    fn note(
        &mut self,
        _: &(),
        _: impl FnOnce() -> Value,
        _: Option<&Value>,
        _: impl FnOnce() -> String,
    ) {
    }
    fn scratch(&self) -> Quiet {
        Quiet
    }
    fn keep_notes(&mut self, _: Quiet) {}
}

/// What an explanation found: failed comparisons, and the matches worth a note.
#[derive(Default)]
struct Findings {
    errors: Vec<Mismatch>,
    notes: Vec<Mismatch>,
}

impl Sink for Findings {
    type Path = String;
    const THOROUGH: bool = true;
    type Scratch = Findings;

    fn child(path: &String, key: &str) -> String {
        super::join_field(path, key)
    }
    fn index(path: &String, i: usize) -> String {
        super::join_field(path, &i.to_string())
    }
    fn error(
        &mut self,
        path: &String,
        expected: impl FnOnce() -> Value,
        found: Option<&Value>,
        note: impl FnOnce() -> Option<String>,
    ) {
        self.errors
            .push(Mismatch::new(path, expected(), found, note()));
    }
    fn note(
        &mut self,
        path: &String,
        expected: impl FnOnce() -> Value,
        found: Option<&Value>,
        note: impl FnOnce() -> String,
    ) {
        self.notes
            .push(Mismatch::new(path, expected(), found, Some(note())));
    }
    fn scratch(&self) -> Findings {
        Findings::default()
    }
    fn keep_notes(&mut self, mut scratch: Findings) {
        self.notes.append(&mut scratch.notes);
    }
}

/// `Iterator::all`, except that a thorough sink hears every item, not only up to the
/// first failure. Always inlined: on the request path it must be the plain `all` it was.
#[inline(always)]
fn all<S: Sink, T>(items: impl IntoIterator<Item = T>, mut ok: impl FnMut(T) -> bool) -> bool {
    if S::THOROUGH {
        items.into_iter().fold(true, |all, item| ok(item) & all)
    } else {
        items.into_iter().all(ok)
    }
}

/// `first && second()`, except that a thorough sink hears `second` even after `first` failed.
#[inline(always)]
fn both<S: Sink>(first: bool, second: impl FnOnce() -> bool) -> bool {
    if S::THOROUGH {
        second() & first
    } else {
        first && second()
    }
}

impl Node {
    /// Whether `v` matches, telling `sink` what did not (all of it when the sink is thorough).
    fn eval<S: Sink>(
        &self,
        v: Option<&Value>,
        root: &EvalContext,
        at: &S::Path,
        sink: &mut S,
    ) -> bool {
        let fail = |sink: &mut S, note: fn(Option<&Value>) -> Option<String>| {
            sink.error(at, || self.to_json(), v, || note(v));
            false
        };
        match self {
            Node::Eq(x) => eq_opt(v, Some(x)) || fail(sink, |_| None),
            Node::Regex(re) => {
                matches!(v, Some(Value::String(s)) if re.is_match(s)) || fail(sink, regex_note)
            }
            Node::Present => !absent(v) || fail(sink, |_| None),
            Node::Nil => absent(v) || fail(sink, |_| None),
            Node::NotBlank => not_blank(v) || fail(sink, not_blank_note),
            Node::Ref { raw, segs } => eval_ref(raw, resolve(root, segs), v, at, sink),
            Node::Map { keys, ops } => {
                let keys_ok = !needs_object(keys, ops)
                    || match v {
                        Some(Value::Object(o)) => all::<S, _>(keys.iter(), |(k, n)| {
                            n.eval(o.get(k), root, &S::child(at, k), sink)
                        }),
                        _ => return fail(sink, |_| Some("not an object".to_owned())),
                    };
                both::<S>(keys_ok, || {
                    all::<S, _>(ops.iter(), |n| n.eval(v, root, at, sink))
                })
            }
            Node::Array(items) => match v {
                Some(Value::Array(a)) if a.len() >= items.len() => {
                    all::<S, _>(items.iter().zip(a).enumerate(), |(i, (n, e))| {
                        n.eval(Some(e), root, &S::index(at, i), sink)
                    })
                }
                Some(Value::Array(a)) => {
                    let note = || {
                        let (found, needs) = (a.len(), items.len());
                        Some(format!(
                            "array of {found} element(s), pattern needs at least {needs}"
                        ))
                    };
                    sink.error(at, || self.to_json(), v, note);
                    false
                }
                _ => fail(sink, |_| Some("not an array".to_owned())),
            },
            Node::Enum(vals) => vals.iter().any(|x| eq_opt(v, Some(x))) || fail(sink, |_| None),
            Node::OneOf(ps) => {
                ps.iter().any(|n| n.eval_aside(v, root, at, sink))
                    || fail(sink, |_| Some("no alternative matched".to_owned()))
            }
            Node::Contains(n) => match v {
                Some(Value::Array(a)) => {
                    a.iter()
                        .enumerate()
                        .any(|(i, e)| n.eval_aside(Some(e), root, &S::index(at, i), sink))
                        || fail(sink, |_| Some("no element matched".to_owned()))
                }
                _ => fail(sink, |_| Some("not an array".to_owned())),
            },
            Node::Every(n) => match v {
                Some(Value::Array(a)) => all::<S, _>(a.iter().enumerate(), |(i, e)| {
                    n.eval(Some(e), root, &S::index(at, i), sink)
                }),
                _ => fail(sink, |_| Some("not an array".to_owned())),
            },
            Node::Not(n) => {
                if n.eval_aside(v, root, at, sink) {
                    return fail(sink, |_| Some("the negated pattern matched".to_owned()));
                }
                if absent(v) {
                    sink.note(
                        at,
                        || self.to_json(),
                        v,
                        || "field absent: $not passes".to_owned(),
                    );
                }
                true
            }
        }
    }

    /// [`Node::eval`] into a scratch sink; on a match its notes (why it matched) are kept.
    fn eval_aside<S: Sink>(
        &self,
        v: Option<&Value>,
        root: &EvalContext,
        at: &S::Path,
        sink: &mut S,
    ) -> bool {
        let mut scratch = sink.scratch();
        let ok = self.eval(v, root, at, &mut scratch);
        if ok {
            sink.keep_notes(scratch);
        }
        ok
    }

    /// The pattern as written, for `expected` in explanations.
    fn to_json(&self) -> Value {
        match self {
            Node::Eq(x) => x.clone(),
            Node::Regex(re) => Value::String(format!("#{}", re.as_str())),
            Node::Present => json!("present?"),
            Node::Nil => json!("nil?"),
            Node::NotBlank => json!("not-blank?"),
            Node::Ref { raw, .. } => Value::String(raw.clone()),
            Node::Map { keys, ops } => {
                let mut m: Map<String, Value> =
                    keys.iter().map(|(k, n)| (k.clone(), n.to_json())).collect();
                for op in ops {
                    if let Value::Object(o) = op.to_json() {
                        m.extend(o);
                    }
                }
                Value::Object(m)
            }
            Node::Array(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            Node::Enum(vals) => json!({ "$enum": vals }),
            Node::OneOf(ps) => {
                json!({ "$one-of": ps.iter().map(Node::to_json).collect::<Vec<_>>() })
            }
            Node::Contains(n) => json!({ "$contains": n.to_json() }),
            Node::Every(n) => json!({ "$every": n.to_json() }),
            Node::Not(n) => json!({ "$not": n.to_json() }),
        }
    }
}
