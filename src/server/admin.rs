//! The admin listener (`--admin-addr`): the operator API `portcullis.admin.v1.Admin`
//! (gRPC, `Explain` for a single request) and, on the same port over plain HTTP, the
//! explain page ([`super::explain_page`]). Both explain through [`super::operator`], only
//! to callers with the operator token.

use tonic::{Request, Response, Status};

use super::operator::{AdminService, ExplainInput, Refusal};
use crate::proto::admin::admin_server::Admin;
use crate::proto::admin::{ExplainRequest, ExplainResponse};

pub use crate::proto::admin::admin_server::AdminServer;

/// Everything the admin listener serves: the gRPC service under its own path
/// (`/portcullis.admin.v1.Admin/...`, HTTP/2), the explain page's routes (HTTP/1.1 or 2)
/// and a 404 for the rest.
pub fn router(admin: AdminService) -> axum::Router {
    tonic::service::Routes::new(AdminServer::new(admin.clone()))
        .into_axum_router()
        .merge(super::explain_page::router(admin))
        .fallback(super::explain_page::not_found)
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn explain(
        &self,
        request: Request<ExplainRequest>,
    ) -> Result<Response<ExplainResponse>, Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        match self.check_operator(authorization) {
            Ok(()) => {}
            Err(Refusal::NoToken) => {
                return Err(Status::unauthenticated(
                    "the operator API needs a bearer token",
                ))
            }
            Err(Refusal::WrongToken) => {
                return Err(Status::permission_denied("not the operator token"))
            }
        }
        let r = request.into_inner();
        let explained = AdminService::explain(
            self,
            ExplainInput {
                method: r.method,
                scheme: r.scheme,
                host: r.host,
                path: r.path,
                headers: r.headers.into_iter().collect(),
                token: r.token,
                namespace: r.namespace,
            },
        )
        .await;
        let trace_json = serde_json::to_string_pretty(&explained.trace)
            .map_err(|e| Status::internal(format!("trace: {e}")))?;
        Ok(Response::new(ExplainResponse {
            allowed: explained.allowed,
            status: explained.status.into(),
            reason: explained.reason,
            policy: explained.policy.unwrap_or_default(),
            trace_json,
        }))
    }
}
