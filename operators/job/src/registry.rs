//! The model registry: what a `[[model]]` entry of `configs/models.toml`
//! says (its architecture, sampler, kinds, size and frame rules), and the
//! profile admission checks jobs against (those rules, and the geometry
//! the runtime reads for the VRAM estimate).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vidflow_gpu::info::{estimate_vram, estimate_vram_wan, summarize, EstimateInput, VramEstimate};
use vidflow_gpu::transformer::TransformerConfig;
use vidflow_gpu::vae::VaeConfig;
use vidflow_gpu::wan::{WanConfig, WanVaeConfig};
use vidflow_gpu::weights::read_config;
use vidflow_gpu::{tiny, Weights};

use crate::error::ConfigError;
use crate::spec::JobKind;

/// The `path` of the built-in tiny (untrained) model.
pub const BUILTIN_TINY: &str = "builtin:tiny";
/// The `path`s of the built-in tiny (untrained) Wan 2.1 models,
/// text-to-video and image-to-video.
pub const BUILTIN_WAN_TINY: &str = "builtin:wan-tiny";
pub const BUILTIN_WAN_TINY_I2V: &str = "builtin:wan-tiny-i2v";

/// For a built-in tiny Wan `path`, whether it is the image-to-video one;
/// `None` for any other path.
pub fn builtin_wan(path: &str) -> Option<bool> {
    match path {
        BUILTIN_WAN_TINY => Some(false),
        BUILTIN_WAN_TINY_I2V => Some(true),
        _ => None,
    }
}

/// The `path` of the demo model shipped in the source tree
/// (`vidflow_gpu::demo`): trained on synthetic shapes, its files pinned by
/// sha256 in code.
pub const BUILTIN_DEMO: &str = "builtin:demo";

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

/// A model family: which architecture a checkpoint holds, and with it the
/// sampler, size and frame rules its jobs follow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// LTX-Video (0.9.x): T5 text, 32x32x8 VAE, flow-matching Euler.
    #[default]
    Ltx,
    /// Wan 2.1: UMT5 text (CLIP image tokens for I2V), 8x8x4 VAE with
    /// 1x2x2 patches, UniPC.
    Wan,
}

/// A sampler a model's jobs are denoised with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplerKind {
    /// First-order flow-matching Euler with LTX's resolution-dependent
    /// shift.
    FlowEuler,
    /// UniPC (order 2, bh2) on flow sigmas with a fixed shift.
    Unipc,
}

/// What an architecture's jobs must look like, and what they get by
/// default.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FamilyRules {
    pub sampler: SamplerKind,
    /// Width and height must be multiples of this.
    pub size_multiple: u32,
    /// Frame counts are `frame_multiple * n + 1`.
    pub frame_multiple: u32,
    /// The rate the model was trained at, when it is fixed (jobs may not
    /// ask for another); `None`: any rate in range, 24 by default.
    pub fps: Option<f64>,
    /// The longest video one job may ask for.
    pub max_frames: u32,
}

impl Architecture {
    pub fn as_str(self) -> &'static str {
        match self {
            Architecture::Ltx => "ltx",
            Architecture::Wan => "wan",
        }
    }

    /// The family's own rules (a `[[model]]` entry may only tighten them).
    pub fn rules(self) -> FamilyRules {
        match self {
            Architecture::Ltx => FamilyRules {
                sampler: SamplerKind::FlowEuler,
                size_multiple: crate::limits::SIZE_MULTIPLE,
                frame_multiple: crate::limits::FRAME_MULTIPLE,
                fps: None,
                max_frames: crate::limits::MAX_FRAMES,
            },
            // 81 frames (5 s at 16 fps) is the longest clip Wan 2.1 was
            // trained on; it has no chained segments.
            Architecture::Wan => FamilyRules {
                sampler: SamplerKind::Unipc,
                size_multiple: 16,
                frame_multiple: 4,
                fps: Some(16.0),
                max_frames: 81,
            },
        }
    }

    /// Kinds the family can run at all.
    pub fn kinds(self) -> &'static [JobKind] {
        match self {
            Architecture::Ltx => &[JobKind::T2v, JobKind::I2v, JobKind::V2v],
            Architecture::Wan => &[JobKind::T2v, JobKind::I2v],
        }
    }
}

/// One `[[model]]` entry of `configs/models.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// The id jobs name in `model`.
    pub id: String,
    /// `"builtin:demo"`, `"builtin:tiny"`, `"builtin:wan-tiny"`,
    /// `"builtin:wan-tiny-i2v"` or a diffusers-format checkpoint directory
    /// (relative paths are relative to the config directory).
    pub path: String,
    /// The family the checkpoint holds (default `ltx`).
    #[serde(default)]
    pub architecture: Architecture,
    /// The model's output is noise (the built-in tiny models); shown to users.
    #[serde(default)]
    pub untrained: bool,
    /// GPU dtype for the VRAM estimate (default f32).
    #[serde(default)]
    pub dtype: ModelDtype,
    /// The sampler (default and only choice: the architecture's).
    #[serde(default)]
    pub sampler: Option<SamplerKind>,
    /// Steps a job gets when it names none (default: its mode's).
    #[serde(default)]
    pub steps: Option<u32>,
    /// Kinds this model serves (default: all its architecture runs; a Wan
    /// checkpoint is either `["t2v"]` or `["i2v"]`).
    #[serde(default)]
    pub kinds: Option<Vec<JobKind>>,
    /// Width and height multiple (default: the architecture's; a multiple
    /// of it).
    #[serde(default)]
    pub size_multiple: Option<u32>,
    /// Frames are `frame_multiple * n + 1` (default: the architecture's; a
    /// multiple of it).
    #[serde(default)]
    pub frame_multiple: Option<u32>,
    /// Frame rate jobs get (and, for a family trained at one rate, the only
    /// one they may ask for).
    #[serde(default)]
    pub fps: Option<f64>,
    /// The longest video a job may ask for, frames (default: the
    /// architecture's).
    #[serde(default)]
    pub max_frames: Option<u32>,
}

impl ModelEntry {
    /// An entry with every optional field left to its default.
    pub fn new(id: &str, path: &str, architecture: Architecture, untrained: bool) -> Self {
        ModelEntry {
            id: id.into(),
            path: path.into(),
            architecture,
            untrained,
            dtype: ModelDtype::F32,
            sampler: None,
            steps: None,
            kinds: None,
            size_multiple: None,
            frame_multiple: None,
            fps: None,
            max_frames: None,
        }
    }

    /// The entry's rules: the architecture's, tightened where the entry
    /// says so; an entry that would loosen them is refused.
    fn rules(&self) -> Result<(FamilyRules, Vec<JobKind>, Option<u32>), String> {
        let arch = self.architecture;
        let base = arch.rules();
        let id = &self.id;
        let mut r = base;
        if let Some(s) = self.sampler {
            if s != base.sampler {
                return Err(format!(
                    "model {id:?}: sampler {s:?} is not what {} runs ({:?})",
                    arch.as_str(),
                    base.sampler
                ));
            }
        }
        for (name, got, min) in [
            ("size_multiple", self.size_multiple, base.size_multiple),
            ("frame_multiple", self.frame_multiple, base.frame_multiple),
        ] {
            if let Some(v) = got {
                if v == 0 || !v.is_multiple_of(min) {
                    return Err(format!(
                        "model {id:?}: {name} {v} must be a multiple of {}'s {min}",
                        arch.as_str()
                    ));
                }
            }
        }
        r.size_multiple = self.size_multiple.unwrap_or(base.size_multiple);
        r.frame_multiple = self.frame_multiple.unwrap_or(base.frame_multiple);
        if let Some(f) = self.fps {
            let ok = f.is_finite()
                && (crate::limits::MIN_FPS..=crate::limits::MAX_FPS).contains(&f)
                && base.fps.is_none_or(|b| b == f);
            if !ok {
                return Err(format!(
                    "model {id:?}: fps {f} (the family's rate is {})",
                    base.fps
                        .map_or("any in 1..=60".to_string(), |b| b.to_string())
                ));
            }
            r.fps = Some(f);
        }
        if let Some(m) = self.max_frames {
            if m == 0 || m > base.max_frames || !(m - 1).is_multiple_of(r.frame_multiple) {
                return Err(format!(
                    "model {id:?}: max_frames {m} must be {}n+1 and at most {}",
                    r.frame_multiple, base.max_frames
                ));
            }
            r.max_frames = m;
        }
        let kinds = match &self.kinds {
            None => arch.kinds().to_vec(),
            Some(k) => {
                if k.is_empty() {
                    return Err(format!("model {id:?}: kinds is empty"));
                }
                if let Some(bad) = k.iter().find(|k| !arch.kinds().contains(k)) {
                    return Err(format!(
                        "model {id:?}: {} cannot run kind {:?}",
                        arch.as_str(),
                        bad.as_str()
                    ));
                }
                k.clone()
            }
        };
        if let Some(s) = self.steps {
            if !(1..=crate::limits::MAX_STEPS).contains(&s) {
                return Err(format!("model {id:?}: steps {s} not in 1..=200"));
            }
        }
        Ok((r, kinds, self.steps))
    }
}

/// One `[[lora]]` entry of `configs/models.toml`: an adapter every tenant
/// may name by `id`, for one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraEntry {
    pub id: String,
    /// The model id it was trained for.
    pub model: String,
    /// A safetensors file (relative paths are relative to the config
    /// directory).
    pub path: PathBuf,
}

/// A model's shapes as its architecture reads them, for the VRAM estimate.
#[derive(Debug, Clone)]
pub enum Geometry {
    Ltx {
        transformer: TransformerConfig,
        vae: VaeConfig,
    },
    Wan {
        transformer: WanConfig,
        vae: WanVaeConfig,
    },
}

/// A configured model with its rules and the geometry the runtime reports
/// for it.
#[derive(Debug, Clone)]
pub struct ModelProfile {
    pub id: String,
    /// As configured (`builtin:tiny` or the directory as written).
    pub path: String,
    /// The directory, resolved against the config directory; `None` for
    /// built-in models.
    pub dir: Option<PathBuf>,
    pub architecture: Architecture,
    pub untrained: bool,
    pub dtype: ModelDtype,
    /// Sizes, frames, rate and sampler its jobs follow.
    pub rules: FamilyRules,
    /// Kinds it serves.
    pub kinds: Vec<JobKind>,
    /// Steps a job gets when it names none (`None`: the mode's).
    pub steps: Option<u32>,
    pub geometry: Geometry,
    /// Transformer + VAE + text encoder parameters times the dtype size.
    pub weights_bytes: u64,
    /// Native size, frame rate, steps and guidance of a demo-world model
    /// (`_vidflow_demo` in its `model_index.json`); `None` for others.
    pub demo: Option<vidflow_gpu::demo::DemoInfo>,
}

fn param_count(shapes: Vec<(String, Vec<usize>)>) -> u64 {
    shapes
        .iter()
        .map(|(_, s)| s.iter().map(|d| *d as u64).product::<u64>())
        .sum()
}

impl ModelProfile {
    /// Reads a model's geometry: a built-in model's from code, a
    /// checkpoint's from `transformer/config.json`, `vae/config.json` and
    /// the safetensors headers (no weights are loaded).
    pub fn resolve(entry: &ModelEntry, base: &Path) -> Result<ModelProfile, ConfigError> {
        let wrap = |source| ConfigError::Model {
            id: entry.id.clone(),
            path: entry.path.clone(),
            source: Box::new(source),
        };
        let (rules, kinds, steps) = entry.rules().map_err(|message| ConfigError::Invalid {
            path: base.join("models.toml"),
            message,
        })?;
        let wan_tiny = builtin_wan(&entry.path);
        let builtin = entry.path == BUILTIN_TINY || wan_tiny.is_some();
        let fits = match (entry.architecture, entry.path.as_str()) {
            (Architecture::Ltx, p) => builtin_wan(p).is_none(),
            (Architecture::Wan, p) => p != BUILTIN_TINY && p != BUILTIN_DEMO,
        };
        if !fits {
            return Err(ConfigError::Invalid {
                path: base.join("models.toml"),
                message: format!(
                    "model {:?}: {} is not a {} model",
                    entry.id,
                    entry.path,
                    entry.architecture.as_str()
                ),
            });
        }
        let dir = if builtin {
            None
        } else if entry.path == BUILTIN_DEMO {
            let d = vidflow_gpu::demo::default_dir().to_path_buf();
            vidflow_gpu::demo::verify(&d).map_err(wrap)?;
            Some(d)
        } else {
            Some(base.join(&entry.path))
        };
        let (geometry, params) = match (&dir, wan_tiny) {
            (None, None) => {
                let t = tiny::transformer_config();
                let v = tiny::vae_config();
                let params = param_count(t.tensor_shapes())
                    + param_count(vidflow_gpu::vae::expected_tensor_shapes(&v))
                    + param_count(vidflow_gpu::t5::expected_tensor_shapes(&tiny::t5_config()));
                (
                    Geometry::Ltx {
                        transformer: t,
                        vae: v,
                    },
                    params,
                )
            }
            (None, Some(i2v)) => {
                let (_, params) = vidflow_gpu::wan::tiny::pipeline(i2v).map_err(wrap)?;
                let g = Geometry::Wan {
                    transformer: vidflow_gpu::wan::tiny::transformer_config(i2v),
                    vae: vidflow_gpu::wan::tiny::vae_config(),
                };
                (g, params)
            }
            (Some(dir), _) => {
                let tpath = dir.join("transformer").join("config.json");
                let vpath = dir.join("vae").join("config.json");
                let g = match entry.architecture {
                    Architecture::Ltx => Geometry::Ltx {
                        transformer: read_config(&tpath).map_err(wrap)?,
                        vae: read_config(&vpath).map_err(wrap)?,
                    },
                    Architecture::Wan => Geometry::Wan {
                        transformer: read_config(&tpath).map_err(wrap)?,
                        vae: read_config(&vpath).map_err(wrap)?,
                    },
                };
                let mut params = 0;
                for comp in ["transformer", "vae", "text_encoder", "image_encoder"] {
                    let d = dir.join(comp);
                    if (comp == "text_encoder" || comp == "image_encoder") && !d.is_dir() {
                        continue; // a separately served encoder, or none
                    }
                    params += summarize(comp, &Weights::from_dir(&d).map_err(wrap)?).params;
                }
                (g, params)
            }
        };
        if let Geometry::Wan { transformer, .. } = &geometry {
            let i2v = transformer.image_dim.is_some();
            let own = if i2v { JobKind::I2v } else { JobKind::T2v };
            let given = entry.kinds.as_deref().unwrap_or_default();
            if let Some(k) = given.iter().find(|k| **k != own) {
                return Err(ConfigError::Invalid {
                    path: base.join("models.toml"),
                    message: format!(
                        "model {:?}: this Wan checkpoint is {}-only, not {:?}",
                        entry.id,
                        own.as_str(),
                        k.as_str()
                    ),
                });
            }
        }
        let kinds = match &geometry {
            Geometry::Wan { transformer, .. } if entry.kinds.is_none() => {
                vec![if transformer.image_dim.is_some() {
                    JobKind::I2v
                } else {
                    JobKind::T2v
                }]
            }
            _ => kinds,
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
            architecture: entry.architecture,
            untrained: entry.untrained,
            dtype: entry.dtype,
            rules,
            kinds,
            steps,
            geometry,
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
        let mut x = EstimateInput {
            width: width as usize,
            height: height as usize,
            frames: num_frames as usize,
            act_bytes: self.dtype.bytes(),
            cfg_batch: if guidance > 1.0 { 2 } else { 1 },
            text_len: vidflow_gpu::pipeline::DEFAULT_MAX_TEXT_LEN,
        };
        match &self.geometry {
            Geometry::Ltx { transformer, vae } => {
                estimate_vram(transformer, vae, self.weights_bytes, &x)
            }
            Geometry::Wan { transformer, vae } => {
                x.text_len = vidflow_gpu::wan::transformer::TEXT_LEN;
                estimate_vram_wan(transformer, vae, self.weights_bytes, &x)
            }
        }
    }

    /// Whether jobs of this model may run as a chain of segments.
    pub fn chains(&self) -> bool {
        self.architecture == Architecture::Ltx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(e: &ModelEntry) -> Result<ModelProfile, String> {
        ModelProfile::resolve(e, Path::new(".")).map_err(|e| e.to_string())
    }

    #[test]
    fn each_family_gets_its_own_rules_and_kinds() {
        let wan = resolve(&ModelEntry::new(
            "w",
            BUILTIN_WAN_TINY,
            Architecture::Wan,
            true,
        ))
        .unwrap();
        assert_eq!(wan.rules.sampler, SamplerKind::Unipc);
        assert_eq!((wan.rules.size_multiple, wan.rules.frame_multiple), (16, 4));
        assert_eq!((wan.rules.fps, wan.rules.max_frames), (Some(16.0), 81));
        assert_eq!(wan.kinds, vec![JobKind::T2v]);
        assert!(!wan.chains());
        assert!(wan.weights_bytes > 0);
        let i2v = resolve(&ModelEntry::new(
            "i",
            BUILTIN_WAN_TINY_I2V,
            Architecture::Wan,
            true,
        ))
        .unwrap();
        assert_eq!(i2v.kinds, vec![JobKind::I2v]);
        assert!(
            i2v.weights_bytes > wan.weights_bytes,
            "the image encoder counts"
        );
        let ltx = resolve(&ModelEntry::new("l", BUILTIN_TINY, Architecture::Ltx, true)).unwrap();
        assert_eq!(ltx.rules.sampler, SamplerKind::FlowEuler);
        assert_eq!((ltx.rules.size_multiple, ltx.rules.frame_multiple), (32, 8));
        assert_eq!(ltx.kinds.len(), 3);
        assert!(ltx.chains());
        // Bigger jobs need more memory, in either family.
        for p in [&wan, &ltx] {
            let (a, b) = (p.estimate(256, 256, 17, 3.0), p.estimate(512, 512, 33, 3.0));
            assert!(b.total_bytes > a.total_bytes, "{}", p.id);
        }
    }

    #[test]
    fn entries_may_tighten_rules_but_never_loosen_them() {
        let mut e = ModelEntry::new("w", BUILTIN_WAN_TINY, Architecture::Wan, true);
        e.size_multiple = Some(32);
        e.max_frames = Some(49);
        e.steps = Some(20);
        let p = resolve(&e).unwrap();
        assert_eq!(
            (p.rules.size_multiple, p.rules.max_frames, p.steps),
            (32, 49, Some(20))
        );
        for (edit, says) in [
            (
                (|e: &mut ModelEntry| e.size_multiple = Some(8)) as fn(&mut ModelEntry),
                "size_multiple 8",
            ),
            (|e| e.frame_multiple = Some(6), "frame_multiple 6"),
            (|e| e.fps = Some(24.0), "fps 24"),
            (|e| e.max_frames = Some(121), "max_frames 121"),
            (|e| e.sampler = Some(SamplerKind::FlowEuler), "sampler"),
            (
                |e| e.kinds = Some(vec![JobKind::V2v]),
                "cannot run kind \"v2v\"",
            ),
            (|e| e.kinds = Some(vec![JobKind::I2v]), "t2v-only"),
            (|e| e.steps = Some(0), "steps 0"),
        ] {
            let mut e = ModelEntry::new("w", BUILTIN_WAN_TINY, Architecture::Wan, true);
            edit(&mut e);
            let err = resolve(&e).unwrap_err();
            assert!(err.contains(says), "{says}: {err}");
        }
        let err =
            resolve(&ModelEntry::new("x", BUILTIN_TINY, Architecture::Wan, true)).unwrap_err();
        assert!(err.contains("not a wan model"), "{err}");
        let err = resolve(&ModelEntry::new(
            "x",
            BUILTIN_WAN_TINY,
            Architecture::Ltx,
            true,
        ))
        .unwrap_err();
        assert!(err.contains("not a ltx model"), "{err}");
    }

    #[test]
    fn the_registry_toml_names_architectures_samplers_and_kinds() {
        let e: ModelEntry = toml::from_str(
            "id = \"w\"\npath = \"builtin:wan-tiny\"\narchitecture = \"wan\"\n\
             sampler = \"unipc\"\nkinds = [\"t2v\"]\nfps = 16.0\n",
        )
        .unwrap();
        assert_eq!(e.architecture, Architecture::Wan);
        assert_eq!(e.sampler, Some(SamplerKind::Unipc));
        assert!(
            toml::from_str::<ModelEntry>("id = \"w\"\npath = \"p\"\narchitecture = \"sd\"\n")
                .is_err()
        );
    }
}
