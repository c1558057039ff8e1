//! RabbitMQ topology and message formats shared by `vidflow serve`,
//! `vidflow submit`, the gRPC API and tests.
//!
//! One durable classic queue with priorities carries all job intake (tier →
//! priority), rather than a queue per tier: a worker then always takes the
//! most urgent waiting job with a single consumer and a single prefetch
//! window, with no polling across queues and no weights to tune, and the
//! tiers' very different queue-wait targets (premium 30 s, standard 5 min,
//! free 15 min) fall out of strict priority. Quorum queues would survive a
//! node loss but have no priorities in RabbitMQ 3.10; on one broker node the
//! classic queue with persistent messages and publisher confirms is as
//! durable. The price of strict priority is that free jobs wait while
//! premium work keeps arriving; their 15 min target is the slack for that.

use std::time::Duration;

use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use serde::{Deserialize, Serialize};
use vidflow_job::event::EventEnvelope;

mod publisher;
mod tls;
mod trust;

pub use publisher::Publisher;

pub use tls::{redact, trust_ca, TlsError};
pub use trust::{authenticate, url_user, Origin, TenantPermissions, Tenants, Trust};
use vidflow_job::{JobError, JobSpec, Tier};

/// Content type of a job message in the protobuf form; anything else is
/// read as JSON.
pub const PROTOBUF: &str = "application/x-protobuf";
pub const JSON: &str = "application/json";

/// Headers a dead-lettered message carries.
pub const H_ERROR: &str = "x-vidflow-error";
pub const H_FIELD: &str = "x-vidflow-field";
pub const H_QUEUE: &str = "x-vidflow-queue";
/// Unix ms when a job was published (queue-wait metering).
pub const H_SUBMITTED_MS: &str = "x-vidflow-submitted-ms";
/// The broker user that published a dead-lettered message (its `user_id`
/// property, which the dead-letter copy cannot keep: the broker lets a
/// connection publish only under its own user).
pub const H_PUBLISHER: &str = "x-vidflow-publisher";

/// `[amqp]` in `configs/vidflow.toml`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpConfig {
    /// Broker URL. `VIDFLOW_AMQP_URL` in the environment overrides it.
    #[serde(default = "default_url")]
    pub url: String,
    /// Prefix of every queue and exchange name (see [`Topology`]), so
    /// several deployments (or tests) can share one broker.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Unacknowledged jobs this process holds at once. A job stays unacked
    /// until its result is durable, so this is the most jobs in flight in
    /// the process; 0 means "the denoiser's batch size + 2" (a full batch
    /// plus one job encoding and one decoding).
    #[serde(default)]
    pub prefetch: u16,
    /// Larger job messages are dead-lettered unread. A spec is a few hundred
    /// bytes; an inline first frame at 4K is a few MB.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Broker users that are the service itself (serve processes, the
    /// API, operators' `vidflow submit`): their job messages may name any
    /// tenant (the API checked the tenant's key), and only their events
    /// and control messages are believed. Every other publisher must be a
    /// tenant's own broker user (see [`authenticate`]). The broker proves
    /// the user: it refuses a message whose `user_id` property is not the
    /// publishing connection's user.
    #[serde(default = "default_service_users")]
    pub service_users: Vec<String>,
    /// PEM file of the CA(s) that sign the broker's certificate. Set, the
    /// connection must be TLS: `url` has to be `amqps://` (the service
    /// refuses to start otherwise, so a typo cannot silently fall back to
    /// plaintext). Unset, an `amqps://` URL trusts the system's roots.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
}

/// The private broker of `scripts/broker.sh` as its service user (a
/// development password on loopback; deployments set `url` or
/// `VIDFLOW_AMQP_URL`).
fn default_url() -> String {
    "amqp://vidflow:vidflow@127.0.0.1:5679/%2f".into()
}
fn default_prefix() -> String {
    "vidflow".into()
}
fn default_max_message_bytes() -> usize {
    8 << 20
}
fn default_service_users() -> Vec<String> {
    vec!["vidflow".into()]
}

impl Default for AmqpConfig {
    fn default() -> Self {
        AmqpConfig {
            url: default_url(),
            prefix: default_prefix(),
            prefetch: 0,
            max_message_bytes: default_max_message_bytes(),
            service_users: default_service_users(),
            ca_file: None,
        }
    }
}

impl AmqpConfig {
    /// The URL to use: `VIDFLOW_AMQP_URL` if set, else `url`.
    pub fn effective_url(&self) -> String {
        std::env::var("VIDFLOW_AMQP_URL").unwrap_or_else(|_| self.url.clone())
    }

    pub fn topology(&self) -> Topology {
        Topology::new(&self.prefix)
    }

    /// Applies `ca_file`: checks the URL is `amqps://` and makes the CA
    /// the one this process's broker connections trust ([`trust_ca`]).
    pub fn apply_tls(&self) -> Result<(), TlsError> {
        let Some(ca) = &self.ca_file else {
            return Ok(());
        };
        let url = self.effective_url();
        if !url.starts_with("amqps://") {
            return Err(TlsError::Plaintext {
                url: redact(&url),
                ca: ca.display().to_string(),
            });
        }
        trust_ca(ca)
    }
}

/// Names of the queues and exchanges, all derived from one prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    /// Durable priority queue of job specs, fed by [`Topology::intake`].
    pub jobs: String,
    /// Durable direct exchange that routes to [`Topology::jobs`]: the one
    /// thing a tenant's broker user may publish to (no tenant gets write
    /// access to the default exchange, which reaches every queue).
    pub intake: String,
    /// Durable queue of messages that could not be turned into a job, with
    /// the reason in [`H_ERROR`]/[`H_FIELD`] headers.
    pub dead: String,
    /// Durable topic exchange of job events (see
    /// [`EventEnvelope::routing_key`]).
    pub events: String,
    /// Fanout exchange of control messages (cancel) to every serve process.
    pub control: String,
}

impl Topology {
    pub fn new(prefix: &str) -> Topology {
        Topology {
            jobs: format!("{prefix}.jobs"),
            intake: format!("{prefix}.intake"),
            dead: format!("{prefix}.jobs.dead"),
            events: format!("{prefix}.events"),
            control: format!("{prefix}.control"),
        }
    }

    /// Declares everything (idempotent; every process does it at connect).
    pub async fn declare(&self, ch: &Channel) -> Result<(), lapin::Error> {
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.queue_declare(self.dead.as_str().into(), durable, FieldTable::default())
            .await?;
        let mut args = FieldTable::default();
        args.insert("x-max-priority".into(), AMQPValue::ShortShortUInt(3));
        // A message the service rejects outright (never today; a future
        // delivery limit) still lands beside the ones it dead-letters itself.
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString("".into()),
        );
        args.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(self.dead.as_str().into()),
        );
        ch.queue_declare(self.jobs.as_str().into(), durable, args)
            .await?;
        let ex = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.exchange_declare(
            self.intake.as_str().into(),
            ExchangeKind::Direct,
            ex,
            FieldTable::default(),
        )
        .await?;
        ch.queue_bind(
            self.jobs.as_str().into(),
            self.intake.as_str().into(),
            self.jobs.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        ch.exchange_declare(
            self.events.as_str().into(),
            ExchangeKind::Topic,
            ex,
            FieldTable::default(),
        )
        .await?;
        ch.exchange_declare(
            self.control.as_str().into(),
            ExchangeKind::Fanout,
            ex,
            FieldTable::default(),
        )
        .await?;
        Ok(())
    }

    /// A server-named, exclusive, auto-deleted queue bound to the events
    /// exchange with `binding` (e.g. `job.#`, `job.*.<id>.*`).
    pub async fn bind_events(&self, ch: &Channel, binding: &str) -> Result<String, lapin::Error> {
        bind_private_queue(ch, &self.events, binding).await
    }

    /// As [`Topology::bind_events`], for the control exchange.
    pub async fn bind_control(&self, ch: &Channel) -> Result<String, lapin::Error> {
        bind_private_queue(ch, &self.control, "").await
    }
}

/// A server-named, exclusive, auto-deleted queue bound to `exchange`: gone
/// with the connection, so followers leave nothing behind.
async fn bind_private_queue(
    ch: &Channel,
    exchange: &str,
    binding: &str,
) -> Result<String, lapin::Error> {
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let name = q.name().as_str().to_string();
    ch.queue_bind(
        name.as_str().into(),
        exchange.into(),
        binding.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    Ok(name)
}

/// Consumes `queue` with automatic acks (event and control followers: a
/// lost message there is a missed progress tick, never a lost job).
pub async fn consume_auto_ack(
    ch: &Channel,
    queue: &str,
    tag: &str,
) -> Result<lapin::Consumer, lapin::Error> {
    ch.basic_consume(
        queue.into(),
        tag.into(),
        lapin::options::BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
}

/// Connects, tagging the connection with `name@<pid>` (seen in the
/// management UI and `rabbitmqctl list_connections`: which process holds
/// which connection).
pub async fn connect(url: &str, name: &str) -> Result<Connection, lapin::Error> {
    let props = ConnectionProperties::default()
        .with_connection_name(format!("{name}@{}", std::process::id()).into());
    match tls::trusted_ca() {
        Some(ca) if url.starts_with("amqps://") => {
            let tls = lapin::tcp::OwnedTLSConfig {
                identity: None,
                cert_chain: Some(ca.clone()),
            };
            let rt = lapin::runtime::default_runtime()?;
            Connection::connect_with_config(url, props, tls, rt).await
        }
        _ => Connection::connect(url, props).await,
    }
}

/// A channel in confirm mode.
pub async fn confirm_channel(conn: &Connection) -> Result<Channel, lapin::Error> {
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok(ch)
}

/// Why publishing failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("AMQP: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("the broker refused the message (nack)")]
    Nacked,
    #[error("the broker could not route the message to any queue")]
    Unroutable,
    #[error("encoding the message: {0}")]
    Encode(#[from] serde_json::Error),
    /// A routing key longer than AMQP's 255-byte short string.
    #[error("routing key: {0}")]
    RoutingKey(#[from] lapin::types::ShortStringError),
}

/// Queue priority of a tier.
pub fn tier_priority(t: Tier) -> u8 {
    match t {
        Tier::Premium => 3,
        Tier::Standard => 2,
        Tier::Free => 1,
    }
}

/// Publishes a job spec (JSON) through the intake exchange, persistent,
/// with its tier's priority and `user_id` = the publishing connection's
/// broker user (`user`; the broker refuses any other), and waits for the
/// broker's confirm (`ch` must be in confirm mode): once this returns the
/// job survives a broker restart.
pub async fn publish_job(
    ch: &Channel,
    topo: &Topology,
    spec: &JobSpec,
    user: &str,
) -> Result<(), PublishError> {
    let body = serde_json::to_vec(spec)?;
    let mut headers = FieldTable::default();
    headers.insert(
        H_SUBMITTED_MS.into(),
        AMQPValue::LongString(vidflow_job::event::now_ms().to_string().into()),
    );
    let mut props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(JSON.into())
        .with_priority(tier_priority(spec.tier))
        .with_user_id(ShortString::try_new(user)?)
        .with_headers(headers);
    if let Some(id) = &spec.job_id {
        props = props.with_message_id(id.as_str().into());
    }
    publish_confirmed(ch, &topo.intake, &topo.jobs, &body, props, true).await
}

/// Publishes and waits for the confirm. `mandatory` makes an unroutable
/// message an error instead of silently dropped.
pub async fn publish_confirmed(
    ch: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    props: BasicProperties,
    mandatory: bool,
) -> Result<(), PublishError> {
    let confirm = ch
        .basic_publish(
            exchange.into(),
            ShortString::try_new(routing_key)?,
            BasicPublishOptions {
                mandatory,
                ..Default::default()
            },
            body,
            props,
        )
        .await?
        .await?;
    match confirm {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(_)) => Err(PublishError::Unroutable),
        Confirmation::Nack(_) => Err(PublishError::Nacked),
        Confirmation::NotRequested => Ok(()),
    }
}

/// The properties of a persistent event message, published by broker
/// user `user` (a service user: followers believe no one else).
pub fn event_properties(user: &str) -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(JSON.into())
        .with_user_id(user.into())
}

/// The body of an event message.
pub fn event_body(env: &EventEnvelope) -> Vec<u8> {
    serde_json::to_vec(env).unwrap_or_default()
}

/// Copies a message to the dead-letter queue with the reason in headers
/// (original body and properties kept) and waits for the confirm. The
/// caller acks the original only after this succeeds, so a crash in
/// between redelivers it rather than losing it.
pub async fn dead_letter(
    ch: &Channel,
    topo: &Topology,
    body: &[u8],
    props: &BasicProperties,
    field: &str,
    error: &str,
    user: &str,
) -> Result<(), PublishError> {
    let mut headers = props.headers().clone().unwrap_or_default();
    if let Some(u) = props.user_id() {
        headers.insert(
            H_PUBLISHER.into(),
            AMQPValue::LongString(LongString::from(u.as_str())),
        );
    }
    headers.insert(
        H_ERROR.into(),
        AMQPValue::LongString(LongString::from(error)),
    );
    headers.insert(
        H_FIELD.into(),
        AMQPValue::LongString(LongString::from(field)),
    );
    headers.insert(
        H_QUEUE.into(),
        AMQPValue::LongString(LongString::from(topo.jobs.as_str())),
    );
    let props = props
        .clone()
        .with_headers(headers)
        .with_delivery_mode(2)
        .with_priority(0)
        .with_user_id(ShortString::try_new(user)?);
    publish_confirmed(ch, "", &topo.dead, body, props, true).await
}

/// A header's value as text (long or short string), if present.
pub fn header_str(props: &BasicProperties, name: &str) -> Option<String> {
    let h = props.headers().as_ref()?;
    match h.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

/// Why a message is not a job: the field at fault (`payload` for the
/// message as a whole) and a message for the dead-letter header.
#[derive(Clone, Debug, PartialEq)]
pub struct Undecodable {
    pub field: String,
    pub error: String,
}

/// Reads a job message: protobuf when its content type says so, JSON
/// otherwise. Size is checked first so a huge body is never parsed.
pub fn decode_job(
    body: &[u8],
    content_type: Option<&str>,
    max_bytes: usize,
) -> Result<JobSpec, Undecodable> {
    if body.len() > max_bytes {
        return Err(Undecodable {
            field: "payload".into(),
            error: format!(
                "message is {} bytes, more than the {} bytes a job message may have",
                body.len(),
                max_bytes
            ),
        });
    }
    let from_job_error = |e: JobError| Undecodable {
        field: e.field().to_string(),
        error: e.to_string(),
    };
    if content_type == Some(PROTOBUF) {
        use prost::Message;
        let p = vidflow_job::proto::JobSpec::decode(body).map_err(|e| Undecodable {
            field: "payload".into(),
            error: format!("not a valid protobuf vidflow.v1.JobSpec: {e}"),
        })?;
        return JobSpec::try_from(p).map_err(from_job_error);
    }
    let text = std::str::from_utf8(body).map_err(|e| Undecodable {
        field: "payload".into(),
        error: format!(
            "not UTF-8 text (byte {}): a job message is JSON",
            e.valid_up_to()
        ),
    })?;
    JobSpec::from_json(text).map_err(from_job_error)
}

/// A control message (fanout to every serve process).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Control {
    /// Stop `job_id` of `tenant` before its next denoising step (or, if it
    /// has not started, as soon as it does).
    Cancel { tenant: String, job_id: String },
}

/// Publishes a control message to every serve process (confirmed).
pub async fn publish_control(
    ch: &Channel,
    topo: &Topology,
    c: &Control,
    user: &str,
) -> Result<(), PublishError> {
    let body = serde_json::to_vec(c)?;
    let props = BasicProperties::default()
        .with_content_type(JSON.into())
        .with_user_id(ShortString::try_new(user)?);
    // Not mandatory: with no serve process bound, nobody runs the job.
    publish_confirmed(ch, &topo.control, "", &body, props, false).await
}

/// Back-off between reconnect attempts: 0.2 s doubling to 5 s.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((200u64 << attempt.min(5)).min(5_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prefix() {
        let t = Topology::new("vf");
        assert_eq!(t.jobs, "vf.jobs");
        assert_eq!(t.intake, "vf.intake");
        assert_eq!(t.dead, "vf.jobs.dead");
        assert_eq!(t.events, "vf.events");
        assert_eq!(t.control, "vf.control");
    }

    #[test]
    fn decode_reports_the_field() {
        let e = decode_job(b"{not json", None, 1000).unwrap_err();
        assert_eq!(e.field, "(body)", "{e:?}");
        let e = decode_job(&[b'x'; 2000], None, 1000).unwrap_err();
        assert_eq!(e.field, "payload");
        let e = decode_job(&[0xff, 0xfe], None, 1000).unwrap_err();
        assert_eq!(e.field, "payload");
        let e = decode_job(
            br#"{"tenant":"a","tier":"gold","kind":"t2v","prompt":"x","resolution":"480p"}"#,
            None,
            1000,
        )
        .unwrap_err();
        assert_eq!(e.field, "tier", "{e:?}");
        let e = decode_job(&[0x08, 0xff], Some(PROTOBUF), 1000).unwrap_err();
        assert_eq!(e.field, "payload");
    }

    #[test]
    fn protobuf_and_json_give_the_same_spec() {
        use prost::Message;
        let spec = JobSpec::from_json(
            r#"{"job_id":"j1","tenant":"a","tier":"free","kind":"t2v","prompt":"x","resolution":"480p"}"#,
        )
        .unwrap();
        let p = vidflow_job::proto::JobSpec::try_from(&spec).unwrap();
        let got = decode_job(&p.encode_to_vec(), Some(PROTOBUF), 1000).unwrap();
        assert_eq!(got, spec);
    }

    #[test]
    fn priorities_order_tiers() {
        assert!(tier_priority(Tier::Premium) > tier_priority(Tier::Standard));
        assert!(tier_priority(Tier::Standard) > tier_priority(Tier::Free));
        assert!(tier_priority(Tier::Free) > 0);
    }
}
