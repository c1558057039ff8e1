//! Terminal job records in the object store: one small JSON object per
//! finished job at `jobs/<tenant>/<job_id>.json` (the [`JobRecord`] type and
//! how it is built are in `vidflow_job::ledger`), written (atomically)
//! before the job's message is acknowledged. They make a redelivered job
//! idempotent (its result is re-published, nothing is generated again) and
//! let the API answer for jobs that finished before it started.

use object_store::path::Path;
use vidflow_job::ledger::JobRecord;

use crate::error::OutputError;
use crate::store::OutputStore;

/// Where a job's record lives. Tenant and job id must be safe ids (the
/// spec validation guarantees it), so a key never leaves `jobs/<tenant>/`.
pub fn record_key(tenant: &str, job_id: &str) -> Result<Path, OutputError> {
    check_ids(tenant, job_id)?;
    Ok(Path::from(format!("jobs/{tenant}/{job_id}.json")))
}

/// Both ids safe as key segments (what the spec validation guarantees),
/// else an error naming the field.
pub(crate) fn check_ids(tenant: &str, job_id: &str) -> Result<(), OutputError> {
    for (field, v) in [("tenant", tenant), ("job_id", job_id)] {
        if !vidflow_job::id::is_safe_id(v) {
            return Err(OutputError::invalid(
                field,
                format!("{v:?}"),
                "1 to 64 characters of A-Z a-z 0-9 _ -",
            ));
        }
    }
    Ok(())
}

/// Writes a record unless one exists: the first commit of a job wins and
/// is returned (`Ok(existing)` when another commit got there first), so a
/// job run twice is still charged once.
pub async fn create_record(store: &OutputStore, r: &JobRecord) -> Result<JobRecord, OutputError> {
    let key = record_key(&r.tenant, &r.job_id)?;
    let body = serde_json::to_vec_pretty(r).unwrap_or_default();
    let opts = object_store::PutOptions {
        mode: object_store::PutMode::Create,
        ..Default::default()
    };
    match store
        .object_store()
        .put_opts(&key, object_store::PutPayload::from(body), opts)
        .await
    {
        Ok(_) => Ok(r.clone()),
        Err(object_store::Error::AlreadyExists { .. }) => {
            match read_record(store, &r.tenant, &r.job_id).await? {
                Some(existing) => Ok(existing),
                None => Err(OutputError::invalid(
                    "record",
                    key.to_string(),
                    "exists but cannot be read back",
                )),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Every record in the store (start-up recovery of the sinks and quotas).
pub async fn all_records(store: &OutputStore) -> Result<Vec<JobRecord>, OutputError> {
    use futures_util::TryStreamExt;
    let metas: Vec<_> = store
        .object_store()
        .list(Some(&Path::from("jobs")))
        .try_collect()
        .await?;
    let mut out = Vec::new();
    for m in metas {
        if let Ok(b) = store.get(&m.location).await {
            if let Ok(r) = serde_json::from_slice::<JobRecord>(&b) {
                out.push(r);
            }
        }
    }
    Ok(out)
}

/// A job's record, `None` if it has none. A record that cannot be parsed
/// is an error naming its key, not "absent": treating it as absent would
/// run the job again.
pub async fn read_record(
    store: &OutputStore,
    tenant: &str,
    job_id: &str,
) -> Result<Option<JobRecord>, OutputError> {
    let key = record_key(tenant, job_id)?;
    match store.get(&key).await {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            OutputError::invalid("record", key.to_string(), format!("a job record: {e}"))
        }),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Every record of a tenant (unreadable ones skipped with a warning).
pub async fn list_records(
    store: &OutputStore,
    tenant: &str,
) -> Result<Vec<JobRecord>, OutputError> {
    use futures_util::TryStreamExt;
    if !vidflow_job::id::is_safe_id(tenant) {
        return Ok(Vec::new());
    }
    let prefix = Path::from(format!("jobs/{tenant}"));
    let metas: Vec<_> = store
        .object_store()
        .list(Some(&prefix))
        .try_collect()
        .await?;
    let mut out = Vec::new();
    for m in metas {
        match store.get(&m.location).await {
            Ok(b) => match serde_json::from_slice::<JobRecord>(&b) {
                Ok(r) => out.push(r),
                Err(e) => tracing::warn!(key = %m.location, error = %e, "unreadable job record"),
            },
            Err(e) => tracing::warn!(key = %m.location, error = %e, "unreadable job record"),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_round_trip_and_stay_per_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let store = OutputStore::local(dir.path()).unwrap();
        let r = JobRecord {
            job_id: "j1".into(),
            tenant: "acme".into(),
            status: vidflow_job::JobStatus::Completed,
            error: None,
            stage: None,
            cancelled_at: None,
            key: Some("acme/2026-11-27/j1.mp4".into()),
            size: Some(10),
            sha256: Some("ab".into()),
            untrained: true,
            finished_ms: 1,
            timings: vec![(vidflow_job::event::Stage::Denoise, 0.5)],
            batch_sizes: vec![2],
            commit_id: "c1".into(),
            billing: None,
            metrics: None,
            job: None,
            safety: vec![],
        };
        assert_eq!(create_record(&store, &r).await.unwrap(), r);
        // A second commit of the same job does not replace the first.
        let mut again = r.clone();
        again.size = Some(99);
        assert_eq!(create_record(&store, &again).await.unwrap(), r);
        assert_eq!(
            read_record(&store, "acme", "j1").await.unwrap(),
            Some(r.clone())
        );
        assert_eq!(read_record(&store, "globex", "j1").await.unwrap(), None);
        assert_eq!(list_records(&store, "acme").await.unwrap(), vec![r]);
        assert!(list_records(&store, "globex").await.unwrap().is_empty());
        assert!(record_key("../x", "j").is_err());
    }

    #[tokio::test]
    async fn a_corrupt_record_is_an_error_not_absent() {
        let dir = tempfile::tempdir().unwrap();
        let store = OutputStore::local(dir.path()).unwrap();
        std::fs::create_dir_all(dir.path().join("jobs/acme")).unwrap();
        std::fs::write(dir.path().join("jobs/acme/j1.json"), b"{trunc").unwrap();
        let e = read_record(&store, "acme", "j1")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("jobs/acme/j1.json"), "{e}");
    }
}
