//! `JobService` handlers and the API-key check.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use vidflow_job::{validate, JobSpec};

use super::pb::job_service_server::JobService;
use super::pb::{JobRef, JobStatus, ListReply, ListRequest, SubmitReply, SubmitRequest};
use super::table::{is_terminal, status_from_record};
use super::ApiDeps;
use crate::amqp::Control;
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

/// The job id a client key stands for: the same (tenant, key) always gives
/// the same id, across API processes and restarts, so a retried Submit
/// can never make a second job.
pub fn client_job_id(tenant: &str, client_key: &str) -> String {
    let d = Sha256::digest(format!("{tenant}\n{client_key}").as_bytes());
    let hex: String = d.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("ck-{hex}")
}

pub struct Api {
    deps: Arc<ApiDeps>,
}

impl Api {
    pub fn new(deps: ApiDeps) -> Api {
        Api {
            deps: Arc::new(deps),
        }
    }
}

/// The job's status if `tenant` owns it: the live table first, then the
/// durable record. Another tenant's job is indistinguishable from none.
async fn lookup(deps: &ApiDeps, tenant: &str, job_id: &str) -> Result<JobStatus, Status> {
    if let Some(s) = deps.table.get(tenant, job_id) {
        return Ok(s);
    }
    let not_found = || Status::not_found(format!("job {job_id:?} not found"));
    if !vidflow_job::id::is_safe_id(job_id) {
        return Err(not_found());
    }
    match deps.state.read_record(tenant, job_id).await {
        Ok(Some(r)) => Ok(status_from_record(&r)),
        Ok(None) => Err(not_found()),
        Err(e) => Err(Status::internal(format!("reading the job record: {e}"))),
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<JobStatus, Status>> + Send>>;

#[tonic::async_trait]
impl JobService for Api {
    async fn submit(&self, req: Request<SubmitRequest>) -> Result<Response<SubmitReply>, Status> {
        let tenant = tenant_of(&req)?;
        let SubmitRequest { spec, client_key } = req.into_inner();
        let spec = spec.ok_or_else(|| Status::invalid_argument("spec is required"))?;
        let mut spec =
            JobSpec::try_from(spec).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if spec.tenant.is_empty() {
            spec.tenant = tenant.clone();
        } else if spec.tenant != tenant {
            return Err(Status::invalid_argument(format!(
                "invalid tenant = {:?}: must be empty or the API key's tenant",
                spec.tenant
            )));
        }
        if !client_key.is_empty() {
            if spec.job_id.is_some() {
                return Err(Status::invalid_argument(
                    "client_key: give either client_key or spec.job_id, not both",
                ));
            }
            if client_key.len() > 256 {
                return Err(Status::invalid_argument("client_key: at most 256 bytes"));
            }
            spec.job_id = Some(client_job_id(&tenant, &client_key));
        }
        let job_id = spec.ensure_job_id().to_string();
        validate(&spec, &self.deps.admission)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if self.deps.table.insert_queued(&tenant, &job_id).is_some() {
            return Ok(Response::new(SubmitReply {
                job_id,
                duplicate: true,
            }));
        }
        // Finished before this API process knew of it.
        if let Ok(Some(_)) = self.deps.state.read_record(&tenant, &job_id).await {
            self.deps.table.remove(&tenant, &job_id);
            return Ok(Response::new(SubmitReply {
                job_id,
                duplicate: true,
            }));
        }
        if let Err(e) = self.deps.publisher.publish_job(&spec).await {
            self.deps.table.remove(&tenant, &job_id);
            return Err(Status::unavailable(format!(
                "could not enqueue the job (nothing was queued; retry): {e}"
            )));
        }
        tracing::info!(job_id = %job_id, tenant = %tenant, "job submitted over gRPC");
        Ok(Response::new(SubmitReply {
            job_id,
            duplicate: false,
        }))
    }

    async fn get(&self, req: Request<JobRef>) -> Result<Response<JobStatus>, Status> {
        let tenant = tenant_of(&req)?;
        let id = req.into_inner().job_id;
        lookup(&self.deps, &tenant, &id).await.map(Response::new)
    }

    type WatchStream = WatchStream;

    async fn watch(&self, req: Request<JobRef>) -> Result<Response<WatchStream>, Status> {
        let tenant = tenant_of(&req)?;
        let id = req.into_inner().job_id;
        // Subscribe before reading, so no change falls in between.
        let mut changes = self.deps.table.subscribe();
        let first = lookup(&self.deps, &tenant, &id).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let deps = self.deps.clone();
        tokio::spawn(async move {
            let mut last = first;
            if tx.send(Ok(last.clone())).await.is_err() || is_terminal(last.state()) {
                return;
            }
            // Progress at least every second, even when no event arrives
            // (queued jobs, a long step).
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                let next = tokio::select! {
                    c = changes.recv() => match c {
                        Ok(s) if s.tenant == tenant && s.job_id == id => s,
                        Ok(_) => continue,
                        Err(RecvError::Lagged(_)) => match deps.table.get(&tenant, &id) {
                            Some(s) => s,
                            None => continue,
                        },
                        Err(RecvError::Closed) => return,
                    },
                    _ = tick.tick() => deps.table.get(&tenant, &id).unwrap_or_else(|| last.clone()),
                    _ = tx.closed() => return,
                };
                last = next;
                if tx.send(Ok(last.clone())).await.is_err() || is_terminal(last.state()) {
                    return;
                }
                tick.reset();
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn cancel(&self, req: Request<JobRef>) -> Result<Response<JobStatus>, Status> {
        let tenant = tenant_of(&req)?;
        let id = req.into_inner().job_id;
        let s = lookup(&self.deps, &tenant, &id).await?;
        if is_terminal(s.state()) {
            return Ok(Response::new(s));
        }
        self.deps
            .publisher
            .publish_control(&Control::Cancel {
                tenant: tenant.clone(),
                job_id: id.clone(),
            })
            .await
            .map_err(|e| Status::unavailable(format!("could not send the cancel: {e}")))?;
        tracing::info!(job_id = %id, tenant = %tenant, "cancel requested over gRPC");
        Ok(Response::new(s))
    }

    async fn list(&self, req: Request<ListRequest>) -> Result<Response<ListReply>, Status> {
        let tenant = tenant_of(&req)?;
        let limit = match req.into_inner().limit {
            0 => 100,
            n => n as usize,
        };
        let mut by_id = std::collections::HashMap::new();
        let records = self
            .deps
            .state
            .list_records(&tenant)
            .await
            .map_err(|e| Status::internal(format!("listing job records: {e}")))?;
        for r in records {
            by_id.insert(r.job_id.clone(), status_from_record(&r));
        }
        for s in self.deps.table.of_tenant(&tenant) {
            // A record is final; the table may only add jobs still running.
            by_id.entry(s.job_id.clone()).or_insert(s);
        }
        let mut jobs: Vec<JobStatus> = by_id.into_values().collect();
        jobs.sort_by(|a, b| {
            b.updated_ms
                .cmp(&a.updated_ms)
                .then(a.job_id.cmp(&b.job_id))
        });
        jobs.truncate(limit);
        Ok(Response::new(ListReply { jobs }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{hash_key, KeyEntry};

    #[test]
    fn client_keys_map_to_stable_per_tenant_ids() {
        let a = client_job_id("acme", "order-1");
        assert_eq!(a, client_job_id("acme", "order-1"));
        assert_ne!(a, client_job_id("globex", "order-1"));
        assert_ne!(a, client_job_id("acme", "order-2"));
        assert!(vidflow_job::id::is_safe_id(&a), "{a}");
    }

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
