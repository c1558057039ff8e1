//! `vidflow key new` / `vidflow key revoke`: a tenant's API keys. A running
//! `vidflow serve` re-reads the key file when it changes, so both take
//! effect within a second, without a restart.

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
    },
    /// Remove a key from the key file (give the key, or its SHA-256 as
    /// listed in the file).
    Revoke {
        /// `vf_...` or the 64-hex-digit SHA-256.
        key: String,
        #[arg(long, default_value = "configs/keys.toml")]
        file: PathBuf,
    },
}

pub fn run(c: KeyCmd) -> Result<i32> {
    match c {
        KeyCmd::New {
            tenant,
            file,
            expires,
        } => {
            let key =
                vidflow_connectors::auth::add_key_expiring(&file, &tenant, expires.as_deref())?;
            eprintln!("added a key for tenant {tenant} to {}", file.display());
            println!("{key}");
            Ok(0)
        }
        KeyCmd::Revoke { key, file } => {
            let n = vidflow_connectors::auth::revoke_key(&file, &key)?;
            if n == 0 {
                bail!("no such key in {}", file.display());
            }
            eprintln!("revoked {n} key(s) in {}", file.display());
            Ok(0)
        }
    }
}
