//! Scheduling for vidflow: the cost model (job shape → accelerator
//! seconds), the scheduler (which job starts where, which yields), and the
//! fleet simulator that runs the same scheduler over a synthetic day.
//! Plain Rust with no I/O: `vidflow serve` and `vidflow fleet simulate`
//! call it.

pub mod cost;
pub mod policy;

pub use cost::{Accelerator, Arch, Calibration, Cost, CostModel, JobShape};
pub use policy::{
    ClassId, Decision, JobId, JobInfo, Policy, PoolId, PoolSpec, SchedConfig, SchedError,
    Scheduler, Targets,
};
pub mod sim;

pub use vidflow_job::Tier;
