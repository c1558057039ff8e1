//! Admission configuration: `configs/modes.toml` (per-mode defaults) and
//! `configs/models.toml` (the model registry, see [`crate::registry`], the
//! worker memory limits and `[chain]`).

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;
use crate::spec::Mode;

pub use crate::registry::*;

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
    /// Adapters jobs may name by id (`[[lora]]`).
    #[serde(default)]
    pub lora: Vec<LoraEntry>,
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
    /// Registry adapters, their paths resolved against the config folder.
    pub loras: Vec<LoraEntry>,
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
    /// model (id `ltx-demo`, the default: its videos follow the prompt), the
    /// built-in tiny LTX (id `ltx-tiny`) and the built-in tiny Wan 2.1
    /// models (`wan-tiny`, `wan-tiny-i2v`), 80 GiB workers. Reads only the
    /// demo model's shipped files.
    pub fn builtin_default() -> Result<AdmissionConfig, ConfigError> {
        Self::builtin(vec![
            ModelEntry::new("ltx-demo", BUILTIN_DEMO, Architecture::Ltx, false),
            Self::tiny_entry(),
            ModelEntry::new("wan-tiny", BUILTIN_WAN_TINY, Architecture::Wan, true),
            ModelEntry::new(
                "wan-tiny-i2v",
                BUILTIN_WAN_TINY_I2V,
                Architecture::Wan,
                true,
            ),
        ])
    }

    /// [`Self::builtin_default`] with the built-in tiny model only: what tests
    /// use when the picture does not matter and speed does. Reads no files.
    pub fn builtin_tiny() -> AdmissionConfig {
        Self::builtin(vec![Self::tiny_entry()]).expect("builtin tiny admission config is valid")
    }

    fn tiny_entry() -> ModelEntry {
        ModelEntry::new("ltx-tiny", BUILTIN_TINY, Architecture::Ltx, true)
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
            lora: Vec::new(),
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
        let mut lora_ids = BTreeSet::new();
        let mut loras = Vec::new();
        for l in &models.lora {
            if l.id.is_empty() || !lora_ids.insert(l.id.clone()) {
                return Err(invalid(format!("lora id {:?} empty or duplicated", l.id)));
            }
            if !seen.contains(&l.model) {
                return Err(invalid(format!(
                    "lora {:?} is for model {:?}, which is not configured",
                    l.id, l.model
                )));
            }
            loras.push(LoraEntry {
                path: base.join(&l.path),
                ..l.clone()
            });
        }
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
            loras,
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
