//! Runs a stage's work off the timely worker thread. The operator keeps a
//! capability for every item in flight (so downstream frontiers stay honest),
//! hands the item to an executor, and is re-activated through a
//! `SyncActivator` when the result comes back. A long denoising step thus
//! never blocks the worker that tracks progress for other jobs.

use std::collections::HashMap;
use std::sync::mpsc::channel;
use std::sync::Arc;

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::Stream;

/// Completion handle for one submitted item: hands the result back to
/// whoever submitted it (the offload operator, or a stage thread that
/// waits on another stage, as a chain waits on the denoiser).
pub struct Reply<O>(Box<dyn FnOnce(O) + Send>);

impl<O> Reply<O> {
    pub fn new(f: impl FnOnce(O) + Send + 'static) -> Reply<O> {
        Reply(Box::new(f))
    }

    /// Returns the result to the submitter (and wakes its worker).
    pub fn send(self, out: O) {
        (self.0)(out)
    }
}

/// A stage's compute, running on threads it owns.
pub trait Executor<I, O>: Send + Sync {
    fn submit(&self, item: I, reply: Reply<O>);
}

/// Adds an offloaded stage to the dataflow: one output per input item.
pub fn offload<'s, I, O>(
    stream: Stream<'s, u64, Vec<I>>,
    name: &str,
    exec: Arc<dyn Executor<I, O>>,
) -> Stream<'s, u64, Vec<O>>
where
    I: Clone + Send + 'static,
    O: Clone + Send + 'static,
{
    let scope = stream.scope();
    stream.unary(Pipeline, name, move |_cap, info| {
        let activator = scope.worker().sync_activator_for(info.address.to_vec());
        let (tx, rx) = channel::<(u64, O)>();
        let mut inflight: HashMap<u64, Capability<u64>> = HashMap::new();
        let mut next_id = 0u64;
        move |input, output| {
            input.for_each_stamp(|cap, data| {
                let Some(cap) = cap.retain_least(0) else {
                    return;
                };
                for batch in data {
                    for item in batch.drain(..) {
                        next_id += 1;
                        inflight.insert(next_id, cap.clone());
                        let (id, tx, activator) = (next_id, tx.clone(), activator.clone());
                        exec.submit(
                            item,
                            Reply::new(move |out| {
                                let _ = tx.send((id, out));
                                let _ = activator.activate();
                            }),
                        );
                    }
                }
            });
            while let Ok((id, out)) = rx.try_recv() {
                if let Some(cap) = inflight.remove(&id) {
                    output.session(&cap).give(out);
                }
            }
        }
    })
}
