//! What the session keeps of the deliveries on their way to admission
//! (`admission.rs` acts on them): those under way, those following another
//! delivery of the same job, and those parked behind another node's lease.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use vidflow_connectors::amqp;
use vidflow_connectors::lapin;
use vidflow_connectors::lapin::message::Delivery;
use vidflow_connectors::state::{Admit, StateError};
use vidflow_operators::ledger::JobTerms;
use vidflow_operators::{JobKey, ValidatedJob};

/// A validated delivery on its way to admission, or waiting (unacked)
/// because another node holds its job's lease: it is tried again every
/// second, until that node's record appears (then it is acked with a
/// replay) or the lease lapses (then this node takes the job over, from
/// its newest checkpoint).
pub(super) struct Parked {
    pub d: Delivery,
    pub v: ValidatedJob,
    pub audio: bool,
    /// The node holding the lease when it was last asked ("" at first).
    pub holder: String,
}

/// One admission's answer, with what it was asked for.
pub(super) struct Admitted {
    pub p: Parked,
    pub terms: JobTerms,
    pub res: Result<Admit, StateError>,
}

/// The admissions of one session.
pub(super) struct Admissions {
    /// Under way.
    pub running: FuturesUnordered<BoxFuture<'static, Admitted>>,
    /// More deliveries of a job whose admission is under way.
    pub followers: HashMap<JobKey, Vec<Parked>>,
    /// Waiting on another node's lease (or on the database).
    pub parked: Vec<Parked>,
    parked_at: Instant,
}

impl Admissions {
    pub fn new() -> Admissions {
        Admissions {
            running: FuturesUnordered::new(),
            followers: HashMap::new(),
            parked: Vec::new(),
            parked_at: Instant::now(),
        }
    }

    /// Deliveries this session holds that are neither running nor parked.
    pub fn pending(&self) -> usize {
        self.running.len()
    }

    /// The parked deliveries, once a second.
    pub fn due(&mut self) -> Vec<Parked> {
        if self.parked.is_empty() || self.parked_at.elapsed() < Duration::from_secs(1) {
            return Vec::new();
        }
        self.parked_at = Instant::now();
        std::mem::take(&mut self.parked)
    }
}

/// A publish error as the session's error type (a broker error ends the
/// session; anything else is reported as an I/O error).
pub(super) fn to_lapin(e: amqp::PublishError) -> lapin::Error {
    match e {
        amqp::PublishError::Amqp(e) => e,
        other => lapin::Error::from(std::io::Error::other(other.to_string())),
    }
}
