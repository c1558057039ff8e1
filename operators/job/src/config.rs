//! Admission configuration: `configs/modes.toml` (per-mode defaults) and
//! `configs/models.toml` (served models and the worker VRAM limit), with
//! each model's geometry read from the runtime for the VRAM estimate.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vidflow_gpu::info::{estimate_vram, summarize, EstimateInput, VramEstimate};
use vidflow_gpu::transformer::TransformerConfig;
use vidflow_gpu::vae::VaeConfig;
use vidflow_gpu::weights::read_config;
use vidflow_gpu::{tiny, Weights};

use crate::error::ConfigError;
use crate::spec::Mode;

/// The `path` of the built-in tiny (untrained) model.
pub const BUILTIN_TINY: &str = "builtin:tiny";
/// The `path` of the demo model shipped in the source tree
/// (`vidflow_gpu::demo`): trained on synthetic shapes, its files pinned by
/// sha256 in code.
pub const BUILTIN_DEMO: &str = "builtin:demo";

/// Default worker VRAM limit: 80 GiB (one H100 80GB).
pub const DEFAULT_WORKER_VRAM_BYTES: u64 = 80 << 30;
/// Default host memory budget for one job's frames (see
/// [`crate::limits::host_frame_bytes`]): 32 GiB, room for 60 s of 480p
/// or 10 s of 1080p.
pub const DEFAULT_WORKER_HOST_BYTES: u64 = 32 << 30;

/// The embedded copy of `configs/modes.toml` used by
/// [`AdmissionConfig::builtin_default`].
pub const BUILTIN_MODES_TOML: &str = include_str!("../../../configs/modes.toml");

/// Defaults one mode gives a job that does not override them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModeDefaults {
    /// Denoising steps (1..=200).
    pub steps: u32,
    /// Classifier-free guidance scale (0..=20; <= 1.0 disables CFG, halving
    /// the transformer's batch).
    pub guidance: f64,
    /// Duration when the job gives neither `seconds` nor `frames`.
    pub seconds: f64,
}

/// `configs/modes.toml`: one table per [`Mode`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModesConfig {
    pub realtime: ModeDefaults,
    pub standard: ModeDefaults,
    pub cinema: ModeDefaults,
}

impl ModesConfig {
    pub fn get(&self, mode: Mode) -> &ModeDefaults {
        match mode {
            Mode::Realtime => &self.realtime,
            Mode::Standard => &self.standard,
            Mode::Cinema => &self.cinema,
        }
    }
}

/// Dtype a model's weights and activations occupy on the GPU, for the VRAM
/// estimate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelDtype {
    /// What the runtime computes in today (the conservative default).
    #[default]
    F32,
    Bf16,
    F16,
}

impl ModelDtype {
    pub fn bytes(self) -> u64 {
        match self {
            ModelDtype::F32 => 4,
            ModelDtype::Bf16 | ModelDtype::F16 => 2,
        }
    }
}

/// One `[[model]]` entry of `configs/models.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// The id jobs name in `model`.
    pub id: String,
    /// `"builtin:demo"`, `"builtin:tiny"` or a diffusers-format checkpoint
    /// directory (relative paths are relative to the config directory).
    pub path: String,
    /// The model's output is noise (the built-in tiny model); shown to users.
    #[serde(default)]
    pub untrained: bool,
    /// GPU dtype for the VRAM estimate (default f32).
    #[serde(default)]
    pub dtype: ModelDtype,
}

/// `configs/models.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelsConfig {
    /// GPU memory of the largest worker, bytes (default 80 GiB). A job whose
    /// VRAM estimate exceeds it is rejected at admission.
    #[serde(default = "default_worker_vram")]
    pub worker_vram_bytes: u64,
    /// Host memory one job's frames may take (default 32 GiB): a job whose
    /// estimate (`limits::host_frame_bytes`) exceeds it is rejected at
    /// admission instead of exhausting the machine's memory mid-decode.
    #[serde(default = "default_worker_host")]
    pub worker_host_bytes: u64,
    /// Model used when a job names none (default: the first `[[model]]`).
    #[serde(default)]
    pub default_model: Option<String>,
    /// How videos longer than one pass are cut (`[chain]`).
    #[serde(default)]
    pub chain: ChainConfig,
    #[serde(default)]
    pub model: Vec<ModelEntry>,
}

/// `[chain]` in `configs/models.toml`: a video longer than
/// `segment_frames` is generated as a chain of segments of at most that
/// many frames, each after the first starting with the previous one's last
/// `overlap_frames` frames as its condition. Admission sizes such a job's
/// memory by one segment, because that is all a worker holds of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChainConfig {
    /// Longest pass, frames (8k+1; default 257, LTX-Video's longest
    /// trained clip, about 10.7 s at 24 fps).
    pub segment_frames: u32,
    /// Frames two neighbouring segments share (8k+1, fewer than a
    /// segment; default 17: two latent frames of context).
    pub overlap_frames: u32,
}

impl Default for ChainConfig {
    fn default() -> Self {
        ChainConfig {
            segment_frames: 257,
            overlap_frames: 17,
        }
    }
}

impl ChainConfig {
    /// Whether a video of `num_frames` is generated as a chain.
    pub fn chained(&self, num_frames: u32) -> bool {
        num_frames > self.segment_frames
    }

    /// Frames one pass of a `num_frames` video holds at once.
    pub fn pass_frames(&self, num_frames: u32) -> u32 {
        num_frames.min(self.segment_frames)
    }

    fn check(&self) -> Result<(), String> {
        let form = |n: u32| n >= 1 && (n - 1).is_multiple_of(crate::limits::FRAME_MULTIPLE);
        if !form(self.segment_frames) || !form(self.overlap_frames) {
            return Err(format!(
                "[chain] segment_frames {} and overlap_frames {} must both be 8k+1",
                self.segment_frames, self.overlap_frames
            ));
        }
        if self.overlap_frames >= self.segment_frames {
            return Err(format!(
                "[chain] overlap_frames {} must be fewer than segment_frames {}",
                self.overlap_frames, self.segment_frames
            ));
        }
        Ok(())
    }
}

fn default_worker_vram() -> u64 {
    DEFAULT_WORKER_VRAM_BYTES
}
fn default_worker_host() -> u64 {
    DEFAULT_WORKER_HOST_BYTES
}

/// A configured model with the geometry the runtime reports for it.
#[derive(Debug, Clone)]
pub struct ModelProfile {
    pub id: String,
    /// As configured (`builtin:tiny` or the directory as written).
    pub path: String,
    /// The directory, resolved against the config directory; `None` for
    /// built-in models.
    pub dir: Option<PathBuf>,
    pub untrained: bool,
    pub dtype: ModelDtype,
    pub transformer: TransformerConfig,
    pub vae: VaeConfig,
    /// Transformer + VAE + text encoder parameters times the dtype size.
    pub weights_bytes: u64,
    /// Native size, frame rate, steps and guidance of a demo-world model
    /// (`_vidflow_demo` in its `model_index.json`); `None` for others.
    pub demo: Option<vidflow_gpu::demo::DemoInfo>,
}

impl ModelProfile {
    /// Reads a model's geometry: the tiny model's from code, a checkpoint's
    /// from `transformer/config.json`, `vae/config.json` and the
    /// safetensors headers (no weights are loaded).
    pub fn resolve(entry: &ModelEntry, base: &Path) -> Result<ModelProfile, ConfigError> {
        let wrap = |source| ConfigError::Model {
            id: entry.id.clone(),
            path: entry.path.clone(),
            source: Box::new(source),
        };
        let (transformer, vae, params, dir) = if entry.path == BUILTIN_TINY {
            let t = tiny::transformer_config();
            let v = tiny::vae_config();
            let count = |shapes: Vec<(String, Vec<usize>)>| -> u64 {
                shapes
                    .iter()
                    .map(|(_, s)| s.iter().map(|d| *d as u64).product::<u64>())
                    .sum()
            };
            let params = count(t.tensor_shapes())
                + count(vidflow_gpu::vae::expected_tensor_shapes(&v))
                + count(vidflow_gpu::t5::expected_tensor_shapes(&tiny::t5_config()));
            (t, v, params, None)
        } else {
            let dir = if entry.path == BUILTIN_DEMO {
                let d = vidflow_gpu::demo::default_dir().to_path_buf();
                vidflow_gpu::demo::verify(&d).map_err(wrap)?;
                d
            } else {
                base.join(&entry.path)
            };
            let t: TransformerConfig =
                read_config(&dir.join("transformer").join("config.json")).map_err(wrap)?;
            let v: VaeConfig = read_config(&dir.join("vae").join("config.json")).map_err(wrap)?;
            let mut params = 0;
            for comp in ["transformer", "vae", "text_encoder"] {
                let d = dir.join(comp);
                if comp == "text_encoder" && !d.is_dir() {
                    continue; // a separately served encoder
                }
                params += summarize(comp, &Weights::from_dir(&d).map_err(wrap)?).params;
            }
            (t, v, params, Some(dir))
        };
        let demo = match &dir {
            Some(d) => vidflow_gpu::demo::info(d).map_err(wrap)?,
            None => None,
        };
        Ok(ModelProfile {
            id: entry.id.clone(),
            path: entry.path.clone(),
            demo,
            dir,
            untrained: entry.untrained,
            dtype: entry.dtype,
            transformer,
            vae,
            weights_bytes: params * entry.dtype.bytes(),
        })
    }

    /// The runtime's VRAM estimate for one job of this shape (CFG doubles
    /// the transformer batch when `guidance > 1`, as the sampler does).
    pub fn estimate(
        &self,
        width: u32,
        height: u32,
        num_frames: u32,
        guidance: f64,
    ) -> VramEstimate {
        estimate_vram(
            &self.transformer,
            &self.vae,
            self.weights_bytes,
            &EstimateInput {
                width: width as usize,
                height: height as usize,
                frames: num_frames as usize,
                act_bytes: self.dtype.bytes(),
                cfg_batch: if guidance > 1.0 { 2 } else { 1 },
                text_len: vidflow_gpu::pipeline::DEFAULT_MAX_TEXT_LEN,
            },
        )
    }
}

/// Everything [`crate::validate()`] needs besides the spec.
#[derive(Debug, Clone)]
pub struct AdmissionConfig {
    pub modes: ModesConfig,
    /// In configuration order.
    pub models: Vec<ModelProfile>,
    /// Id of the model jobs get when they name none.
    pub default_model: String,
    /// A job whose VRAM estimate exceeds this is rejected (`TooLarge`).
    pub worker_vram_bytes: u64,
    /// A job whose host-memory estimate exceeds this is rejected
    /// (`HostMemory`).
    pub worker_host_bytes: u64,
    /// How long videos are cut into passes.
    pub chain: ChainConfig,
}

impl AdmissionConfig {
    /// Reads `dir/modes.toml` and `dir/models.toml` and resolves every
    /// model's geometry (a missing or malformed checkpoint is an error here,
    /// not at the first job).
    pub fn load(dir: &Path) -> Result<AdmissionConfig, ConfigError> {
        let modes_path = dir.join("modes.toml");
        let models_path = dir.join("models.toml");
        let modes: ModesConfig = parse_toml(&modes_path, &read(&modes_path)?)?;
        let models: ModelsConfig = parse_toml(&models_path, &read(&models_path)?)?;
        Self::from_parts(modes, &modes_path, models, &models_path, dir)
    }

    /// The embedded defaults: `configs/modes.toml` as compiled in, the demo
    /// model (id `ltx-demo`, the default: its videos follow the prompt) and
    /// the built-in tiny model (id `ltx-tiny`), 80 GiB workers. Reads only
    /// the demo model's shipped files.
    pub fn builtin_default() -> Result<AdmissionConfig, ConfigError> {
        Self::builtin(vec![
            ModelEntry {
                id: "ltx-demo".into(),
                path: BUILTIN_DEMO.into(),
                untrained: false,
                dtype: ModelDtype::F32,
            },
            Self::tiny_entry(),
        ])
    }

    /// [`Self::builtin_default`] with the built-in tiny model only: what tests
    /// use when the picture does not matter and speed does. Reads no files.
    pub fn builtin_tiny() -> AdmissionConfig {
        Self::builtin(vec![Self::tiny_entry()]).expect("builtin tiny admission config is valid")
    }

    fn tiny_entry() -> ModelEntry {
        ModelEntry {
            id: "ltx-tiny".into(),
            path: BUILTIN_TINY.into(),
            untrained: true,
            dtype: ModelDtype::F32,
        }
    }

    fn builtin(model: Vec<ModelEntry>) -> Result<AdmissionConfig, ConfigError> {
        let p = Path::new("<builtin>/modes.toml");
        let modes: ModesConfig =
            parse_toml(p, BUILTIN_MODES_TOML).expect("embedded modes.toml parses");
        let models = ModelsConfig {
            worker_vram_bytes: DEFAULT_WORKER_VRAM_BYTES,
            worker_host_bytes: DEFAULT_WORKER_HOST_BYTES,
            default_model: model.first().map(|m| m.id.clone()),
            chain: ChainConfig::default(),
            model,
        };
        Self::from_parts(modes, p, models, Path::new("<builtin>"), Path::new("."))
    }

    /// Builds and checks a configuration from parsed files (`*_path` only
    /// label errors; relative model paths resolve against `base`).
    pub fn from_parts(
        modes: ModesConfig,
        modes_path: &Path,
        models: ModelsConfig,
        models_path: &Path,
        base: &Path,
    ) -> Result<AdmissionConfig, ConfigError> {
        for (name, m) in [
            ("realtime", &modes.realtime),
            ("standard", &modes.standard),
            ("cinema", &modes.cinema),
        ] {
            let bad = if !(1..=crate::limits::MAX_STEPS).contains(&m.steps) {
                Some(format!("steps {} not in 1..=200", m.steps))
            } else if !(m.guidance.is_finite() && (0.0..=20.0).contains(&m.guidance)) {
                Some(format!("guidance {} not in 0..=20", m.guidance))
            } else if !(m.seconds.is_finite() && m.seconds > 0.0 && m.seconds <= 60.0) {
                Some(format!("seconds {} not in (0, 60]", m.seconds))
            } else {
                None
            };
            if let Some(msg) = bad {
                return Err(ConfigError::Invalid {
                    path: modes_path.to_path_buf(),
                    message: format!("[{name}]: {msg}"),
                });
            }
        }
        let invalid = |message: String| ConfigError::Invalid {
            path: models_path.to_path_buf(),
            message,
        };
        if models.model.is_empty() {
            return Err(invalid("no [[model]] configured".into()));
        }
        let mut seen = BTreeSet::new();
        for m in &models.model {
            if m.id.is_empty() || !seen.insert(m.id.clone()) {
                return Err(invalid(format!("model id {:?} empty or duplicated", m.id)));
            }
        }
        let default_model = models
            .default_model
            .clone()
            .unwrap_or_else(|| models.model[0].id.clone());
        if !seen.contains(&default_model) {
            return Err(invalid(format!(
                "default_model {default_model:?} is not a configured model"
            )));
        }
        if models.worker_vram_bytes == 0 {
            return Err(invalid("worker_vram_bytes must be > 0".into()));
        }
        if models.worker_host_bytes == 0 {
            return Err(invalid("worker_host_bytes must be > 0".into()));
        }
        models.chain.check().map_err(invalid)?;
        let profiles = models
            .model
            .iter()
            .map(|m| ModelProfile::resolve(m, base))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AdmissionConfig {
            modes,
            models: profiles,
            default_model,
            worker_vram_bytes: models.worker_vram_bytes,
            worker_host_bytes: models.worker_host_bytes,
            chain: models.chain,
        })
    }

    pub fn model(&self, id: &str) -> Option<&ModelProfile> {
        self.models.iter().find(|m| m.id == id)
    }

    pub fn model_ids(&self) -> Vec<String> {
        self.models.iter().map(|m| m.id.clone()).collect()
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn parse_toml<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}
