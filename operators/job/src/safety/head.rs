//! The learned prompt head: a small classifier over two views of a prompt
//! reading, the MiniLM sentence embedding (meaning) and tf-idf weighted
//! character n-grams of its words (form, so misspellings still share most
//! features), trained by `scripts/safety/train_head.py` on the training
//! split of our own corpus (tests/data/safety_corpus/) with one blocking
//! threshold per category chosen on the validation split. It is the main
//! recall of the prompt check; terms and patterns stay as a precise first
//! layer that also explains a block in words.
//!
//! The file is part of the policy: `[head] file` names it relative to the
//! policy file and `[head] sha256` pins it, so a retrained head is a new
//! policy version, and a head that was not reviewed with the policy does
//! not load.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Deserialize;

/// The format this runtime reads (`format` in the file).
pub const FORMAT: &str = "vidflow-safety-head/2";

/// One dense layer: `out = act(W x + b)`, `W` as rows of `in` weights.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    pub weights: Vec<Vec<f32>>,
    pub bias: Vec<f32>,
    pub activation: Activation,
}

/// What follows a layer's affine map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Relu,
    /// The last layer: class probabilities.
    Softmax,
}

/// The character n-gram view: each word padded with a space either side,
/// its `min..=max`-grams (a word no longer than n counts once, whole),
/// counted, `1 + ln(count)` times the gram's idf, l2-normalised.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GramsFile {
    pub min: usize,
    pub max: usize,
    pub vocabulary: Vec<String>,
    pub idf: Vec<f32>,
}

#[derive(Debug, Clone)]
struct Grams {
    min: usize,
    max: usize,
    index: HashMap<String, usize>,
    idf: Vec<f32>,
}

/// A gram text and the gram part of its logits, as the trainer computed
/// them: the parity check between the trainer and this runtime.
#[derive(Debug, Clone, Deserialize)]
pub struct Probe {
    pub text: String,
    pub gram_logits: Vec<f32>,
}

/// The parts of the head file the runtime uses; the rest (how it was
/// trained, validation figures) is for people and is kept as written.
#[derive(Debug, Clone, Deserialize)]
struct HeadFile {
    format: String,
    encoder: String,
    classes: Vec<String>,
    #[serde(default)]
    grams: Option<GramsFile>,
    #[serde(default = "one")]
    embedding_scale: f32,
    layers: Vec<Layer>,
    thresholds: BTreeMap<String, f32>,
    #[serde(default)]
    probes: Vec<Probe>,
}

fn one() -> f32 {
    1.0
}

/// Whitespace as the trainer's Python splits on it (`str.isspace`): Rust's
/// `is_whitespace` plus the four ASCII separators U+001C..U+001F.
fn is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

impl Grams {
    fn new(f: GramsFile) -> Result<Grams, String> {
        if f.vocabulary.len() != f.idf.len() || f.min == 0 || f.min > f.max {
            return Err("grams: vocabulary and idf must be as long, 0 < min <= max".into());
        }
        let index = f
            .vocabulary
            .into_iter()
            .enumerate()
            .map(|(i, g)| (g, i))
            .collect();
        Ok(Grams {
            min: f.min,
            max: f.max,
            index,
            idf: f.idf,
        })
    }

    /// Sparse features of `text`: (vocabulary index, value), by index.
    fn features(&self, text: &str) -> Vec<(usize, f32)> {
        let lower = text.to_lowercase();
        let mut counts: BTreeMap<usize, u32> = BTreeMap::new();
        let mut add = |g: &str| {
            if let Some(&i) = self.index.get(g) {
                *counts.entry(i).or_default() += 1;
            }
        };
        for w in lower.split(is_space).filter(|w| !w.is_empty()) {
            let chars: Vec<char> = std::iter::once(' ')
                .chain(w.chars())
                .chain(std::iter::once(' '))
                .collect();
            for n in self.min..=self.max {
                if chars.len() <= n {
                    add(&chars.iter().collect::<String>());
                    break;
                }
                for win in chars.windows(n) {
                    add(&win.iter().collect::<String>());
                }
            }
        }
        let mut out: Vec<(usize, f32)> = counts
            .into_iter()
            .map(|(i, c)| (i, (1.0 + (c as f32).ln()) * self.idf[i]))
            .collect();
        let norm = out.iter().map(|(_, v)| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            out.iter_mut().for_each(|(_, v)| *v /= norm);
        }
        out
    }
}

/// A loaded, checked head.
#[derive(Debug, Clone)]
pub struct Head {
    /// `safe` first, then the harmful categories.
    pub classes: Vec<String>,
    grams: Option<Grams>,
    embedding_scale: f32,
    /// The first layer reads the gram features (if any), then the
    /// embedding times `embedding_scale`.
    layers: Vec<Layer>,
    /// The trainer's gram logits for a few texts (see [`Head::check_probes`]).
    pub probes: Vec<Probe>,
    /// Per harmful class: the probability at or above which it blocks.
    pub thresholds: BTreeMap<String, f32>,
    /// The encoder the head was trained on (the policy's `embedding.model`
    /// must load the same one).
    pub encoder: String,
}

impl Head {
    /// Parses and checks a head file's bytes: the layer shapes chain from
    /// `dim` inputs (the first layer's width where `None`) to one output
    /// per class, and every harmful class has a threshold in (0, 1].
    pub fn parse(bytes: &[u8], dim: Option<usize>) -> Result<Head, String> {
        let f: HeadFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let n_grams = f.grams.as_ref().map_or(0, |g| g.vocabulary.len());
        let dim = dim
            .or_else(|| {
                f.layers
                    .first()
                    .and_then(|l| l.weights.first())
                    .map(|r| r.len().saturating_sub(n_grams))
            })
            .unwrap_or(0);
        if f.format != FORMAT {
            return Err(format!(
                "format {:?}: this build reads {FORMAT:?}",
                f.format
            ));
        }
        if f.classes.first().map(String::as_str) != Some("safe") {
            return Err("classes: the first class must be \"safe\"".into());
        }
        let mut width = n_grams + dim;
        for (i, l) in f.layers.iter().enumerate() {
            if l.weights.len() != l.bias.len() || l.weights.iter().any(|r| r.len() != width) {
                return Err(format!(
                    "layers[{i}]: weights must be {} rows of {width}",
                    l.bias.len()
                ));
            }
            let last = i + 1 == f.layers.len();
            if last != (l.activation == Activation::Softmax) {
                return Err(format!(
                    "layers[{i}]: softmax is the last layer's activation, and only its"
                ));
            }
            width = l.bias.len();
        }
        if f.layers.is_empty() || width != f.classes.len() {
            return Err(format!(
                "layers: the last layer must have one output per class ({})",
                f.classes.len()
            ));
        }
        for c in &f.classes[1..] {
            match f.thresholds.get(c) {
                Some(t) if *t > 0.0 && *t <= 1.0 => {}
                _ => return Err(format!("thresholds.{c}: must be within (0, 1]")),
            }
        }
        Ok(Head {
            classes: f.classes,
            grams: f.grams.map(Grams::new).transpose()?,
            embedding_scale: f.embedding_scale,
            probes: f.probes,
            layers: f.layers,
            thresholds: f.thresholds,
            encoder: f.encoder,
        })
    }

    /// Reads `path` and checks it against the pinned sha256 first: the
    /// bytes that decide are the bytes that were reviewed.
    pub fn load(path: &Path, sha256: &str) -> Result<Head, String> {
        let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
        use sha2::Digest;
        let got: String = sha2::Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if !got.eq_ignore_ascii_case(sha256) {
            return Err(format!(
                "sha256 {got} is not the pinned {sha256} (retrained? pin the new hash in [head] sha256)"
            ));
        }
        Head::parse(&bytes, None)
    }

    /// The embedding width the head reads.
    pub fn input_dim(&self) -> usize {
        self.layers[0].weights[0].len() - self.n_grams()
    }

    fn n_grams(&self) -> usize {
        self.grams.as_ref().map_or(0, |g| g.idf.len())
    }

    /// The gram part of the first layer's output for `text`.
    pub fn gram_logits(&self, text: &str) -> Vec<f32> {
        let feats = self
            .grams
            .as_ref()
            .map(|g| g.features(text))
            .unwrap_or_default();
        self.layers[0]
            .weights
            .iter()
            .map(|w| feats.iter().map(|(i, v)| w[*i] * v).sum())
            .collect()
    }

    /// The largest difference between the trainer's gram logits for its
    /// probe texts and this runtime's.
    pub fn probe_error(&self) -> f32 {
        let mut worst = 0.0f32;
        for p in &self.probes {
            for (a, b) in self.gram_logits(&p.text).iter().zip(&p.gram_logits) {
                worst = worst.max((a - b).abs());
            }
        }
        worst
    }

    /// Class probabilities for one reading (its text and its embedding),
    /// in `classes` order.
    pub fn probabilities(&self, text: &str, emb: &[f32]) -> Vec<f32> {
        let n = self.n_grams();
        let grams = self.gram_logits(text);
        let mut v: Vec<f32> = Vec::new();
        for (li, l) in self.layers.iter().enumerate() {
            let mut out: Vec<f32> = if li == 0 {
                l.weights
                    .iter()
                    .zip(&l.bias)
                    .zip(&grams)
                    .map(|((w, b), g)| {
                        g + b
                            + self.embedding_scale
                                * w[n..].iter().zip(emb).map(|(a, x)| a * x).sum::<f32>()
                    })
                    .collect()
            } else {
                l.weights
                    .iter()
                    .zip(&l.bias)
                    .map(|(w, b)| w.iter().zip(&v).map(|(a, b)| a * b).sum::<f32>() + b)
                    .collect()
            };
            match l.activation {
                Activation::Relu => out.iter_mut().for_each(|o| *o = o.max(0.0)),
                Activation::Softmax => {
                    let m = out.iter().copied().fold(f32::MIN, f32::max);
                    out.iter_mut().for_each(|o| *o = (*o - m).exp());
                    let s: f32 = out.iter().sum();
                    out.iter_mut().for_each(|o| *o /= s);
                }
            }
            v = out;
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(thr: f32, act: &str) -> String {
        format!(
            r#"{{"format":"{FORMAT}","encoder":"minilm","classes":["safe","gore"],
            "layers":[{{"weights":[[1,0],[0,1]],"bias":[0,0],"activation":"{act}"}}],
            "thresholds":{{"gore":{thr}}},"validation":{{"note":"kept"}}}}"#
        )
    }

    #[test]
    fn probabilities_are_a_softmax_of_the_layers() {
        let h = Head::parse(file(0.5, "softmax").as_bytes(), Some(2)).unwrap();
        let p = h.probabilities("", &[0.0, 2f32.ln()]);
        assert!((p[0] - 1.0 / 3.0).abs() < 1e-6 && (p[1] - 2.0 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn grams_are_padded_words_and_short_words_count_once() {
        let g = Grams::new(GramsFile {
            min: 2,
            max: 3,
            vocabulary: [" a ", " g", "go", "o ", " go", "go ", " o"]
                .map(String::from)
                .to_vec(),
            idf: vec![1.0; 7],
        })
        .unwrap();
        // " go ": 2-grams " g","go","o "; 3-grams " go","go ". " a ": whole, once.
        let f = g.features("Go  A\u{1d}");
        let idx: Vec<usize> = f.iter().map(|(i, _)| *i).collect();
        assert_eq!(idx, vec![0, 1, 2, 3, 4, 5]);
        let norm: f32 = f.iter().map(|(_, v)| v * v).sum();
        assert!((norm - 1.0).abs() < 1e-6);
    }

    #[test]
    fn malformed_heads_are_refused_with_the_field() {
        let e = Head::parse(file(0.0, "softmax").as_bytes(), Some(2)).unwrap_err();
        assert!(e.contains("thresholds.gore"), "{e}");
        let e = Head::parse(file(0.5, "relu").as_bytes(), Some(2)).unwrap_err();
        assert!(e.contains("softmax"), "{e}");
        let e = Head::parse(file(0.5, "softmax").as_bytes(), Some(3)).unwrap_err();
        assert!(e.contains("layers[0]"), "{e}");
    }

    #[test]
    fn a_head_that_is_not_the_pinned_one_does_not_load() {
        let dir = std::env::temp_dir().join(format!("vidflow-head-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("head.json");
        std::fs::write(&p, file(0.5, "softmax")).unwrap();
        let e = Head::load(&p, &"0".repeat(64)).unwrap_err();
        assert!(e.contains("pinned"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
