//! One denoising step, alone or batched across jobs: the guided velocity
//! of every job in one transformer forward (`velocity_batched`, the
//! dataflow's step-level batching) and each job's Euler update
//! (`apply_velocity`), for plain, image-to-video and conditioned jobs.

use candle_core::{DType, Tensor};

use super::{DenoiseState, LtxPipeline};
use crate::error::{GpuError, Result};
use crate::scheduler::euler_step;
use crate::transformer::{Positions, TextCond};

/// Each job's guided velocity from a batched forward's output `v`, whose
/// rows hold job after job (`rows[i]` of them: 2 with guidance, the
/// unconditioned first, else 1): `v_u + g (v_c - v_u)`.
pub(crate) fn guided(v: &Tensor, guidance: &[f64], rows: &[usize]) -> Result<Vec<Tensor>> {
    let mut out = Vec::with_capacity(rows.len());
    let mut row = 0;
    for (&g, &b) in guidance.iter().zip(rows) {
        out.push(if b == 2 {
            let vu = v.narrow(0, row, 1)?;
            let vc = v.narrow(0, row + 1, 1)?;
            (&vu + ((vc - &vu)? * g)?)?
        } else {
            v.narrow(0, row, 1)?
        });
        row += b;
    }
    Ok(out)
}

impl DenoiseState {
    /// Rows the job takes in a batched forward (2 with guidance), checked
    /// against its text conditioning's batch.
    pub(crate) fn cfg_rows(&self, text_batch: usize) -> Result<usize> {
        let b = if self.guidance_scale > 1.0 { 2 } else { 1 };
        if text_batch != b {
            return Err(GpuError::invalid(
                "text",
                format!(
                    "conditioning has batch {text_batch}, the job needs {b} (guidance {})",
                    self.guidance_scale
                ),
            ));
        }
        Ok(b)
    }
}

impl LtxPipeline {
    /// One denoising step of one job (the dataflow batches via
    /// `velocity_batched` instead).
    pub fn step(&self, st: &mut DenoiseState, text: &TextCond) -> Result<()> {
        let v = self.velocity(st, text)?;
        self.apply_velocity(st, &v)
    }

    /// Guided velocity for the job's current step.
    pub fn velocity(&self, st: &DenoiseState, text: &TextCond) -> Result<Tensor> {
        Ok(self.velocity_batched(&[(st, text)])?.remove(0))
    }

    /// Guided velocities for several jobs in one transformer forward (the
    /// dataflow's step-level batching). Jobs must share the latent grid
    /// (shape and RoPE scale); each may be at a different step, with or
    /// without guidance, text- or image-conditioned.
    pub fn velocity_batched(&self, jobs: &[(&DenoiseState, &TextCond)]) -> Result<Vec<Tensor>> {
        let Some((first, _)) = jobs.first() else {
            return Ok(Vec::new());
        };
        let grid = first.grid;
        let s = first.latents.dim(1)?;
        let per_token = jobs
            .iter()
            .any(|(st, _)| st.frozen_tokens > 0 || st.cond.is_some());
        let mut xs = Vec::new();
        let mut ts: Vec<f32> = Vec::new();
        let mut conds = Vec::new();
        let mut rows = Vec::new();
        let mut adapters = Vec::new();
        for (st, text) in jobs {
            if !st.same_positions(first) {
                return Err(GpuError::invalid(
                    "batch",
                    "jobs in one batch must share the latent grid, fps and conditioning layout",
                ));
            }
            let t = st.current_timestep()?;
            let b = st.cfg_rows(text.batch())?;
            let x = st.step_input()?;
            let tt: Vec<f32> = match &st.cond {
                Some(c) => c.timesteps(t),
                None => (0..s)
                    .map(|i| if i < st.frozen_tokens { 0.0 } else { t })
                    .collect(),
            };
            for _ in 0..b {
                adapters.push(st.lora.clone());
                xs.push(x.clone());
                if per_token {
                    ts.extend_from_slice(&tt);
                } else {
                    ts.push(t);
                }
            }
            conds.push(*text);
            rows.push(b);
        }
        let bsz: usize = rows.iter().sum();
        let x = Tensor::cat(&xs, 0)?;
        let ts = if per_token {
            Tensor::from_vec(ts, (bsz, s), &self.device)?
        } else {
            Tensor::from_vec(ts, bsz, &self.device)?
        };
        let text = if conds.len() == 1 {
            None
        } else {
            Some(TextCond::cat(&conds)?)
        };
        let text = text.as_ref().unwrap_or(conds[0]);
        let pos = match &first.cond {
            Some(c) => Positions::Coords(&c.coords),
            None => Positions::Grid(&grid),
        };
        let v = crate::lora::scoped(adapters, || self.transformer.forward_at(&x, text, &ts, pos))?
            .to_dtype(DType::F32)?;
        let guidance: Vec<f64> = jobs.iter().map(|(st, _)| st.guidance_scale).collect();
        guided(&v, &guidance, &rows)
    }

    /// Euler update; frozen (conditioning) tokens are kept bit-exact. A
    /// conditioned job takes the per-token step from its re-noised input.
    pub fn apply_velocity(&self, st: &mut DenoiseState, v: &Tensor) -> Result<()> {
        if let Some(c) = &st.cond {
            let t = st.current_timestep()?;
            let x = st.step_input()?;
            st.latents = c.euler(&x, v, t, &st.schedule.sigmas)?;
            st.step += 1;
            return Ok(());
        }
        let (sig, next) = (st.schedule.sigmas[st.step], st.schedule.sigmas[st.step + 1]);
        let f = st.frozen_tokens;
        st.latents = if f > 0 {
            let n = st.latents.dim(1)? - f;
            let moving = euler_step(&st.latents.narrow(1, f, n)?, &v.narrow(1, f, n)?, sig, next)?;
            Tensor::cat(&[&st.latents.narrow(1, 0, f)?, &moving], 1)?
        } else {
            euler_step(&st.latents, v, sig, next)?
        };
        st.step += 1;
        Ok(())
    }
}
