//! What the two front doors (the gRPC API in [`crate::grpc`] and the HTTP
//! API in [`crate::http`]) do with an authenticated tenant's request, in one
//! place: submit (validate, remember, publish with a confirm), look up,
//! cancel and list. Each door only translates its wire format and maps
//! [`ApiError`] to its own status codes, so the two can never disagree on
//! who may see or cancel a job.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use sha2::{Digest, Sha256};
use vidflow_job::{validate, AdmissionConfig, JobSpec, ValidatedJob};

use crate::amqp::{Control, Publisher};
use crate::auth::KeyRing;
use crate::meta::{self, VideoMeta};
use crate::store::OutputStore;
use pb::JobStatus;
use table::{is_terminal, status_from_record};

mod follow;
pub mod table;
pub use follow::follow_events;
pub use table::JobTable;

/// Generated messages, client and server of `vidflow.v1` (proto/api.proto):
/// the job status both APIs answer with, and the gRPC service.
pub mod pb {
    tonic::include_proto!("vidflow.v1");
}

/// The encoded file descriptor set of the API (for gRPC reflection).
pub const DESCRIPTOR: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/vidflow_descriptor.bin"));

/// What the APIs need.
pub struct ApiDeps {
    /// Followed as the key file changes (see [`KeyRing`]).
    pub keys: Arc<KeyRing>,
    pub admission: Arc<AdmissionConfig>,
    /// Job records (the local files or the fleet's database).
    pub state: crate::state::StateStore,
    pub publisher: Arc<Publisher>,
    pub table: Arc<JobTable>,
    /// Where outputs live; also where each submitted job's summary
    /// ([`VideoMeta`]) is kept, so any API process can describe any job.
    pub store: Arc<OutputStore>,
}

/// Why a request failed, independent of the wire.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request names a bad value; `field` is the spec field.
    #[error("{message}")]
    Invalid { field: String, message: String },
    /// No such job for this tenant (another tenant's job is the same).
    #[error("job {0:?} not found")]
    NotFound(String),
    /// The job exists but is in the wrong state for the request.
    #[error("{0}")]
    Conflict(String),
    /// The broker or the store could not take the request; nothing was done.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    fn invalid(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::Invalid {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

impl From<vidflow_job::JobError> for ApiError {
    fn from(e: vidflow_job::JobError) -> ApiError {
        ApiError::Invalid {
            field: e.field().to_string(),
            message: e.to_string(),
        }
    }
}

/// The job id a client key stands for: the same (tenant, key) always gives
/// the same id, across API processes and restarts, so a retried submit
/// can never make a second job.
pub fn client_job_id(tenant: &str, client_key: &str) -> String {
    let d = Sha256::digest(format!("{tenant}\n{client_key}").as_bytes());
    let hex: String = d.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("ck-{hex}")
}

/// A submit's answer.
#[derive(Clone, Debug)]
pub struct Submitted {
    pub job_id: String,
    /// The id was already known: nothing new was queued.
    pub duplicate: bool,
    /// The job as admission sees it (absent for a duplicate found only by
    /// its record).
    pub meta: Option<VideoMeta>,
}

/// The shared handlers.
#[derive(Clone)]
pub struct Jobs {
    pub deps: Arc<ApiDeps>,
}

impl Jobs {
    pub fn new(deps: ApiDeps) -> Jobs {
        Jobs {
            deps: Arc::new(deps),
        }
    }

    /// Validates `spec` for `tenant`, records its summary and publishes it
    /// (confirmed). `client_key` (at most 256 bytes) makes the id stable,
    /// so a retry finds the first submission instead of making a second.
    pub async fn submit(
        &self,
        tenant: &str,
        mut spec: JobSpec,
        client_key: Option<&str>,
        via: &str,
    ) -> Result<Submitted, ApiError> {
        if spec.tenant.is_empty() {
            spec.tenant = tenant.to_string();
        } else if spec.tenant != tenant {
            return Err(ApiError::invalid(
                "tenant",
                format!(
                    "invalid tenant = {:?}: must be empty or the API key's tenant",
                    spec.tenant
                ),
            ));
        }
        if let Some(key) = client_key.filter(|k| !k.is_empty()) {
            if spec.job_id.is_some() {
                return Err(ApiError::invalid(
                    "client_key",
                    "client_key: give either a client key or a job id, not both",
                ));
            }
            if key.len() > 256 {
                return Err(ApiError::invalid(
                    "client_key",
                    "client_key: at most 256 bytes",
                ));
            }
            spec.job_id = Some(client_job_id(tenant, key));
        }
        let job_id = spec.ensure_job_id().to_string();
        let job: ValidatedJob = validate(&spec, &self.deps.admission)?;
        // Known here already, or finished before this API process knew of
        // it: an idempotent resubmit, nothing new is queued.
        let known = self.deps.table.insert_queued(tenant, &job_id).is_some();
        let finished = !known
            && matches!(
                self.deps.state.read_record(tenant, &job_id).await,
                Ok(Some(_))
            );
        if finished {
            self.deps.table.remove(tenant, &job_id);
        }
        if known || finished {
            let meta = meta::read(&self.deps.store, tenant, &job_id)
                .await
                .ok()
                .flatten();
            return Ok(Submitted {
                job_id,
                duplicate: true,
                meta,
            });
        }
        // The summary first: a client that polls right after the answer
        // must find the job described.
        let m = VideoMeta::of(&job, &spec, vidflow_job::event::now_ms());
        if let Err(e) = meta::write(&self.deps.store, &m).await {
            self.deps.table.remove(tenant, &job_id);
            return Err(ApiError::Unavailable(format!(
                "could not record the job (nothing was queued; retry): {e}"
            )));
        }
        self.deps.table.set_created(tenant, &job_id, m.created_ms);
        if let Err(e) = self.deps.publisher.publish_job(&spec).await {
            self.deps.table.remove(tenant, &job_id);
            return Err(ApiError::Unavailable(format!(
                "could not enqueue the job (nothing was queued; retry): {e}"
            )));
        }
        tracing::info!(job_id = %job_id, tenant = %tenant, via, "job submitted");
        Ok(Submitted {
            job_id,
            duplicate: false,
            meta: Some(m),
        })
    }

    /// The job's status if `tenant` owns it: the live table first, then the
    /// durable record. Another tenant's job is indistinguishable from none.
    pub async fn lookup(&self, tenant: &str, job_id: &str) -> Result<JobStatus, ApiError> {
        if let Some(s) = self.deps.table.get(tenant, job_id) {
            return Ok(s);
        }
        if !vidflow_job::id::is_safe_id(job_id) {
            return Err(ApiError::NotFound(job_id.to_string()));
        }
        match self.deps.state.read_record(tenant, job_id).await {
            Ok(Some(r)) => Ok(status_from_record(&r)),
            Ok(None) => Err(ApiError::NotFound(job_id.to_string())),
            Err(e) => Err(ApiError::Internal(format!("reading the job record: {e}"))),
        }
    }

    /// The job's status now, then on every change and at least once a
    /// second while nothing changes (a queued job, a long step), until it
    /// has finished or the receiver is dropped. Both APIs stream this.
    pub async fn watch(
        &self,
        tenant: &str,
        job_id: &str,
    ) -> Result<mpsc::Receiver<JobStatus>, ApiError> {
        // Subscribe before reading, so no change falls in between.
        let mut changes = self.deps.table.subscribe();
        let first = self.lookup(tenant, job_id).await?;
        let (tx, rx) = mpsc::channel(16);
        let (deps, tenant, id) = (self.deps.clone(), tenant.to_string(), job_id.to_string());
        tokio::spawn(async move {
            let mut last = first;
            if tx.send(last.clone()).await.is_err() || is_terminal(last.state()) {
                return;
            }
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
                if tx.send(last.clone()).await.is_err() || is_terminal(last.state()) {
                    return;
                }
                tick.reset();
            }
        });
        Ok(rx)
    }

    /// Asks every serve process to stop the job before its next step.
    /// A finished job is answered as it is.
    pub async fn cancel(
        &self,
        tenant: &str,
        job_id: &str,
        via: &str,
    ) -> Result<JobStatus, ApiError> {
        let s = self.lookup(tenant, job_id).await?;
        if is_terminal(s.state()) {
            return Ok(s);
        }
        self.deps
            .publisher
            .publish_control(&Control::Cancel {
                tenant: tenant.to_string(),
                job_id: job_id.to_string(),
            })
            .await
            .map_err(|e| ApiError::Unavailable(format!("could not send the cancel: {e}")))?;
        tracing::info!(job_id = %job_id, tenant = %tenant, via, "cancel requested");
        Ok(s)
    }

    /// Every job of the tenant (records, then jobs still running), newest
    /// first by submission time.
    pub async fn list(&self, tenant: &str) -> Result<Vec<JobStatus>, ApiError> {
        let mut by_id = std::collections::HashMap::new();
        let records = self
            .deps
            .state
            .list_records(tenant)
            .await
            .map_err(|e| ApiError::Internal(format!("listing job records: {e}")))?;
        for r in records {
            by_id.insert(r.job_id.clone(), status_from_record(&r));
        }
        for s in self.deps.table.of_tenant(tenant) {
            // A record is final; the table may only add jobs still running,
            // and it knows when this process saw them submitted.
            let e = by_id.entry(s.job_id.clone()).or_insert_with(|| s.clone());
            if e.created_ms == 0 {
                e.created_ms = s.created_ms;
            }
        }
        let mut jobs: Vec<JobStatus> = by_id.into_values().collect();
        jobs.sort_by(|a, b| {
            b.created_ms
                .cmp(&a.created_ms)
                .then(b.updated_ms.cmp(&a.updated_ms))
                .then(a.job_id.cmp(&b.job_id))
        });
        Ok(jobs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_keys_map_to_stable_per_tenant_ids() {
        let a = client_job_id("acme", "order-1");
        assert_eq!(a, client_job_id("acme", "order-1"));
        assert_ne!(a, client_job_id("globex", "order-1"));
        assert_ne!(a, client_job_id("acme", "order-2"));
        assert!(vidflow_job::id::is_safe_id(&a), "{a}");
    }
}
