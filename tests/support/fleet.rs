//! A fleet of `vidflow serve` processes for the tests: each node with its
//! own scratch directory and name, all sharing the test broker (one queue
//! prefix), a fresh PostgreSQL database and one prefix of the S3 server.
//! Each node keeps its analytics outbox and parts in its own directory and
//! copies every part to the bucket under `<prefix>/analytics/`, where the
//! tests read all nodes' rows together.

use std::path::PathBuf;

use vidflow_connectors::store::{OutputStore, StoreConfig, StoreKind};

use super::*;

pub fn admin_db_url() -> String {
    std::env::var("VIDFLOW_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgresql://vidflow@127.0.0.1:55432/vidflow".into())
}

/// A database of its own on the test server; returns its URL.
pub async fn fresh_db(name: &str) -> String {
    let admin = admin_db_url();
    let db = format!("f_{name}_{}", std::process::id());
    vidflow_connectors::state::postgres::create_database(&admin, &db)
        .await
        .unwrap_or_else(|e| {
            panic!("no PostgreSQL at {admin} ({e}): run through scripts/test.sh or start scripts/postgres.sh")
        })
}

pub async fn db(url: &str) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    c
}

/// The test S3 server, under `prefix`.
pub fn s3_config(prefix: &str) -> StoreConfig {
    let var = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    StoreConfig {
        kind: StoreKind::S3,
        endpoint: var("VIDFLOW_TEST_S3_ENDPOINT", "http://127.0.0.1:8014"),
        bucket: var("VIDFLOW_TEST_S3_BUCKET", "vidflow"),
        prefix: prefix.into(),
        region: "us-east-1".into(),
        access_key_id: var("VIDFLOW_TEST_S3_ACCESS_KEY_ID", "vidflow-test"),
        secret_access_key: var("VIDFLOW_TEST_S3_SECRET_ACCESS_KEY", "vidflow-test-secret"),
        allow_http: true,
    }
}

pub struct Fleet {
    pub setup: Setup,
    pub db_url: String,
    /// One config per node (`node-<i>`).
    pub configs: Vec<PathBuf>,
    pub store: StoreConfig,
}

impl Fleet {
    /// `nodes` node configs over one deployment. `engine_extra` goes into
    /// `[engine]`; `more` is appended (other sections, e.g. `[billing]`).
    pub async fn new(name: &str, nodes: usize, engine_extra: &str, more: &str) -> Fleet {
        let db_url = fresh_db(name).await;
        let probe = Setup::new(name, "");
        let store = s3_config(&probe.prefix);
        drop(probe);
        let extra = format!(
            "{engine_extra}\n{more}\n\n[state]\nbackend = \"postgres\"\nurl = \"{db_url}\"\nlease_ttl_s = 3.0\n\n\
             [store]\nkind = \"s3\"\nendpoint = \"{}\"\nbucket = \"{}\"\nprefix = \"{}\"\n\
             access_key_id = \"{}\"\nsecret_access_key = \"{}\"\nallow_http = true\n\n\
             [sinks]\nstore_prefix = \"analytics\"\nmax_age_s = 1.0\n",
            store.endpoint,
            store.bucket,
            store.prefix,
            store.access_key_id,
            store.secret_access_key,
        );
        let setup = Setup::new(name, &extra);
        let text = std::fs::read_to_string(&setup.config).unwrap();
        let mut configs = Vec::new();
        for i in 0..nodes {
            let scratch = setup.tmp.path().join(format!("node-{i}"));
            let t = text
                .replace(
                    &format!("out_dir = \"{}\"", setup.out.display()),
                    &format!("out_dir = \"{}\"", scratch.display()),
                )
                .replace("[state]\n", &format!("[state]\nnode = \"node-{i}\"\n"));
            let p = setup.tmp.path().join(format!("node-{i}.toml"));
            std::fs::write(&p, t).unwrap();
            configs.push(p);
        }
        Fleet {
            setup,
            db_url,
            configs,
            store,
        }
    }

    pub fn start(&self, node: usize, log: &str, env: &[(&str, &str)]) -> Serve {
        self.setup.start_config(&self.configs[node], log, env)
    }

    pub fn objects(&self) -> OutputStore {
        OutputStore::s3(&self.store).unwrap()
    }

    /// Billing rows per (tenant, job) in every node's parts under the
    /// bucket's `analytics/` prefix: listed and read by pyarrow, counted by
    /// DuckDB (over the Arrow table: DuckDB's own S3 reader is an
    /// extension it would download).
    pub fn charges_in_s3(&self) -> Vec<(String, String, i64)> {
        let py = std::env::var("VIDFLOW_PYTHON").unwrap_or_else(|_| {
            concat!(env!("CARGO_MANIFEST_DIR"), "/.venv-test/bin/python").into()
        });
        let script = r#"
import sys, json, duckdb
import pyarrow.fs as fs, pyarrow.dataset as ds
endpoint, bucket, prefix, key, secret = sys.argv[1:6]
scheme, host = endpoint.split("://", 1)
s3 = fs.S3FileSystem(access_key=key, secret_key=secret, endpoint_override=host,
                     scheme=scheme, region="us-east-1")
base = f"{bucket}/{prefix}/analytics/billing"
files = [i.path for i in s3.get_file_info(fs.FileSelector(base, recursive=True))
         if i.path.endswith(".parquet")]
t = ds.dataset(files, filesystem=s3, format="parquet", partitioning="hive",
               partition_base_dir=base).to_table()
rows = duckdb.sql("select tenant, job_id, count(*) from t group by all order by all").fetchall()
print(json.dumps(rows))
"#;
        let o = std::process::Command::new(py)
            .args(["-c", script])
            .args([
                &self.store.endpoint,
                &self.store.bucket,
                &self.store.prefix,
                &self.store.access_key_id,
                &self.store.secret_access_key,
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    }
}
