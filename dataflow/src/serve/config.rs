//! `configs/vidflow.toml`: what `vidflow serve` runs. Relative paths are
//! relative to the current directory.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vidflow_connectors::amqp::AmqpConfig;
use vidflow_connectors::auth::{KeyEntry, KeyRing};
use vidflow_connectors::sinks::SinkConfig;
use vidflow_operators::billing::Pricing;
use vidflow_operators::quota::QuotaConfig;
use vidflow_operators::AdmissionConfig;

use super::ServeError;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    #[serde(default)]
    pub amqp: AmqpConfig,
    #[serde(default)]
    pub grpc: GrpcConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub engine: EngineSection,
    #[serde(default)]
    pub billing: BillingSection,
    #[serde(default)]
    pub sinks: SinkConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub safety: SafetySection,
    /// Where the state nodes share lives: this node's files (`local`, the
    /// default) or PostgreSQL (`postgres`, a fleet).
    #[serde(default)]
    pub state: vidflow_connectors::state::StateConfig,
    /// Where objects live: `[engine] out_dir` (`local`, the default) or an
    /// S3-compatible bucket (`s3`, shared by a fleet).
    #[serde(default)]
    pub store: vidflow_connectors::store::StoreConfig,
    /// The denoiser's slots, job order and preemption (docs/SCHEDULING.md).
    #[serde(default)]
    pub scheduler: vidflow_operators::denoise::Scheduling,
}

/// `[safety]`: the policy file and the model cache (paths relative to the
/// working directory).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SafetySection {
    /// Default `configs/safety.toml`.
    #[serde(default)]
    pub policy: Option<std::path::PathBuf>,
    /// Default `$VIDFLOW_MODEL_CACHE`, else `.cache/models`.
    #[serde(default)]
    pub models_dir: Option<std::path::PathBuf>,
}

impl SafetySection {
    pub fn to_config(&self) -> vidflow_operators::safety_record::SafetyConfig {
        let d = vidflow_operators::safety_record::SafetyConfig::default();
        vidflow_operators::safety_record::SafetyConfig {
            policy: self.policy.clone().unwrap_or(d.policy),
            models_dir: self.models_dir.clone().unwrap_or(d.models_dir),
        }
    }
}

/// `[metrics]`: the Prometheus endpoint (`GET /metrics`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Port 0 picks a free port (printed at start).
    #[serde(default = "default_metrics_listen")]
    pub listen: String,
}

fn default_metrics_listen() -> String {
    "127.0.0.1:0".into()
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            listen: default_metrics_listen(),
        }
    }
}

/// `[billing]`: where prices and quotas come from (absent = the shipped
/// configs/pricing.toml and configs/quotas.toml, built in).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillingSection {
    #[serde(default)]
    pub pricing: Option<PathBuf>,
    #[serde(default)]
    pub quotas: Option<PathBuf>,
}

/// `[grpc]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcConfig {
    /// Serve the API at all (a worker-only process sets false).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Listen address; port 0 picks a free port (printed at start).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// `[grpc.tls]`: serve the API over TLS only (a plaintext client is
    /// refused). Absent: plaintext, for a private network.
    #[serde(default)]
    pub tls: Option<GrpcTls>,
}

/// `[grpc.tls]`: the server's certificate chain and key, PEM files.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl GrpcTls {
    /// The PEM bytes of the certificate chain and the key.
    pub fn read(&self) -> Result<(Vec<u8>, Vec<u8>), ServeError> {
        let read = |p: &PathBuf| {
            std::fs::read(p).map_err(|e| ServeError::Config {
                path: p.display().to_string(),
                source: Box::new(e),
            })
        };
        Ok((read(&self.cert)?, read(&self.key)?))
    }
}

fn yes() -> bool {
    true
}
fn default_listen() -> String {
    "127.0.0.1:50051".into()
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            enabled: true,
            listen: default_listen(),
            tls: None,
        }
    }
}

/// `[http]`: the `/v1/videos` HTTP API and the web console
/// (`docs/SERVING.md` "HTTP API"), with the same keys as gRPC.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Serve HTTP at all (a worker-only process sets false).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Listen address; port 0 picks a free port (printed at start).
    #[serde(default = "default_http_listen")]
    pub listen: String,
    /// Largest request body (a JSON or multipart create, its first-frame
    /// image included); larger is refused with 413 before it is read. An
    /// inline image travels base64 in the job message, so this must leave
    /// the message under `[amqp] max_message_bytes` (checked at start).
    #[serde(default = "default_http_body")]
    pub max_body_bytes: usize,
}

fn default_http_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_http_body() -> usize {
    5 << 20
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: true,
            listen: default_http_listen(),
            max_body_bytes: default_http_body(),
        }
    }
}

impl HttpConfig {
    /// The job message a body of `max_body_bytes` can become: base64 of
    /// the image (4/3) plus the other fields.
    pub fn largest_message(&self) -> usize {
        self.max_body_bytes / 3 * 4 + 64 * 1024
    }
}

/// `[auth]`: API keys, stored as SHA-256 (see `vidflow key new`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// A key file of `[[key]]` entries (tenant, sha256).
    #[serde(default)]
    pub keys_file: Option<PathBuf>,
    /// Entries given inline, same form.
    #[serde(default)]
    pub key: Vec<KeyEntry>,
}

/// `[engine]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSection {
    /// Local object store root: videos, first frames (`image` keys) and
    /// job records (`jobs/<tenant>/<id>.json`).
    #[serde(default = "default_out")]
    pub out_dir: PathBuf,
    /// Folder with models.toml and modes.toml; absent = the built-in
    /// defaults (tiny model).
    #[serde(default)]
    pub configs_dir: Option<PathBuf>,
    /// timely worker threads.
    #[serde(default = "one")]
    pub workers: usize,
    /// Most jobs denoised together in one step.
    #[serde(default = "four")]
    pub max_batch: usize,
    /// On SIGTERM, how long in-flight jobs may take to finish before the
    /// rest are handed back to the broker (unacked, so redelivered).
    #[serde(default = "default_drain")]
    pub drain_timeout_s: f64,
    /// Denoising steps between checkpoints (resume after a crash loses at
    /// most this many); 0 turns checkpoints off.
    #[serde(default = "ten")]
    pub checkpoint_every: usize,
    /// Per-tier overrides of `checkpoint_every` (`[engine.checkpoint_every_tier]
    /// free = 5`): cheaper, preemptible capacity wants shorter intervals.
    #[serde(default)]
    pub checkpoint_every_tier: std::collections::BTreeMap<vidflow_operators::Tier, usize>,
    /// A job whose runs were cut (crash, kill) this many times is
    /// dead-lettered and credited instead of started again.
    #[serde(default = "three")]
    pub max_attempts: u32,
    /// Generation timeout per tier, seconds (spec SLA: premium 10 min,
    /// standard 15 min). A job over it is stopped and handed back to the
    /// broker; its retry resumes from its last checkpoint; after
    /// `max_attempts` runs it is dead-lettered and credited.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Benchmark only: replace the model stages by a no-op that completes
    /// each job at once, to measure the intake path alone.
    #[serde(default)]
    pub noop_model: bool,
}

fn default_out() -> PathBuf {
    PathBuf::from("out/serve")
}
fn one() -> usize {
    1
}
fn four() -> usize {
    4
}
/// `[engine.timeouts]`, seconds per tier.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    #[serde(default = "t_premium")]
    pub premium: f64,
    #[serde(default = "t_standard")]
    pub standard: f64,
    #[serde(default = "t_free")]
    pub free: f64,
}

fn t_premium() -> f64 {
    600.0
}
fn t_standard() -> f64 {
    900.0
}
fn t_free() -> f64 {
    1800.0
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            premium: t_premium(),
            standard: t_standard(),
            free: t_free(),
        }
    }
}

impl Timeouts {
    pub fn of(&self, tier: vidflow_operators::Tier) -> std::time::Duration {
        let s = match tier {
            vidflow_operators::Tier::Premium => self.premium,
            vidflow_operators::Tier::Standard => self.standard,
            vidflow_operators::Tier::Free => self.free,
        };
        std::time::Duration::from_secs_f64(s.max(0.001))
    }
}

fn ten() -> usize {
    10
}
fn three() -> u32 {
    3
}
fn default_drain() -> f64 {
    60.0
}

impl Default for EngineSection {
    fn default() -> Self {
        EngineSection {
            out_dir: default_out(),
            configs_dir: None,
            workers: 1,
            max_batch: 4,
            drain_timeout_s: default_drain(),
            checkpoint_every: ten(),
            checkpoint_every_tier: Default::default(),
            max_attempts: three(),
            timeouts: Timeouts::default(),
            noop_model: false,
        }
    }
}

/// A configured file through its loader, or the built-in default.
fn load_or<T, E: std::error::Error + Send + Sync + 'static>(
    path: Option<&Path>,
    load: impl FnOnce(&Path) -> Result<T, E>,
    builtin: impl FnOnce() -> T,
) -> Result<T, ServeError> {
    match path {
        Some(p) => load(p).map_err(|e| config_error(p, e)),
        None => Ok(builtin()),
    }
}

fn config_error(path: &Path, e: impl std::error::Error + Send + Sync + 'static) -> ServeError {
    ServeError::Config {
        path: path.display().to_string(),
        source: Box::new(e),
    }
}

impl ServeConfig {
    pub fn load(path: &Path) -> Result<ServeConfig, ServeError> {
        let text = std::fs::read_to_string(path).map_err(|e| config_error(path, e))?;
        toml::from_str(&text).map_err(|e| config_error(path, e))
    }

    /// All API keys: the inline ones and the key file's, which the
    /// service re-reads when it changes.
    pub fn keys(&self) -> Result<KeyRing, ServeError> {
        Ok(KeyRing::load(
            self.auth.key.clone(),
            self.auth.keys_file.clone(),
        )?)
    }

    pub fn admission(&self) -> Result<AdmissionConfig, ServeError> {
        match self.engine.configs_dir.as_deref() {
            Some(p) => AdmissionConfig::load(p).map_err(|e| config_error(p, e)),
            None => AdmissionConfig::builtin_default()
                .map_err(|e| config_error(Path::new("<builtin>"), e)),
        }
    }

    pub fn pricing(&self) -> Result<Pricing, ServeError> {
        load_or(
            self.billing.pricing.as_deref(),
            Pricing::load,
            Pricing::builtin,
        )
    }

    pub fn quotas(&self) -> Result<QuotaConfig, ServeError> {
        load_or(
            self.billing.quotas.as_deref(),
            QuotaConfig::load,
            QuotaConfig::builtin,
        )
    }

    /// Root of the Parquet analytics datasets: `<out_dir>/analytics`.
    pub fn analytics_dir(&self) -> PathBuf {
        self.sinks
            .root
            .clone()
            .unwrap_or_else(|| self.engine.out_dir.join("analytics"))
    }

    /// Unacked jobs held at once (see `AmqpConfig::prefetch`).
    pub fn prefetch(&self) -> u16 {
        match self.amqp.prefetch {
            0 => (self.engine.max_batch.max(1) + 2).min(u16::MAX as usize) as u16,
            n => n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_config_parses() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/vidflow.toml");
        let c = ServeConfig::load(&p).unwrap();
        assert!(c.grpc.enabled);
        assert_eq!(c.prefetch(), c.engine.max_batch as u16 + 2);
    }

    #[test]
    fn the_cluster_example_parses_as_a_fleet_node() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/cluster.toml");
        let c = ServeConfig::load(&p).unwrap();
        assert_eq!(
            c.state.backend,
            vidflow_connectors::state::Backend::Postgres
        );
        assert_eq!(c.store.kind, vidflow_connectors::store::StoreKind::S3);
        assert_eq!(c.sinks.store_prefix.as_deref(), Some("analytics"));
    }

    #[test]
    fn unknown_keys_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.toml");
        std::fs::write(&p, "[engine]\nmax_bach = 3\n").unwrap();
        let e = ServeConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("v.toml") && e.contains("max_bach"), "{e}");
    }
}
