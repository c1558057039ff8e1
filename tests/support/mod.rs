//! Helpers for the `vidflow serve` tests: a real RabbitMQ (started by
//! scripts/test.sh), the real binary, an events follower.
#![allow(dead_code)]

pub mod attack;
pub mod fleet;
pub mod http;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use vidflow_connectors::amqp::{self, Topology};
use vidflow_connectors::auth::hash_key;
use vidflow_connectors::lapin::options::QueueDeclareOptions;
use vidflow_connectors::lapin::types::FieldTable;
use vidflow_connectors::lapin::{Channel, Connection, Consumer};
use vidflow_operators::event::{EventEnvelope, JobEvent};
use vidflow_operators::JobSpec;

pub fn amqp_url() -> String {
    std::env::var("VIDFLOW_AMQP_URL")
        .unwrap_or_else(|_| "amqp://vidflow:vidflow@127.0.0.1:5679/%2f".into())
}

/// The broker user the tests publish as (the service user: its jobs may
/// name any tenant, as the API's do).
pub fn amqp_user() -> String {
    amqp::url_user(&amqp_url())
}

/// A connection to the test broker; a missing broker fails the test with
/// what to do (it is never skipped).
pub async fn broker() -> Connection {
    let url = amqp_url();
    match amqp::connect(&url, "vidflow-test").await {
        Ok(c) => c,
        Err(e) => panic!(
            "no RabbitMQ at {url} ({e}): run the tests with `bash scripts/test.sh`, which starts \
             one, or start it with `bash scripts/broker.sh start`"
        ),
    }
}

pub const KEY_A: &str = "vf_test_key_acme";
pub const KEY_B: &str = "vf_test_key_globex";

/// One test's private deployment: its own queue prefix, out dir and config.
pub struct Setup {
    pub tmp: tempfile::TempDir,
    pub prefix: String,
    pub config: PathBuf,
    pub out: PathBuf,
}

impl Setup {
    pub fn new(name: &str, engine_extra: &str) -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let prefix = format!("test-{name}-{}-{nanos}", std::process::id());
        let out = tmp.path().join("out");
        let config = tmp.path().join("vidflow.toml");
        // The shipped default quota is a small trial; the test tenants
        // get room for any tier and size (a test that is about quotas
        // brings its own `[billing]`).
        let mut extra = engine_extra.to_string();
        // Serve tests run the fast built-in tiny model (the service's own
        // default, the demo model, costs more per job and draws shapes no
        // test here looks at); a test that is about models brings its own.
        if !extra.contains("configs_dir") {
            let configs = tmp.path().join("configs");
            std::fs::create_dir_all(&configs).unwrap();
            std::fs::copy(
                concat!(env!("CARGO_MANIFEST_DIR"), "/configs/modes.toml"),
                configs.join("modes.toml"),
            )
            .unwrap();
            std::fs::write(
                configs.join("models.toml"),
                "[[model]]\nid = \"ltx-tiny\"\npath = \"builtin:tiny\"\nuntrained = true\n",
            )
            .unwrap();
            extra = format!("configs_dir = \"{}\"\n{extra}", configs.display());
        }
        if !extra.contains("[billing]") {
            let quotas = tmp.path().join("quotas.toml");
            std::fs::write(
                &quotas,
                "[default]\nmax_concurrent = 100\nmonthly_video_seconds = 1000000.0\n\
                 max_resolution = \"4k\"\ntiers = [\"premium\", \"standard\", \"free\"]\n",
            )
            .unwrap();
            extra.push_str(&format!("\n[billing]\nquotas = \"{}\"\n", quotas.display()));
        }
        // Tenants made by `vidflow tenant add` land in this key file.
        let keys = tmp.path().join("keys.toml");
        std::fs::write(&keys, "").unwrap();
        let toml = format!(
            "[amqp]\nurl = \"{}\"\nprefix = \"{prefix}\"\n\n[grpc]\nlisten = \"127.0.0.1:0\"\n\n[http]\nlisten = \"127.0.0.1:0\"\n\n\
             [auth]\nkeys_file = \"{}\"\n\n\
             [[auth.key]]\ntenant = \"acme\"\nsha256 = \"{}\"\n\n[[auth.key]]\ntenant = \"globex\"\nsha256 = \"{}\"\n\n\
             [engine]\nout_dir = \"{}\"\n{extra}\n",
            amqp_url(),
            keys.display(),
            hash_key(KEY_A),
            hash_key(KEY_B),
            out.display()
        );
        std::fs::write(&config, toml).unwrap();
        Setup {
            tmp,
            prefix,
            config,
            out,
        }
    }

    pub fn topo(&self) -> Topology {
        Topology::new(&self.prefix)
    }

    /// `vidflow tenant add NAME` for this deployment (its prefix and key
    /// file) against the test broker. Call before [`Setup::start`]: keys
    /// are read at start.
    pub fn add_tenant(&self, name: &str) -> TenantCreds {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = Command::new(env!("CARGO_BIN_EXE_vidflow"))
            .args([
                "tenant",
                "add",
                name,
                "--prefix",
                &self.prefix,
                "--keys-file",
            ])
            .arg(self.tmp.path().join("keys.toml"))
            .arg("--rabbitmqctl")
            .arg(format!(
                "bash {}",
                root.join("scripts/broker.sh ctl").display()
            ))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "vidflow tenant add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        TenantCreds {
            name: name.to_string(),
            password: v["broker_password"].as_str().unwrap().to_string(),
            api_key: v["api_key"].as_str().unwrap().to_string(),
        }
    }

    /// Starts `vidflow serve` and waits for its ready line.
    pub fn start(&self, log_name: &str) -> Serve {
        self.start_with_env(log_name, &[])
    }

    /// As [`Setup::start`], with extra environment (fault injection).
    pub fn start_with_env(&self, log_name: &str, env: &[(&str, &str)]) -> Serve {
        self.start_config(&self.config, log_name, env)
    }

    /// As [`Setup::start_with_env`], with another config file (a node of a
    /// fleet: its own scratch directory and name).
    pub fn start_config(
        &self,
        config: &std::path::Path,
        log_name: &str,
        env: &[(&str, &str)],
    ) -> Serve {
        let log = self.tmp.path().join(format!("{log_name}.log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vidflow"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .env_remove("VIDFLOW_AMQP_URL")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains("ready") => {
                    let after = |tag: &str| {
                        line.split(tag)
                            .nth(1)
                            .map(|a| a.split(';').next().unwrap_or("").trim().to_string())
                    };
                    let grpc = after("gRPC API on ").map(|a| format!("http://{a}"));
                    let http = after("HTTP API on ")
                        .map(|a| a.split(' ').next().unwrap_or("").to_string());
                    let metrics = after("metrics on ");
                    return Serve {
                        child,
                        grpc,
                        http,
                        metrics,
                        log,
                        lines: rx,
                    };
                }
                Ok(_) => continue,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    let _ = child.wait();
                    // Died before it was ready (an injected fault can hit
                    // while it picks up redelivered jobs): the caller sees
                    // a Serve whose process has exited.
                    return Serve {
                        child,
                        grpc: None,
                        http: None,
                        metrics: None,
                        log,
                        lines: rx,
                    };
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "vidflow serve did not become ready; its log:\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
            }
        }
    }

    /// MP4 files under the out dir.
    pub fn outputs(&self) -> Vec<PathBuf> {
        fn walk(d: &std::path::Path, out: &mut Vec<PathBuf>) {
            let Ok(rd) = std::fs::read_dir(d) else { return };
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.extension().is_some_and(|x| x == "mp4") {
                    out.push(p);
                }
            }
        }
        let mut v = Vec::new();
        walk(&self.out, &mut v);
        v
    }
}

/// What `vidflow tenant add` handed out.
pub struct TenantCreds {
    pub name: String,
    pub password: String,
    pub api_key: String,
}

impl TenantCreds {
    /// The test broker's URL as this tenant's own broker user.
    pub fn url(&self) -> String {
        let url = amqp_url();
        let rest = url
            .rsplit_once('@')
            .map(|(_, r)| r.to_string())
            .unwrap_or_else(|| url.trim_start_matches("amqp://").to_string());
        format!("amqp://{}:{}@{rest}", self.name, self.password)
    }

    /// Removes the broker user (users outlive a test's queues).
    pub fn delete(&self) {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let _ = Command::new("bash")
            .arg(root.join("scripts/broker.sh"))
            .args(["ctl", "delete_user", &self.name])
            .output();
    }
}

pub struct Serve {
    pub child: Child,
    /// `http://127.0.0.1:PORT` of the gRPC API.
    pub grpc: Option<String>,
    /// `http://127.0.0.1:PORT` of the HTTP API and console.
    pub http: Option<String>,
    /// `http://127.0.0.1:PORT/metrics`.
    pub metrics: Option<String>,
    pub log: PathBuf,
    pub lines: std::sync::mpsc::Receiver<String>,
}

impl Serve {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Peak resident memory of the serve process so far (VmHWM), bytes.
    pub fn peak_rss(&self) -> u64 {
        vidflow_dataflow::serve::metrics::peak_rss_bytes(&self.pid().to_string())
    }
}

impl Serve {
    /// SIGTERM, then waits: the service must drain and exit 0.
    pub fn terminate(mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid()),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "serve exited {status:?}; log:\n{}",
            self.log_text()
        );
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A t2v spec for the tiny model.
pub fn spec(job_id: &str, tenant: &str, tier: &str, res: &str, frames: u32, steps: u32) -> JobSpec {
    JobSpec::from_json(&format!(
        r#"{{"job_id":"{job_id}","tenant":"{tenant}","tier":"{tier}","kind":"t2v",
            "prompt":"test clip {job_id}","resolution":"{res}","frames":{frames},
            "mode":"realtime","steps":{steps}}}"#
    ))
    .unwrap()
}

/// Every event of one deployment, from a queue bound before anything is
/// published.
pub struct Events {
    _conn: Connection,
    consumer: Consumer,
    pub all: Vec<(Instant, EventEnvelope)>,
}

impl Events {
    pub async fn follow(topo: &Topology) -> Events {
        let conn = broker().await;
        let ch = conn.create_channel().await.unwrap();
        topo.declare(&ch).await.unwrap();
        let q = topo.bind_events(&ch, "job.#").await.unwrap();
        let consumer = amqp::consume_auto_ack(&ch, &q, "test-events")
            .await
            .unwrap();
        Events {
            _conn: conn,
            consumer,
            all: Vec::new(),
        }
    }

    /// Reads events until `done(&all)` holds; panics after `timeout`.
    pub async fn until(
        &mut self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&[(Instant, EventEnvelope)]) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + timeout;
        while !done(&self.all) {
            match tokio::time::timeout_at(deadline, self.consumer.next()).await {
                Ok(Some(Ok(d))) => {
                    let env: EventEnvelope = serde_json::from_slice(&d.data).unwrap();
                    self.all.push((Instant::now(), env));
                }
                Ok(other) => panic!("events consumer ended: {other:?}"),
                Err(_) => panic!(
                    "timed out after {timeout:?} waiting for {what}; {} events so far, last: {:?}",
                    self.all.len(),
                    self.all.last().map(|e| &e.1)
                ),
            }
        }
    }

    /// Reads whatever arrives until `quiet` passes with no event.
    pub async fn settle(&mut self, quiet: Duration) {
        while let Ok(Some(Ok(d))) = tokio::time::timeout(quiet, self.consumer.next()).await {
            let env: EventEnvelope = serde_json::from_slice(&d.data).unwrap();
            self.all.push((Instant::now(), env));
        }
    }

    /// Reads events for `d` (however many arrive).
    pub async fn collect_for(&mut self, d: Duration) {
        let deadline = tokio::time::Instant::now() + d;
        while let Ok(Some(Ok(m))) = tokio::time::timeout_at(deadline, self.consumer.next()).await {
            let env: EventEnvelope = serde_json::from_slice(&m.data).unwrap();
            self.all.push((Instant::now(), env));
        }
    }

    pub fn count(&self, pred: impl Fn(&JobEvent) -> bool) -> usize {
        self.all.iter().filter(|(_, e)| pred(&e.event)).count()
    }
}

pub fn is_completed(e: &JobEvent) -> bool {
    matches!(e, JobEvent::Completed { .. })
}

/// Messages ready in a queue.
pub async fn depth(ch: &Channel, queue: &str) -> u32 {
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap()
    .message_count()
}

/// Waits until `queue` holds no message, ready or unacked (a passive
/// declare counts only ready ones, so also wait for the consumer's acks:
/// the events arrive before the acks).
pub async fn wait_empty(ch: &Channel, queue: &str) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = depth(ch, queue).await;
        if n == 0 || Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Removes a test's queues and exchanges.
pub async fn cleanup(ch: &Channel, topo: &Topology) {
    use vidflow_connectors::lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
    for q in [&topo.jobs, &topo.dead] {
        let _ = ch
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    for x in [&topo.events, &topo.control, &topo.intake] {
        let _ = ch
            .exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }
}

/// The sha256 of each spec's MP4 from an uninterrupted embedded run.
pub fn reference_sha(specs: &[JobSpec]) -> std::collections::HashMap<String, String> {
    use vidflow_dataflow::{run_jobs, Engine, EngineConfig, EventSink};
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::new(
        &EngineConfig {
            scheduling: Default::default(),
            admission: vidflow_operators::AdmissionConfig::builtin_tiny(),
            out_dir: dir.path().to_path_buf(),
            max_batch: 4,
            workers: 1,
            checkpoint_every: 0,
            checkpoint_every_tier: Default::default(),
            safety: vidflow_operators::safety_record::SafetyConfig::in_repo(std::path::Path::new(
                env!("CARGO_MANIFEST_DIR"),
            )),
        },
        EventSink::discard(),
    )
    .unwrap();
    run_jobs(std::sync::Arc::clone(&engine), 1, specs.to_vec())
        .unwrap()
        .into_iter()
        .map(|r| (r.job_id, r.sha256.expect("reference run completed")))
        .collect()
}

/// `ffprobe`'s `entries` of the first video stream (frames counted by
/// decoding), as CSV: what a player would find in the file.
pub fn ffprobe_stream(path: &std::path::Path, entries: &str) -> String {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-count_frames"])
        .args([
            "-show_entries",
            &format!("stream={entries}"),
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .expect("ffprobe not found: run `bash scripts/setup-system.sh` (installs ffmpeg)");
    assert!(out.status.success(), "ffprobe failed on {}", path.display());
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Waits for a serve process to exit by itself (a fault it was started
/// with), failing with its log after `limit`.
pub fn wait_exit(s: &mut Serve, limit: Duration) {
    let t0 = Instant::now();
    while s.child.try_wait().unwrap().is_none() {
        assert!(
            t0.elapsed() < limit,
            "serve still running:\n{}",
            s.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
