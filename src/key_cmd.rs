//! `vidflow key new` / `vidflow key revoke`: a tenant's API keys, in a key
//! file or (`--database`) in the fleet's PostgreSQL. A running `vidflow
//! serve` re-reads its key file when it changes, and a fleet's nodes the
//! database every second, so both take effect within about two seconds,
//! without a restart.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Subcommand;

#[derive(Subcommand)]
pub enum KeyCmd {
    /// Generate a key for a tenant: its SHA-256 is appended to the key
    /// file; the key itself is printed once and stored nowhere.
    New {
        #[arg(long)]
        tenant: String,
        #[arg(long, default_value = "configs/keys.toml")]
        file: PathBuf,
        /// When the key stops working: yyyy-mm-dd (00:00 UTC) or
        /// yyyy-mm-ddThh:mm:ssZ.
        #[arg(long)]
        expires: Option<String>,
        /// Store the key in this PostgreSQL database (a fleet's shared
        /// state) instead of the key file.
        #[arg(long, env = "VIDFLOW_DATABASE_URL")]
        database: Option<String>,
    },
    /// Remove a key from the key file (give the key, or its SHA-256 as
    /// listed in the file).
    Revoke {
        /// `vf_...` or the 64-hex-digit SHA-256.
        key: String,
        #[arg(long, default_value = "configs/keys.toml")]
        file: PathBuf,
        /// Revoke it in this PostgreSQL database instead of the key file.
        #[arg(long, env = "VIDFLOW_DATABASE_URL")]
        database: Option<String>,
    },
}

/// The fleet's shared state, for a key command (no serving node: its
/// leases are not touched).
fn with_db<T>(
    url: &str,
    f: impl AsyncFnOnce(&vidflow_connectors::state::postgres::Pg) -> Result<T>,
) -> Result<T> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let cfg = vidflow_connectors::state::StateConfig {
            backend: vidflow_connectors::state::Backend::Postgres,
            url: url.to_string(),
            pool_size: 1,
            node: "vidflow-key".into(),
            ..Default::default()
        };
        let quotas = std::sync::Arc::new(vidflow_operators::quota::QuotaConfig::builtin());
        let pg = vidflow_connectors::state::postgres::Pg::connect(&cfg, quotas).await?;
        f(&pg).await
    })
}

pub fn run(c: KeyCmd) -> Result<i32> {
    match c {
        KeyCmd::New {
            tenant,
            database: Some(url),
            expires,
            ..
        } => {
            let key = with_db(&url, async |pg| {
                Ok(pg.add_key(&tenant, expires.as_deref()).await?)
            })?;
            eprintln!("added a key for tenant {tenant} to the database");
            println!("{key}");
            Ok(0)
        }
        KeyCmd::Revoke {
            key,
            database: Some(url),
            ..
        } => {
            let n = with_db(&url, async |pg| Ok(pg.revoke_key(&key).await?))?;
            if n == 0 {
                bail!("no live key like that in the database");
            }
            eprintln!("revoked {n} key(s) in the database");
            Ok(0)
        }
        KeyCmd::New {
            tenant,
            file,
            expires,
            database: None,
        } => {
            let key =
                vidflow_connectors::auth::add_key_expiring(&file, &tenant, expires.as_deref())?;
            eprintln!("added a key for tenant {tenant} to {}", file.display());
            println!("{key}");
            Ok(0)
        }
        KeyCmd::Revoke {
            key,
            file,
            database: None,
        } => {
            let n = vidflow_connectors::auth::revoke_key(&file, &key)?;
            if n == 0 {
                bail!("no such key in {}", file.display());
            }
            eprintln!("revoked {n} key(s) in {}", file.display());
            Ok(0)
        }
    }
}
