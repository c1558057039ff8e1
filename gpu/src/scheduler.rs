//! Flow-matching schedule. Work in progress.

use candle_core::Tensor;

use crate::error::{GpuError, Result};
use crate::golden::Case;

pub fn run_golden(case: &Case) -> Result<Vec<(String, Tensor)>> {
    Err(GpuError::config(case.case_desc(), "scheduler not implemented yet"))
}
