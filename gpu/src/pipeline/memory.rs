//! The GPU memory check before a job: its estimated working set against the
//! device's free memory, refused with sizes instead of a CUDA failure.

use candle_core::DType;

use super::{GenerateRequest, LtxPipeline};
use crate::error::{GpuError, Result};

impl LtxPipeline {
    /// On a GPU: refuses a job whose estimated working set (activations of a
    /// step, or of the decode) exceeds the free device memory, before any of
    /// it is allocated. The weights are already resident, so they count as 0.
    pub fn check_memory(&self, req: &GenerateRequest) -> Result<()> {
        let Some((used, total)) = crate::kernels::device_memory(&self.device)? else {
            return Ok(());
        };
        let act_bytes = match self.transformer.dtype() {
            DType::F32 => 4,
            _ => 2,
        };
        let est = crate::info::estimate_vram(
            &self.transformer.config,
            &self.vae.config,
            0,
            &crate::info::EstimateInput {
                width: req.width,
                height: req.height,
                frames: req.num_frames,
                act_bytes,
                cfg_batch: if req.guidance_scale > 1.0 { 2 } else { 1 },
                text_len: self.text.max_len,
            },
        );
        fits_memory(
            est.total_bytes,
            total - used,
            total,
            &format!("{}x{}, {} frames", req.width, req.height, req.num_frames),
        )
    }
}

/// The out-of-memory verdict of [`LtxPipeline::check_memory`]: an error
/// naming the job's shape and the sizes when `needed` exceeds `free`.
pub fn fits_memory(needed: u64, free: u64, total: u64, what: &str) -> Result<()> {
    const MIB: u64 = 1 << 20;
    if needed > free {
        return Err(GpuError::OutOfMemory {
            what: what.to_string(),
            needed_mib: needed / MIB,
            free_mib: free / MIB,
            total_mib: total / MIB,
        });
    }
    Ok(())
}

#[cfg(test)]
mod memory_tests {
    use super::*;

    #[test]
    fn a_job_over_free_memory_is_refused_with_the_sizes() {
        assert!(fits_memory(10 << 20, 20 << 20, 80 << 20, "a").is_ok());
        let e = fits_memory(30 << 30, 20 << 30, 80 << 30, "1920x1088, 241 frames")
            .unwrap_err()
            .to_string();
        assert!(e.contains("1920x1088, 241 frames"), "{e}");
        assert!(
            e.contains("30720 MiB") && e.contains("20480 MiB of 81920 MiB"),
            "{e}"
        );
    }
}
