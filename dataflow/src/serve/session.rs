//! The AMQP side of `vidflow serve`: one connection with a consuming
//! channel (intake, prefetch = jobs held at once), a confirm channel
//! (events, dead letters) and a control consumer (cancels). Any broker
//! error ends the session; the next one reconnects with back-off. Jobs keep
//! running meanwhile: the broker requeues their unacked messages, and when
//! they come back they join the running job instead of starting it again.
//!
//! The same path handles RabbitMQ's consumer acknowledgement timeout (the
//! broker closes a channel that holds a message unacked too long): a long
//! job is never cut, it just gets its message back on the new channel and
//! acks that one. `scripts/broker.sh` still raises the timeout to 2 h so
//! this is rare.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use vidflow_connectors::amqp::{self, decode_job, Control, Topology, Undecodable};
use vidflow_connectors::lapin::message::Delivery;
use vidflow_connectors::lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions,
};
use vidflow_connectors::lapin::types::FieldTable;
use vidflow_connectors::lapin::{self, Channel, Confirmation};
use vidflow_connectors::state::StateStore;
use vidflow_connectors::store::sha256_hex;
use vidflow_operators::event::{now_ms, EventEnvelope, JobEvent};
use vidflow_operators::ledger::JobTerms;
use vidflow_operators::{validate, AdmissionConfig, JobKey, JobResult, JobSpec, ValidatedJob};

use super::metrics::Finished;
use super::pending::{to_lapin, Admissions, Parked};
use super::{InFlight, InFlightMap, Outbound};
use crate::engine::Engine;

pub(crate) struct Session {
    pub url: String,
    /// The broker user this process connects as (`user_id` of everything
    /// it publishes).
    pub me: String,
    /// Who may publish jobs, and whose control messages count.
    pub trust: Arc<amqp::Trust>,
    pub topo: Topology,
    pub prefetch: u16,
    pub max_message_bytes: usize,
    pub admission: Arc<AdmissionConfig>,
    /// Records, attempts, reservations, leases (local or shared).
    pub state: StateStore,
    pub metrics: Arc<super::metrics::Metrics>,
    /// Straight to the committer (poison jobs that never enter the graph).
    pub results: tokio::sync::mpsc::UnboundedSender<JobResult>,
    pub max_attempts: u32,
    pub timeouts: super::config::Timeouts,
    pub timed_out: super::TimedOut,
    pub engine: Option<Arc<Engine>>,
    pub inflight: InFlightMap,
    pub intake: crate::run::JobSender,
    pub out_tx: tokio::sync::mpsc::UnboundedSender<Outbound>,
    pub stop: Arc<AtomicBool>,
    pub shutdown: Arc<tokio::sync::Notify>,
    pub drain: Duration,
}

/// How a session ended.
enum End {
    Drained,
    Lost(lapin::Error),
}

type Ready = Option<Box<dyn FnOnce() + Send>>;

impl Session {
    /// Runs sessions until a drain completes.
    pub async fn run(
        self,
        mut out_rx: tokio::sync::mpsc::UnboundedReceiver<Outbound>,
        mut ready: Ready,
    ) {
        let mut pending: VecDeque<EventEnvelope> = VecDeque::new();
        let mut attempt = 0u32;
        let mut drain_deadline: Option<Instant> = None;
        loop {
            match self
                .session(&mut out_rx, &mut pending, &mut ready, &mut drain_deadline)
                .await
            {
                End::Drained => return,
                End::Lost(e) => {
                    tracing::warn!(error = %e, attempt, "broker session lost; reconnecting");
                }
            }
            if let Some(d) = drain_deadline {
                if Instant::now() >= d {
                    self.uncount_handed_back().await;
                    return;
                }
            }
            tokio::time::sleep(amqp::backoff(attempt)).await;
            attempt += 1;
        }
    }

    async fn session(
        &self,
        out_rx: &mut tokio::sync::mpsc::UnboundedReceiver<Outbound>,
        pending: &mut VecDeque<EventEnvelope>,
        ready: &mut Ready,
        drain_deadline: &mut Option<Instant>,
    ) -> End {
        let conn = match amqp::connect(&self.url, "vidflow-serve").await {
            Ok(c) => c,
            Err(e) => return End::Lost(e),
        };
        let r = self
            .consume(&conn, out_rx, pending, ready, drain_deadline)
            .await;
        // Closing hands every unacked message back to the broker.
        let _ = conn.close(200, "vidflow serve stopping".into()).await;
        match r {
            Ok(()) => End::Drained,
            Err(e) => End::Lost(e),
        }
    }

    async fn consume(
        &self,
        conn: &lapin::Connection,
        out_rx: &mut tokio::sync::mpsc::UnboundedReceiver<Outbound>,
        pending: &mut VecDeque<EventEnvelope>,
        ready: &mut Ready,
        drain_deadline: &mut Option<Instant>,
    ) -> Result<(), lapin::Error> {
        let pub_ch = amqp::confirm_channel(conn).await?;
        self.topo.declare(&pub_ch).await?;
        let cons_ch = conn.create_channel().await?;
        cons_ch
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await?;
        let tag = format!("vidflow-serve-{}", std::process::id());
        let mut consuming = drain_deadline.is_none();
        let mut consumer = cons_ch
            .basic_consume(
                self.topo.jobs.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        if !consuming {
            cons_ch
                .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                .await?;
        }
        let ctl_ch = conn.create_channel().await?;
        let ctl_q = self.topo.bind_control(&ctl_ch).await?;
        let mut control = amqp::consume_auto_ack(&ctl_ch, &ctl_q, "vidflow-serve-control").await?;
        tracing::info!(queue = %self.topo.jobs, prefetch = self.prefetch, "consuming");
        if let Some(f) = ready.take() {
            f();
        }
        // Terminal events whose publish failed in an earlier session.
        while let Some(env) = pending.pop_front() {
            self.publish_terminal(&pub_ch, env).await?;
        }
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut adm = Admissions::new();
        loop {
            if self.stop.load(Ordering::SeqCst) && consuming {
                consuming = false;
                *drain_deadline = Some(Instant::now() + self.drain);
                let _ = cons_ch
                    .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                    .await;
                tracing::info!(in_flight = self.in_flight(), "stopped consuming; draining");
            }
            if let Some(d) = *drain_deadline {
                // Admissions under way end as runs or answers first.
                let left = self.in_flight() + adm.pending();
                if left == 0 {
                    tracing::info!("drained: every job finished and acked");
                    return Ok(());
                }
                if Instant::now() >= d {
                    tracing::warn!(
                        in_flight = left,
                        "drain timeout: handing unfinished jobs back to the broker"
                    );
                    self.uncount_handed_back().await;
                    return Ok(());
                }
            }
            tokio::select! {
                d = consumer.next(), if consuming => match d {
                    Some(Ok(d)) => self.on_delivery(&pub_ch, d, &mut adm).await?,
                    Some(Err(e)) => return Err(e),
                    None => return Err(lapin::Error::from(std::io::Error::other(
                        "the broker cancelled the intake consumer",
                    ))),
                },
                c = control.next() => match c {
                    Some(Ok(d)) => self.on_control(&d),
                    Some(Err(e)) => return Err(e),
                    None => {}
                },
                o = out_rx.recv() => match o {
                    Some(Outbound::Event(e)) => self.publish_event(&pub_ch, e).await?,
                    Some(Outbound::Terminal(env)) => {
                        if let Err(e) = self.publish_terminal(&pub_ch, env.clone()).await {
                            pending.push_back(env);
                            return Err(e);
                        }
                    }
                    None => {}
                },
                a = adm.running.next(), if adm.pending() > 0 => {
                    if let Some(a) = a {
                        self.answer(&pub_ch, a, &mut adm).await?;
                    }
                }
                _ = tick.tick() => {
                    self.check_timeouts();
                    if consuming {
                        for p in adm.due() {
                            self.begin(p, &mut adm);
                        }
                    }
                }
                _ = self.shutdown.notified() => {}
            }
        }
    }

    /// Stops jobs that ran over their tier's timeout (the committer hands
    /// them back to the broker for a bounded retry).
    fn check_timeouts(&self) {
        let Some(engine) = &self.engine else { return };
        let over: Vec<JobKey> = self
            .inflight
            .lock()
            .map(|m| {
                m.iter()
                    .filter(|(_, j)| j.since.elapsed() > self.timeouts.of(j.terms.tier))
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default();
        for key in over {
            let new = self
                .timed_out
                .lock()
                .map(|mut t| t.insert(key.clone()))
                .unwrap_or(false);
            if new {
                tracing::warn!(tenant = %key.tenant, job_id = %key.job_id, "generation timeout: stopping the job");
                engine.cancel(&key);
            }
        }
    }

    /// A drain hands the jobs still running back to the broker: those runs
    /// are not the jobs' failures, so they do not count as attempts.
    async fn uncount_handed_back(&self) {
        let keys: Vec<JobKey> = self
            .inflight
            .lock()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        for k in keys {
            if let Err(e) = self.state.unbump_attempts(&k.tenant, &k.job_id).await {
                tracing::warn!(tenant = %k.tenant, job_id = %k.job_id, error = %e, "could not take back the attempt of a handed-back job");
            }
            if let Err(e) = self.state.release_lease(&k).await {
                tracing::warn!(tenant = %k.tenant, job_id = %k.job_id, error = %e, "could not release the lease of a handed-back job");
            }
        }
    }

    fn in_flight(&self) -> usize {
        self.inflight.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// One intake message, in five steps: decode it, validate it (the one
    /// validation: the validated job is what the graph receives), then
    /// (`admission.rs`, concurrently with the next deliveries) join a run
    /// here or ask the state whether it finished, runs on another node or
    /// is refused by its quota, and run it.
    async fn on_delivery(
        &self,
        ch: &Channel,
        d: Delivery,
        adm: &mut Admissions,
    ) -> Result<(), lapin::Error> {
        let spec = match self.decode(&d) {
            Ok(s) => s,
            Err((tenant, id, u)) => return self.reject(ch, &d, &tenant, &id, u).await,
        };
        let job_id = spec.job_id.clone().unwrap_or_default();
        let tenant = spec.tenant.clone();
        let v = match validate(&spec, &self.admission) {
            Ok(v) => v,
            Err(e) => {
                let u = Undecodable {
                    field: e.field().to_string(),
                    error: e.to_string(),
                };
                return self.reject(ch, &d, &tenant, &job_id, u).await;
            }
        };
        let p = Parked {
            d,
            v,
            audio: spec.audio,
            holder: String::new(),
        };
        self.begin(p, adm);
        Ok(())
    }

    /// Step 1: who sent the message (as the broker proved it), then the
    /// message as a job spec of that sender's tenant, with a job id that a
    /// redelivery gets again (the message id, else a hash of the body).
    /// An error carries the tenant to tell (the proven one, or `_`).
    fn decode(&self, d: &Delivery) -> Result<JobSpec, (String, String, Undecodable)> {
        let ct = d
            .properties
            .content_type()
            .as_ref()
            .map(|s| s.as_str().to_string());
        let msg_id = d
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.as_str().to_string());
        let id_or = || msg_id.clone().unwrap_or_else(|| "_".into());
        // Authenticated before the body costs anything to parse.
        let origin = amqp::authenticate(&d.properties, &self.trust)
            .map_err(|u| ("_".to_string(), id_or(), u))?;
        let told = match &origin {
            amqp::Origin::Tenant(t) => t.clone(),
            amqp::Origin::Service(_) => "_".into(),
        };
        let mut spec = decode_job(&d.data, ct.as_deref(), self.max_message_bytes)
            .map_err(|u| (told.clone(), id_or(), u))?;
        if let amqp::Origin::Tenant(t) = &origin {
            if spec.tenant != *t {
                let u = Undecodable {
                    field: "user_id".into(),
                    error: format!(
                        "unauthenticated: broker user {t:?} may submit jobs only for tenant {t:?}, not {:?}",
                        spec.tenant
                    ),
                };
                return Err((told, id_or(), u));
            }
        }
        if spec.job_id.is_none() {
            // Deterministic, so a redelivery gets the same id (and seed).
            spec.job_id =
                Some(msg_id.unwrap_or_else(|| format!("m-{}", &sha256_hex(&d.data)[..32])));
        }
        Ok(spec)
    }

    /// Step 5: hold the delivery until the commit (the attempt is counted),
    /// and
    /// hand the validated job to the graph (or park a poison job).
    pub(super) async fn run_job(
        &self,
        ch: &Channel,
        d: Delivery,
        v: ValidatedJob,
        terms: JobTerms,
        before: u32,
    ) -> Result<(), lapin::Error> {
        let (tenant, job_id) = (v.tenant.clone(), v.job_id.clone());
        let key = JobKey::new(&tenant, &job_id);
        let (data, properties, redelivered) = (d.data, d.properties, d.redelivered);
        self.inflight
            .lock()
            .expect("in-flight map poisoned")
            .insert(
                key.clone(),
                InFlight {
                    terms,
                    ackers: vec![d.acker],
                    since: Instant::now(),
                },
            );
        // A job whose earlier runs were all cut short (it keeps killing its
        // worker) is parked with the reason, not run again.
        if before >= self.max_attempts {
            let reason = format!(
                "poison job: {before} earlier runs ended without a result (crash or timeout); \
                 dead-lettered after {} attempts",
                self.max_attempts
            );
            tracing::error!(job_id = %job_id, attempts = before, "{reason}");
            amqp::dead_letter(
                ch,
                &self.topo,
                &data,
                &properties,
                "job_id",
                &reason,
                &self.me,
            )
            .await
            .map_err(to_lapin)?;
            let _ = self
                .results
                .send(JobResult::failed_before_start(job_id, tenant, reason));
            return Ok(());
        }
        tracing::info!(job_id = %job_id, tenant = %tenant, redelivered, attempt = before + 1, "job taken");
        if !self.intake.send(v) {
            // The graph is gone (shutting down): hand the job back, and
            // the run that never started does not count.
            let _ = self.state.unbump_attempts(&tenant, &job_id).await;
            let _ = self.state.release_lease(&key).await;
            let job = self.inflight.lock().expect("poisoned").remove(&key);
            if let Some(j) = job {
                for a in j.ackers {
                    let _ = a
                        .nack(BasicNackOptions {
                            requeue: true,
                            ..Default::default()
                        })
                        .await;
                }
            }
        }
        Ok(())
    }

    /// Dead-letters a message with the reason, announces the rejection,
    /// then acks it. If the dead-letter publish fails the message is not
    /// acked (the session ends and the broker redelivers it).
    pub(super) async fn reject(
        &self,
        ch: &Channel,
        d: &Delivery,
        tenant: &str,
        job_id: &str,
        u: Undecodable,
    ) -> Result<(), lapin::Error> {
        tracing::warn!(job_id = %job_id, field = %u.field, error = %u.error, "dead-lettering message");
        amqp::dead_letter(
            ch,
            &self.topo,
            &d.data,
            &d.properties,
            &u.field,
            &u.error,
            &self.me,
        )
        .await
        .map_err(to_lapin)?;
        self.refuse(ch, d, tenant, job_id, u).await
    }

    /// Announces a job that will not run (`rejected` event, naming the field
    /// and why) and acks its message.
    pub(super) async fn refuse(
        &self,
        ch: &Channel,
        d: &Delivery,
        tenant: &str,
        job_id: &str,
        u: Undecodable,
    ) -> Result<(), lapin::Error> {
        self.metrics.finished(Finished::Rejected);
        let env = EventEnvelope {
            tenant: tenant.to_string(),
            ts_ms: now_ms(),
            replay: false,
            event: JobEvent::Rejected {
                job_id: job_id.to_string(),
                field: u.field,
                error: u.error,
            },
        };
        publish_nowait(ch, &self.topo, &env, &self.me).await?;
        d.acker.ack(BasicAckOptions::default()).await?;
        Ok(())
    }

    /// A control message counts only from a service user (the broker also
    /// refuses tenants' writes to the control exchange).
    fn on_control(&self, d: &Delivery) {
        if !self.trust.is_service(&d.properties) {
            tracing::warn!(
                user = ?d.properties.user_id().as_ref().map(|u| u.as_str().to_string()),
                "control message not from a service user: ignored"
            );
            return;
        }
        match serde_json::from_slice::<Control>(&d.data) {
            Ok(Control::Cancel { tenant, job_id }) => {
                // Running here, not here yet, or on another process: the
                // engine remembers it (by tenant and id), so the job stops
                // as soon as it runs here.
                if let Some(e) = &self.engine {
                    tracing::info!(tenant = %tenant, job_id = %job_id, "cancel received");
                    e.cancel(&JobKey::new(tenant, job_id));
                }
            }
            Err(e) => tracing::warn!(error = %e, "unreadable control message"),
        }
    }

    async fn publish_event(&self, ch: &Channel, env: EventEnvelope) -> Result<(), lapin::Error> {
        if env.event.is_terminal() {
            return Ok(());
        }
        // Every job the pipeline runs here is in the map until acked; a
        // late heartbeat of an acked job is not announced.
        let key = JobKey::new(&env.tenant, env.event.job_id());
        let running = self
            .inflight
            .lock()
            .map(|m| m.contains_key(&key))
            .unwrap_or(false);
        if !running {
            return Ok(());
        }
        publish_nowait(ch, &self.topo, &env, &self.me).await
    }

    /// Publishes a terminal event; when the broker confirms it, acks every
    /// delivery of the job. That confirm is the commit point: the record
    /// and the output were already durable.
    async fn publish_terminal(&self, ch: &Channel, env: EventEnvelope) -> Result<(), lapin::Error> {
        let confirm = ch
            .basic_publish(
                self.topo.events.as_str().into(),
                env.routing_key().as_str().into(),
                BasicPublishOptions::default(),
                &amqp::event_body(&env),
                amqp::event_properties(&self.me),
            )
            .await?;
        let inflight = self.inflight.clone();
        let out_tx = self.out_tx.clone();
        let state = self.state.clone();
        tokio::spawn(async move {
            let job_id = env.event.job_id().to_string();
            let key = JobKey::new(&env.tenant, &job_id);
            match confirm.await {
                Ok(Confirmation::Ack(_)) | Ok(Confirmation::NotRequested) => {
                    // Ack before the job leaves the map: a drain waits for
                    // the map to empty and then closes the channel, which
                    // would requeue a delivery whose ack was not yet sent.
                    // A duplicate delivery that joins meanwhile is acked on
                    // the next turn.
                    let mut acked = 0usize;
                    loop {
                        let batch = inflight
                            .lock()
                            .ok()
                            .and_then(|mut m| {
                                m.get_mut(&key).map(|j| std::mem::take(&mut j.ackers))
                            })
                            .unwrap_or_default();
                        if batch.is_empty() {
                            break;
                        }
                        for a in batch {
                            // A delivery from a channel that died since is
                            // back in the queue; its redelivery finds the
                            // record and is acked then.
                            let _ = a.ack(BasicAckOptions::default()).await;
                            acked += 1;
                        }
                    }
                    let job = inflight.lock().ok().and_then(|mut m| m.remove(&key));
                    if let Some(j) = job {
                        // The slot frees only now, after the terminal event
                        // is out: events never show more jobs running than
                        // the quota allows.
                        let delivered = matches!(env.event, JobEvent::Completed { .. });
                        if let Err(e) = state.finish(&key, delivered).await {
                            tracing::warn!(job_id = %job_id, error = %e, "could not end the job's reservation (it lapses)");
                        }
                        tracing::debug!(job_id = %job_id, held_s = j.since.elapsed().as_secs_f64(), deliveries = acked, "acked");
                    }
                }
                other => {
                    tracing::warn!(job_id = %job_id, outcome = ?other.map(|c| c.is_ack()), "terminal event not confirmed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let _ = out_tx.send(Outbound::Terminal(env));
                }
            }
        });
        Ok(())
    }
}

async fn publish_nowait(
    ch: &Channel,
    topo: &Topology,
    env: &EventEnvelope,
    me: &str,
) -> Result<(), lapin::Error> {
    // The confirm is not awaited: progress is best-effort and frequent.
    let _confirm = ch
        .basic_publish(
            topo.events.as_str().into(),
            env.routing_key().as_str().into(),
            BasicPublishOptions::default(),
            &amqp::event_body(env),
            amqp::event_properties(me),
        )
        .await?;
    Ok(())
}
