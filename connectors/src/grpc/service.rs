//! `JobService` handlers and the API-key check.

use std::pin::Pin;

use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};
use vidflow_job::JobSpec;

use super::pb::job_service_server::JobService;
use super::pb::{JobRef, JobStatus, ListReply, ListRequest, SubmitReply, SubmitRequest};
use crate::api::{ApiDeps, ApiError, Jobs};
use crate::auth::KeyStore;

/// The authenticated tenant, put on each request by [`authenticate`].
#[derive(Clone, Debug)]
pub struct Tenant(pub String);

/// Checks the API key (`authorization: Bearer <key>` or `x-api-key`) and
/// records its tenant on the request.
pub(super) fn authenticate(keys: &KeyStore, mut req: Request<()>) -> Result<Request<()>, Status> {
    let md = req.metadata();
    let key = md
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim().to_string())
        .or_else(|| {
            md.get("x-api-key")
                .and_then(|v| v.to_str().ok())
                .map(|v| v.trim().to_string())
        });
    let Some(key) = key else {
        return Err(Status::unauthenticated(
            "missing API key: send `authorization: Bearer <key>` metadata",
        ));
    };
    let Some(tenant) = keys.tenant(&key) else {
        return Err(Status::unauthenticated("invalid API key"));
    };
    let tenant = Tenant(tenant.to_string());
    req.extensions_mut().insert(tenant);
    Ok(req)
}

fn tenant_of<T>(req: &Request<T>) -> Result<String, Status> {
    req.extensions()
        .get::<Tenant>()
        .map(|t| t.0.clone())
        .ok_or_else(|| Status::unauthenticated("missing API key"))
}

pub struct Api {
    jobs: Jobs,
}

impl Api {
    pub fn new(deps: ApiDeps) -> Api {
        Api {
            jobs: Jobs::new(deps),
        }
    }

    /// The same handlers over shared dependencies (the HTTP API's).
    pub fn with_jobs(jobs: Jobs) -> Api {
        Api { jobs }
    }
}

fn status(e: ApiError) -> Status {
    match e {
        ApiError::Invalid { message, .. } => Status::invalid_argument(message),
        ApiError::NotFound(id) => Status::not_found(format!("job {id:?} not found")),
        ApiError::Conflict(m) => Status::failed_precondition(m),
        ApiError::Unavailable(m) => Status::unavailable(m),
        ApiError::Internal(m) => Status::internal(m),
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<JobStatus, Status>> + Send>>;

#[tonic::async_trait]
impl JobService for Api {
    async fn submit(&self, req: Request<SubmitRequest>) -> Result<Response<SubmitReply>, Status> {
        let tenant = tenant_of(&req)?;
        let SubmitRequest { spec, client_key } = req.into_inner();
        let spec = spec.ok_or_else(|| Status::invalid_argument("spec is required"))?;
        let spec = JobSpec::try_from(spec).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let key = (!client_key.is_empty()).then_some(client_key.as_str());
        let s = self
            .jobs
            .submit(&tenant, spec, key, "grpc")
            .await
            .map_err(status)?;
        Ok(Response::new(SubmitReply {
            job_id: s.job_id,
            duplicate: s.duplicate,
        }))
    }

    async fn get(&self, req: Request<JobRef>) -> Result<Response<JobStatus>, Status> {
        let tenant = tenant_of(&req)?;
        let id = req.into_inner().job_id;
        self.jobs
            .lookup(&tenant, &id)
            .await
            .map(Response::new)
            .map_err(status)
    }

    type WatchStream = WatchStream;

    async fn watch(&self, req: Request<JobRef>) -> Result<Response<WatchStream>, Status> {
        let tenant = tenant_of(&req)?;
        let id = req.into_inner().job_id;
        let rx = self.jobs.watch(&tenant, &id).await.map_err(status)?;
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok),
        )))
    }

    async fn cancel(&self, req: Request<JobRef>) -> Result<Response<JobStatus>, Status> {
        let tenant = tenant_of(&req)?;
        let id = req.into_inner().job_id;
        self.jobs
            .cancel(&tenant, &id, "grpc")
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn list(&self, req: Request<ListRequest>) -> Result<Response<ListReply>, Status> {
        let tenant = tenant_of(&req)?;
        let limit = match req.into_inner().limit {
            0 => 100,
            n => n as usize,
        };
        let mut jobs = self.jobs.list(&tenant).await.map_err(status)?;
        jobs.truncate(limit);
        Ok(Response::new(ListReply { jobs }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{hash_key, KeyEntry};

    #[test]
    fn keys_are_checked() {
        let keys = KeyStore::from_entries(
            &[KeyEntry {
                tenant: "acme".into(),
                sha256: hash_key("vf_good"),
                expires: None,
            }],
            "test",
        )
        .unwrap();
        let with = |k: &str, v: &str| {
            let mut r = Request::new(());
            r.metadata_mut().insert(
                tonic::metadata::MetadataKey::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
            r
        };
        let ok = authenticate(&keys, with("authorization", "Bearer vf_good")).unwrap();
        assert_eq!(tenant_of(&ok).unwrap(), "acme");
        assert!(authenticate(&keys, with("x-api-key", "vf_good")).is_ok());
        let e = authenticate(&keys, with("authorization", "Bearer vf_bad")).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        let e = authenticate(&keys, Request::new(())).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
    }
}
