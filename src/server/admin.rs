//! The operator API (`portcullis.admin.v1.Admin`): `Explain` for a single request.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::decision::{Authorizer, HttpRequest};
use crate::proto::admin::admin_server::Admin;
use crate::proto::admin::{ExplainRequest, ExplainResponse};

pub use crate::proto::admin::admin_server::AdminServer;

pub struct AdminService {
    authorizer: Arc<Authorizer>,
}

impl AdminService {
    pub fn new(authorizer: Arc<Authorizer>) -> Self {
        AdminService { authorizer }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn explain(
        &self,
        request: Request<ExplainRequest>,
    ) -> Result<Response<ExplainResponse>, Status> {
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
