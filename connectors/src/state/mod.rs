//! The state a serving node shares with the others: job records with their
//! ledger entries, attempt counts, quota reservations and job leases.
//!
//! Two backends behind one type ([`StateStore`], an enum rather than a
//! trait object: the set is closed and the methods are async):
//!
//! - [`local::Local`]: the files of one node (records and attempts in its
//!   object store, the quota book in memory, leases implied by the
//!   process's own in-flight map). The embedded default; `generate`,
//!   `backfill` and a single `serve` need nothing else.
//! - [`postgres::Pg`]: PostgreSQL, shared by every node of a fleet. The
//!   database decides what must happen once: the first commit of
//!   (tenant, job_id) by its primary key, attempts by atomic increments,
//!   reservations under a per-tenant transaction lock, leases by
//!   conditional upserts judged on the database's clock.

pub mod local;
pub mod postgres;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vidflow_job::id::JobKey;
use vidflow_job::ledger::JobRecord;
use vidflow_job::quota::{Ask, QuotaBook, QuotaError};

use crate::error::OutputError;
use crate::store::OutputStore;

/// Which backend holds the shared state (`[state]` in vidflow.toml).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// This node's own files: one node only.
    #[default]
    Local,
    /// A PostgreSQL database every node of the fleet reaches.
    Postgres,
}

/// `[state]`: where the shared state lives and how leases behave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    pub backend: Backend,
    /// `postgresql://user[:password]@host:port/db` (backend `postgres`;
    /// `VIDFLOW_DATABASE_URL` overrides it).
    pub url: String,
    /// Connections this node keeps open at most.
    pub pool_size: usize,
    /// This node's name in leases and records. Must be stable across
    /// restarts of the same node (its analytics recovery looks for the
    /// records it won) and unique in the fleet. Empty: the host name.
    pub node: String,
    /// A running job's lease lasts this long past its last heartbeat; a
    /// node that dies holds its jobs at most this long.
    pub lease_ttl_s: f64,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            backend: Backend::Local,
            url: String::new(),
            pool_size: 8,
            node: String::new(),
            lease_ttl_s: 15.0,
        }
    }
}

impl StateConfig {
    pub fn lease_ttl(&self) -> Duration {
        Duration::from_secs_f64(self.lease_ttl_s.clamp(1.0, 3600.0))
    }

    /// The database URL after the environment override.
    pub fn effective_url(&self) -> String {
        std::env::var("VIDFLOW_DATABASE_URL").unwrap_or_else(|_| self.url.clone())
    }

    /// The node name: the configured one, else `VIDFLOW_NODE`, else the
    /// host name.
    pub fn node_name(&self) -> String {
        if !self.node.is_empty() {
            return self.node.clone();
        }
        if let Ok(n) = std::env::var("VIDFLOW_NODE") {
            if !n.is_empty() {
                return n;
            }
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "node".into())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The object store behind the local backend failed.
    #[error("state store: {0}")]
    Store(#[from] OutputError),
    /// A database call failed.
    #[error("state database: {0}")]
    Db(#[from] tokio_postgres::Error),
    /// No connection could be had from the pool.
    #[error("state database pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// The pool could not be built from the configuration (bad URL).
    #[error("state database configuration ({field}): {error}")]
    Config { field: &'static str, error: String },
    /// A stored record could not be read back.
    #[error("job record {tenant}/{job_id} is unreadable: {source}")]
    Record {
        tenant: String,
        job_id: String,
        #[source]
        source: serde_json::Error,
    },
    /// A migration failed to apply (names the file).
    #[error("migration {file}: {source}")]
    Migration {
        file: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
}

/// The outcome of committing a record.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    /// The record that stands: this commit's, or an earlier one's.
    pub record: JobRecord,
    /// Whether this commit was the first (it alone announces the job as
    /// new and writes its analytics rows; a later one replays).
    pub first: bool,
}

/// What admission decided about a delivery ([`StateStore::admit`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Admit {
    /// The job has a record: answer from it, run nothing.
    Finished(JobRecord),
    /// Another node holds the job's lease: the delivery waits.
    Leased(String),
    /// A quota limit stops it (the lease, if taken, is given back).
    Refused(QuotaError),
    /// Run it: the lease is this node's, the reservation made and the
    /// run counted (`runs_before` started before this one).
    Run { runs_before: u32 },
}

/// The shared state of the serving path, one of two backends.
#[derive(Clone)]
pub enum StateStore {
    Local(Arc<local::Local>),
    Postgres(Arc<postgres::Pg>),
}

impl StateStore {
    /// One node's state: records and attempts in `store`, quotas in `book`.
    pub fn local(store: Arc<OutputStore>, book: Arc<QuotaBook>) -> StateStore {
        StateStore::Local(Arc::new(local::Local::new(store, book)))
    }

    pub fn backend(&self) -> Backend {
        match self {
            StateStore::Local(_) => Backend::Local,
            StateStore::Postgres(_) => Backend::Postgres,
        }
    }

    /// Admits a delivery of a job not running here: its record (finished
    /// already?), its lease (running elsewhere?), its quota reservation and
    /// its attempt count, in that order; one round trip on PostgreSQL.
    pub async fn admit(&self, a: &Ask<'_>) -> Result<Admit, StateError> {
        match self {
            StateStore::Local(l) => l.admit(a).await,
            StateStore::Postgres(p) => p.admit(a).await,
        }
    }

    /// Creates a job's record (and its charge) unless one exists; the first
    /// commit wins. Either way the job's attempt count and this node's
    /// lease end with it.
    pub async fn commit_record(&self, r: &JobRecord) -> Result<Committed, StateError> {
        match self {
            StateStore::Local(l) => l.commit_record(r).await,
            StateStore::Postgres(p) => p.commit_record(r).await,
        }
    }

    /// A job's record, `None` if it has none (an unreadable one is an
    /// error: treating it as absent would run the job again).
    pub async fn read_record(
        &self,
        tenant: &str,
        job_id: &str,
    ) -> Result<Option<JobRecord>, StateError> {
        match self {
            StateStore::Local(l) => l.read_record(tenant, job_id).await,
            StateStore::Postgres(p) => p.read_record(tenant, job_id).await,
        }
    }

    /// Every record of one tenant.
    pub async fn list_records(&self, tenant: &str) -> Result<Vec<JobRecord>, StateError> {
        match self {
            StateStore::Local(l) => l.list_records(tenant).await,
            StateStore::Postgres(p) => p.list_records(tenant).await,
        }
    }

    /// The records whose analytics rows this node owes (start-up recovery
    /// of its sinks): all of them on the local backend, those this node's
    /// commit won on the shared one.
    pub async fn records_to_sink(&self) -> Result<Vec<JobRecord>, StateError> {
        match self {
            StateStore::Local(l) => l.all_records().await,
            StateStore::Postgres(p) => p.records_of_node().await,
        }
    }

    /// Takes back the count of a run handed back on a drain.
    pub async fn unbump_attempts(&self, tenant: &str, job_id: &str) -> Result<(), StateError> {
        match self {
            StateStore::Local(l) => l.unbump_attempts(tenant, job_id).await,
            StateStore::Postgres(p) => p.unbump_attempts(tenant, job_id).await,
        }
    }

    /// Keeps a job's reservation while it is back in the broker.
    pub async fn hand_back(&self, key: &JobKey) -> Result<(), StateError> {
        match self {
            StateStore::Local(l) => {
                l.book.hand_back(&key.tenant, &key.job_id);
                Ok(())
            }
            // The reservation stays until it lapses or the redelivery
            // takes it up: nothing to mark, the heartbeat just stops.
            StateStore::Postgres(_) => Ok(()),
        }
    }

    /// Ends a job's reservation (its seconds count once it is charged).
    pub async fn finish(&self, key: &JobKey, delivered: bool) -> Result<(), StateError> {
        match self {
            StateStore::Local(l) => {
                l.book.finish(&key.tenant, &key.job_id, delivered);
                Ok(())
            }
            StateStore::Postgres(p) => p.finish(key).await,
        }
    }

    /// (admitted unfinished jobs, delivered ms this month) of a tenant.
    pub async fn usage(&self, tenant: &str, month: &str) -> Result<(u32, u64), StateError> {
        match self {
            StateStore::Local(l) => Ok(l.book.usage(tenant)),
            StateStore::Postgres(p) => p.usage(tenant, month).await,
        }
    }

    /// Extends the leases of the jobs this node runs (`running`) and
    /// vouches for their reservations; returns how many it renewed.
    pub async fn heartbeat(&self, running: &[JobKey]) -> Result<u64, StateError> {
        match self {
            StateStore::Local(_) => Ok(0),
            StateStore::Postgres(p) => p.heartbeat(running).await,
        }
    }

    /// Gives up a job's lease (committed, or handed back to the broker).
    pub async fn release_lease(&self, key: &JobKey) -> Result<(), StateError> {
        match self {
            StateStore::Local(_) => Ok(()),
            StateStore::Postgres(p) => p.release_lease(key).await,
        }
    }
}
