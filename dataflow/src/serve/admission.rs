//! Steps 3 to 5 of an intake delivery, after decode and validation: join a
//! run of the same job here, else ask the state whether the job finished,
//! runs on another node (the delivery waits), is refused by its quota, or
//! runs here.
//!
//! Admissions run concurrently: each is a database round trip on a fleet,
//! and the session must not wait for one before reading the next delivery
//! (one at a time, a node's intake would be bounded by the round trip).
//! Deliveries of a job whose admission is under way follow its outcome
//! instead of being admitted again (they would take the same lease twice).

use vidflow_connectors::amqp::{self, Undecodable};
use vidflow_connectors::lapin::message::Delivery;
use vidflow_connectors::lapin::options::{BasicAckOptions, BasicNackOptions};
use vidflow_connectors::lapin::{self, Channel};
use vidflow_connectors::state::{Admit, StateError};
use vidflow_operators::event::now_ms;
use vidflow_operators::ledger::JobTerms;
use vidflow_operators::JobKey;

use super::pending::{to_lapin, Admissions, Admitted, Parked};
use super::session::Session;
use super::terminal_event;

impl Session {
    /// Starts the admission of a validated delivery (joins a run here, or
    /// follows an admission of the same job under way).
    pub(super) fn begin(&self, p: Parked, adm: &mut Admissions) {
        let (tenant, job_id) = (p.v.tenant.clone(), p.v.job_id.clone());
        let key = JobKey::new(&tenant, &job_id);
        let Some(d) = self.join_running(p.d, &key) else {
            return;
        };
        let mut p = Parked { d, ..p };
        if let Some(f) = adm.followers.get_mut(&key) {
            f.push(p);
            return;
        }
        adm.followers.insert(key, Vec::new());
        let terms = JobTerms {
            tier: p.v.tier,
            kind: p.v.kind,
            width: p.v.width,
            height: p.v.height,
            frames: p.v.num_frames,
            fps: p.v.fps,
            audio: p.audio,
            submitted_ms: amqp::header_str(&p.d.properties, amqp::H_SUBMITTED_MS)
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(now_ms),
            admitted_ms: now_ms(),
            est_vram_bytes: p.v.estimated_vram_bytes,
        };
        // The worker's scheduler counts the job's wait from here.
        p.v.submitted_ms = Some(terms.submitted_ms);
        let state = self.state.clone();
        adm.running.push(Box::pin(async move {
            let month = vidflow_operators::quota::month_of_ms(terms.admitted_ms);
            let ask = vidflow_operators::quota::Ask {
                tenant: &tenant,
                job_id: &job_id,
                tier: terms.tier,
                class: vidflow_operators::billing::ResClass::of(terms.width, terms.height),
                video_ms: vidflow_operators::billing::billed_ms(terms.frames, terms.fps),
                month: &month,
            };
            let res = state.admit(&ask).await;
            Admitted { p, terms, res }
        }));
    }

    /// Acts on an admission's answer, for its delivery and its followers.
    pub(super) async fn answer(
        &self,
        ch: &Channel,
        a: Admitted,
        adm: &mut Admissions,
    ) -> Result<(), lapin::Error> {
        let Admitted { p, terms, res } = a;
        let (tenant, job_id) = (p.v.tenant.clone(), p.v.job_id.clone());
        let key = JobKey::new(&tenant, &job_id);
        let followers = adm.followers.remove(&key).unwrap_or_default();
        match res {
            Ok(Admit::Run { runs_before }) => {
                if !p.holder.is_empty() {
                    tracing::warn!(tenant = %tenant, job_id = %job_id, from = %p.holder, "lease lapsed: taking the job over");
                }
                self.run_job(ch, p.d, p.v, terms, runs_before).await?;
                // The followers are acked with the run (or handed back with
                // it, when the graph was gone).
                let mut rest = Vec::new();
                {
                    let mut map = self.inflight.lock().expect("in-flight map poisoned");
                    match map.get_mut(&key) {
                        Some(j) => j.ackers.extend(followers.into_iter().map(|f| f.d.acker)),
                        None => rest = followers,
                    }
                }
                for f in rest {
                    let opts = BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    };
                    let _ = f.d.acker.nack(opts).await;
                }
                Ok(())
            }
            Ok(Admit::Finished(rec)) => {
                tracing::info!(job_id = %job_id, status = %rec.status, "redelivered finished job: re-publishing its result");
                let env = terminal_event(&rec, true);
                amqp::publish_confirmed(
                    ch,
                    &self.topo.events,
                    &env.routing_key(),
                    &amqp::event_body(&env),
                    amqp::event_properties(&self.me),
                    false,
                )
                .await
                .map_err(to_lapin)?;
                for d in std::iter::once(p.d).chain(followers.into_iter().map(|f| f.d)) {
                    d.acker.ack(BasicAckOptions::default()).await?;
                }
                Ok(())
            }
            Ok(Admit::Leased(node)) => {
                if p.holder != node {
                    tracing::info!(tenant = %tenant, job_id = %job_id, holder = %node, "job runs on another node: waiting");
                }
                for q in std::iter::once(p).chain(followers) {
                    adm.parked.push(Parked {
                        holder: node.clone(),
                        ..q
                    });
                }
                Ok(())
            }
            Ok(Admit::Refused(q)) => {
                tracing::info!(job_id = %job_id, tenant = %tenant, reason = %q, "job refused by quota");
                // A refusal is an answer, not a bad message: no dead letter.
                for f in std::iter::once(p).chain(followers) {
                    let u = Undecodable {
                        field: "quota".into(),
                        error: q.to_string(),
                    };
                    self.refuse(ch, &f.d, &tenant, &job_id, u).await?;
                }
                Ok(())
            }
            Err(e @ (StateError::Record { .. } | StateError::Store(_))) => {
                // Unreadable record: never guess "absent" (that would run
                // the job twice); park the message with the reason.
                for f in std::iter::once(p).chain(followers) {
                    let u = Undecodable {
                        field: "job_id".into(),
                        error: format!("job record unreadable: {e}"),
                    };
                    self.reject(ch, &f.d, &tenant, &job_id, u).await?;
                }
                Ok(())
            }
            Err(e) => {
                // The database is unreachable: the job waits, unacked.
                tracing::warn!(tenant = %tenant, job_id = %job_id, error = %e, "could not admit the job; retrying");
                adm.parked.push(p);
                adm.parked.extend(followers);
                Ok(())
            }
        }
    }

    /// A delivery of a job this process runs joins it (acked with it).
    /// `Some(d)` hands back a delivery to admit.
    fn join_running(&self, d: Delivery, key: &JobKey) -> Option<Delivery> {
        // Keyed by (tenant, job id): another tenant's job with the same
        // id is a different job, and nothing here tells it this one runs.
        let mut map = self.inflight.lock().expect("in-flight map poisoned");
        if let Some(j) = map.get_mut(key) {
            tracing::info!(tenant = %key.tenant, job_id = %key.job_id, "duplicate delivery of a running job: not started again");
            j.ackers.push(d.acker);
            return None;
        }
        Some(d)
    }
}
