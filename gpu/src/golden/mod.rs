//! Golden cases: loads a case folder in the reference format
//! (`case.json`, `weights/inputs/expected.safetensors`), runs the component
//! its `kind` names, and compares every expected tensor elementwise with
//! `|got - want| <= atol + rtol * |want|`.
//!
//! New cases in the same format run without code changes as long as their
//! kind is one of ours.

use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};
use serde::Deserialize;

use crate::error::{GpuError, Result};
use crate::weights::Weights;

mod condition;
mod pipeline;
mod runners;

#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Tolerance {
    pub atol: f64,
    pub rtol: f64,
}

#[derive(Debug, Deserialize)]
struct CaseJson {
    kind: String,
    #[serde(default)]
    config: serde_json::Value,
    #[serde(default)]
    scalars: serde_json::Value,
    tolerance: Tolerance,
}

/// A loaded case. Tensors are read lazily through `Weights` views.
pub struct Case {
    pub dir: PathBuf,
    pub kind: String,
    pub config: serde_json::Value,
    pub scalars: serde_json::Value,
    pub tolerance: Tolerance,
    pub weights: Option<Weights>,
    pub inputs: Weights,
    pub expected: Weights,
}

impl Case {
    pub fn load(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(GpuError::Io {
                path: dir.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "golden case folder not found",
                ),
            });
        }
        let cj = dir.join("case.json");
        let text = std::fs::read_to_string(&cj).map_err(|source| GpuError::Io {
            path: cj.clone(),
            source,
        })?;
        let c: CaseJson = serde_json::from_str(&text)
            .map_err(|e| GpuError::config(cj.display().to_string(), e.to_string()))?;
        let wpath = dir.join("weights.safetensors");
        let weights = if wpath.exists() {
            Some(Weights::from_files(&[wpath])?)
        } else {
            None
        };
        Ok(Case {
            dir: dir.to_path_buf(),
            kind: c.kind,
            config: c.config,
            scalars: c.scalars,
            tolerance: c.tolerance,
            weights,
            inputs: Weights::from_files(&[dir.join("inputs.safetensors")])?,
            expected: Weights::from_files(&[dir.join("expected.safetensors")])?,
        })
    }

    /// The case with its weights in `dtype` and its weights and inputs on
    /// `device` (GPU parity runs; expected outputs stay on the CPU).
    pub fn load_on(dir: &Path, device: &candle_core::Device, dtype: DType) -> Result<Self> {
        let mut c = Self::load(dir)?;
        c.weights = c
            .weights
            .take()
            .map(|w| w.with_dtype(dtype).with_device(device.clone()));
        c.inputs = c.inputs.clone().with_device(device.clone());
        Ok(c)
    }

    pub fn weights(&self) -> Result<&Weights> {
        self.weights.as_ref().ok_or_else(|| GpuError::WeightFile {
            path: self.dir.join("weights.safetensors"),
            msg: "missing (this case kind needs weights)".into(),
        })
    }

    pub fn input(&self, name: &str) -> Result<Tensor> {
        self.inputs.get_unchecked(name)
    }

    pub fn scalar_f64(&self, key: &str) -> Result<f64> {
        self.scalars
            .get(key)
            .and_then(|v| v.as_f64())
            .ok_or_else(|| GpuError::config(self.case_desc(), format!("missing scalar `{key}`")))
    }

    pub fn scalar_usize(&self, key: &str) -> Result<usize> {
        Ok(self.scalar_f64(key)? as usize)
    }

    /// A sub-table of the case's config (`transformer`, `vae`, ...).
    pub fn config_part(&self, key: &str) -> Result<serde_json::Value> {
        self.config
            .get(key)
            .cloned()
            .ok_or_else(|| GpuError::config(self.case_desc(), format!("missing config `{key}`")))
    }

    pub fn case_desc(&self) -> String {
        self.dir.join("case.json").display().to_string()
    }
}

/// Result of one expected tensor's comparison.
#[derive(Debug, Clone)]
pub struct TensorReport {
    pub name: String,
    pub max_abs_err: f64,
    /// ||got - want|| / ||want|| (how the bf16 bound is stated).
    pub rel_l2_err: f64,
    /// Largest `|got-want| - (atol + rtol*|want|)`; <= 0 means within tolerance.
    pub worst_excess: f64,
    pub pass: bool,
}

#[derive(Debug, Clone)]
pub struct CaseReport {
    pub dir: PathBuf,
    pub kind: String,
    pub tolerance: Tolerance,
    pub tensors: Vec<TensorReport>,
}

impl CaseReport {
    pub fn pass(&self) -> bool {
        !self.tensors.is_empty() && self.tensors.iter().all(|t| t.pass)
    }
    pub fn max_abs_err(&self) -> f64 {
        self.tensors
            .iter()
            .map(|t| t.max_abs_err)
            .fold(0.0, f64::max)
    }
}

/// Compares `got` with `want` under the tolerance. Shapes must match.
pub fn compare(name: &str, got: &Tensor, want: &Tensor, tol: Tolerance) -> Result<TensorReport> {
    if got.dims() != want.dims() {
        return Err(GpuError::ShapeMismatch {
            name: format!("output `{name}`"),
            expected: want.dims().to_vec(),
            found: got.dims().to_vec(),
        });
    }
    let g: Vec<f32> = got.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let w: Vec<f32> = want.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let mut max_abs = 0f64;
    let mut worst = f64::NEG_INFINITY;
    let mut nan = false;
    let (mut num, mut den) = (0f64, 0f64);
    for (a, b) in g.iter().zip(&w) {
        let (a, b) = (*a as f64, *b as f64);
        num += (a - b) * (a - b);
        den += b * b;
        if !a.is_finite() {
            nan = true;
        }
        let d = (a - b).abs();
        max_abs = max_abs.max(d);
        worst = worst.max(d - (tol.atol + tol.rtol * b.abs()));
    }
    Ok(TensorReport {
        name: name.to_string(),
        max_abs_err: if nan { f64::NAN } else { max_abs },
        rel_l2_err: if nan {
            f64::NAN
        } else {
            (num / den.max(1e-300)).sqrt()
        },
        worst_excess: worst,
        pass: !nan && worst <= 0.0,
    })
}

/// Runs the component the case's kind names; returns named outputs matching
/// the names in `expected.safetensors`.
pub fn run_component(case: &Case) -> Result<Vec<(String, Tensor)>> {
    match case.kind.as_str() {
        "ltx_transformer" => runners::transformer(case),
        "ltx_vae_decoder" => runners::vae_decoder(case),
        "ltx_vae_encoder" => runners::vae_encoder(case),
        "t5_encoder" => runners::t5_encoder(case),
        "flow_match_schedule" => runners::flow_match_schedule(case),
        "unipc_flow_schedule" => runners::unipc_flow_schedule(case),
        "umt5_encoder" => runners::umt5_encoder(case),
        "clip_vision_encoder" => runners::clip_vision_encoder(case),
        "wan_transformer" => runners::wan_transformer(case),
        "wan_vae_decoder" | "wan_vae_encoder" => runners::wan_vae(case),
        "wan_pipeline_t2v" | "wan_pipeline_i2v" => runners::wan_pipeline(case),
        "ltx_pipeline_t2v" => pipeline::ltx_pipeline_t2v(case),
        "ltx_condition_pipeline" => condition::ltx_condition_pipeline(case),
        other => Err(GpuError::config(
            case.case_desc(),
            format!("unknown case kind `{other}`"),
        )),
    }
}

/// Loads, runs and compares a case folder.
pub fn check_case(dir: &Path) -> Result<CaseReport> {
    check_loaded(Case::load(dir)?, dir)
}

/// [`check_case`] on another device and weight dtype (GPU parity).
pub fn check_case_on(dir: &Path, device: &candle_core::Device, dtype: DType) -> Result<CaseReport> {
    check_loaded(Case::load_on(dir, device, dtype)?, dir)
}

fn check_loaded(case: Case, dir: &Path) -> Result<CaseReport> {
    let outputs = run_component(&case)?;
    let mut tensors = Vec::new();
    for name in case.expected.names() {
        let want = case.expected.get_unchecked(&name)?;
        let got = outputs
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| t)
            .ok_or_else(|| GpuError::MissingTensor {
                name: name.clone(),
                source_desc: format!("outputs of the `{}` runner", case.kind),
            })?;
        tensors.push(compare(&name, got, &want, case.tolerance)?);
    }
    Ok(CaseReport {
        dir: dir.to_path_buf(),
        kind: case.kind.clone(),
        tolerance: case.tolerance,
        tensors,
    })
}

/// The golden folder relative to the workspace root (`../shared/golden/ltx`).
pub fn default_golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/golden/ltx")
}

/// Where the Wan 2.1 cases are, next to the LTX ones.
pub fn wan_golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/golden/wan")
}

/// Runs the case in `dir` in f32, prints each tensor's error and panics
/// unless all are within tolerance: the parity tests' one assertion.
pub fn require_pass(dir: &Path) {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    assert!(
        dir.is_dir(),
        "golden case folder missing: {} (the tests read ../shared/golden relative to the project root)",
        dir.display()
    );
    let report = check_case(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for t in &report.tensors {
        eprintln!(
            "{name}/{}: max abs err {:.3e} (atol {}, rtol {}) {}",
            t.name,
            t.max_abs_err,
            report.tolerance.atol,
            report.tolerance.rtol,
            if t.pass { "PASS" } else { "FAIL" }
        );
    }
    assert!(
        report.pass(),
        "{name}: outside tolerance: {:?}",
        report.tensors
    );
}

/// Runs the case in `dir` with bf16 weights on the CPU and panics unless
/// every tensor's relative L2 error is under `bound`.
pub fn require_bf16(dir: &Path, bound: f64) {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let r = check_case_on(dir, &candle_core::Device::Cpu, DType::BF16)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for t in &r.tensors {
        eprintln!("{name}/{} bf16: relative L2 {:.3e}", t.name, t.rel_l2_err);
        assert!(
            t.rel_l2_err.is_finite() && t.rel_l2_err < bound,
            "{name}/{}: bf16 relative L2 {} over {bound}",
            t.name,
            t.rel_l2_err
        );
    }
}
