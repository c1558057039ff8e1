//! The prompt policy as configuration (`configs/safety.toml`): the learned
//! head it decides with (pinned by sha256); harmful categories, each with
//! terms, regular expressions and exemplar sentences for the embedding
//! scorer; the real-person rule; per-tenant overrides
//! that may only make the policy stricter. Its version (the configured
//! label plus a hash of the file) goes into every decision, so a decision
//! can be traced to the exact policy that made it.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::head::Head;
use super::SafetyError;

/// `configs/safety.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// A human label (bumped on every edit); the file hash is appended.
    pub version: String,
    #[serde(default)]
    pub embedding: EmbeddingConfig,
    #[serde(default)]
    pub profanity: ProfanityConfig,
    /// Harmful categories by name (`sexual`, `violence_gore`, ...).
    pub categories: BTreeMap<String, CategoryConfig>,
    #[serde(default)]
    pub real_person: RealPersonConfig,
    /// Stricter settings per tenant id.
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantOverride>,
    #[serde(default)]
    pub visual: VisualConfig,
    #[serde(default)]
    pub negative_prompt: NegativePromptConfig,
    /// The learned head (`safety/head.json`), pinned by sha256.
    #[serde(default)]
    pub head: Option<HeadConfig>,
}

/// `[head]`: which trained head file the policy decides with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadConfig {
    /// Relative to the policy file.
    pub file: String,
    /// The file's sha256: a head is reviewed with the policy, and the
    /// policy's version hash covers this pin.
    pub sha256: String,
    /// Where a head is configured, the exemplar similarity is recorded as
    /// a score (an explanation) but no longer blocks or counts as a
    /// real-person context: its false positives are what the head replaces.
    #[serde(default)]
    pub exemplars_block: bool,
}

/// How the negative prompt is checked. Its words are what the video is
/// steered *away* from, so "nudity, gore" there is a safe request; what
/// is harmful in a negative prompt is steering away from safety ("clothes",
/// "censored") and words that are harmful wherever they are written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NegativePromptConfig {
    /// Per category, terms that push the video toward it when they are in
    /// the negative prompt.
    #[serde(default)]
    pub steer_terms: BTreeMap<String, Vec<String>>,
    /// Categories checked on the negative prompt as on the prompt (their
    /// words are the harm, e.g. slurs).
    #[serde(default)]
    pub text_categories: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingConfig {
    /// Model folder name under the models directory.
    #[serde(default = "default_embed_model")]
    pub model: String,
    /// A category's best exemplar must beat the best safe exemplar by this
    /// much: benign look-alikes (boxing, surgery, breastfeeding) sit close
    /// to harmful exemplars, closer still to safe ones.
    #[serde(default)]
    pub margin: f32,
    /// Benign scenes that share words with harmful ones.
    #[serde(default)]
    pub safe_exemplars: Vec<String>,
}

impl Default for EmbeddingConfig {
    fn default() -> Self {
        EmbeddingConfig {
            model: default_embed_model(),
            margin: 0.0,
            safe_exemplars: Vec::new(),
        }
    }
}

fn default_embed_model() -> String {
    "minilm".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfanityConfig {
    /// Probability at or above which a prompt is blocked; above 1 disables.
    #[serde(default = "default_profanity")]
    pub threshold: f64,
    /// The category a profanity block is reported under.
    #[serde(default = "default_profanity_category")]
    pub category: String,
}

impl Default for ProfanityConfig {
    fn default() -> Self {
        ProfanityConfig {
            threshold: default_profanity(),
            category: default_profanity_category(),
        }
    }
}

fn default_profanity() -> f64 {
    0.9
}
fn default_profanity_category() -> String {
    "profanity".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoryConfig {
    /// Cosine similarity to the nearest exemplar at which the category
    /// blocks (with the margin over safe exemplars), where exemplars block
    /// (no `[head]`, or `exemplars_block = true`).
    pub threshold: f32,
    /// Word sequences that block on their own; a trailing `*` on the last
    /// word matches any word starting with it (`masturbat*`).
    #[serde(default)]
    pub terms: Vec<String>,
    /// Phrases that cancel a term hit inside them (`chicken breast`).
    #[serde(default)]
    pub allow_terms: Vec<String>,
    /// Regular expressions over the normalised prompt (lower case, words
    /// separated by single spaces).
    #[serde(default)]
    pub patterns: Vec<String>,
    /// Sentences the embedding scorer compares against.
    #[serde(default)]
    pub exemplars: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RealPersonConfig {
    /// Names of real people (lower case, as written in prompts).
    #[serde(default)]
    pub names: Vec<String>,
    /// A file of more names, one a line, relative to the policy file.
    #[serde(default)]
    pub names_file: Option<String>,
    /// Words that make a scene with a named person deceptive or harmful
    /// (`fake`, `confess*`, `naked`, ...), same syntax as category terms.
    #[serde(default)]
    pub context_terms: Vec<String>,
    /// With a name present, a category counts as context at this lower
    /// similarity (its margin rule still applies).
    #[serde(default = "default_context_threshold")]
    pub context_threshold: f32,
}

fn default_context_threshold() -> f32 {
    0.45
}

/// Per-tenant settings. Only stricter: thresholds scale down (a scale above
/// 1 is refused at load), terms are added, never removed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantOverride {
    /// Multiplies every category threshold (0 < scale <= 1).
    #[serde(default)]
    pub threshold_scale: Option<f32>,
    /// More blocking terms per category.
    #[serde(default)]
    pub extra_terms: BTreeMap<String, Vec<String>>,
    /// Block any prompt that names a real person, whatever the scene.
    #[serde(default)]
    pub block_all_real_people: bool,
    /// Stricter NSFW frame threshold.
    #[serde(default)]
    pub visual_threshold: Option<f32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VisualConfig {
    /// Frames sampled per video (evenly spaced, first and last included).
    #[serde(default = "default_frames")]
    pub frames: usize,
    /// NSFW probability at or above which a video is blocked.
    #[serde(default = "default_visual_threshold")]
    pub threshold: f32,
    /// Category reported for a visual block.
    #[serde(default = "default_visual_category")]
    pub category: String,
}

impl Default for VisualConfig {
    fn default() -> Self {
        VisualConfig {
            frames: default_frames(),
            threshold: default_visual_threshold(),
            category: default_visual_category(),
        }
    }
}

fn default_frames() -> usize {
    4
}
fn default_visual_threshold() -> f32 {
    0.5
}
fn default_visual_category() -> String {
    "sexual".into()
}

/// A loaded, checked policy.
#[derive(Debug, Clone)]
pub struct Policy {
    pub file: PolicyFile,
    /// `<label>+<first 12 hex of the file's sha256>`.
    pub version: String,
    pub names: Vec<String>,
    pub head: Option<Head>,
}

impl Policy {
    pub fn load(path: &Path) -> Result<Policy, SafetyError> {
        let err = |msg: String| SafetyError::Policy {
            path: path.display().to_string(),
            msg,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let file: PolicyFile = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
        let mut names = file.real_person.names.clone();
        let mut hashed = text.clone();
        if let Some(f) = &file.real_person.names_file {
            let p = path.parent().unwrap_or(Path::new(".")).join(f);
            let more = std::fs::read_to_string(&p).map_err(|e| SafetyError::Policy {
                path: p.display().to_string(),
                msg: e.to_string(),
            })?;
            hashed.push_str(&more);
            names.extend(
                more.lines()
                    .map(|l| l.trim())
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(|l| l.to_string()),
            );
        }
        let head = match &file.head {
            None => None,
            Some(h) => {
                let p = path.parent().unwrap_or(Path::new(".")).join(&h.file);
                Some(
                    Head::load(&p, &h.sha256).map_err(|msg| SafetyError::Policy {
                        path: p.display().to_string(),
                        msg,
                    })?,
                )
            }
        };
        if let Some(h) = &head {
            for c in &h.classes[1..] {
                if c != "real_person" && !file.categories.contains_key(c) {
                    return Err(err(format!(
                        "head: class {c:?} is neither a category nor real_person"
                    )));
                }
            }
        }
        let mut policy = Self::build(file, names, &hashed).map_err(err)?;
        policy.head = head;
        Ok(policy)
    }

    /// Checks a parsed policy (`text` is what its version hash covers).
    pub fn build(file: PolicyFile, names: Vec<String>, text: &str) -> Result<Policy, String> {
        if file.categories.is_empty() {
            return Err("categories: at least one is needed".into());
        }
        for (name, c) in &file.categories {
            if !(0.0..=1.0).contains(&c.threshold) {
                return Err(format!(
                    "categories.{name}.threshold = {}: must be within 0..=1",
                    c.threshold
                ));
            }
            for p in &c.patterns {
                regex::Regex::new(p)
                    .map_err(|e| format!("categories.{name}.patterns: {p:?}: {e}"))?;
            }
        }
        for (t, o) in &file.tenants {
            if let Some(s) = o.threshold_scale {
                if !(s > 0.0 && s <= 1.0) {
                    return Err(format!(
                        "tenants.{t}.threshold_scale = {s}: overrides may only be stricter (0 < scale <= 1)"
                    ));
                }
            }
            if let Some(v) = o.visual_threshold {
                if !(v > 0.0 && v <= file.visual.threshold) {
                    return Err(format!(
                        "tenants.{t}.visual_threshold = {v}: overrides may only be stricter (0 < v <= {})",
                        file.visual.threshold
                    ));
                }
            }
            for c in o.extra_terms.keys() {
                if !file.categories.contains_key(c) {
                    return Err(format!("tenants.{t}.extra_terms.{c}: no such category"));
                }
            }
        }
        let np = &file.negative_prompt;
        for c in np.steer_terms.keys().chain(&np.text_categories) {
            if !file.categories.contains_key(c) {
                return Err(format!("negative_prompt: {c:?}: no such category"));
            }
        }
        if file.visual.frames == 0 {
            return Err("visual.frames = 0: at least one frame must be checked".into());
        }
        use sha2::Digest;
        let h = sha2::Sha256::digest(text.as_bytes());
        let hex: String = h[..6].iter().map(|b| format!("{b:02x}")).collect();
        let names = names
            .iter()
            .map(|n| super::text::normalise(n))
            .filter(|n| !n.is_empty())
            .collect();
        Ok(Policy {
            version: format!("{}+{hex}", file.version),
            names,
            file,
            head: None,
        })
    }
}
