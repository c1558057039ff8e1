//! The LTX flow-matching schedule: linear sigmas, a resolution-dependent
//! ("dynamic") shift from the token count, a terminal stretch so the last
//! sigma lands on `shift_terminal`, and the Euler update.
//!
//! Arithmetic is done in f32 in the reference's order, so timesteps match the
//! reference bit-for-bit or within an ulp (they feed the time embedding).

use candle_core::Tensor;
use serde::Deserialize;

use crate::error::{GpuError, Result};
use crate::weights::parse_config;

fn d_1024() -> usize {
    1024
}
fn d_4096() -> usize {
    4096
}
fn d_095() -> f64 {
    0.95
}
fn d_205() -> f64 {
    2.05
}
fn d_term() -> Option<f64> {
    Some(0.1)
}
fn d_1000() -> usize {
    1000
}
fn d_true() -> bool {
    true
}
fn d_one() -> f64 {
    1.0
}

/// `scheduler/scheduler_config.json` (diffusers `FlowMatchEulerDiscreteScheduler`).
/// Defaults are the LTX-Video release values, not the generic scheduler's,
/// because every LTX checkpoint ships these.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct SchedulerConfig {
    #[serde(default = "d_1024")]
    pub base_image_seq_len: usize,
    #[serde(default = "d_4096")]
    pub max_image_seq_len: usize,
    #[serde(default = "d_095")]
    pub base_shift: f64,
    #[serde(default = "d_205")]
    pub max_shift: f64,
    #[serde(default = "d_term")]
    pub shift_terminal: Option<f64>,
    #[serde(default = "d_1000")]
    pub num_train_timesteps: usize,
    #[serde(default = "d_true")]
    pub use_dynamic_shifting: bool,
    /// Static shift, used only when dynamic shifting is off.
    #[serde(default = "d_one")]
    pub shift: f64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        parse_config(serde_json::json!({}), "defaults").expect("all fields have defaults")
    }
}

/// A concrete schedule for one generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// Model timesteps (sigma * num_train_timesteps), one per step.
    pub timesteps: Vec<f32>,
    /// Sigmas, one per step plus the final 0.
    pub sigmas: Vec<f32>,
}

impl Schedule {
    pub fn steps(&self) -> usize {
        self.timesteps.len()
    }
}

impl SchedulerConfig {
    /// The shift exponent for `tokens` latent tokens (linear in the token
    /// count, extrapolated beyond the configured range).
    pub fn mu(&self, tokens: usize) -> f64 {
        let m = (self.max_shift - self.base_shift)
            / (self.max_image_seq_len as f64 - self.base_image_seq_len as f64);
        let b = self.base_shift - m * self.base_image_seq_len as f64;
        tokens as f64 * m + b
    }

    /// Time shift in f32, in the reference's operation order (bit-exact
    /// timesteps for every size the reference handles).
    fn shifted_f32(&self, mu: f64, lin: &[f32]) -> Vec<f32> {
        if self.use_dynamic_shifting {
            let e = mu.exp() as f32;
            lin.iter().map(|&t| e / (e + (1.0f32 / t - 1.0))).collect()
        } else {
            let s = self.shift as f32;
            lin.iter().map(|&t| s * t / (1.0 + (s - 1.0) * t)).collect()
        }
    }

    /// Shift plus terminal stretch in log space: with q = e^-mu (1/t - 1),
    /// 1 - sigma' = q/(1+q), and the stretch only needs ratios of that.
    fn shifted_stable(&self, mu: f64, lin: &[f32]) -> Vec<f32> {
        let log_one_minus = |t: f32| -> f64 {
            let r = 1.0 / t as f64 - 1.0;
            if r <= 0.0 {
                return f64::NEG_INFINITY;
            }
            let lq = -mu + r.ln();
            lq - lq.exp().ln_1p()
        };
        let n = lin.len();
        let last = log_one_minus(lin[n - 1]);
        let term = self.shift_terminal.unwrap_or(0.0);
        lin.iter()
            .map(|&t| {
                let l = log_one_minus(t);
                if self.shift_terminal.is_some() && last.is_finite() {
                    (1.0 - (l - last).exp() * (1.0 - term)) as f32
                } else {
                    (1.0 - l.exp()) as f32
                }
            })
            .collect()
    }

    pub fn schedule(&self, tokens: usize, steps: usize) -> Result<Schedule> {
        let mu = self.mu(tokens);
        if steps == 0 {
            return Err(GpuError::invalid("steps", "must be at least 1"));
        }
        if steps > 10_000 {
            return Err(GpuError::invalid(
                "steps",
                format!("{steps} exceeds the limit of 10000"),
            ));
        }
        let n = steps;
        // linspace(1, 1/N, N) in f64, then f32 as the scheduler stores it.
        let lin: Vec<f32> = (0..n)
            .map(|i| {
                let end = 1.0 / n as f64;
                if n == 1 {
                    1.0
                } else {
                    (1.0 + (end - 1.0) * i as f64 / (n - 1) as f64) as f32
                }
            })
            .collect();
        let mut sig = self.shifted_f32(mu, &lin);
        let degenerate = sig.iter().any(|s| !s.is_finite()) || (n > 1 && sig[n - 1] >= 1.0);
        if degenerate && self.use_dynamic_shifting {
            // Very long/large videos push mu so high that exp(mu) saturates
            // f32 and every sigma rounds to 1 (the reference then divides
            // 0/0). The same curve in log space stays well defined.
            sig = self.shifted_stable(mu, &lin);
        } else if let Some(term) = self.shift_terminal.filter(|_| sig[n - 1] < 1.0) {
            // With a single step the only sigma is 1 and the stretch would
            // divide by zero; there is nothing to stretch.
            let last = 1.0f32 - sig[n - 1];
            let scale = last / (1.0 - term) as f32;
            for s in sig.iter_mut() {
                *s = 1.0 - (1.0 - *s) / scale;
            }
        }
        let k = self.num_train_timesteps as f32;
        let timesteps = sig.iter().map(|s| s * k).collect();
        sig.push(0.0);
        Ok(Schedule {
            timesteps,
            sigmas: sig,
        })
    }
}

impl Schedule {
    /// The schedule for given model timesteps, as the reference scheduler
    /// keeps them (`set_timesteps(timesteps=...)` with no shift): sigmas are
    /// `timestep / num_train_timesteps` in f32, then the final 0.
    pub fn from_timesteps(timesteps: Vec<f32>, num_train_timesteps: usize) -> Result<Self> {
        if timesteps.is_empty() {
            return Err(GpuError::invalid("timesteps", "must not be empty"));
        }
        if let Some(t) = timesteps.iter().find(|t| !(t.is_finite() && **t >= 0.0)) {
            return Err(GpuError::invalid(
                "timesteps",
                format!("{t} is not a finite timestep >= 0"),
            ));
        }
        let k = num_train_timesteps as f32;
        let mut sigmas: Vec<f32> = timesteps.iter().map(|t| t / k).collect();
        sigmas.push(0.0);
        Ok(Schedule { timesteps, sigmas })
    }

    /// The conditioning pipeline's default schedule: `linear_quadratic`
    /// sigmas times `num_train_timesteps` (f32), kept as timesteps.
    pub fn linear_quadratic(steps: usize, num_train_timesteps: usize) -> Result<Self> {
        let k = num_train_timesteps as f32;
        let ts = linear_quadratic_sigmas(steps)?
            .iter()
            .map(|s| s * k)
            .collect();
        Self::from_timesteps(ts, num_train_timesteps)
    }

    /// The tail that `denoise_strength` d < 1 runs (video-to-video from
    /// given latents): the last `min(int(steps*d), steps)` steps, and the
    /// sigma the clean latents are noised to. `d >= 1` keeps everything.
    pub fn truncated(&self, strength: f64) -> Result<(Schedule, f32)> {
        if !(strength.is_finite() && strength > 0.0) {
            return Err(GpuError::invalid(
                "denoise_strength",
                format!("{strength} must be a number in (0, 1]"),
            ));
        }
        let n = self.steps();
        if strength >= 1.0 {
            return Ok((self.clone(), self.sigmas[0]));
        }
        let keep = ((n as f64 * strength) as usize).min(n);
        if keep == 0 {
            return Err(GpuError::invalid(
                "denoise_strength",
                format!("{strength} of {n} steps leaves no step to run"),
            ));
        }
        let start = n - keep;
        // The sigma list keeps its head: the per-token Euler step picks the
        // next sigma from the whole list, as the reference scheduler does.
        Ok((
            Schedule {
                timesteps: self.timesteps[start..].to_vec(),
                sigmas: self.sigmas[start..].to_vec(),
            },
            self.sigmas[start],
        ))
    }
}

/// diffusers' `linear_quadratic_schedule(steps)` (threshold noise 0.025,
/// `steps // 2` linear steps): sigma falls linearly to 0.975 over the first
/// half, then quadratically to the end. Computed in f64 like the reference's
/// Python lists, stored as f32.
pub fn linear_quadratic_sigmas(steps: usize) -> Result<Vec<f32>> {
    if steps == 0 || steps > 10_000 {
        return Err(GpuError::invalid(
            "steps",
            format!("{steps} must be between 1 and 10000"),
        ));
    }
    if steps < 2 {
        return Ok(vec![1.0]);
    }
    let thr = 0.025f64;
    let n = steps as f64;
    let lin = steps / 2;
    let l = lin as f64;
    let diff = l - thr * n;
    let q = n - l;
    let qc = diff / (l * (q * q));
    let lc = thr / l - 2.0 * diff / (q * q);
    let c = qc * (l * l);
    let mut out: Vec<f32> = (0..lin)
        .map(|i| (1.0 - i as f64 * thr / l) as f32)
        .collect();
    for i in lin..steps {
        let i = i as f64;
        out.push((1.0 - (qc * (i * i) + lc * i + c)) as f32);
    }
    Ok(out)
}

/// Euler update in f32: `x + (sigma_next - sigma) * v`.
pub fn euler_step(x: &Tensor, v: &Tensor, sigma: f32, sigma_next: f32) -> Result<Tensor> {
    let dt = x.dtype();
    let xf = x.to_dtype(candle_core::DType::F32)?;
    let vf = v.to_dtype(candle_core::DType::F32)?;
    Ok((xf + (vf * (sigma_next - sigma) as f64)?)?.to_dtype(dt)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_sigma_and_monotone() {
        let cfg = SchedulerConfig::default();
        for (tok, n) in [(12, 4), (6144, 50), (100_000, 3), (1_500_000, 40), (1, 1)] {
            let s = cfg.schedule(tok, n).unwrap();
            assert_eq!(s.sigmas.len(), n + 1);
            assert_eq!(*s.sigmas.last().unwrap(), 0.0);
            if n > 1 {
                assert!((s.sigmas[n - 1] - 0.1).abs() < 1e-5, "{:?}", s.sigmas);
            } else {
                assert_eq!(s.sigmas, vec![1.0, 0.0]);
            }
            assert!(s.sigmas.windows(2).all(|w| w[0] >= w[1]), "{:?}", s.sigmas);
        }
    }

    #[test]
    fn linear_quadratic_starts_at_one_and_falls_to_the_threshold_halfway() {
        for n in [2, 4, 7, 10, 50] {
            let s = linear_quadratic_sigmas(n).unwrap();
            assert_eq!(s.len(), n);
            assert_eq!(s[0], 1.0);
            assert!(s.windows(2).all(|w| w[0] > w[1]), "{s:?}");
            // The linear half ends where the quadratic half starts, at 1 - 0.025.
            assert!((s[n / 2] - 0.975).abs() < 1e-6, "{n}: {s:?}");
        }
        assert_eq!(linear_quadratic_sigmas(1).unwrap(), vec![1.0]);
    }

    #[test]
    fn denoise_strength_keeps_the_tail_and_the_whole_sigma_list_head() {
        let s = Schedule::linear_quadratic(10, 1000).unwrap();
        let (t, sigma0) = s.truncated(0.4).unwrap();
        assert_eq!(t.timesteps, s.timesteps[6..].to_vec());
        assert_eq!(sigma0, s.sigmas[6]);
        assert_eq!(s.truncated(1.0).unwrap().0, s);
        assert!(s.truncated(0.05).is_err(), "no step left");
        assert!(s.truncated(f64::NAN).is_err());
    }

    #[test]
    fn zero_steps_is_an_error() {
        let e = SchedulerConfig::default().schedule(10, 0).unwrap_err();
        assert!(e.to_string().contains("steps"), "{e}");
    }
}
