//! The state of one node in its own object store and memory: records at
//! `jobs/<tenant>/<job_id>.json` (create-only), attempt counts at
//! `attempts/<tenant>/<job_id>`, the quota book in this process. Exact for
//! one process; a fleet uses [`super::postgres`].

use std::sync::Arc;

use object_store::path::Path;
use vidflow_job::ledger::JobRecord;
use vidflow_job::quota::{Ask, QuotaBook};

use super::{Admit, Committed, StateError};
use crate::error::OutputError;
use crate::records;
use crate::store::OutputStore;

pub struct Local {
    pub store: Arc<OutputStore>,
    pub book: Arc<QuotaBook>,
}

impl Local {
    pub fn new(store: Arc<OutputStore>, book: Arc<QuotaBook>) -> Local {
        Local { store, book }
    }

    pub async fn commit_record(&self, r: &JobRecord) -> Result<Committed, StateError> {
        let won = records::create_record(&self.store, r).await?;
        let first = won.commit_id == r.commit_id;
        // Finished: the attempt count is no longer needed (a failure here
        // leaves a stale file, never a wrong answer: the record wins).
        if let Err(e) = self.clear_attempts(&r.tenant, &r.job_id).await {
            tracing::warn!(job_id = %r.job_id, error = %e, "could not clear the attempt count");
        }
        Ok(Committed { record: won, first })
    }

    /// Record, reservation, attempt count (one node: no lease to take).
    pub async fn admit(&self, a: &Ask<'_>) -> Result<Admit, StateError> {
        if let Some(r) = self.read_record(a.tenant, a.job_id).await? {
            return Ok(Admit::Finished(r));
        }
        if let Err(q) = self.book.try_reserve(a) {
            return Ok(Admit::Refused(q));
        }
        match self.bump_attempts(a.tenant, a.job_id).await {
            Ok(runs_before) => Ok(Admit::Run { runs_before }),
            Err(e) => {
                tracing::warn!(job_id = %a.job_id, error = %e, "could not count attempts; running anyway");
                Ok(Admit::Run { runs_before: 0 })
            }
        }
    }

    pub async fn read_record(
        &self,
        tenant: &str,
        job_id: &str,
    ) -> Result<Option<JobRecord>, StateError> {
        Ok(records::read_record(&self.store, tenant, job_id).await?)
    }

    pub async fn list_records(&self, tenant: &str) -> Result<Vec<JobRecord>, StateError> {
        Ok(records::list_records(&self.store, tenant).await?)
    }

    pub async fn all_records(&self) -> Result<Vec<JobRecord>, StateError> {
        Ok(records::all_records(&self.store).await?)
    }

    pub async fn bump_attempts(&self, tenant: &str, job_id: &str) -> Result<u32, StateError> {
        let key = attempts_key(tenant, job_id)?;
        let before = self.read_count(&key).await?.unwrap_or(0);
        self.store
            .put_atomic(&key, (before + 1).to_string().into_bytes())
            .await?;
        Ok(before)
    }

    pub async fn unbump_attempts(&self, tenant: &str, job_id: &str) -> Result<(), StateError> {
        let key = attempts_key(tenant, job_id)?;
        let Some(before) = self.read_count(&key).await? else {
            return Ok(());
        };
        self.store
            .put_atomic(&key, before.saturating_sub(1).to_string().into_bytes())
            .await?;
        Ok(())
    }

    pub async fn clear_attempts(&self, tenant: &str, job_id: &str) -> Result<(), StateError> {
        let key = attempts_key(tenant, job_id)?;
        self.store.delete(&key).await?;
        Ok(())
    }

    async fn read_count(&self, key: &Path) -> Result<Option<u32>, OutputError> {
        match self.store.get(key).await {
            Ok(b) => Ok(Some(
                String::from_utf8_lossy(&b).trim().parse().unwrap_or(0),
            )),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Where a job's count of started runs is kept.
pub fn attempts_key(tenant: &str, job_id: &str) -> Result<Path, OutputError> {
    records::check_ids(tenant, job_id)?;
    Ok(Path::from(format!("attempts/{tenant}/{job_id}")))
}
