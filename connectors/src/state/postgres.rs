//! The fleet's shared state in PostgreSQL (tokio-postgres over a
//! deadpool pool). Every rule that must hold across nodes is the
//! database's: the primary key of `job_records` lets one commit of a job
//! win (its charge goes into `ledger` in the same transaction); attempts
//! are single-statement increments; a tenant's reservations are checked
//! and written under a transaction-scoped advisory lock on the tenant, so
//! any number of nodes admitting at once never exceed its limits; leases
//! are conditional upserts judged on the database's clock.
//!
//! The schema is `connectors/migrations/*.sql`, applied at connect in one
//! transaction under an advisory lock (several nodes may start at once).
//! Records are stored as `json`, passed as text (no serde feature of the
//! driver needed).

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{ManagerConfig, Pool, PoolConfig, RecyclingMethod, Runtime};
use vidflow_job::id::JobKey;
use vidflow_job::ledger::JobRecord;
use vidflow_job::quota::{month_of_ms, Ask, QuotaConfig, QuotaError, RESERVATION_TTL};

use super::{Admit, Committed, StateConfig, StateError};
use crate::auth::KeyEntry;

/// The schema, in order: (version, file, SQL).
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "0001_state.sql",
        include_str!("../../migrations/0001_state.sql"),
    ),
    (
        2,
        "0002_api_keys.sql",
        include_str!("../../migrations/0002_api_keys.sql"),
    ),
    (
        3,
        "0003_one_round_trip.sql",
        include_str!("../../migrations/0003_one_round_trip.sql"),
    ),
];

/// Advisory lock keys (first of the two-int form): schema changes, and a
/// tenant's quota (second int: hash of the tenant).
const LOCK_MIGRATE: i32 = 0x7669_6466; // "vidf"
const LOCK_QUOTA: i32 = 0x7669_6471; // "vidq"

pub struct Pg {
    pool: Pool,
    node: String,
    lease_ttl: Duration,
    quotas: Arc<QuotaConfig>,
}

impl Pg {
    /// Opens the pool and applies the migrations (a serving node then
    /// calls [`Pg::forget_my_leases`]; a command-line tool does not).
    pub async fn connect(cfg: &StateConfig, quotas: Arc<QuotaConfig>) -> Result<Pg, StateError> {
        let url = cfg.effective_url();
        if url.is_empty() {
            return Err(StateError::Config {
                field: "state.url",
                error: "backend \"postgres\" needs a URL (or VIDFLOW_DATABASE_URL)".into(),
            });
        }
        let pg_cfg: tokio_postgres::Config =
            url.parse()
                .map_err(|e: tokio_postgres::Error| StateError::Config {
                    field: "state.url",
                    error: e.to_string(),
                })?;
        let mgr = deadpool_postgres::Manager::from_config(
            pg_cfg,
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .config(PoolConfig::new(cfg.pool_size.max(1)))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| StateError::Config {
                field: "state.pool_size",
                error: e.to_string(),
            })?;
        let pg = Pg {
            pool,
            node: cfg.node_name(),
            lease_ttl: cfg.lease_ttl(),
            quotas,
        };
        pg.migrate().await?;
        Ok(pg)
    }

    /// Drops the leases this node held before a restart: it runs nothing
    /// yet, and its jobs' redeliveries should not wait out the lease.
    pub async fn forget_my_leases(&self) -> Result<u64, StateError> {
        let c = self.pool.get().await?;
        Ok(
            c.execute("DELETE FROM job_leases WHERE node = $1", &[&self.node])
                .await?,
        )
    }

    /// The keys that work (not revoked; expiry is checked per request).
    pub async fn api_keys(&self) -> Result<Vec<KeyEntry>, StateError> {
        let c = self.pool.get().await?;
        let rows = c
            .query(
                "SELECT tenant, sha256, expires FROM api_keys WHERE revoked_at IS NULL ORDER BY sha256",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| KeyEntry {
                tenant: r.get(0),
                sha256: r.get(1),
                expires: r.get(2),
            })
            .collect())
    }

    /// Stores a new key of `tenant` (checked as a key file entry would be)
    /// and returns the key, which is shown once and stored nowhere.
    pub async fn add_key(&self, tenant: &str, expires: Option<&str>) -> Result<String, StateError> {
        let key = crate::auth::new_key();
        let entry = KeyEntry {
            tenant: tenant.into(),
            sha256: crate::auth::hash_key(&key),
            expires: expires.map(str::to_string),
        };
        crate::auth::KeyStore::from_entries(std::slice::from_ref(&entry), "api_keys").map_err(
            |e| StateError::Config {
                field: "key",
                error: e.to_string(),
            },
        )?;
        let c = self.pool.get().await?;
        c.execute(
            "INSERT INTO api_keys (sha256, tenant, expires) VALUES ($1, $2, $3)",
            &[&entry.sha256, &entry.tenant, &entry.expires],
        )
        .await?;
        Ok(key)
    }

    /// Revokes a key (the key, or its hex SHA-256); returns how many were
    /// live.
    pub async fn revoke_key(&self, key_or_hash: &str) -> Result<u64, StateError> {
        let target = if key_or_hash.starts_with("vf_") {
            crate::auth::hash_key(key_or_hash)
        } else {
            key_or_hash.to_ascii_lowercase()
        };
        let c = self.pool.get().await?;
        Ok(c.execute(
            "UPDATE api_keys SET revoked_at = now() WHERE sha256 = $1 AND revoked_at IS NULL",
            &[&target],
        )
        .await?)
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn lease_ttl(&self) -> Duration {
        self.lease_ttl
    }

    async fn migrate(&self) -> Result<(), StateError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1, 0)", &[&LOCK_MIGRATE])
            .await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version    integer PRIMARY KEY,
                 file       text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
        for (version, file, sql) in MIGRATIONS {
            let done = tx
                .query_opt(
                    "SELECT 1 FROM schema_migrations WHERE version = $1",
                    &[version],
                )
                .await?
                .is_some();
            if done {
                continue;
            }
            tx.batch_execute(sql)
                .await
                .map_err(|source| StateError::Migration { file, source })?;
            tx.execute(
                "INSERT INTO schema_migrations (version, file) VALUES ($1, $2)",
                &[version, file],
            )
            .await?;
            tracing::info!(file, "applied a state migration");
        }
        tx.commit().await?;
        Ok(())
    }

    /// One round trip (`vidflow_commit`): the record unless one stands,
    /// its charge, the reserved seconds moved to the ledger, the attempt
    /// count and this node's lease ended.
    pub async fn commit_record(&self, r: &JobRecord) -> Result<Committed, StateError> {
        let body = serde_json::to_string(r).unwrap_or_default();
        let charge = r.charge();
        let c = self.pool.get().await?;
        let st = c
            .prepare_cached("SELECT record, first FROM vidflow_commit($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)")
            .await?;
        let row = c
            .query_one(
                &st,
                &[
                    &r.tenant,
                    &r.job_id,
                    &r.status.to_string(),
                    &self.node,
                    &(r.finished_ms as i64),
                    &body,
                    &charge.map(|b| month_of_ms(b.ts_ms)),
                    &charge.map(|b| b.billed_ms as i64),
                    &charge.map(|b| b.amount_micro),
                    &charge.map(|b| b.ts_ms as i64),
                    &r.commit_id,
                ],
            )
            .await?;
        let first: bool = row.get(1);
        if first {
            return Ok(Committed {
                record: r.clone(),
                first,
            });
        }
        Ok(Committed {
            record: parse(&r.tenant, &r.job_id, row.get(0))?,
            first,
        })
    }

    /// One round trip (`vidflow_admit`): record, lease, the tenant's
    /// counted limits and the attempt count, in that order.
    pub async fn admit(&self, a: &Ask<'_>) -> Result<Admit, StateError> {
        let l = match self.quotas.check_shape(a) {
            Ok(l) => l.clone(),
            Err(q) => return Ok(Admit::Refused(q)),
        };
        let c = self.pool.get().await?;
        let st = c
            .prepare_cached(
                "SELECT verdict, record, holder, running, reserved, used, runs
                   FROM vidflow_admit($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .await?;
        let limit_ms = l.monthly_ms();
        let row = c
            .query_one(
                &st,
                &[
                    &a.tenant,
                    &a.job_id,
                    &self.node,
                    &self.lease_ttl.as_secs_f64(),
                    &a.month,
                    &(a.video_ms as i64),
                    &(l.max_concurrent as i64),
                    &(limit_ms as i64),
                    &RESERVATION_TTL.as_secs_f64(),
                    &LOCK_QUOTA,
                ],
            )
            .await?;
        let verdict: String = row.get(0);
        let (running, reserved, used): (i64, i64, i64) = (row.get(3), row.get(4), row.get(5));
        Ok(match verdict.as_str() {
            "finished" => Admit::Finished(parse(a.tenant, a.job_id, row.get(1))?),
            "leased" => Admit::Leased(row.get::<_, Option<String>>(2).unwrap_or_default()),
            "concurrent" => Admit::Refused(QuotaError::Concurrent {
                limit: l.max_concurrent,
                current: running as u32,
            }),
            "monthly" => Admit::Refused(QuotaError::MonthlySeconds {
                month: a.month.to_string(),
                limit_ms,
                used_ms: used as u64,
                reserved_ms: reserved as u64,
                job_ms: a.video_ms,
            }),
            _ => Admit::Run {
                runs_before: row.get::<_, i32>(6).max(0) as u32,
            },
        })
    }

    pub async fn read_record(
        &self,
        tenant: &str,
        job_id: &str,
    ) -> Result<Option<JobRecord>, StateError> {
        let c = self.pool.get().await?;
        let row = c
            .query_opt(
                "SELECT record::text FROM job_records WHERE tenant = $1 AND job_id = $2",
                &[&tenant, &job_id],
            )
            .await?;
        row.map(|r| parse(tenant, job_id, r.get(0))).transpose()
    }

    pub async fn list_records(&self, tenant: &str) -> Result<Vec<JobRecord>, StateError> {
        self.records_where(
            "SELECT job_id, record::text FROM job_records WHERE tenant = $1 ORDER BY finished_ms",
            tenant,
        )
        .await
    }

    pub async fn records_of_node(&self) -> Result<Vec<JobRecord>, StateError> {
        self.records_where(
            "SELECT job_id, record::text FROM job_records WHERE node = $1 ORDER BY finished_ms",
            &self.node,
        )
        .await
    }

    async fn records_where(&self, sql: &str, arg: &str) -> Result<Vec<JobRecord>, StateError> {
        let c = self.pool.get().await?;
        let rows = c.query(sql, &[&arg]).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let (job_id, text): (String, String) = (row.get(0), row.get(1));
            match serde_json::from_str::<JobRecord>(&text) {
                Ok(r) => out.push(r),
                Err(e) => tracing::warn!(job_id = %job_id, error = %e, "unreadable job record"),
            }
        }
        Ok(out)
    }

    pub async fn unbump_attempts(&self, tenant: &str, job_id: &str) -> Result<(), StateError> {
        let c = self.pool.get().await?;
        c.execute(
            "UPDATE job_attempts SET runs = greatest(runs - 1, 0) WHERE tenant = $1 AND job_id = $2",
            &[&tenant, &job_id],
        )
        .await?;
        Ok(())
    }

    pub async fn finish(&self, key: &JobKey) -> Result<(), StateError> {
        let c = self.pool.get().await?;
        c.execute(
            "DELETE FROM quota_reservations WHERE tenant = $1 AND job_id = $2",
            &[&key.tenant, &key.job_id],
        )
        .await?;
        Ok(())
    }

    pub async fn usage(&self, tenant: &str, month: &str) -> Result<(u32, u64), StateError> {
        let c = self.pool.get().await?;
        let row = c
            .query_one(
                "SELECT (SELECT count(*) FROM quota_reservations WHERE tenant = $1
                           AND touched_at >= now() - make_interval(secs => $3)),
                        (SELECT coalesce(sum(used_ms), 0)::bigint FROM quota_usage
                          WHERE tenant = $1 AND month = $2)",
                &[&tenant, &month, &RESERVATION_TTL.as_secs_f64()],
            )
            .await?;
        let (n, used): (i64, i64) = (row.get(0), row.get(1));
        Ok((n as u32, used as u64))
    }

    pub async fn heartbeat(&self, running: &[JobKey]) -> Result<u64, StateError> {
        if running.is_empty() {
            return Ok(0);
        }
        let tenants: Vec<&str> = running.iter().map(|k| k.tenant.as_str()).collect();
        let ids: Vec<&str> = running.iter().map(|k| k.job_id.as_str()).collect();
        let c = self.pool.get().await?;
        let n = c
            .execute(
                "UPDATE job_leases l SET expires_at = now() + make_interval(secs => $2)
                   FROM unnest($3::text[], $4::text[]) AS k(tenant, job_id)
                  WHERE l.node = $1 AND l.tenant = k.tenant AND l.job_id = k.job_id",
                &[&self.node, &self.lease_ttl.as_secs_f64(), &tenants, &ids],
            )
            .await?;
        c.execute(
            "UPDATE quota_reservations r SET touched_at = now()
               FROM unnest($1::text[], $2::text[]) AS k(tenant, job_id)
              WHERE r.tenant = k.tenant AND r.job_id = k.job_id",
            &[&tenants, &ids],
        )
        .await?;
        Ok(n)
    }

    pub async fn release_lease(&self, key: &JobKey) -> Result<(), StateError> {
        let c = self.pool.get().await?;
        c.execute(
            "DELETE FROM job_leases WHERE tenant = $1 AND job_id = $2 AND node = $3",
            &[&key.tenant, &key.job_id, &self.node],
        )
        .await?;
        Ok(())
    }

    /// The pool, for the other shared tables (API keys, the submit index).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }
}

/// Makes a fresh, empty database `name` (dropped first if it exists) on the
/// server `admin_url` names, and returns its URL: for tests and benchmarks,
/// which each want a database of their own. `name`: `[a-z0-9_]`, 1 to 63.
pub async fn create_database(admin_url: &str, name: &str) -> Result<String, StateError> {
    let ok = (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !ok {
        return Err(StateError::Config {
            field: "database name",
            error: format!("{name:?}: 1 to 63 of a-z 0-9 _"),
        });
    }
    let (client, conn) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
        .await?;
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await?;
    let base = admin_url.rsplit_once('/').map(|x| x.0).unwrap_or(admin_url);
    Ok(format!("{base}/{name}"))
}

fn parse(tenant: &str, job_id: &str, text: String) -> Result<JobRecord, StateError> {
    serde_json::from_str(&text).map_err(|source| StateError::Record {
        tenant: tenant.into(),
        job_id: job_id.into(),
        source,
    })
}
