//! The request being authorised, as plain data: what the gRPC and HTTP edges translate to.

use crate::resources::is_namespace_name;

/// What a request presents to authenticate with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential<'a> {
    None,
    Bearer(&'a str),
    /// Bearer credentials that are not one token: refused, never read as anonymous.
    Unreadable(&'static str),
}

/// RFC 6750 section 2.1: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    // A table lookup folded without early exit: tokens are long and nearly always valid, and
    // this loop has no branch per byte.
    !body.is_empty()
        && body
            .bytes()
            .fold(true, |ok, b| ok & B64TOKEN_BYTES[usize::from(b)])
}

const B64TOKEN_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] =
            c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
        b += 1;
    }
    table
};

/// One HTTP request as Envoy describes it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HttpRequest {
    pub method: String,
    pub scheme: String,
    pub host: String,
    /// Path with the query string, as on the request line.
    pub path: String,
    /// Header names in lower case; repeated headers appear repeatedly.
    pub headers: Vec<(String, String)>,
    pub remote_addr: Option<String>,
    /// Envoy's per-route `context_extensions`.
    pub context_extensions: Vec<(String, String)>,
    /// The namespace whose resources apply beside the root's ([`request_namespace`]);
    /// `None`: only the root's.
    pub namespace: Option<String>,
}

/// The route's `context_extensions` key that names the namespace of a request.
pub const NAMESPACE_EXTENSION: &str = "portcullis.dev/namespace";

/// A request's namespace, from what the client cannot forge, first found wins: the
/// route's `context_extensions["portcullis.dev/namespace"]`, then the namespace of the
/// destination's SPIFFE identity (`spiffe://<trust domain>/ns/<N>/sa/<account>`, what
/// Istio sends under mTLS). A value that is not a namespace name counts as none: a typo
/// in a route narrows it to the root's resources, never widens it.
pub fn request_namespace<'a>(
    context_extensions: &'a [(String, String)],
    destination_principal: Option<&'a str>,
) -> Option<&'a str> {
    let from_route = context_extensions
        .iter()
        .find(|(k, _)| k == NAMESPACE_EXTENSION)
        .map(|(_, v)| v.as_str());
    match from_route {
        Some(ns) => is_namespace_name(ns).then_some(ns),
        None => destination_principal.and_then(spiffe_namespace),
    }
}

/// `N` of `spiffe://<trust domain>/ns/<N>/sa/<service account>`.
fn spiffe_namespace(principal: &str) -> Option<&str> {
    let path = principal.strip_prefix("spiffe://")?;
    let (trust_domain, path) = path.split_once('/')?;
    let mut parts = path.split('/');
    match (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (Some("ns"), Some(ns), Some("sa"), Some(sa), None)
            if !trust_domain.is_empty() && !sa.is_empty() && is_namespace_name(ns) =>
        {
            Some(ns)
        }
        _ => None,
    }
}

impl HttpRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The bearer credential of the `Authorization` header (RFC 6750: scheme
    /// case-insensitive). Another scheme is not a bearer credential: the request is then
    /// anonymous.
    pub fn credential(&self) -> Credential<'_> {
        let mut values = self
            .headers
            .iter()
            .filter(|(k, _)| k == "authorization")
            .map(|(_, v)| v.as_str());
        let Some(value) = values.next() else {
            return Credential::None;
        };
        if values.next().is_some() {
            // Which one would the application read? Refuse to guess.
            return Credential::Unreadable("several Authorization headers");
        }
        let Some((scheme, token)) = value.trim().split_once(' ') else {
            return Credential::None;
        };
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
            return Credential::None;
        }
        if is_b64token(token) {
            Credential::Bearer(token)
        } else {
            // A comma-joined pair of headers (`Bearer a,Bearer b`), spaces, quotes...
            Credential::Unreadable("the bearer token is not one RFC 6750 token")
        }
    }

    /// Whether the request presents bearer credentials at all, readable or not.
    pub fn has_credential(&self) -> bool {
        !matches!(self.credential(), Credential::None)
    }

    /// `(path, query)`, the query without its `?`.
    pub fn split_path(&self) -> (&str, &str) {
        self.path.split_once('?').unwrap_or((&self.path, ""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_auth(values: &[&str]) -> HttpRequest {
        HttpRequest {
            headers: values
                .iter()
                .map(|v| ("authorization".to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn reads_one_bearer_token_only() {
        // Debug text: the credential borrows from a request made inside the closure.
        let credential = |values: &[&str]| format!("{:?}", with_auth(values).credential());
        let bearer = |t: &str| format!("{:?}", Credential::Bearer(t));
        assert_eq!(credential(&["Bearer abc"]), bearer("abc"));
        assert_eq!(
            credential(&["bearer  a.b-c_d~e+f/g=="]),
            bearer("a.b-c_d~e+f/g==")
        );
        let none = format!("{:?}", Credential::None);
        assert_eq!(credential(&["Basic abc"]), none);
        assert_eq!(credential(&["Bearer"]), none);
        assert_eq!(credential(&[]), none);
        for values in [
            &["Bearer a", "Bearer b"][..],
            &["Basic x", "Bearer b"],
            &["Bearer a,Bearer b"],
            &["Bearer a b"],
            &["Bearer \"a\""],
            &["Bearer ="],
        ] {
            assert!(credential(values).starts_with("Unreadable"), "{values:?}");
        }
    }

    #[test]
    fn the_namespace_comes_from_the_route_then_the_destination_identity() {
        let route = |ns: &str| vec![(NAMESPACE_EXTENSION.to_string(), ns.to_string())];
        let spiffe = Some("spiffe://cluster.local/ns/team-a/sa/web");
        assert_eq!(request_namespace(&route("team-b"), spiffe), Some("team-b"));
        assert_eq!(request_namespace(&[], spiffe), Some("team-a"));
        assert_eq!(request_namespace(&[], None), None);
        // A malformed route value narrows to the root; it does not fall through to another.
        assert_eq!(request_namespace(&route("Team_B"), spiffe), None);
        assert_eq!(request_namespace(&route(""), spiffe), None);
        let other = vec![("other".to_string(), "team-b".to_string())];
        assert_eq!(request_namespace(&other, spiffe), Some("team-a"));
        for principal in [
            "spiffe://cluster.local/ns/team-a",
            "spiffe://cluster.local/ns/team-a/sa/web/extra",
            "spiffe:///ns/team-a/sa/web",
            "spiffe://cluster.local/ns//sa/web",
            "spiffe://cluster.local/ns/team-a/sa/",
            "https://cluster.local/ns/team-a/sa/web",
            "spiffe://cluster.local/ns/TEAM/sa/web",
            "cluster.local/ns/team-a/sa/web",
        ] {
            assert_eq!(request_namespace(&[], Some(principal)), None, "{principal}");
        }
    }

    #[test]
    fn b64token_bytes_are_exactly_rfc_6750s() {
        let rfc: Vec<u8> = (b'A'..=b'Z')
            .chain(b'a'..=b'z')
            .chain(b'0'..=b'9')
            .chain(*b"-._~+/")
            .collect();
        for b in 0..=255u8 {
            assert_eq!(B64TOKEN_BYTES[usize::from(b)], rfc.contains(&b), "byte {b}");
            let token = [b'a', b, b'z'];
            if let Ok(token) = std::str::from_utf8(&token) {
                assert_eq!(is_b64token(token), rfc.contains(&b), "{token:?}");
            }
        }
        assert!(is_b64token("abc=="));
        assert!(!is_b64token("a=b"));
    }
}
