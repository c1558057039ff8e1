//! The stage order, in one function: admit → prompt safety → encode →
//! denoise → decode → frame safety → output, with videos longer than one
//! pass taking the chain stage after prompt safety. Every stage is offloaded
//! (`offload.rs`) to the engine's executors, shared by all workers of the
//! process: even admission reads the store and decodes an i2v first frame,
//! which must not stall the timely worker.

use std::sync::Arc;

use timely::dataflow::operators::vec::{Map, Partition};
use timely::dataflow::operators::{Concat, Inspect};
use timely::dataflow::Stream;
use vidflow_operators::event::JobEvent;
use vidflow_operators::{AdmittedJob, JobResult, Msg, ValidatedJob};

use crate::engine::Engine;
use crate::offload::offload;

/// Where every job's result leaves the graph, on the worker thread that
/// finished it.
#[derive(Clone)]
pub struct Results(Arc<dyn Fn(JobResult) + Send + Sync>);

impl Results {
    pub fn new(f: impl Fn(JobResult) + Send + Sync + 'static) -> Results {
        Results(Arc::new(f))
    }

    pub fn deliver(&self, r: JobResult) {
        (self.0)(r)
    }
}

/// The job pipeline on a stream of validated jobs already spread over
/// workers. Every job leaves (completed, failed or cancelled) through
/// `results`; a failure is announced with `failed` here, once. Returns the
/// results stream for probing.
pub fn pipeline<'s>(
    jobs: Stream<'s, u64, Vec<ValidatedJob>>,
    engine: &Arc<Engine>,
    results: Results,
) -> Stream<'s, u64, Vec<Msg<JobResult>>> {
    let s = &engine.stages;
    let admitted = offload(jobs.map(Ok), "admit", s.admit.clone());
    let checked = offload(admitted, "safety-prompt", s.prompt_safety.clone());
    // Videos longer than one pass take the chain stage, which runs each
    // segment through the same encode, denoiser (shared with every other
    // job), decode and frame check, and stores the joined video.
    let chains = engine.clone();
    let mut parts = checked.partition(2, move |m: Msg<AdmittedJob>| {
        let long = matches!(&m, Ok(j) if chains.is_chain(j));
        (long as u64, m)
    });
    let (long, checked) = (parts.pop().expect("part 1"), parts.pop().expect("part 0"));
    let chained = offload(long, "chain", s.chain.clone());
    let encoded = offload(checked, "encode", s.encode.clone());
    let denoised = offload(encoded, "denoise", s.denoise.clone());
    let decoded = offload(denoised, "decode", s.decode.clone());
    let shown = offload(decoded, "safety-visual", s.frame_safety.clone());
    let events = engine.ctx.events.clone();
    let done = offload(shown, "output", s.output.clone());
    done.concat(chained).inspect(move |r: &Msg<JobResult>| {
        let res = match r {
            Ok(r) => r.clone(),
            Err(f) => {
                if f.cancelled_at.is_none() {
                    events.emit(
                        &f.meta.tenant,
                        JobEvent::Failed {
                            job_id: f.meta.job_id.clone(),
                            stage: f.stage,
                            error: f.error.clone(),
                        },
                    );
                }
                JobResult::from_failure(f.clone())
            }
        };
        results.deliver(res);
    })
}
