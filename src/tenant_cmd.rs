//! `vidflow tenant add NAME`: a tenant's two credentials in one step: its
//! own RabbitMQ user (random password, permissions that let it publish
//! jobs and hear only its own events, see `amqp::TenantPermissions`) and
//! an API key for the gRPC API. Both secrets are printed once and stored
//! nowhere (the key file keeps only the key's SHA-256).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use vidflow_connectors::amqp::{TenantPermissions, Topology};

#[derive(Subcommand)]
pub enum TenantCmd {
    /// Create a tenant: a broker user named like the tenant and an API key.
    Add {
        name: String,
        /// Key file the API key's hash is appended to.
        #[arg(long, default_value = "configs/keys.toml")]
        keys_file: PathBuf,
        /// Queue/exchange name prefix (`[amqp] prefix`).
        #[arg(long, default_value = "vidflow")]
        prefix: String,
        /// RabbitMQ virtual host.
        #[arg(long, default_value = "/")]
        vhost: String,
        /// How to run rabbitmqctl against the broker (split on spaces), e.g.
        /// `bash scripts/broker.sh ctl` for the private broker.
        #[arg(long, env = "VIDFLOW_RABBITMQCTL", default_value = "rabbitmqctl")]
        rabbitmqctl: String,
    },
}

pub fn run(c: TenantCmd) -> Result<i32> {
    let TenantCmd::Add {
        name,
        keys_file,
        prefix,
        vhost,
        rabbitmqctl,
    } = c;
    if !vidflow_operators::id::is_tenant_name(&name) {
        bail!(
            "invalid tenant {name:?}: 1 to 64 characters of A-Z a-z 0-9 _ -, not one of {}",
            vidflow_operators::id::RESERVED_TENANTS.join(", ")
        );
    }
    let ctl: Vec<&str> = rabbitmqctl.split_whitespace().collect();
    let Some((prog, pre)) = ctl.split_first() else {
        bail!("--rabbitmqctl is empty");
    };
    let run_ctl = |args: &[&str], stdin: Option<&str>| -> Result<()> {
        let mut cmd = Command::new(prog);
        cmd.args(pre).args(args);
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {rabbitmqctl}"))?;
        if let Some(text) = stdin {
            // The password goes through stdin, never the command line
            // (which any local user can read from the process list).
            let mut w = child.stdin.take().context("rabbitmqctl stdin")?;
            w.write_all(text.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "rabbitmqctl {} failed: {}{}",
                args.first().copied().unwrap_or(""),
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            );
        }
        Ok(())
    };
    let password = vidflow_connectors::auth::new_key();
    let p = TenantPermissions::new(&Topology::new(&prefix), &name);
    run_ctl(&["add_user", &name], Some(&format!("{password}\n")))?;
    run_ctl(
        &[
            "set_permissions",
            "-p",
            &vhost,
            &name,
            &p.configure,
            &p.write,
            &p.read,
        ],
        None,
    )?;
    run_ctl(
        &[
            "set_topic_permissions",
            "-p",
            &vhost,
            &name,
            &p.topic_exchange,
            &p.topic_write,
            &p.topic_read,
        ],
        None,
    )?;
    let key = vidflow_connectors::auth::add_key(&keys_file, &name)?;
    eprintln!(
        "tenant {name}: broker user {name} (publish to {}, hear {} under job.{name}.#) and an \
         API key (hash appended to {}); both secrets are shown once:",
        Topology::new(&prefix).intake,
        p.topic_exchange,
        keys_file.display()
    );
    println!(
        "{}",
        serde_json::json!({"tenant": name, "broker_user": name, "broker_password": password, "api_key": key})
    );
    Ok(0)
}
