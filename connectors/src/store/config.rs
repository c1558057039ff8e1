//! `[store]`: where a node keeps its objects (outputs, i2v inputs,
//! checkpoints, safety decisions). One node may use a local directory; the
//! nodes of a fleet share an S3-compatible bucket, so a job taken over by
//! another node finds its checkpoints and inputs there.
//!
//! S3 goes through `object_store`'s `aws-base` with its `reqwest` client
//! and the `ring` signer, and reqwest's rustls without a built-in provider:
//! the `aws` feature would pull in aws-lc-rs (a C build of its own) next to
//! the ring provider that lapin and tonic already use. The process-wide
//! rustls provider is therefore installed here (ring) before the client is
//! built.
//!
//! All S3 I/O runs on one small runtime of its own
//! (`SpawnedReqwestConnector`): the store is called both from the serving
//! runtime and, through the `*_blocking` methods, from stage threads, and a
//! pooled connection must be driven by a runtime that always runs, not by
//! whichever caller happened to open it.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use object_store::aws::AmazonS3Builder;
use serde::{Deserialize, Serialize};

use super::OutputStore;
use crate::error::OutputError;

/// Which object store a node uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// A directory on this machine (`[engine] out_dir`).
    #[default]
    Local,
    /// An S3-compatible bucket.
    S3,
}

/// `[store]` in vidflow.toml.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub kind: StoreKind,
    /// S3 endpoint URL (`http://127.0.0.1:8014`); empty: AWS itself.
    /// `VIDFLOW_S3_ENDPOINT` overrides it.
    pub endpoint: String,
    /// The bucket (it must exist).
    pub bucket: String,
    /// A key prefix inside the bucket (several deployments in one bucket);
    /// empty: the bucket's root.
    pub prefix: String,
    pub region: String,
    /// `VIDFLOW_S3_ACCESS_KEY_ID` overrides it.
    pub access_key_id: String,
    /// Better given as `VIDFLOW_S3_SECRET_ACCESS_KEY` than in a file.
    pub secret_access_key: String,
    /// Allows an `http://` endpoint (a loopback test server); TLS otherwise.
    pub allow_http: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            kind: StoreKind::Local,
            endpoint: String::new(),
            bucket: String::new(),
            prefix: String::new(),
            region: "us-east-1".into(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            allow_http: false,
        }
    }
}

/// The runtime every S3 request runs on (process-wide, never dropped).
fn io_runtime() -> Result<&'static tokio::runtime::Runtime, OutputError> {
    // Built once, under the lock: a runtime built twice would drop one,
    // which tokio forbids inside an async context.
    static IO: OnceLock<Result<tokio::runtime::Runtime, std::io::ErrorKind>> = OnceLock::new();
    IO.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("vidflow-s3-io")
            .enable_all()
            .build()
            .map_err(|e| e.kind())
    })
    .as_ref()
    .map_err(|k| OutputError::Runtime(std::io::Error::from(*k)))
}

fn env_or(name: &str, v: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| v.to_string())
}

impl OutputStore {
    /// The store `cfg` names: the directory `local_root` for `local`, the
    /// bucket for `s3`.
    pub fn open(cfg: &StoreConfig, local_root: &Path) -> Result<OutputStore, OutputError> {
        match cfg.kind {
            StoreKind::Local => OutputStore::local(local_root),
            StoreKind::S3 => OutputStore::s3(cfg),
        }
    }

    /// A store in an S3-compatible bucket. A single PUT is atomic there
    /// (an object appears whole or not at all), so `put_atomic` holds.
    pub fn s3(cfg: &StoreConfig) -> Result<OutputStore, OutputError> {
        if cfg.bucket.is_empty() {
            return Err(OutputError::invalid(
                "store.bucket",
                "\"\"",
                "a bucket name",
            ));
        }
        let endpoint = env_or("VIDFLOW_S3_ENDPOINT", &cfg.endpoint);
        if endpoint.starts_with("http://") && !cfg.allow_http {
            return Err(OutputError::invalid(
                "store.endpoint",
                &endpoint,
                "an https:// URL (or allow_http = true for a loopback test server)",
            ));
        }
        // Already installed (a second store, or TLS set up earlier) is fine.
        crate::install_crypto_provider();
        let io = io_runtime()?.handle().clone();
        let mut b = AmazonS3Builder::new()
            .with_http_connector(object_store::client::SpawnedReqwestConnector::new(io))
            .with_bucket_name(&cfg.bucket)
            .with_region(&cfg.region)
            .with_access_key_id(env_or("VIDFLOW_S3_ACCESS_KEY_ID", &cfg.access_key_id))
            .with_secret_access_key(env_or(
                "VIDFLOW_S3_SECRET_ACCESS_KEY",
                &cfg.secret_access_key,
            ))
            .with_allow_http(cfg.allow_http);
        if !endpoint.is_empty() {
            b = b
                .with_endpoint(&endpoint)
                .with_virtual_hosted_style_request(false);
        }
        let s3 = Arc::new(b.build()?);
        let prefix = cfg.prefix.trim_matches('/');
        if prefix.is_empty() {
            return Ok(OutputStore::new(s3));
        }
        Ok(OutputStore::new(Arc::new(
            object_store::prefix::PrefixStore::new(s3, prefix),
        )))
    }
}
