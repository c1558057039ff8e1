//! Starting the graph: [`start`] is the one place timely is started, for
//! every driver. A driver picks a [`Feed`] (a bounded list of specs for the
//! embedded `generate` and `backfill`, a channel of validated jobs for
//! `serve`) and a [`Results`] path; jobs are validated once as they are fed,
//! spread over workers by a hash of their id, and every job leaves through
//! `results`, whether it ran or was refused at the door.

use std::sync::mpsc::{channel, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Exchange, Input, Inspect, Probe};
use timely::dataflow::{InputHandle, ProbeHandle};
use vidflow_operators::admit::{refused, today_utc};
use vidflow_operators::event::{JobEvent, Stage};
use vidflow_operators::{validate, AdmissionConfig, JobResult, JobSpec, ValidatedJob};

use crate::engine::Engine;
use crate::graph::{pipeline, Results};
use crate::DataflowError;

/// Which worker feeds a spec into the graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Intake {
    /// Worker 0 of this process sends every spec; the exchange spreads them.
    Worker0,
    /// Every worker (of every process) holds the same spec list and sends
    /// only the specs it owns (`owner(job_id, peers)`), so a multi-process
    /// cluster shares a job list with no job data on the wire. Every spec
    /// must carry a job id.
    Partitioned,
}

/// How jobs enter the graph.
pub enum Feed {
    /// A bounded list: the run ends once every job has left. Specs are
    /// validated against `admission` as they are fed.
    Specs {
        specs: Arc<Vec<JobSpec>>,
        intake: Intake,
        admission: Arc<AdmissionConfig>,
    },
    /// Jobs already validated by the driver, fed by worker 0 as they
    /// arrive; the run ends when the sender is dropped and every job left.
    /// Made by [`channel_feed`].
    Channel {
        jobs: Receiver<ValidatedJob>,
        waker: GraphWaker,
    },
}

/// What runs the jobs: the engine's stages, or (the intake benchmark) a
/// stand-in that completes every job at once.
#[derive(Clone)]
pub enum Model {
    Engine(Arc<Engine>),
    Noop,
}

/// Starts timely with `config`, builds the graph on every worker, feeds
/// it and returns when the feed is exhausted and every job has left.
pub fn start(
    config: timely::Config,
    model: Model,
    feed: Feed,
    results: Results,
) -> Result<(), DataflowError> {
    let feed = Arc::new(Mutex::new(Some(feed)));
    let guards = timely::execute(config, move |worker| {
        let mut input = InputHandle::<
            u64,
            timely::container::CapacityContainerBuilder<Vec<ValidatedJob>>,
        >::new();
        let probe = ProbeHandle::new();
        let out = results.clone();
        worker.dataflow::<u64, _, _>(|scope| {
            let jobs = scope
                .input_from(&mut input)
                .exchange(|v: &ValidatedJob| route(&v.job_id));
            match &model {
                Model::Engine(engine) => {
                    pipeline(jobs, engine, out).probe_with(&probe);
                }
                Model::Noop => {
                    jobs.map(|v| JobResult::noop(v.job_id, v.tenant))
                        .inspect(move |r: &JobResult| out.deliver(r.clone()))
                        .probe_with(&probe);
                }
            }
        });
        let (me, peers) = (worker.index(), worker.peers());
        // Each worker takes the feed it serves: every worker a list (it
        // picks its share), worker 0 alone a channel.
        let my_feed = match feed.lock() {
            Ok(mut g) => match g.as_ref() {
                Some(Feed::Specs {
                    specs,
                    intake,
                    admission,
                }) => Share::Specs(specs.clone(), *intake, admission.clone()),
                Some(Feed::Channel { .. }) if me == 0 => match g.take() {
                    Some(Feed::Channel { jobs, waker }) => {
                        waker.register();
                        Share::Jobs(jobs)
                    }
                    _ => Share::Nothing,
                },
                _ => Share::Nothing,
            },
            Err(_) => Share::Nothing,
        };
        match my_feed {
            Share::Specs(specs, intake, admission) => {
                let date = today_utc();
                for s in specs.iter() {
                    let id = s.job_id.as_deref().unwrap_or("");
                    let mine = match intake {
                        Intake::Worker0 => me == 0,
                        Intake::Partitioned => owner(id, peers) == me,
                    };
                    if !mine {
                        continue;
                    }
                    match validate(s, &admission) {
                        Ok(v) => input.send(v),
                        Err(e) => {
                            if let Model::Engine(engine) = &model {
                                engine.ctx.events.emit(
                                    &s.tenant,
                                    JobEvent::Failed {
                                        job_id: id.to_string(),
                                        stage: Stage::Admit,
                                        error: e.to_string(),
                                    },
                                );
                            }
                            results.deliver(refused(s, &e, date));
                        }
                    }
                }
                input.advance_to(1);
                drop(input);
                while !probe.done() {
                    worker.step_or_park(None);
                }
            }
            Share::Jobs(rx) => {
                let mut input = Some(input);
                loop {
                    if let Some(inp) = &mut input {
                        let mut closed = false;
                        loop {
                            match rx.try_recv() {
                                Ok(v) => inp.send(v),
                                Err(TryRecvError::Empty) => break,
                                Err(TryRecvError::Disconnected) => {
                                    closed = true;
                                    break;
                                }
                            }
                        }
                        inp.flush();
                        if closed {
                            input = None;
                        }
                    }
                    if input.is_none() && probe.done() {
                        break;
                    }
                    worker.step_or_park(Some(Duration::from_millis(5)));
                }
            }
            Share::Nothing => {
                drop(input);
                while !probe.done() {
                    worker.step_or_park(Some(Duration::from_millis(5)));
                }
            }
        }
    })
    .map_err(DataflowError::Timely)?;
    for g in guards.join() {
        g.map_err(DataflowError::Timely)?;
    }
    Ok(())
}

/// A worker's part of the feed.
enum Share {
    Specs(Arc<Vec<JobSpec>>, Intake, Arc<AdmissionConfig>),
    Jobs(Receiver<ValidatedJob>),
    Nothing,
}

/// The driver's end of a [`Feed::Channel`]: where a driver that validated
/// a job hands it to the graph (worker 0 takes it from there).
pub struct JobSender {
    tx: Sender<ValidatedJob>,
    waker: GraphWaker,
}

impl JobSender {
    /// Hands a validated job to the graph; false when the graph is gone.
    pub fn send(&self, job: ValidatedJob) -> bool {
        let ok = self.tx.send(job).is_ok();
        self.waker.wake();
        ok
    }
}

/// A channel feed for [`start`] and the sender that fills it.
pub fn channel_feed() -> (JobSender, Feed) {
    let (tx, jobs) = channel();
    let waker = GraphWaker::default();
    (
        JobSender {
            tx,
            waker: waker.clone(),
        },
        Feed::Channel { jobs, waker },
    )
}

/// Wakes the graph's feeding worker when a job arrives, so a parked
/// worker picks it up at once instead of at its next timeout.
#[derive(Clone, Default)]
pub struct GraphWaker(Arc<Mutex<Option<std::thread::Thread>>>);

impl GraphWaker {
    fn register(&self) {
        if let Ok(mut g) = self.0.lock() {
            *g = Some(std::thread::current());
        }
    }

    pub fn wake(&self) {
        if let Ok(g) = self.0.lock() {
            if let Some(t) = g.as_ref() {
                t.unpark();
            }
        }
    }
}

/// How [`run_jobs_with`] runs: the timely configuration (one process with
/// threads, or one process of a cluster), intake, and a per-result hook.
pub struct RunOptions {
    pub timely: timely::Config,
    pub intake: Intake,
    pub on_result: Option<ResultHook>,
}

/// Called on the timely worker thread for each result as it leaves the
/// graph (before `run_jobs_with` returns).
pub type ResultHook = Arc<dyn Fn(&JobResult) + Send + Sync>;

impl RunOptions {
    /// `workers` threads in this process, worker 0 feeding.
    pub fn process(workers: usize) -> RunOptions {
        RunOptions {
            timely: timely::Config::process(workers.max(1)),
            intake: Intake::Worker0,
            on_result: None,
        }
    }
}

/// Runs a bounded set of jobs through the graph with `workers` timely
/// workers in this process and returns one result per job (any order).
pub fn run_jobs(
    engine: Arc<Engine>,
    workers: usize,
    specs: Vec<JobSpec>,
) -> Result<Vec<JobResult>, DataflowError> {
    run_jobs_with(engine, specs, RunOptions::process(workers))
}

/// Runs a bounded set of jobs through the graph as `opts` says and returns
/// the results of the jobs this process ran (any order). In a cluster every
/// process calls this with the same specs (`Intake::Partitioned`); each
/// gets back the results of the jobs its workers own.
pub fn run_jobs_with(
    engine: Arc<Engine>,
    specs: Vec<JobSpec>,
    opts: RunOptions,
) -> Result<Vec<JobResult>, DataflowError> {
    let RunOptions {
        timely: config,
        intake,
        on_result,
    } = opts;
    // Ids are fixed before jobs spread over workers, so a job keeps its id
    // (and default seed) wherever it runs.
    if intake == Intake::Partitioned && specs.iter().any(|s| s.job_id.is_none()) {
        return Err(DataflowError::Timely(
            "partitioned intake needs a job id on every spec".into(),
        ));
    }
    let specs: Vec<JobSpec> = specs
        .into_iter()
        .map(|mut s| {
            if s.job_id.is_none() {
                s.job_id = Some(vidflow_operators::generate_job_id());
            }
            s
        })
        .collect();
    let (tx, rx) = channel::<JobResult>();
    let tx = Mutex::new(tx);
    let results = Results::new(move |r: JobResult| {
        if let Some(hook) = &on_result {
            hook(&r);
        }
        if let Ok(tx) = tx.lock() {
            let _ = tx.send(r);
        }
    });
    let feed = Feed::Specs {
        specs: Arc::new(specs),
        intake,
        admission: engine.admission.clone(),
    };
    start(config, Model::Engine(engine), feed, results)?;
    Ok(rx.try_iter().collect())
}

/// FNV-1a of the job id: stable across builds and Rust versions, so every
/// process of a cluster agrees on who owns a job.
pub fn route(job_id: &str) -> u64 {
    job_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The global worker index (of `peers`) that owns a job: the one the graph's
/// exchange routes it to, in any process of the cluster.
pub fn owner(job_id: &str, peers: usize) -> usize {
    (route(job_id) % peers.max(1) as u64) as usize
}

/// The timely configuration for process `process` of a cluster of
/// `addresses.len()` processes (one `host:port` per process, same list and
/// order in every process) with `threads` workers each. One address is a
/// plain multi-threaded process.
pub fn cluster_config(threads: usize, process: usize, addresses: Vec<String>) -> timely::Config {
    let threads = threads.max(1);
    let communication = if addresses.len() > 1 {
        timely::CommunicationConfig::Cluster {
            threads,
            process,
            addresses,
            report: false,
            zerocopy: false,
        }
    } else {
        timely::CommunicationConfig::Process(threads)
    };
    timely::Config {
        communication,
        worker: timely::WorkerConfig::default(),
    }
}

/// A hosts file that does not list enough processes, or cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum HostfileError {
    #[error("reading hosts file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("hosts file {path} has {found} addresses, but --processes is {processes}")]
    TooFew {
        path: String,
        found: usize,
        processes: usize,
    },
}

/// Reads a timely hosts file: one `host:port` per line, process 0 first;
/// blank lines and `#` comments are skipped. Exactly `processes` entries
/// are used (an error if there are fewer).
pub fn read_hostfile(
    path: &std::path::Path,
    processes: usize,
) -> Result<Vec<String>, HostfileError> {
    let text = std::fs::read_to_string(path).map_err(|source| HostfileError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let hosts: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .take(processes)
        .map(str::to_string)
        .collect();
    if hosts.len() < processes {
        return Err(HostfileError::TooFew {
            path: path.display().to_string(),
            found: hosts.len(),
            processes,
        });
    }
    Ok(hosts)
}
