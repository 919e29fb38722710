//! The operator API (`portcullis.admin.v1.Admin`): `Explain` for a single request.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

use crate::decision::{Authorizer, HttpRequest};
use crate::proto::admin::admin_server::Admin;
use crate::proto::admin::{ExplainRequest, ExplainResponse};

pub use crate::proto::admin::admin_server::AdminServer;

pub struct AdminService {
    authorizer: Arc<Authorizer>,
    /// SHA-256 of the operator token: compared by digest, so the comparison leaks nothing
    /// useful about the token through timing.
    token_digest: [u8; 32],
}

impl AdminService {
    pub fn new(authorizer: Arc<Authorizer>, operator_token: &str) -> Self {
        AdminService {
            authorizer,
            token_digest: Sha256::digest(operator_token.trim().as_bytes()).into(),
        }
    }

    /// Traces show validated claims and Users: never for a caller without the operator
    /// token.
    fn authorize<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| Status::unauthenticated("the operator API needs a bearer token"))?;
        let digest: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
        if digest == self.token_digest {
            Ok(())
        } else {
            Err(Status::permission_denied("not the operator token"))
        }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn explain(
        &self,
        request: Request<ExplainRequest>,
    ) -> Result<Response<ExplainResponse>, Status> {
        self.authorize(&request)?;
        let r = request.into_inner();
        let mut headers: Vec<(String, String)> = r
            .headers
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .filter(|(k, _)| r.token.is_empty() || k != "authorization")
            .collect();
        if !r.token.is_empty() {
            headers.push(("authorization".into(), format!("Bearer {}", r.token)));
        }
        let request = HttpRequest {
            method: if r.method.is_empty() {
                "GET".into()
            } else {
                r.method
            },
            scheme: if r.scheme.is_empty() {
                "http".into()
            } else {
                r.scheme
            },
            host: r.host,
            path: if r.path.is_empty() {
                "/".into()
            } else {
                r.path
            },
            headers,
            remote_addr: None,
            context_extensions: Vec::new(),
        };
        let (decision, trace) = self.authorizer.explain(&request).await;
        let trace_json = serde_json::to_string_pretty(&trace)
            .map_err(|e| Status::internal(format!("trace: {e}")))?;
        Ok(Response::new(ExplainResponse {
            allowed: decision.allowed(),
            status: decision.http_status().into(),
            reason: decision.reason.to_string(),
            policy: decision.policy.unwrap_or_default(),
            trace_json,
        }))
    }
}
