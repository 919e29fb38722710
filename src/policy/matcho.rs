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

use serde_json::{json, Map, Value};

use super::pattern::Pattern;
use super::{json_eq, redact, EvalContext, Mismatch, PolicyError};

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
        errors: &mut Vec<PolicyError>,
    ) -> Option<Self> {
        let before = errors.len();
        let root = compile_node(pattern, path, errors);
        (errors.len() == before).then_some(Self { root })
    }

    pub(crate) fn matches(&self, ctx: &EvalContext) -> bool {
        match &self.root {
            // The usual root, `{uri: ..., jwt: {...}}`: each key reads only its own part of
            // the context, which is then all the request path builds.
            Node::Map { keys, ops } if ops.is_empty() => {
                keys.iter().all(|(k, n)| n.matches(ctx.get(k), ctx))
            }
            root => root.matches(Some(ctx.value()), ctx),
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
        let mut out = Findings { errors, notes };
        self.root.explain(Some(ctx.value()), ctx, "", &mut out)
    }
}

fn compile_node(p: &Value, path: &str, errors: &mut Vec<PolicyError>) -> Node {
    match p {
        Value::String(s) => compile_string(s, path, errors),
        Value::Array(items) => Node::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| compile_node(item, &format!("{path}[{i}]"), errors))
                .collect(),
        ),
        Value::Object(map) => compile_map(map, path, errors),
        scalar => Node::Eq(scalar.clone()),
    }
}

fn compile_string(s: &str, path: &str, errors: &mut Vec<PolicyError>) -> Node {
    match s {
        "present?" => Node::Present,
        "nil?" => Node::Nil,
        "not-blank?" => Node::NotBlank,
        _ => {
            if let Some(src) = s.strip_prefix('#') {
                match Pattern::new(src) {
                    Ok(re) => Node::Regex(re),
                    Err(e) => {
                        errors.push(PolicyError::new(path, format!("invalid regex: {e}")));
                        Node::Nil
                    }
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

fn compile_map(map: &Map<String, Value>, path: &str, errors: &mut Vec<PolicyError>) -> Node {
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
            keys.push((k.clone(), compile_node(v, &here, errors)));
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
                        .map(|(i, p)| compile_node(p, &format!("{here}[{i}]"), errors))
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
            "$contains" => Node::Contains(Box::new(compile_node(v, &here, errors))),
            "$every" => Node::Every(Box::new(compile_node(v, &here, errors))),
            "$not" => Node::Not(Box::new(compile_node(v, &here, errors))),
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

fn child_path(path: &str, key: &str) -> String {
    super::join_field(path, key)
}

/// Where an explanation writes what did not match, and the matches worth a note.
struct Findings<'a> {
    errors: &'a mut Vec<Mismatch>,
    notes: &'a mut Vec<Mismatch>,
}

/// Findings to be thrown away, for sub-patterns whose own mismatches are not the story
/// (`$not`, `$one-of` and `$contains` report on the whole value instead).
#[derive(Default)]
struct DiscardedFindings {
    errors: Vec<Mismatch>,
    notes: Vec<Mismatch>,
}

impl DiscardedFindings {
    fn sink(&mut self) -> Findings<'_> {
        Findings {
            errors: &mut self.errors,
            notes: &mut self.notes,
        }
    }
}

impl Node {
    fn matches(&self, v: Option<&Value>, root: &EvalContext) -> bool {
        match self {
            Node::Eq(x) => eq_opt(v, Some(x)),
            Node::Regex(re) => matches!(v, Some(Value::String(s)) if re.is_match(s)),
            Node::Present => !absent(v),
            Node::Nil => absent(v),
            Node::NotBlank => not_blank(v),
            Node::Ref { segs, .. } => eq_opt(v, resolve(root, segs)),
            Node::Map { keys, ops } => {
                let keys_ok = !needs_object(keys, ops)
                    || match v {
                        Some(Value::Object(o)) => {
                            keys.iter().all(|(k, n)| n.matches(o.get(k), root))
                        }
                        _ => false,
                    };
                keys_ok && ops.iter().all(|n| n.matches(v, root))
            }
            Node::Array(items) => match v {
                Some(Value::Array(a)) => {
                    a.len() >= items.len()
                        && items.iter().zip(a).all(|(n, e)| n.matches(Some(e), root))
                }
                _ => false,
            },
            Node::Enum(vals) => vals.iter().any(|x| eq_opt(v, Some(x))),
            Node::OneOf(ps) => ps.iter().any(|n| n.matches(v, root)),
            Node::Contains(n) => match v {
                Some(Value::Array(a)) => a.iter().any(|e| n.matches(Some(e), root)),
                _ => false,
            },
            Node::Every(n) => match v {
                Some(Value::Array(a)) => a.iter().all(|e| n.matches(Some(e), root)),
                _ => false,
            },
            Node::Not(n) => !n.matches(v, root),
        }
    }

    /// Same result as [`Node::matches`], recording what failed (all of it, not just the first).
    fn explain(
        &self,
        v: Option<&Value>,
        root: &EvalContext,
        path: &str,
        out: &mut Findings,
    ) -> bool {
        let fail = |out: &mut Findings, note: Option<String>| {
            out.errors
                .push(Mismatch::new(path, self.to_json(), v, note));
            false
        };
        match self {
            Node::Eq(_) | Node::Present | Node::Nil | Node::Enum(_) => {
                self.matches(v, root) || fail(out, None)
            }
            Node::Regex(_) => {
                let note = match v {
                    Some(Value::String(_)) => None,
                    _ => Some("not a string: a regex only matches strings".to_owned()),
                };
                self.matches(v, root) || fail(out, note)
            }
            Node::NotBlank => {
                let note = match v {
                    Some(Value::String(s)) if !s.is_empty() => {
                        Some("whitespace only counts as blank".to_owned())
                    }
                    Some(Value::String(_)) | None | Some(Value::Null) => None,
                    Some(_) => Some("not a string".to_owned()),
                };
                self.matches(v, root) || fail(out, note)
            }
            Node::Ref { raw, segs } => {
                let target = resolve(root, segs);
                let ok = eq_opt(v, target);
                let ref_path = raw.trim_start_matches('.');
                if ok && absent(v) && absent(target) {
                    out.notes.push(Mismatch::new(
                        path,
                        Value::Null,
                        v,
                        Some(format!(
                            "both sides absent: null = null (reference {raw}); this matched"
                        )),
                    ));
                } else if !ok {
                    let expected = redact(ref_path, target.cloned().unwrap_or(Value::Null));
                    let note = if absent(target) {
                        format!("reference {raw} is absent (null)")
                    } else {
                        format!("value of reference {raw}")
                    };
                    out.errors
                        .push(Mismatch::new(path, expected, v, Some(note)));
                }
                ok
            }
            Node::Map { keys, ops } => {
                let mut ok = true;
                if needs_object(keys, ops) {
                    match v {
                        Some(Value::Object(o)) => {
                            for (k, n) in keys {
                                ok &= n.explain(o.get(k), root, &child_path(path, k), out);
                            }
                        }
                        _ => return fail(out, Some("not an object".to_owned())),
                    }
                }
                for n in ops {
                    ok &= n.explain(v, root, path, out);
                }
                ok
            }
            Node::Array(items) => match v {
                Some(Value::Array(a)) if a.len() >= items.len() => {
                    let mut ok = true;
                    for (i, (n, e)) in items.iter().zip(a).enumerate() {
                        ok &= n.explain(Some(e), root, &child_path(path, &i.to_string()), out);
                    }
                    ok
                }
                Some(Value::Array(a)) => fail(
                    out,
                    Some(format!(
                        "array of {} element(s), pattern needs at least {}",
                        a.len(),
                        items.len()
                    )),
                ),
                _ => fail(out, Some("not an array".to_owned())),
            },
            Node::OneOf(ps) => {
                for n in ps {
                    let mut s = DiscardedFindings::default();
                    if n.explain(v, root, path, &mut s.sink()) {
                        out.notes.append(&mut s.notes);
                        return true;
                    }
                }
                fail(out, Some("no alternative matched".to_owned()))
            }
            Node::Contains(n) => match v {
                Some(Value::Array(a)) => {
                    for (i, e) in a.iter().enumerate() {
                        let mut s = DiscardedFindings::default();
                        if n.explain(
                            Some(e),
                            root,
                            &child_path(path, &i.to_string()),
                            &mut s.sink(),
                        ) {
                            out.notes.append(&mut s.notes);
                            return true;
                        }
                    }
                    fail(out, Some("no element matched".to_owned()))
                }
                _ => fail(out, Some("not an array".to_owned())),
            },
            Node::Every(n) => match v {
                Some(Value::Array(a)) => {
                    let mut ok = true;
                    for (i, e) in a.iter().enumerate() {
                        ok &= n.explain(Some(e), root, &child_path(path, &i.to_string()), out);
                    }
                    ok
                }
                _ => fail(out, Some("not an array".to_owned())),
            },
            Node::Not(n) => {
                let mut s = DiscardedFindings::default();
                if n.explain(v, root, path, &mut s.sink()) {
                    // The inner notes say why it matched, which is why $not failed.
                    out.notes.append(&mut s.notes);
                    return fail(out, Some("the negated pattern matched".to_owned()));
                }
                if absent(v) {
                    out.notes.push(Mismatch::new(
                        path,
                        self.to_json(),
                        v,
                        Some("field absent: $not passes".to_owned()),
                    ));
                }
                true
            }
        }
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
