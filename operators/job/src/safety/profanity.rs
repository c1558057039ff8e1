//! alt-profanity-check's model (TF-IDF + five sigmoid-calibrated linear
//! SVMs, MIT), exported to JSON by scripts/safety/export_profanity.py and
//! scored here exactly as scikit-learn does: lower-case, tokens of 2+ word
//! characters, tf x idf, L2 norm, each SVM's margin through its sigmoid,
//! the mean of the five probabilities.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use super::SafetyError;

#[derive(Deserialize)]
struct Classifier {
    coef: Vec<f64>,
    intercept: f64,
    a: f64,
    b: f64,
}

#[derive(Deserialize)]
struct File {
    vocab: HashMap<String, usize>,
    idf: Vec<f64>,
    classifiers: Vec<Classifier>,
}

pub struct ProfanityModel {
    f: File,
}

/// Maximal runs of 2+ word characters (Python's `(?u)\b\w\w+\b`: letters,
/// digits and `_`), of the lower-cased text.
pub fn tokens(text: &str) -> Vec<String> {
    let lower = text.to_lowercase();
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut n = 0;
    for c in lower.chars().chain(std::iter::once(' ')) {
        if c.is_alphanumeric() || c == '_' {
            cur.push(c);
            n += 1;
        } else {
            if n >= 2 {
                out.push(std::mem::take(&mut cur));
            } else {
                cur.clear();
            }
            n = 0;
        }
    }
    out
}

impl ProfanityModel {
    pub fn load(path: &Path) -> Result<ProfanityModel, SafetyError> {
        let err = |msg: String| SafetyError::Model {
            path: path.display().to_string(),
            msg,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        Self::parse(&text).map_err(err)
    }

    pub fn parse(text: &str) -> Result<ProfanityModel, String> {
        let f: File =
            serde_json::from_str(text).map_err(|e| format!("not an exported model: {e}"))?;
        let n = f.idf.len();
        if f.classifiers.is_empty() || f.classifiers.iter().any(|c| c.coef.len() != n) {
            return Err(format!("classifiers must have {n} coefficients each"));
        }
        if f.vocab.values().any(|&i| i >= n) {
            return Err("a vocabulary index is out of range".into());
        }
        Ok(ProfanityModel { f })
    }

    /// Probability that `text` is offensive, 0..=1.
    pub fn score(&self, text: &str) -> f64 {
        let mut tf: HashMap<usize, f64> = HashMap::new();
        for t in tokens(text) {
            if let Some(&i) = self.f.vocab.get(&t) {
                *tf.entry(i).or_insert(0.0) += 1.0;
            }
        }
        let mut x: Vec<(usize, f64)> = tf
            .into_iter()
            .map(|(i, c)| (i, c * self.f.idf[i]))
            .collect();
        let norm = x.iter().map(|(_, v)| v * v).sum::<f64>().sqrt();
        if norm > 0.0 {
            for (_, v) in &mut x {
                *v /= norm;
            }
        }
        let ps: f64 = self
            .f
            .classifiers
            .iter()
            .map(|c| {
                let m = c.intercept + x.iter().map(|(i, v)| c.coef[*i] * v).sum::<f64>();
                1.0 / (1.0 + (c.a * m + c.b).exp())
            })
            .sum();
        ps / self.f.classifiers.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_sklearns_pattern() {
        assert_eq!(
            tokens("A fox, 2 DOGS & ünïcode_x!"),
            ["fox", "dogs", "ünïcode_x"]
        );
        assert!(tokens("a b c").is_empty());
    }

    #[test]
    fn scores_like_the_calibrated_svm() {
        // One term "bad" (idf 2), one SVM with coef 3 and sigmoid a=-2, b=0.
        let m = ProfanityModel::parse(
            r#"{"vocab":{"bad":0,"good":1},"idf":[2.0,1.0],
                "classifiers":[{"coef":[3.0,-1.0],"intercept":-1.0,"a":-2.0,"b":0.0}]}"#,
        )
        .unwrap();
        // "bad bad": x = [1, 0] after L2 → margin 2 → 1/(1+e^-4).
        let want = 1.0 / (1.0 + (-4.0f64).exp());
        assert!((m.score("Bad bad") - want).abs() < 1e-12);
        // No known term: margin = intercept.
        let none = 1.0 / (1.0 + (2.0f64).exp());
        assert!((m.score("zzz") - none).abs() < 1e-12);
        assert!(ProfanityModel::parse(r#"{"vocab":{},"idf":[1.0],"classifiers":[]}"#).is_err());
    }

    #[test]
    fn a_missing_file_names_the_setup_command() {
        let e = ProfanityModel::load(Path::new("/nonexistent/profanity.json"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("setup-models.sh") && e.contains("profanity.json"),
            "{e}"
        );
    }
}
