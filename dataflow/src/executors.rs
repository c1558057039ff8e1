//! Where the offloaded stages run: a thread per stage that calls the
//! stage's function (from `vidflow-operators`) on each job in turn, and
//! the denoiser's thread, which drives a [`Batcher`] (and its scheduler)
//! between arrivals.

use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Mutex;
use std::time::Duration;

use vidflow_operators::denoise::{Batcher, Scheduling};
use vidflow_operators::{DenoisedJob, EncodedJob, Msg, StageCtx};

use crate::offload::{Executor, Reply};

/// A stage with one worker thread running `work` on each job in turn;
/// failures pass straight through without reaching it.
pub struct ThreadStage<I, O> {
    tx: Mutex<Sender<(I, Reply<Msg<O>>)>>,
}

impl<I: Send + 'static, O: Send + 'static> ThreadStage<I, O> {
    pub fn spawn(name: &str, mut work: impl FnMut(I) -> Msg<O> + Send + 'static) -> Self {
        let (tx, rx) = channel::<(I, Reply<Msg<O>>)>();
        std::thread::Builder::new()
            .name(format!("vidflow-{name}"))
            .spawn(move || {
                while let Ok((item, reply)) = rx.recv() {
                    reply.send(work(item));
                }
            })
            .expect("spawning a stage thread");
        ThreadStage { tx: Mutex::new(tx) }
    }
}

impl<I: Send + 'static, O: Send + 'static> ThreadStage<I, O> {
    /// A stage with `n` worker threads taking jobs from one queue, each
    /// with the state `make` gives it: for stages whose jobs are long
    /// (a chain waits on the denoiser for each of its segments) and must
    /// not queue behind one another.
    pub fn spawn_pool<W>(name: &str, n: usize, make: impl Fn() -> W) -> Self
    where
        W: FnMut(I) -> Msg<O> + Send + 'static,
    {
        let (tx, rx) = channel::<(I, Reply<Msg<O>>)>();
        let rx = std::sync::Arc::new(Mutex::new(rx));
        for i in 0..n.max(1) {
            let (rx, mut work) = (rx.clone(), make());
            std::thread::Builder::new()
                .name(format!("vidflow-{name}-{i}"))
                .spawn(move || loop {
                    let next = match rx.lock() {
                        Ok(r) => r.recv(),
                        Err(_) => return,
                    };
                    match next {
                        Ok((item, reply)) => reply.send(work(item)),
                        Err(_) => return,
                    }
                })
                .expect("spawning a stage thread");
        }
        ThreadStage { tx: Mutex::new(tx) }
    }
}

impl<I: Send + 'static, O: Send + 'static> Executor<Msg<I>, Msg<O>> for ThreadStage<I, O> {
    fn submit(&self, item: Msg<I>, reply: Reply<Msg<O>>) {
        match item {
            Err(f) => reply.send(Err(f)),
            Ok(i) => {
                if let Ok(tx) = self.tx.lock() {
                    let _ = tx.send((i, reply));
                }
            }
        }
    }
}

type Arrival = (EncodedJob, Reply<Msg<DenoisedJob>>);

/// The denoise stage's thread: jobs join its [`Batcher`] between steps.
pub struct Denoiser {
    tx: Mutex<Sender<Arrival>>,
}

impl Denoiser {
    pub fn spawn(ctx: StageCtx, max_batch: usize, plan: Scheduling) -> Self {
        let (tx, rx) = channel();
        std::thread::Builder::new()
            .name("vidflow-denoise".into())
            .spawn(move || denoise_loop(ctx, rx, max_batch, plan))
            .expect("spawning the denoiser");
        Denoiser { tx: Mutex::new(tx) }
    }
}

impl Executor<Msg<EncodedJob>, Msg<DenoisedJob>> for Denoiser {
    fn submit(&self, item: Msg<EncodedJob>, reply: Reply<Msg<DenoisedJob>>) {
        match item {
            Err(f) => reply.send(Err(f)),
            Ok(j) => {
                if let Ok(tx) = self.tx.lock() {
                    let _ = tx.send((j, reply));
                }
            }
        }
    }
}

fn denoise_loop(ctx: StageCtx, rx: Receiver<Arrival>, max_batch: usize, plan: Scheduling) {
    let mut batcher = Batcher::new(max_batch, plan);
    loop {
        // Admit new jobs between steps; block only when idle.
        let first = if batcher.is_idle() {
            match rx.recv() {
                Ok(x) => Some(x),
                Err(_) => return,
            }
        } else {
            match rx.recv_timeout(Duration::from_millis(0)) {
                Ok(x) => Some(x),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => None,
            }
        };
        for (job, reply) in first
            .into_iter()
            .chain(std::iter::from_fn(|| rx.try_recv().ok()))
        {
            batcher.join(&ctx, job, reply);
        }
        // Cancellation and the scheduler's decisions take effect here,
        // between steps.
        for (reply, out) in batcher.take_cancelled(&ctx) {
            reply.send(out);
        }
        batcher.schedule(&ctx);
        for (reply, out) in batcher.step(&ctx) {
            reply.send(out);
        }
    }
}
