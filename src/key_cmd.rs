//! `vidflow key new`: makes an API key for a tenant.

use std::path::PathBuf;

use anyhow::Result;
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
    },
}

pub fn run(c: KeyCmd) -> Result<i32> {
    match c {
        KeyCmd::New { tenant, file } => {
            let key = vidflow_connectors::auth::add_key(&file, &tenant)?;
            eprintln!("added a key for tenant {tenant} to {}", file.display());
            println!("{key}");
            Ok(0)
        }
    }
}
