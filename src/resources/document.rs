//! One configuration file → resources. A document is either a Kubernetes manifest
//! (`apiVersion: portcullis.dev/v1alpha1`, `kind`, `metadata.name`, `spec`) or an Aidbox
//! resource (`resourceType`, `id`, fields at the top level).

use std::path::Path;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{checks, Kind, API_VERSION, KIND_NAMES};
use super::{ConfigError, FieldError, Origin, Resource, Spec};

const GROUP_PREFIX: &str = "portcullis.dev/";

/// Parse every document of one file. Documents that fail are reported; the others are kept,
/// so that `validate` can list every error of a file at once.
pub fn parse_documents(path: &Path, text: &str) -> (Vec<Resource>, Vec<ConfigError>) {
    let mut resources = Vec::new();
    let mut errors = Vec::new();
    for_each_document(path, text, |item| match item {
        Ok(r) => resources.push(r),
        Err(e) => errors.push(e),
    });
    (resources, errors)
}

/// [`parse_documents`], handing each resource or error over as soon as it is parsed.
pub fn for_each_document(
    path: &Path,
    text: &str,
    mut emit: impl FnMut(Result<Resource, ConfigError>),
) {
    parse_text(&path.into(), text, 1, &mut emit);
}

/// What [`parse_text`] read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    /// YAML documents in the text, as numbered in the origins it emitted.
    pub documents: usize,
    /// An error ended the text early: the parser cannot find the next document.
    pub ended: bool,
    /// A message of the YAML parser's was emitted: it names lines counted from the text's
    /// own first line.
    pub parser_error: bool,
}

/// Parses `text`, which starts on line `first_line` of the file at `path`, numbering its
/// documents from 1.
pub fn parse_text(
    path: &Arc<Path>,
    text: &str,
    first_line: usize,
    emit: &mut impl FnMut(Result<Resource, ConfigError>),
) -> Parsed {
    let starts = document_start_lines(text);
    let lines_before = first_line - 1;
    let mut parsed = Parsed::default();
    // Checks of the text as a whole, before the parser sees it.
    let refused = flow_nesting_beyond(text, MAX_FLOW_DEPTH)
        .map(|line| {
            let message = format!("nested deeper than {MAX_FLOW_DEPTH} levels of `[` or `{{`");
            (line, message)
        })
        .or_else(|| {
            let (line, column, c) = refused_character(text)?;
            let code = c as u32;
            Some((
                line,
                format!("character U+{code:04X} at column {column} is not allowed in YAML"),
            ))
        });
    if let Some((line, message)) = refused {
        emit(Err(ConfigError {
            origin: Origin::File {
                path: path.clone(),
                document: starts.iter().filter(|&&start| start <= line).count().max(1),
                line: lines_before + line,
            },
            resource: None,
            field: None,
            message: format!("invalid YAML: {message}"),
        }));
        parsed.ended = true;
        return parsed;
    }
    for (index, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        parsed.documents = index + 1;
        let origin = Origin::File {
            path: path.clone(),
            document: index + 1,
            line: lines_before + starts.get(index).copied().unwrap_or(1),
        };
        let value = match Json::deserialize(de) {
            Ok(Json(v)) => v,
            Err(e) => {
                // A syntax error ends the stream: the parser cannot find the next document.
                emit(Err(ConfigError {
                    origin,
                    resource: None,
                    field: None,
                    message: format!("invalid YAML: {e}"),
                }));
                parsed.ended = true;
                parsed.parser_error = true;
                break;
            }
        };
        let mut items = Vec::new();
        flatten_lists(value, &mut items);
        for item in items {
            if let Some(result) = parse_one(item, &origin).transpose() {
                emit(result);
            }
        }
    }
    parsed
}

/// A YAML document as JSON, built straight from the parser's events: going through
/// `serde_yaml::Value` took a third of the time to read 100,000 Users. A key given twice
/// is an error, as in serde_yaml's own mappings.
struct Json(Value);

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(JsonVisitor).map(Json)
    }
}

struct JsonVisitor;

impl<'de> serde::de::Visitor<'de> for JsonVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a value JSON can hold")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }

    /// `.nan` and `.inf` become null, as JSON has no such numbers.
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Json::deserialize(d).map(|Json(v)| v)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Json(v)) = seq.next_element()? {
            items.push(v);
        }
        items.shrink_to_fit();
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let Json(value) = map.next_value()?;
            entries.push((key, value));
        }
        // Sized once, as serde_json sizes them: a configuration keeps many of these maps,
        // and arrays, for as long as it serves.
        let mut out = Map::with_capacity(entries.len());
        for (key, value) in entries {
            if out.contains_key(&key) {
                return Err(serde::de::Error::custom(format_args!(
                    "duplicate entry with key {key:?}"
                )));
            }
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }

    fn visit_enum<A: serde::de::EnumAccess<'de>>(self, _: A) -> Result<Value, A::Error> {
        Err(serde::de::Error::custom(
            "a tagged value (`!name`) has no meaning in JSON",
        ))
    }
}

/// A JSON array, or a Kubernetes `List` (`kubectl get -o yaml`), holds several resources.
fn flatten_lists(value: Value, out: &mut Vec<Value>) {
    match value {
        Value::Null => {}
        Value::Array(items) => items.into_iter().for_each(|v| flatten_lists(v, out)),
        Value::Object(mut map)
            if map.get("kind").and_then(Value::as_str) == Some("List")
                && map.get("items").is_some_and(Value::is_array) =>
        {
            flatten_lists(map.remove("items").unwrap_or_default(), out)
        }
        other => out.push(other),
    }
}

fn parse_one(value: Value, origin: &Origin) -> Result<Option<Resource>, ConfigError> {
    let err = |resource: Option<String>, field: Option<&str>, message: String| ConfigError {
        origin: origin.clone(),
        resource,
        field: field.map(str::to_string),
        message,
    };
    let Value::Object(mut map) = value else {
        return Err(err(None, None, "a document must be a mapping".into()));
    };

    // `metadata.annotations` of the Kubernetes form: an AccessPolicy's dry-run. No copy for
    // the other kinds.
    let annotations = map
        .get("apiVersion")
        .and(map.get("kind"))
        .filter(|kind| kind.as_str() == Some(Kind::AccessPolicy.name()))
        .and(map.get("metadata"))
        .and_then(|m| m.get("annotations"))
        .and_then(Value::as_object)
        .cloned();
    let (kind, name, namespace, spec, labels) = if let Some(api_version) = map.get("apiVersion") {
        let api_version = api_version.as_str().unwrap_or_default();
        let kind = map.get("kind").and_then(Value::as_str).unwrap_or_default();
        if api_version == "v1" && kind == "Secret" {
            return parse_secret(&map, origin).map(Some);
        }
        if !api_version.starts_with(GROUP_PREFIX) {
            // Never a silent skip: a manifest of another group in a --config path is a
            // mistake (a kustomize tree given whole, a typo in the group).
            let name = map
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                .map(|n| format!("/{n}"))
                .unwrap_or_default();
            return Err(err(
                None,
                Some("apiVersion"),
                format!(
                    "{api_version:?} {kind}{name} is not read by portcullis: --config takes \
                     {API_VERSION} manifests ({KIND_NAMES}), Aidbox-style resources and core \
                     v1 Secrets; keep other manifests out of --config paths"
                ),
            ));
        }
        if api_version != API_VERSION {
            return Err(err(
                None,
                Some("apiVersion"),
                format!("unsupported apiVersion {api_version:?}, expected {API_VERSION:?}"),
            ));
        }
        let kind = string_field(&map, "kind")
            .ok_or_else(|| err(None, Some("kind"), format!("missing; one of {KIND_NAMES}")))?;
        let metadata = map.get("metadata").and_then(Value::as_object);
        let name = metadata
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| err(None, Some("metadata.name"), "missing".into()))?
            .to_string();
        let namespace = metadata
            .and_then(|m| m.get("namespace"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let labels = metadata
            .and_then(|m| m.get("labels"))
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect();
        let spec = map.remove("spec").ok_or_else(|| {
            err(
                Some(format!("{kind}/{name}")),
                Some("spec"),
                "missing".into(),
            )
        })?;
        (kind, name, namespace, spec, Some(labels))
    } else if let Some(kind) = string_field(&map, "resourceType") {
        let name = string_field(&map, "id")
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                err(
                    None,
                    Some("id"),
                    format!("missing: an Aidbox-style {kind} needs an `id` to be named by"),
                )
            })?;
        for meta in ["resourceType", "id", "meta"] {
            map.remove(meta);
        }
        (kind, name, None, Value::Object(map), None)
    } else {
        return Err(err(
            None,
            None,
            "neither a Kubernetes manifest (apiVersion, kind) nor an Aidbox resource (resourceType)"
                .into(),
        ));
    };

    let resource = Some(format!("{kind}/{name}"));
    let spec = parse_spec(&kind, spec)
        .and_then(|mut spec| {
            let annotations = annotations.as_ref();
            super::read_annotations(&mut spec, |key| annotations?.get(key).map(Value::as_str))?;
            Ok(spec)
        })
        .map_err(|e| {
            let resource = (e.field != "kind").then_some(resource.clone()).flatten();
            let field = (!e.field.is_empty()).then_some(e.field.as_str());
            err(resource, field, e.message)
        })?;

    Ok(Some(Resource {
        name,
        namespace,
        origin: origin.clone(),
        spec,
        labels,
    }))
}

/// A core `v1` Secret: `data` (base64) and `stringData` (plain, over `data`, as the API
/// server merges them). No value ever appears in an error.
fn parse_secret(map: &Map<String, Value>, origin: &Origin) -> Result<Resource, ConfigError> {
    use base64::Engine as _;
    let metadata = map.get("metadata").and_then(Value::as_object);
    let name = metadata
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty());
    let err = |field: &str, message: &str| ConfigError {
        origin: origin.clone(),
        resource: name.map(|n| format!("Secret/{n}")),
        field: Some(field.to_string()),
        message: message.to_string(),
    };
    let name = name.ok_or_else(|| err("metadata.name", "missing"))?;
    let namespace = metadata
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let mut values = std::collections::BTreeMap::new();
    for (field, base64) in [("data", true), ("stringData", false)] {
        let Some(entries) = map.get(field).filter(|v| !v.is_null()) else {
            continue;
        };
        let entries = entries
            .as_object()
            .ok_or_else(|| err(field, "a map of keys to values"))?;
        for (key, value) in entries {
            let path = format!("{field}.{key}");
            let text = value
                .as_str()
                .ok_or_else(|| err(&path, "a string value expected"))?;
            let bytes = if base64 {
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(|_| {
                        err(
                            &path,
                            "not base64 (`data` holds base64; plain text goes in `stringData`)",
                        )
                    })?
            } else {
                text.as_bytes().to_vec()
            };
            values.insert(key.clone(), bytes);
        }
    }
    Ok(Resource {
        name: name.to_string(),
        namespace,
        origin: origin.clone(),
        spec: Spec::Secret(super::SecretData { values }),
        labels: None,
    })
}

/// The `spec` of one of the four kinds, or the field that keeps it from being one. Secret
/// values never appear in the message.
pub fn parse_spec(kind: &str, spec: Value) -> Result<Spec, FieldError> {
    if !super::weighs_at_most(&spec, checks::MAX_SPEC_WEIGHT) {
        return Err(FieldError::new("spec", spec_too_heavy()));
    }
    match Kind::from_name(kind) {
        Some(Kind::TokenIntrospector) => typed(spec).map(Spec::TokenIntrospector),
        Some(Kind::AccessPolicy) => typed(spec).map(Spec::AccessPolicy),
        Some(Kind::IdentityProvider) => typed(spec).map(Spec::IdentityProvider),
        Some(Kind::User) => typed(spec).map(Spec::User),
        None => {
            return Err(FieldError::new(
                "kind",
                format!("unsupported kind {kind:?}; portcullis reads {KIND_NAMES}"),
            ))
        }
    }
    .map_err(|(field, message)| FieldError::new(field.unwrap_or_default(), message))
}

/// The message for a spec over [`checks::MAX_SPEC_WEIGHT`].
pub fn spec_too_heavy() -> String {
    format!(
        "holds more than {} values (keys, items, and each 32 bytes of a string): split it, \
         or keep long lists out of one resource",
        checks::MAX_SPEC_WEIGHT
    )
}

fn string_field(map: &Map<String, Value>, key: &str) -> Option<String> {
    map.get(key).and_then(Value::as_str).map(str::to_string)
}

/// Deserialise a spec, keeping the path of the field that failed.
fn typed<T: DeserializeOwned>(spec: Value) -> Result<T, (Option<String>, String)> {
    serde_path_to_error::deserialize(spec).map_err(|e| {
        let path = e.path().to_string();
        let mut message = e.into_inner().to_string();
        if is_secret_field(&path) {
            message = redact_quoted(&message);
        }
        let field = (path != ".").then_some(path);
        (field, message)
    })
}

/// Fields that hold a secret or key: their values never appear in an error message.
fn is_secret_field(path: &str) -> bool {
    let last = path.rsplit('.').next().unwrap_or(path);
    matches!(last, "secret" | "k" | "pub" | "authorization")
}

/// serde quotes the offending value between backticks: drop it.
fn redact_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for (i, part) in message.split('`').enumerate() {
        if i % 2 == 1 {
            out.push('`');
            out.push_str(crate::resources::REDACTED);
            out.push('`');
        } else {
            out.push_str(part);
        }
    }
    out
}

/// The 1-based line on which each YAML document starts, in stream order.
/// Deeper than this, flow collections are refused before the YAML parser sees them: the
/// parser's cost grows with tokens times depth (a 100 KB file of 50,000 `[` took 10 s to be
/// refused), and serde_yaml refuses anything past 128 levels anyway.
const MAX_FLOW_DEPTH: usize = 256;

/// The line where `[`/`{` nesting first passes `limit`, if it does. Brackets in quoted
/// scalars and comments do not count; one inside a plain scalar may (`a[b`), which can only
/// make the count too high, and only an absurd file reaches the limit that way.
fn flow_nesting_beyond(text: &str, limit: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let (mut depth, mut line, mut i) = (0usize, 1usize, 0usize);
    let mut previous = b'\n';
    while let Some(&b) = bytes.get(i) {
        let after_space = matches!(previous, b' ' | b'\t' | b'\n' | b'\r');
        match b {
            b'\n' => line += 1,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return Some(line);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            // A comment runs to the end of the line.
            b'#' if after_space => {
                while bytes.get(i).is_some_and(|&c| c != b'\n') {
                    i += 1;
                }
                continue;
            }
            // A quoted scalar starts where a token may: skip to its closing quote.
            b'"' | b'\'' if after_space || matches!(previous, b'[' | b'{' | b',' | b':') => {
                i += 1;
                while let Some(&c) = bytes.get(i) {
                    match c {
                        b'\n' => line += 1,
                        b'\\' if b == b'"' => i += 1,
                        // `''` inside single quotes is one quote.
                        b'\'' if b == b'\'' && bytes.get(i + 1) == Some(&b'\'') => i += 1,
                        c if c == b => break,
                        _ => {}
                    }
                    i += 1;
                }
            }
            _ => {}
        }
        previous = b;
        i += 1;
    }
    None
}

/// The line, column (from 1) and character of the first character YAML does not allow:
/// control characters but tab and line ends, U+FFFE and U+FFFF. The parser would say
/// only "at position N", and, reading ahead, in whichever document it was in.
fn refused_character(text: &str) -> Option<(usize, usize, char)> {
    let refused = |c: char| matches!(c, '\0'..='\x08' | '\x0b' | '\x0c' | '\x0e'..='\x1f' | '\x7f'..='\u{84}' | '\u{86}'..='\u{9f}' | '\u{fffe}' | '\u{ffff}');
    // All are outside printable ASCII: plain text is passed over a byte at a time.
    let start = text
        .bytes()
        .position(|b| (b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r')) || b >= 0x7f)?;
    let (offset, c) = text[start..].char_indices().find(|&(_, c)| refused(c))?;
    let at = start + offset;
    let before = &text[..at];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Some((
        1 + before.bytes().filter(|&b| b == b'\n').count(),
        1 + before[line_start..].chars().count(),
        c,
    ))
}

fn document_start_lines(text: &str) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut content_before_first_marker = false;
    let mut seen_marker = false;
    for (i, line) in text.lines().enumerate() {
        if line == "---" || line.starts_with("--- ") || line.starts_with("---\t") {
            if !seen_marker && content_before_first_marker {
                starts.insert(0, 1);
            }
            seen_marker = true;
            starts.push(i + 2);
        } else if !seen_marker {
            let t = line.trim();
            // Comments and directives (`%YAML`) come before a document, not in one.
            if !t.is_empty() && !t.starts_with('#') && !t.starts_with('%') {
                content_before_first_marker = true;
            }
        }
    }
    if !seen_marker {
        starts.push(1);
    }
    starts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (Vec<Resource>, Vec<ConfigError>) {
        parse_documents(Path::new("t.yaml"), text)
    }

    /// Straight from the parser's events, the same JSON as through `serde_yaml::Value`.
    #[test]
    fn documents_read_as_json_as_serde_yaml_values_convert() {
        let docs = [
            "a: 1\nb: [x, 2.5, -3, true, ~, null]\nc: {d: 'q', e: \"w\"}\n",
            "1: one\ntrue: yes\n2.5: f\n",
            "a: &x {k: [1, 2]}\nb: *x\n",
            "nan: .nan\ninf: .inf\nbig: 18446744073709551615\nneg: -9223372036854775808\n",
            "s: !!str 123\nb: !!bool true\nblock: |\n  two\n  lines\nfolded: >\n  one\n  line\n",
            "- a\n- [b, {c: d}]\n",
            "plain\n",
            "\"0x1F\": 0x1F\noct: 0o17\nempty: ''\nu: \"\\u00e9\"\n",
        ];
        for doc in docs {
            let through_value: serde_yaml::Value = serde_yaml::from_str(doc).unwrap();
            let expected = serde_json::to_value(&through_value).unwrap();
            let Json(direct) = serde_yaml::from_str(doc).unwrap();
            assert_eq!(direct, expected, "{doc}");
            assert_eq!(direct.to_string(), expected.to_string(), "key order: {doc}");
        }
        let dup = serde_yaml::from_str::<Json>("a: 1\nb: 2\na: 3\n")
            .err()
            .unwrap();
        assert!(
            dup.to_string()
                .starts_with("duplicate entry with key \"a\""),
            "{dup}"
        );
        let tag = serde_yaml::from_str::<Json>("a: !custom 1\n")
            .err()
            .unwrap();
        assert!(tag.to_string().contains("tagged value"), "{tag}");
    }

    #[test]
    fn reads_both_forms_from_one_file() {
        let (rs, errs) = parse(
            "resourceType: TokenIntrospector\nid: a\ntype: jwt\njwt: {iss: x, secret: s}\n---\n\
             apiVersion: portcullis.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: p, namespace: ns}\n\
             spec: {engine: allow}\n",
        );
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(rs.len(), 2);
        assert_eq!(rs[0].id(), "TokenIntrospector/a");
        // As written; the compiler flattens a file's namespaces unless told the root.
        assert_eq!(rs[1].id(), "AccessPolicy/ns/p");
        assert_eq!(rs[1].namespace.as_deref(), Some("ns"));
        assert!(matches!(
            rs[1].origin,
            Origin::File {
                document: 2,
                line: 6,
                ..
            }
        ));
    }

    #[test]
    fn names_file_line_resource_and_field() {
        let (_, errs) = parse(
            "# leading comment\n---\nresourceType: AccessPolicy\nid: ok\nengine: allow\n---\n\
             resourceType: TokenIntrospector\nid: bad\ntype: jwt\njwt:\n  iss: x\n  keys:\n  - {kty: RSA, alg: RS999, pub: k}\n",
        );
        assert_eq!(errs.len(), 1);
        let text = errs[0].to_string();
        assert!(
            text.starts_with(
                "t.yaml:7 (document 2): TokenIntrospector/bad: field `jwt.keys[0].alg`"
            ),
            "{text}"
        );
        assert!(text.contains("RS999"), "{text}");
    }

    #[test]
    fn an_access_policys_dry_run_annotation_is_read_and_checked() {
        let (rs, errs) = parse(
            "apiVersion: portcullis.dev/v1alpha1\nkind: AccessPolicy\n\
             metadata: {name: dry, annotations: {portcullis.dev/dry-run: 'true'}}\n\
             spec: {engine: allow}\n---\n\
             apiVersion: portcullis.dev/v1alpha1\nkind: AccessPolicy\n\
             metadata: {name: istio, annotations: {istio.io/dry-run: 'true', other: x}}\n\
             spec: {engine: allow}\n---\n\
             apiVersion: portcullis.dev/v1alpha1\nkind: AccessPolicy\n\
             metadata: {name: enforced, annotations: {portcullis.dev/dry-run: 'false'}}\n\
             spec: {engine: allow}\n---\n\
             resourceType: AccessPolicy\nid: aidbox\nengine: allow\n---\n\
             apiVersion: portcullis.dev/v1alpha1\nkind: AccessPolicy\n\
             metadata: {name: bad, annotations: {portcullis.dev/dry-run: 'on'}}\n\
             spec: {engine: allow}\n---\n\
             apiVersion: portcullis.dev/v1alpha1\nkind: AccessPolicy\n\
             metadata: {name: unquoted, annotations: {istio.io/dry-run: true}}\n\
             spec: {engine: allow}\n",
        );
        let dry_run: Vec<(&str, bool)> = rs
            .iter()
            .map(|r| match &r.spec {
                Spec::AccessPolicy(p) => (r.name.as_str(), p.dry_run),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            dry_run,
            [
                ("dry", true),
                ("istio", true),
                ("enforced", false),
                ("aidbox", false)
            ]
        );
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert_eq!(
            errs[0].to_string(),
            "t.yaml:20 (document 5): AccessPolicy/bad: field \
             `metadata.annotations[\"portcullis.dev/dry-run\"]`: \"on\" is neither \"true\" nor \"false\""
        );
        assert_eq!(
            errs[1].field.as_deref(),
            Some(r#"metadata.annotations["istio.io/dry-run"]"#)
        );
        // Not a field of the spec: refused there, as any unknown field.
        let (_, errs) = parse("resourceType: AccessPolicy\nid: p\nengine: allow\ndry_run: true\n");
        assert!(errs[0].message.contains("dry_run"), "{errs:?}");
    }

    #[test]
    fn rejects_unknown_fields_in_security_settings() {
        let (_, errs) =
            parse("resourceType: TokenIntrospector\nid: t\ntype: jwt\njwks-uri: http://x\n");
        assert_eq!(errs.len(), 1);
        assert!(errs[0].message.contains("jwks-uri"), "{}", errs[0]);
    }

    #[test]
    fn refuses_other_groups_and_other_versions_of_ours_naming_the_line() {
        let (rs, errs) = parse(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n---\n\
             apiVersion: portcullis.dev/v1\nkind: User\nmetadata: {name: u}\nspec: {}\n---\n\
             apiVersion: portcullis.io/v1alpha1\nkind: User\nmetadata: {name: v}\nspec: {}\n",
        );
        assert!(rs.is_empty());
        assert_eq!(errs.len(), 3);
        assert!(errs
            .iter()
            .all(|e| e.field.as_deref() == Some("apiVersion")));
        assert!(
            errs[0]
                .to_string()
                .starts_with("t.yaml:1 (document 1): field `apiVersion`: \"v1\" ConfigMap/c is not read by portcullis"),
            "{}",
            errs[0]
        );
        assert!(
            errs[2].to_string().starts_with("t.yaml:10 (document 3)"),
            "{}",
            errs[2]
        );
    }

    #[test]
    fn reads_core_secrets_without_showing_their_values() {
        let (rs, errs) = parse(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: ns}\n\
             data: {a: aGVsbG8=, b: eA==}\nstringData: {b: plain}\n---\n\
             apiVersion: v1\nkind: Secret\nmetadata: {name: bad}\ndata: {k: 'not base64!!'}\n",
        );
        assert_eq!(rs.len(), 1);
        let Spec::Secret(data) = &rs[0].spec else {
            panic!("{rs:?}")
        };
        assert_eq!(rs[0].namespace.as_deref(), Some("ns"));
        assert_eq!(data.values["a"], b"hello");
        assert_eq!(data.values["b"], b"plain");
        assert!(!format!("{rs:?}").contains("hello"));
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field.as_deref(), Some("data.k"));
        assert!(!errs[0].to_string().contains("not base64!!"), "{}", errs[0]);
    }

    #[test]
    fn reads_json_arrays_and_kube_lists() {
        let (rs, errs) = parse(
            r#"[{"resourceType": "User", "id": "a"}, {"apiVersion": "v1", "kind": "List", "items": [
                {"apiVersion": "portcullis.dev/v1alpha1", "kind": "User", "metadata": {"name": "b"}, "spec": {}}]}]"#,
        );
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(
            rs.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
    }

    #[test]
    fn never_echoes_a_secret_in_an_error() {
        let (_, errs) = parse(
            "resourceType: TokenIntrospector\nid: t\ntype: jwt\njwt: {iss: x, secret: 123456}\n",
        );
        assert_eq!(errs[0].field.as_deref(), Some("jwt.secret"));
        assert!(!errs[0].to_string().contains("123456"), "{}", errs[0]);
    }

    #[test]
    fn reports_unknown_resource_types() {
        let (_, errs) = parse("resourceType: Client\nid: c\n");
        assert!(errs[0].message.contains("Client"));
    }

    #[test]
    fn deep_flow_nesting_is_refused_before_the_parser_sees_it() {
        let deep = format!(
            "resourceType: AccessPolicy\nid: deep\nengine: matcho\nmatcho: {}{}\n",
            "[".repeat(50_000),
            "]".repeat(50_000)
        );
        let (rs, errs) = parse(&deep);
        assert!(rs.is_empty());
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0]
                .to_string()
                .starts_with("t.yaml:4 (document 1): invalid YAML: nested deeper than 256 levels"),
            "{}",
            errs[0]
        );
        let second = format!("resourceType: User\nid: u\n---\n{deep}");
        let (_, errs) = parse(&second);
        assert!(errs[0].to_string().contains("document 2"), "{}", errs[0]);
    }

    #[test]
    fn a_character_yaml_refuses_is_named_with_its_line_and_column() {
        let (rs, errs) = parse("resourceType: User\nid: a\n---\nresourceType: User\nid: é\u{7}\n");
        assert!(rs.is_empty());
        assert_eq!(
            errs[0].to_string(),
            "t.yaml:5 (document 2): invalid YAML: character U+0007 at column 6 is not allowed in YAML"
        );
        assert_eq!(
            refused_character("tab\there\r\nnel\u{85} é ✓ \u{feff}"),
            None
        );
        assert_eq!(refused_character("a\n\u{9f}"), Some((2, 1, '\u{9f}')));
        assert_eq!(refused_character("\u{ffff}"), Some((1, 1, '\u{ffff}')));
    }

    #[test]
    fn brackets_in_quotes_and_comments_do_not_count_as_nesting() {
        let open = "[".repeat(300);
        let text = format!(
            "# {open}\nresourceType: AccessPolicy\nid: p\nengine: matcho\n\
             matcho: {{uri: \"#^/a{open}\\\"\", x: '{open}''{open}', y: [1, [2, \"]]]]\"]]}}  # {open}\n"
        );
        assert_eq!(flow_nesting_beyond(&text, MAX_FLOW_DEPTH), None);
        let (rs, errs) = parse(&text);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(rs.len(), 1);
        // Just past the limit, wherever it is.
        let nested = format!("a: {}{}\n", "[".repeat(257), "]".repeat(257));
        assert_eq!(flow_nesting_beyond(&nested, MAX_FLOW_DEPTH), Some(1));
        let within = format!("a: {}{}\n", "[".repeat(256), "]".repeat(256));
        assert_eq!(flow_nesting_beyond(&within, MAX_FLOW_DEPTH), None);
    }

    #[test]
    fn a_spec_heavier_than_the_bound_is_refused_before_it_is_typed() {
        let heavy = serde_json::json!({"engine": "matcho",
            "matcho": {"jwt": {"n": vec![0; checks::MAX_SPEC_WEIGHT as usize]}}});
        let e = parse_spec("AccessPolicy", heavy).unwrap_err();
        assert_eq!(e.field, "spec");
        assert!(
            e.message.contains("more than 100000 values"),
            "{}",
            e.message
        );
        let light = serde_json::json!({"engine": "matcho",
            "matcho": {"jwt": {"n": vec![0; 1000]}}});
        assert!(parse_spec("AccessPolicy", light).is_ok());
    }
}
