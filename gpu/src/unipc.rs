//! The UniPC multistep sampler as Wan 2.1 configures it (the reference is
//! diffusers' `UniPCMultistepScheduler` with `prediction_type =
//! "flow_prediction"`, `use_flow_sigmas`, solver order 2, "bh2", predicting
//! x0, a lower order at the last step, and a final sigma of 0).
//!
//! Each step turns the model's flow velocity into an x0 prediction; from the
//! second step on a corrector (UniC) first refines the current sample with
//! that new prediction, then a predictor (UniP) advances the corrected
//! sample. The model saw the uncorrected sample: the corrector only changes
//! what the predictor starts from. Scalars are computed in f32 as the
//! reference computes them (its sigmas are an f32 tensor); the 2x2 system of
//! the order-2 corrector is solved in f64 and rounded, which stays within the
//! reference's tolerance of its LAPACK solve.

use candle_core::Tensor;
use serde::Deserialize;

use crate::error::{GpuError, Result};

/// The settings Wan's sampler takes (`scheduler/scheduler_config.json`);
/// anything else UniPC can do is refused when it is asked for.
#[derive(Debug, Clone, Deserialize)]
pub struct UniPcConfig {
    #[serde(default = "thousand")]
    pub num_train_timesteps: usize,
    /// Timestep shift: 3.0 for Wan at 480p, 5.0 at 720p.
    #[serde(default = "three")]
    pub flow_shift: f64,
    #[serde(default = "two")]
    pub solver_order: usize,
    #[serde(default = "yes")]
    pub lower_order_final: bool,
    #[serde(default = "flow")]
    pub prediction_type: String,
    #[serde(default = "yes")]
    pub use_flow_sigmas: bool,
    #[serde(default = "bh2")]
    pub solver_type: String,
    #[serde(default = "yes")]
    pub predict_x0: bool,
    #[serde(default = "zero")]
    pub final_sigmas_type: String,
    #[serde(default)]
    pub use_dynamic_shifting: bool,
    #[serde(default)]
    pub thresholding: bool,
    #[serde(default)]
    pub disable_corrector: Vec<usize>,
}

fn thousand() -> usize {
    1000
}
fn three() -> f64 {
    3.0
}
fn two() -> usize {
    2
}
fn yes() -> bool {
    true
}
fn flow() -> String {
    "flow_prediction".into()
}
fn bh2() -> String {
    "bh2".into()
}
fn zero() -> String {
    "zero".into()
}

impl Default for UniPcConfig {
    fn default() -> Self {
        serde_json::from_str("{}").expect("defaults parse")
    }
}

/// Integer timesteps (what the transformer is given) and f32 sigmas (what
/// the update uses), with a final sigma of 0.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowSchedule {
    pub timesteps: Vec<i64>,
    pub sigmas: Vec<f32>,
}

impl UniPcConfig {
    /// Refuses settings this sampler does not implement, naming them.
    pub fn check(&self) -> Result<()> {
        let bad = |field: &str, what: String| {
            Err(GpuError::config(
                "unipc scheduler",
                format!("{field}: {what}"),
            ))
        };
        if self.prediction_type != "flow_prediction" || !self.use_flow_sigmas {
            return bad(
                "prediction_type",
                format!(
                    "{:?} with use_flow_sigmas {} (only flow prediction on flow sigmas)",
                    self.prediction_type, self.use_flow_sigmas
                ),
            );
        }
        if self.solver_type != "bh2" || !self.predict_x0 {
            return bad(
                "solver_type",
                format!(
                    "{:?}, predict_x0 {} (only bh2 predicting x0)",
                    self.solver_type, self.predict_x0
                ),
            );
        }
        if !(1..=2).contains(&self.solver_order) {
            return bad("solver_order", format!("{} (1 or 2)", self.solver_order));
        }
        if self.final_sigmas_type != "zero" {
            return bad(
                "final_sigmas_type",
                format!("{:?} (only \"zero\")", self.final_sigmas_type),
            );
        }
        if self.use_dynamic_shifting || self.thresholding {
            return bad(
                "use_dynamic_shifting / thresholding",
                "not supported".into(),
            );
        }
        if !(self.flow_shift.is_finite() && self.flow_shift > 0.0) {
            return bad("flow_shift", format!("{} (must be > 0)", self.flow_shift));
        }
        Ok(())
    }

    /// The schedule of `steps` steps at `shift` (the config's `flow_shift`
    /// unless a job sets its own): sigmas evenly from 1 to 1/T, shifted by
    /// `s·σ / (1 + (s−1)·σ)`, the first nudged below 1 (so its log is
    /// finite), timesteps `σ·T` truncated to integers.
    pub fn schedule(&self, steps: usize, shift: f64) -> Result<FlowSchedule> {
        if steps == 0 {
            return Err(GpuError::invalid("steps", "must be at least 1"));
        }
        let t = self.num_train_timesteps as f64;
        let (first, last) = (1.0f64, 1.0 / t);
        // numpy's linspace over steps+1 points, the last dropped.
        let n = steps + 1;
        let delta = (last - first) / (n - 1) as f64;
        let mut sigmas: Vec<f64> = (0..steps)
            .map(|i| first + i as f64 * delta)
            .map(|s| shift * s / (1.0 + (shift - 1.0) * s))
            .collect();
        if (sigmas[0] - 1.0).abs() < 1e-6 {
            sigmas[0] -= 1e-6;
        }
        let timesteps = sigmas.iter().map(|s| (s * t) as i64).collect();
        let mut out: Vec<f32> = sigmas.iter().map(|&s| s as f32).collect();
        out.push(0.0);
        Ok(FlowSchedule {
            timesteps,
            sigmas: out,
        })
    }
}

/// One sampling run: the history the multistep updates need.
#[derive(Clone)]
pub struct UniPc {
    cfg: UniPcConfig,
    pub schedule: FlowSchedule,
    step: usize,
    /// x0 predictions of the last `solver_order` steps, oldest first.
    x0s: Vec<Tensor>,
    /// The sample the last predictor started from (the corrector's `x`).
    last_sample: Option<Tensor>,
    /// The order of the last predictor (the next corrector's).
    this_order: usize,
    lower_order_nums: usize,
}

/// `alpha_t = 1 − σ`, `λ = ln α − ln σ`, in f32.
fn lambda(sigma: f32) -> (f32, f32) {
    let alpha = 1.0 - sigma;
    (alpha, alpha.ln() - sigma.ln())
}

/// The `h·φ` coefficients of a bh2 update of `order` over `hh = −h`:
/// `(h_phi_1, B_h, b)`.
fn coefficients(hh: f32, order: usize) -> (f32, f32, Vec<f32>) {
    let h_phi_1 = hh.exp_m1();
    let mut h_phi_k = h_phi_1 / hh - 1.0;
    let b_h = hh.exp_m1();
    let mut factorial = 1u64;
    let mut b = Vec::with_capacity(order);
    for i in 1..=order {
        b.push(h_phi_k * factorial as f32 / b_h);
        factorial *= i as u64 + 1;
        h_phi_k = h_phi_k / hh - (1.0 / factorial as f64) as f32;
    }
    (h_phi_1, b_h, b)
}

impl UniPc {
    pub fn new(cfg: &UniPcConfig, steps: usize, shift: f64) -> Result<UniPc> {
        cfg.check()?;
        Ok(UniPc::new_from(cfg.clone(), cfg.schedule(steps, shift)?))
    }

    /// Steps taken.
    pub fn step_index(&self) -> usize {
        self.step
    }

    /// The tensors the next steps depend on besides the sample: the kept
    /// x0 predictions (oldest first) and the last predictor's start. With
    /// the step count they are the whole state (the orders follow from the
    /// count), which is what a checkpoint must hold to resume exactly.
    pub fn history(&self) -> (&[Tensor], Option<&Tensor>) {
        (&self.x0s, self.last_sample.as_ref())
    }

    /// How many x0 predictions the history holds after `step` steps.
    pub fn kept_at(&self, step: usize) -> usize {
        step.min(self.cfg.solver_order)
    }

    /// A fresh run moved to `step` with the `history` taken there: the
    /// bookkeeping is replayed, the tensors are put back. Refuses a history
    /// that does not fit the step.
    pub fn resume_at(&mut self, step: usize, x0s: Vec<Tensor>, last: Option<Tensor>) -> Result<()> {
        let steps = self.schedule.timesteps.len();
        let kept = self.kept_at(step);
        if step > steps || x0s.len() != kept || last.is_some() != (step > 0) {
            return Err(GpuError::invalid(
                "unipc",
                format!(
                    "history of {} x0s (last sample {}) does not fit step {step} of {steps}",
                    x0s.len(),
                    last.is_some()
                ),
            ));
        }
        *self = UniPc::new_from(self.cfg.clone(), self.schedule.clone());
        for i in 0..step {
            let order = if self.cfg.lower_order_final {
                self.cfg.solver_order.min(steps - i)
            } else {
                self.cfg.solver_order
            };
            self.this_order = order.min(self.lower_order_nums + 1);
            if self.lower_order_nums < self.cfg.solver_order {
                self.lower_order_nums += 1;
            }
        }
        self.step = step;
        self.x0s = x0s;
        self.last_sample = last;
        Ok(())
    }

    fn new_from(cfg: UniPcConfig, schedule: FlowSchedule) -> UniPc {
        UniPc {
            schedule,
            cfg,
            step: 0,
            x0s: Vec::new(),
            last_sample: None,
            this_order: 0,
            lower_order_nums: 0,
        }
    }

    /// The transformer's timestep for the next step.
    pub fn timestep(&self) -> Option<i64> {
        self.schedule.timesteps.get(self.step).copied()
    }

    /// One step from `sample` with the model's flow velocity `v` at it:
    /// the next sample.
    pub fn step(&mut self, v: &Tensor, sample: &Tensor) -> Result<Tensor> {
        let steps = self.schedule.timesteps.len();
        if self.step >= steps {
            return Err(GpuError::invalid(
                "unipc",
                format!("all {steps} steps already taken"),
            ));
        }
        let sig = &self.schedule.sigmas;
        let i = self.step;
        let x0 = (sample - v.affine(sig[i] as f64, 0.0)?)?;
        let use_corrector =
            i > 0 && !self.cfg.disable_corrector.contains(&(i - 1)) && self.last_sample.is_some();
        let sample = match (&self.last_sample, use_corrector) {
            (Some(last), true) => self.correct(&x0, last)?,
            _ => sample.clone(),
        };
        self.x0s.push(x0);
        if self.x0s.len() > self.cfg.solver_order {
            self.x0s.remove(0);
        }
        let order = if self.cfg.lower_order_final {
            self.cfg.solver_order.min(steps - i)
        } else {
            self.cfg.solver_order
        };
        self.this_order = order.min(self.lower_order_nums + 1);
        self.last_sample = Some(sample.clone());
        let next = self.predict(&sample, self.this_order)?;
        if self.lower_order_nums < self.cfg.solver_order {
            self.lower_order_nums += 1;
        }
        self.step += 1;
        Ok(next)
    }

    /// UniP (bh2): from `x` at σ_i to σ_{i+1} with the newest x0 (and, at
    /// order 2, the one before).
    fn predict(&self, x: &Tensor, order: usize) -> Result<Tensor> {
        let sig = &self.schedule.sigmas;
        let i = self.step;
        let (alpha_t, lambda_t) = lambda(sig[i + 1]);
        let (_, lambda_s0) = lambda(sig[i]);
        let (sigma_t, sigma_s0) = (sig[i + 1], sig[i]);
        let h = lambda_t - lambda_s0;
        let m0 = &self.x0s[self.x0s.len() - 1];
        let (h_phi_1, b_h, _) = coefficients(-h, order);
        let x_t = (x.affine((sigma_t / sigma_s0) as f64, 0.0)?
            - m0.affine((alpha_t * h_phi_1) as f64, 0.0)?)?;
        if order < 2 {
            return Ok(x_t);
        }
        let (_, lambda_s1) = lambda(sig[i - 1]);
        let rk = (lambda_s1 - lambda_s0) / h;
        let m1 = &self.x0s[self.x0s.len() - 2];
        let d1 = ((m1 - m0)? / rk as f64)?;
        // Order 2 takes rho = 1/2.
        let res = d1.affine(0.5, 0.0)?;
        Ok((x_t - res.affine((alpha_t * b_h) as f64, 0.0)?)?)
    }

    /// UniC (bh2): the sample at σ_i again, from `last` (at σ_{i−1}, where
    /// the predictor that reached σ_i started) with the new x0 `model_t`, at
    /// that predictor's order. It replaces the predicted sample.
    fn correct(&self, model_t: &Tensor, last: &Tensor) -> Result<Tensor> {
        let sig = &self.schedule.sigmas;
        let i = self.step;
        let order = self.this_order;
        let (alpha_t, lambda_t) = lambda(sig[i]);
        let (_, lambda_s0) = lambda(sig[i - 1]);
        let (sigma_t, sigma_s0) = (sig[i], sig[i - 1]);
        let h = lambda_t - lambda_s0;
        let m0 = &self.x0s[self.x0s.len() - 1];
        let (h_phi_1, b_h, b) = coefficients(-h, order);
        let x_t = (last.affine((sigma_t / sigma_s0) as f64, 0.0)?
            - m0.affine((alpha_t * h_phi_1) as f64, 0.0)?)?;
        let d1_t = (model_t - m0)?;
        let (rho_prev, rho_t, d1) = if order == 1 {
            (0.0f32, 0.5f32, None)
        } else {
            let (_, lambda_s1) = lambda(sig[i - 2]);
            let rk = (lambda_s1 - lambda_s0) / h;
            let m1 = &self.x0s[self.x0s.len() - 2];
            let d1 = ((m1 - m0)? / rk as f64)?;
            // R = [[1, 1], [rk, 1]], R·rho = b.
            let (rk, b0, b1) = (rk as f64, b[0] as f64, b[1] as f64);
            let det = 1.0 - rk;
            let r0 = (b0 - b1) / det;
            let r1 = (b1 - rk * b0) / det;
            (r0 as f32, r1 as f32, Some(d1))
        };
        let mut res = d1_t.affine(rho_t as f64, 0.0)?;
        if let Some(d1) = d1 {
            res = (d1.affine(rho_prev as f64, 0.0)? + res)?;
        }
        Ok((x_t - res.affine((alpha_t * b_h) as f64, 0.0)?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_match_the_reference_by_hand() {
        let c = UniPcConfig::default();
        let s = c.schedule(4, 3.0).unwrap();
        assert_eq!(s.timesteps, vec![999, 900, 750, 500]);
        assert_eq!(s.sigmas.len(), 5);
        assert_eq!(*s.sigmas.last().unwrap(), 0.0);
        assert!((s.sigmas[0] - 0.999999).abs() < 1e-7);
        assert!(c.schedule(0, 3.0).is_err());
    }

    #[test]
    fn unsupported_settings_are_refused_naming_them() {
        let c: UniPcConfig = serde_json::from_str(r#"{"solver_type": "bh1"}"#).unwrap();
        assert!(c.check().unwrap_err().to_string().contains("solver_type"));
        let c: UniPcConfig = serde_json::from_str(r#"{"solver_order": 3}"#).unwrap();
        assert!(c.check().unwrap_err().to_string().contains("solver_order"));
    }

    #[test]
    fn a_run_resumed_from_its_history_continues_bit_exactly() {
        let dev = candle_core::Device::Cpu;
        let x0 = Tensor::new(&[0.3f32, -1.2, 0.7, 2.0], &dev).unwrap();
        // A velocity that depends on the sample, so the history matters.
        let v = |x: &Tensor| (x * 0.8).unwrap().tanh().unwrap();
        let c = UniPcConfig::default();
        let run = |from: Option<usize>| -> Vec<f32> {
            let mut u = UniPc::new(&c, 6, 3.0).unwrap();
            let mut x = x0.clone();
            while u.step_index() < 6 {
                if Some(u.step_index()) == from {
                    let (x0s, last) = u.history();
                    let (x0s, last) = (x0s.to_vec(), last.cloned());
                    let mut fresh = UniPc::new(&c, 6, 3.0).unwrap();
                    fresh.resume_at(u.step_index(), x0s, last).unwrap();
                    u = fresh;
                }
                x = u.step(&v(&x), &x).unwrap();
            }
            x.to_vec1().unwrap()
        };
        let whole = run(None);
        for k in 1..6 {
            assert_eq!(run(Some(k)), whole, "resumed at step {k}");
        }
        let mut u = UniPc::new(&c, 6, 3.0).unwrap();
        assert!(u.resume_at(2, vec![x0.clone()], Some(x0.clone())).is_err());
    }
}
