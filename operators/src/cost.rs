//! The cost model (`vidflow-sched`) applied to the models this process
//! runs: a loaded transformer's architecture, and the rate of the
//! accelerator it runs on, for the scheduler's predictions, the ETAs in
//! progress events and the metering's `predicted_accel_s`.

use vidflow_gpu::transformer::TransformerConfig;
use vidflow_sched::{Accelerator, Arch};

/// The cost model's view of an LTX transformer config.
pub fn arch_of(c: &TransformerConfig) -> Arch {
    Arch {
        layers: c.num_layers,
        dim: c.num_attention_heads * c.attention_head_dim,
        cross_dim: c.cross_attention_dim,
        in_channels: c.in_channels * c.patch_size * c.patch_size * c.patch_size_t,
        ffn_mult: 4,
        text_tokens: 128,
        ..Arch::ltx_2b()
    }
}

/// The cost model's view of a loaded model of either family.
pub fn arch_of_model(m: &vidflow_gpu::model::Model) -> Arch {
    match m {
        vidflow_gpu::model::Model::Ltx(p) => arch_of(&p.transformer.config),
        vidflow_gpu::model::Model::Wan(p) => arch_of_wan(&p.transformer.config),
    }
}

/// The cost model's view of a Wan 2.1 transformer config: text tokens
/// padded to 512, projected to the block width before cross-attention.
pub fn arch_of_wan(c: &vidflow_gpu::wan::WanConfig) -> Arch {
    let [pt, ph, pw] = c.patch_size;
    Arch {
        layers: c.num_layers,
        dim: c.dim(),
        cross_dim: c.dim(),
        in_channels: c.in_channels * pt * ph * pw,
        ffn_mult: (c.ffn_dim / c.dim().max(1)).max(1),
        text_tokens: vidflow_gpu::wan::transformer::TEXT_LEN,
        // Pixels per transformer token across: the VAE's 8 times the patch.
        vae_spatial: vidflow_gpu::wan::serve::SPATIAL * ph,
        vae_temporal: vidflow_gpu::wan::serve::TEMPORAL * pt,
        max_frames_per_pass: 81,
        segment_overlap: 0,
        ..Arch::ltx_2b()
    }
}

/// The CPU backend on this project's 2-core development VM, fitted by
/// `vidflow-bench --suite cost` (docs/BENCHMARKS.md, "Cost model
/// calibration"): the LTX-2B block width at three token counts.
pub fn cpu_measured() -> Accelerator {
    Accelerator {
        name: "cpu-2core".into(),
        peak_flops: CPU_RATE,
        efficiency: 1.0,
        step_overhead_s: CPU_OVERHEAD_S,
        decode_flops_per_voxel: CPU_DECODE_FLOPS_PER_VOXEL,
        source: "measured: vidflow-bench --suite cost, 2-core AMD EPYC VM, 2026-12-07".into(),
    }
}

/// Sustained FLOP/s of a denoising step: the fit's inverse slope over
/// 128, 256 and 1,024 tokens (0.59, 1.12, 4.59 s per step; largest error
/// of the fit 4.2%).
const CPU_RATE: f64 = 114.75e9;
/// Fixed seconds per step: the fit's intercept came out below zero and is
/// clamped (at this width the step is all GEMM).
const CPU_OVERHEAD_S: f64 = 0.0;
/// VAE decode FLOP-equivalents per output voxel at `CPU_RATE`: the LTX 0.9
/// decoder took 10.78 s for 25 x 256 x 256.
const CPU_DECODE_FLOPS_PER_VOXEL: f64 = 7.5e5;

/// Predicted seconds of one denoising step of `tokens` latent tokens.
pub fn step_seconds(arch: &Arch, accel: &Accelerator, tokens: usize, cfg: bool) -> f64 {
    let flops = arch.forward_flops(tokens as u64) * if cfg { 2.0 } else { 1.0 };
    accel.step_overhead_s + flops / accel.rate()
}
