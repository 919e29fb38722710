//! The request being authorised, as plain data: what the gRPC and HTTP edges translate to.

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

    /// The bearer token of the `Authorization` header (RFC 6750: scheme case-insensitive).
    /// Another scheme is not a bearer credential: the request is then anonymous.
    pub fn bearer_token(&self) -> Option<&str> {
        let value = self.header("authorization")?.trim();
        let (scheme, token) = value.split_once(' ')?;
        let token = token.trim();
        (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
    }

    /// `(path, query)`, the query without its `?`.
    pub fn split_path(&self) -> (&str, &str) {
        self.path.split_once('?').unwrap_or((&self.path, ""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_auth(v: &str) -> HttpRequest {
        HttpRequest {
            headers: vec![("authorization".into(), v.into())],
            ..Default::default()
        }
    }

    #[test]
    fn reads_bearer_tokens_only() {
        assert_eq!(with_auth("Bearer abc").bearer_token(), Some("abc"));
        assert_eq!(with_auth("bearer  abc ").bearer_token(), Some("abc"));
        assert_eq!(with_auth("Basic abc").bearer_token(), None);
        assert_eq!(with_auth("Bearer").bearer_token(), None);
        assert_eq!(HttpRequest::default().bearer_token(), None);
    }
}
