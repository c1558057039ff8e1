//! vidflow's model runtime: the LTX-Video architecture (T5 text encoder, video
//! transformer, video VAE, flow-matching sampler) on candle tensors.
//!
//! CPU is the default backend; the `cuda` feature adds candle's CUDA backend
//! and our own NVRTC kernels (`kernels`). Fidelity is proven against the reference implementation by the
//! golden cases (see `golden`).

pub mod bert;
pub mod clip;
pub mod demo;
pub mod error;
pub mod golden;
pub mod info;
pub mod kernels;
pub mod lora;
pub mod model;
pub mod nn;
pub mod nsfw;
pub mod onnx;
pub mod pipeline;
pub mod rng;
pub mod scheduler;
pub mod t5;
pub mod tiny;
pub mod tokenizer;
pub mod transformer;
pub mod unipc;
pub mod vae;
pub mod wan;
pub mod weights;

pub use error::{GpuError, Result};

/// The device the runtime computes on: `VIDFLOW_DEVICE` (`cpu`, `cuda` or
/// `cuda:N`); unset means the first GPU in a CUDA build, else the CPU. A
/// CUDA request in a CPU-only build is an error naming the fix.
pub fn runtime_device() -> Result<candle_core::Device> {
    device_from(&std::env::var("VIDFLOW_DEVICE").unwrap_or_default())
}

/// [`runtime_device`] for a given `VIDFLOW_DEVICE` value.
pub fn device_from(spec: &str) -> Result<candle_core::Device> {
    let want = spec.trim();
    if want.is_empty() || want == "cpu" {
        #[cfg(feature = "cuda")]
        if want.is_empty() {
            return Ok(candle_core::Device::new_cuda(0)?);
        }
        return Ok(candle_core::Device::Cpu);
    }
    let ordinal = match want.strip_prefix("cuda") {
        Some("") => 0,
        Some(rest) => rest
            .strip_prefix(':')
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| {
                GpuError::invalid(
                    "VIDFLOW_DEVICE",
                    format!("`{want}`: expected cpu, cuda or cuda:N"),
                )
            })?,
        None => {
            return Err(GpuError::invalid(
                "VIDFLOW_DEVICE",
                format!("`{want}`: expected cpu, cuda or cuda:N"),
            ))
        }
    };
    #[cfg(feature = "cuda")]
    {
        Ok(candle_core::Device::new_cuda(ordinal)?)
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = ordinal;
        Err(GpuError::invalid(
            "VIDFLOW_DEVICE",
            format!("`{want}` asked for a GPU but this build has no CUDA: build it with `bash scripts/build-cuda.sh --bin vidflow`"),
        ))
    }
}
pub use weights::Weights;

#[cfg(test)]
mod device_tests {
    use super::*;

    #[test]
    fn device_spec_parses_and_names_the_variable_on_error() {
        assert!(device_from("cpu").unwrap().is_cpu());
        for bad in ["gpu", "cuda:x", "cuda0", "cuda:-1"] {
            let e = device_from(bad).unwrap_err().to_string();
            assert!(e.contains("VIDFLOW_DEVICE"), "{bad}: {e}");
        }
        #[cfg(not(feature = "cuda"))]
        {
            assert!(device_from("").unwrap().is_cpu());
            let e = device_from("cuda:1").unwrap_err().to_string();
            assert!(e.contains("build-cuda.sh"), "{e}");
        }
    }
}
