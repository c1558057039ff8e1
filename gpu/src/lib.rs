//! vidflow's model runtime: the LTX-Video architecture (T5 text encoder, video
//! transformer, video VAE, flow-matching sampler) on candle tensors.
//!
//! CPU is the default backend; the `cuda` feature adds candle's CUDA backend
//! and our own NVRTC kernels (`kernels`). Fidelity is proven against the reference implementation by the
//! golden cases (see `golden`).

pub mod bert;
pub mod error;
pub mod golden;
pub mod info;
pub mod kernels;
pub mod nn;
pub mod nsfw;
pub mod pipeline;
pub mod rng;
pub mod scheduler;
pub mod t5;
pub mod tiny;
pub mod tokenizer;
pub mod transformer;
pub mod vae;
pub mod weights;

pub use error::{GpuError, Result};
pub use weights::Weights;
