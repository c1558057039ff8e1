//! Helpers of the security tests (`tests/security.rs`,
//! `tests/isolation.rs`): tenants' own connections, raw publishes, waiting
//! for a job's answer, dead letters, DuckDB over a deployment's Parquet.

use std::process::Command;
use std::time::Duration;

use vidflow_connectors::amqp::{self, Topology};
use vidflow_connectors::lapin::options::BasicGetOptions;
use vidflow_connectors::lapin::{BasicProperties, Channel, Connection};
use vidflow_connectors::tonic::Request;
use vidflow_operators::event::{EventEnvelope, JobEvent};
use vidflow_operators::JobSpec;

use super::{amqp_user, Events};

pub fn unique(tag: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{tag}{}x{n}", std::process::id())
}

pub async fn confirm_as(url: &str) -> (Connection, Channel) {
    let conn = amqp::connect(url, "vidflow-test-tenant").await.unwrap();
    let ch = amqp::confirm_channel(&conn).await.unwrap();
    (conn, ch)
}

pub fn req<T>(msg: T, key: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    r
}

pub fn terminal_of<'a>(
    all: &'a [(std::time::Instant, EventEnvelope)],
    tenant: &str,
    id: &str,
) -> Option<&'a JobEvent> {
    all.iter()
        .map(|(_, e)| e)
        .find(|e| {
            e.tenant == tenant
                && e.event.job_id() == id
                && (e.event.is_terminal() || matches!(e.event, JobEvent::Rejected { .. }))
        })
        .map(|e| &e.event)
}

/// Every dead letter of a deployment: (message id, field, error).
pub async fn dead_letters(ch: &Channel, topo: &Topology) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    while let Some(m) = ch
        .basic_get(topo.dead.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        let p = &m.delivery.properties;
        out.push((
            p.message_id()
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default(),
            amqp::header_str(p, amqp::H_FIELD).unwrap_or_default(),
            amqp::header_str(p, amqp::H_ERROR).unwrap_or_default(),
        ));
    }
    out
}

/// Publishes a job as the service user.
pub async fn publish(ch: &Channel, topo: &Topology, s: &JobSpec) {
    amqp::publish_job(ch, topo, s, &amqp_user()).await.unwrap();
}

/// Waits until `tenant`'s `id` reports a denoising step.
pub async fn until_running(events: &mut Events, tenant: &str, id: &str) {
    let (t, i) = (tenant.to_string(), id.to_string());
    events
        .until(
            Duration::from_secs(60),
            &format!("{tenant}/{id} running"),
            move |all| {
                all.iter().any(|(_, e)| {
                    e.tenant == t
                        && e.event.job_id() == i
                        && matches!(e.event, JobEvent::Progress { step: 1.., .. })
                })
            },
        )
        .await;
}

pub fn job_json(id: &str, tenant: &str) -> Vec<u8> {
    format!(
        r#"{{"job_id":"{id}","tenant":"{tenant}","tier":"standard","kind":"t2v","prompt":"a calm lake",
            "resolution":"256x256","frames":9,"steps":2,"mode":"realtime"}}"#
    )
    .into_bytes()
}

/// Publishes raw job bytes through the intake exchange with `user_id`
/// (None: no user_id at all).
pub async fn publish_raw(
    ch: &Channel,
    topo: &Topology,
    id: &str,
    body: &[u8],
    user: Option<&str>,
) -> Result<(), amqp::PublishError> {
    let mut props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(amqp::JSON.into())
        .with_message_id(id.into());
    if let Some(u) = user {
        props = props.with_user_id(u.into());
    }
    amqp::publish_confirmed(ch, &topo.intake, &topo.jobs, body, props, true).await
}

/// CRC-32 (IEEE), for a hand-edited PNG chunk.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xedb8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// `select <cols> from <dataset> order by <order>` over a deployment's
/// Parquet, through DuckDB (grouping by the order columns when the select
/// aggregates).
pub fn duck(root: &std::path::Path, dataset: &str, cols: &str, order: &str) -> serde_json::Value {
    let group = if cols.contains("sum(") || cols.contains("count(") {
        format!("group by {order}")
    } else {
        String::new()
    };
    let py = std::env::var("VIDFLOW_PYTHON").expect("VIDFLOW_PYTHON (run through scripts/test.sh)");
    let o = Command::new(py)
        .args([
            "-c",
            &format!(
                "import duckdb, json; print(json.dumps(duckdb.sql(\"select {cols} from read_parquet('{}/{dataset}/**/*.parquet', hive_partitioning=true) {group} order by {order}\").fetchall()))",
                root.display()
            ),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}
