//! The request being authorised, as plain data: what the gRPC and HTTP edges translate to.

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
