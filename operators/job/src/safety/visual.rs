//! The frame check after decode: open_nsfw scores a few evenly spaced
//! frames (first and last included); the video is blocked when any frame
//! reaches the threshold. A handful of frames bounds the cost per video
//! (a 5 s clip and a 60 s one cost the same); video diffusion output
//! changes slowly between neighbouring frames, so widely spaced samples
//! see every scene the model renders for more than a moment.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use vidflow_gpu::nsfw::{FrameRef, NsfwClassifier};

use super::policy::VisualConfig;
use super::{Check, Decision, SafetyError};

pub struct VisualChecker {
    model: NsfwClassifier,
    cfg: VisualConfig,
    /// Stricter thresholds per tenant.
    tenants: BTreeMap<String, f32>,
    policy_version: String,
}

/// Indices of `k` frames spread evenly over `n` (first and last included).
pub fn sample_indices(n: usize, k: usize) -> Vec<usize> {
    if n == 0 || k == 0 {
        return Vec::new();
    }
    if k >= n {
        return (0..n).collect();
    }
    if k == 1 {
        return vec![n / 2];
    }
    let mut v: Vec<usize> = (0..k)
        .map(|i| ((i * (n - 1)) as f64 / (k - 1) as f64).round() as usize)
        .collect();
    v.dedup();
    v
}

impl VisualChecker {
    pub fn load(models_dir: &Path, policy: &super::Policy) -> Result<VisualChecker, SafetyError> {
        let path = models_dir.join(super::models::NSFW.0);
        let model = NsfwClassifier::load(&path).map_err(|e| SafetyError::Model {
            path: path.display().to_string(),
            msg: e.to_string(),
        })?;
        Ok(VisualChecker {
            model,
            cfg: policy.file.visual.clone(),
            tenants: policy
                .file
                .tenants
                .iter()
                .filter_map(|(t, o)| o.visual_threshold.map(|v| (t.clone(), v)))
                .collect(),
            policy_version: policy.version.clone(),
        })
    }

    pub fn threshold(&self, tenant: &str) -> f32 {
        self.tenants
            .get(tenant)
            .copied()
            .unwrap_or(self.cfg.threshold)
    }

    /// Scores a decoded video (`frames` RGB8 frames of `width` x `height`,
    /// back to back in `rgb`).
    pub fn check(
        &self,
        tenant: &str,
        width: usize,
        height: usize,
        frames: usize,
        rgb: &[u8],
    ) -> Result<Decision, SafetyError> {
        let t0 = Instant::now();
        let size = width * height * 3;
        if frames == 0 || rgb.len() != size * frames {
            return Err(SafetyError::Input {
                field: "video".into(),
                msg: format!(
                    "{} bytes for {frames} frames of {width}x{height}",
                    rgb.len()
                ),
            });
        }
        let idx = sample_indices(frames, self.cfg.frames);
        let refs: Vec<FrameRef<'_>> = idx
            .iter()
            .map(|&i| FrameRef {
                width,
                height,
                rgb: &rgb[i * size..(i + 1) * size],
            })
            .collect();
        let probs = self
            .model
            .score_frames(&refs)
            .map_err(|e| SafetyError::Input {
                field: "video".into(),
                msg: e.to_string(),
            })?;
        let (worst_i, worst) =
            probs
                .iter()
                .enumerate()
                .fold((0, 0.0f32), |a, (i, &p)| if p > a.1 { (i, p) } else { a });
        let thr = self.threshold(tenant);
        let mut scores = BTreeMap::new();
        scores.insert("nsfw.max".to_string(), worst as f64);
        scores.insert("nsfw.frames".to_string(), probs.len() as f64);
        let allowed = worst < thr;
        Ok(Decision {
            stage: Check::Visual,
            allowed,
            category: (!allowed).then(|| self.cfg.category.clone()),
            reason: if allowed {
                String::new()
            } else {
                format!(
                    "frame {} scored nsfw {worst:.3} >= {thr:.3}",
                    idx.get(worst_i).copied().unwrap_or(0)
                )
            },
            scores,
            policy_version: self.policy_version.clone(),
            model_versions: vec![vidflow_gpu::nsfw::MODEL_VERSION.to_string()],
            latency_ms: t0.elapsed().as_secs_f64() * 1e3,
            text: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::sample_indices;

    #[test]
    fn samples_spread_evenly_with_ends() {
        assert_eq!(sample_indices(49, 4), vec![0, 16, 32, 48]);
        assert_eq!(sample_indices(3, 8), vec![0, 1, 2]);
        assert_eq!(sample_indices(9, 1), vec![4]);
        assert!(sample_indices(0, 4).is_empty());
    }
}
