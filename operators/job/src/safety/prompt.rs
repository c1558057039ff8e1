//! The prompt check that runs before any compute. Signals, any of which
//! blocks:
//! - the learned head ([`super::head`]): per-category probabilities from
//!   the prompt's character n-grams and MiniLM embedding, against
//!   thresholds chosen on our validation split (the main recall);
//! - policy terms and patterns per category (exact, auditable, cheap; they
//!   name what they matched);
//! - alt-profanity-check's offensive-language probability.
//!
//! The zero-shot similarity of the embedding to category exemplars (which
//! must also beat the nearest *safe* exemplar by a margin) is always
//! scored; it blocks only in a policy without a head, or with
//! `[head] exemplars_block = true`.
//!
//! The real-person rule sits on top: a named real person plus any harmful
//! or deceptive context (a category firing, a context term, or, where
//! exemplars block, a category similarity above the lower context
//! threshold) blocks as `real_person`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use vidflow_gpu::bert::{cosine, BertEncoder};

use super::evasion::unevade;
use super::policy::Policy;
use super::profanity::ProfanityModel;
use super::text::{invisible, matches, normalise, terms, Term};
use super::{Check, Decision, PromptText, SafetyError};

struct Category {
    name: String,
    threshold: f32,
    terms: Vec<Term>,
    allow: Vec<Term>,
    patterns: Vec<regex::Regex>,
    exemplars: Vec<Vec<f32>>,
}

struct TenantRules {
    scale: f32,
    extra: BTreeMap<String, Vec<Term>>,
    all_real_people: bool,
}

/// A loaded prompt checker: the policy plus the models it scores with.
pub struct PromptChecker {
    pub policy: Policy,
    cats: Vec<Category>,
    safe: Vec<Vec<f32>>,
    names: Vec<Term>,
    context: Vec<Term>,
    tenants: BTreeMap<String, TenantRules>,
    encoder: Option<BertEncoder>,
    profanity: Option<ProfanityModel>,
    model_versions: Vec<String>,
    /// `[negative_prompt] steer_terms`, per category.
    steer: Vec<(String, Vec<Term>)>,
}

impl PromptChecker {
    /// `encoder` or `profanity` may be absent only where a caller chose to
    /// run without them (unit tests of the policy logic); the service loads
    /// both through [`super::models::load_prompt_models`].
    pub fn new(
        policy: Policy,
        encoder: Option<BertEncoder>,
        profanity: Option<ProfanityModel>,
        model_versions: Vec<String>,
    ) -> Result<PromptChecker, SafetyError> {
        let embed_all = |texts: &[String], what: &str| -> Result<Vec<Vec<f32>>, SafetyError> {
            match &encoder {
                None => Ok(Vec::new()),
                Some(e) => e.embed_batch(texts).map_err(|err| SafetyError::Policy {
                    path: policy.version.clone(),
                    msg: format!("{what}: {err}"),
                }),
            }
        };
        let mut cats = Vec::new();
        for (name, c) in &policy.file.categories {
            cats.push(Category {
                name: name.clone(),
                threshold: c.threshold,
                terms: terms(&c.terms),
                allow: terms(&c.allow_terms),
                patterns: c
                    .patterns
                    .iter()
                    .map(|p| regex::Regex::new(p).expect("checked in Policy::build"))
                    .collect(),
                exemplars: embed_all(&c.exemplars, &format!("categories.{name}.exemplars"))?,
            });
        }
        let safe = embed_all(
            &policy.file.embedding.safe_exemplars,
            "embedding.safe_exemplars",
        )?;
        if let (Some(h), Some(e)) = (&policy.head, &encoder) {
            let dim = e
                .embed("width")
                .map_err(|err| SafetyError::Policy {
                    path: policy.version.clone(),
                    msg: format!("head: {err}"),
                })?
                .len();
            if dim != h.input_dim() {
                return Err(SafetyError::Policy {
                    path: policy.version.clone(),
                    msg: format!(
                        "head: reads {}-wide embeddings, the encoder {:?} writes {dim}",
                        h.input_dim(),
                        h.encoder
                    ),
                });
            }
        }
        let names = policy.names.iter().filter_map(|n| Term::new(n)).collect();
        let context = terms(&policy.file.real_person.context_terms);
        let tenants = policy
            .file
            .tenants
            .iter()
            .map(|(t, o)| {
                (
                    t.clone(),
                    TenantRules {
                        scale: o.threshold_scale.unwrap_or(1.0),
                        extra: o
                            .extra_terms
                            .iter()
                            .map(|(c, ts)| (c.clone(), terms(ts)))
                            .collect(),
                        all_real_people: o.block_all_real_people,
                    },
                )
            })
            .collect();
        let steer = policy
            .file
            .negative_prompt
            .steer_terms
            .iter()
            .map(|(c, ts)| (c.clone(), terms(ts)))
            .collect();
        Ok(PromptChecker {
            steer,
            policy,
            cats,
            safe,
            names,
            context,
            tenants,
            encoder,
            profanity,
            model_versions,
        })
    }

    pub fn model_versions(&self) -> &[String] {
        &self.model_versions
    }

    /// Decides a job's texts for one tenant: the prompt, then the
    /// negative prompt (`[negative_prompt]` of the policy). A block
    /// records which text triggered it.
    pub fn check_job(
        &self,
        tenant: &str,
        prompt: &str,
        negative: &str,
    ) -> Result<Decision, SafetyError> {
        let t0 = Instant::now();
        let mut d = self.check(tenant, prompt)?;
        if !d.allowed {
            d.text = Some(PromptText::Prompt);
            return Ok(d);
        }
        if negative.trim().is_empty() {
            return Ok(d);
        }
        let readings = self.readings(negative, false)?;
        let np = &self.policy.file.negative_prompt;
        let mut verdict: Option<(String, String)> = None;
        for (cat, steer) in &self.steer {
            for r in &readings {
                let words: Vec<&str> = r.norm.split(' ').filter(|w| !w.is_empty()).collect();
                if let Some(t) = matches(steer, &[], &words).first() {
                    verdict = Some((
                        cat.clone(),
                        format!(
                            "negative prompt steers toward {cat}: term {:?}{}",
                            t.text,
                            r.note()
                        ),
                    ));
                    break;
                }
            }
            if verdict.is_some() {
                break;
            }
        }
        if verdict.is_none() && !np.text_categories.is_empty() {
            let n = self.check(tenant, negative)?;
            for (k, v) in &n.scores {
                d.scores.insert(format!("negative.{k}"), *v);
            }
            if let Some(c) = n.category.filter(|c| np.text_categories.contains(c)) {
                verdict = Some((c, format!("negative prompt: {}", n.reason)));
            }
        }
        d.latency_ms += t0.elapsed().as_secs_f64() * 1e3;
        if let Some((category, reason)) = verdict {
            d.allowed = false;
            d.category = Some(category);
            d.reason = reason;
            d.text = Some(PromptText::NegativePrompt);
        }
        Ok(d)
    }

    /// Each reading of `text` (as written first, then with evasions
    /// undone if that differs) with its embedding: what the learned head
    /// is trained on (`vidflow safety embed`).
    pub fn embed_readings(&self, text: &str) -> Result<Vec<(String, Vec<f32>)>, SafetyError> {
        Ok(self
            .readings(text, true)?
            .into_iter()
            .filter_map(|r| r.emb.map(|e| (r.text, e)))
            .collect())
    }

    /// The ways one text is read: as written and, where it differs, with
    /// its evasions undone ([`unevade`]).
    fn readings(&self, text: &str, embed: bool) -> Result<Vec<Reading>, SafetyError> {
        let norm = normalise(text);
        let alt = unevade(text);
        let mut out = vec![Reading {
            // Invisible characters mean nothing, in either reading.
            text: text.chars().filter(|&c| !invisible(c)).collect(),
            norm: norm.clone(),
            unevaded: false,
            emb: None,
        }];
        if alt != norm && !alt.is_empty() {
            out.push(Reading {
                text: alt.clone(),
                norm: alt,
                unevaded: true,
                emb: None,
            });
        }
        if let (true, Some(e)) = (embed, &self.encoder) {
            for r in &mut out {
                r.emb = Some(e.embed(&r.text).map_err(|err| SafetyError::Input {
                    field: "prompt".into(),
                    msg: err.to_string(),
                })?);
            }
        }
        Ok(out)
    }

    /// Decides one prompt for one tenant. Deterministic for a given policy
    /// and models: a redelivered job gets the same answer (and the service
    /// reuses the recorded one anyway). Every signal is taken on each
    /// reading of the prompt (as written, and with evasions undone); the
    /// strongest counts.
    pub fn check(&self, tenant: &str, prompt: &str) -> Result<Decision, SafetyError> {
        self.check_with(tenant, prompt, true)
    }

    /// The decision of the written rules alone (terms, patterns, the
    /// offensive-language model, the real-person rule), without the learned
    /// head or exemplar similarity: what the head's thresholds are chosen
    /// on top of (`vidflow safety embed`).
    pub fn check_rules(&self, tenant: &str, prompt: &str) -> Result<Decision, SafetyError> {
        self.check_with(tenant, prompt, false)
    }

    fn check_with(
        &self,
        tenant: &str,
        prompt: &str,
        learned: bool,
    ) -> Result<Decision, SafetyError> {
        let t0 = Instant::now();
        let readings = self.readings(prompt, learned)?;
        let words: Vec<Vec<&str>> = readings
            .iter()
            .map(|r| r.norm.split(' ').filter(|w| !w.is_empty()).collect())
            .collect();
        let rules = self.tenants.get(tenant);
        let scale = rules.map(|r| r.scale).unwrap_or(1.0);
        let mut scores = BTreeMap::new();
        if readings.len() > 1 {
            scores.insert("evasion".to_string(), 1.0);
        }
        let best = |v: &[f32], set: &[Vec<f32>]| -> f32 {
            set.iter().map(|x| cosine(v, x)).fold(-1.0, f32::max)
        };
        let safe_sims: Vec<f32> = readings
            .iter()
            .map(|r| r.emb.as_ref().map(|v| best(v, &self.safe)).unwrap_or(-1.0))
            .collect();
        let has_emb = readings[0].emb.is_some();
        if has_emb {
            scores.insert("embedding.safe".to_string(), safe_sims[0] as f64);
        }
        let margin = self.policy.file.embedding.margin;
        // With a learned head, exemplar similarity is an explanation only.
        let exemplars_block = learned
            && self
                .policy
                .file
                .head
                .as_ref()
                .is_none_or(|h| h.exemplars_block);
        // (category, strength, why) of every category that fires.
        let mut fired: Vec<(String, f32, String)> = Vec::new();
        let mut context_hit: Option<String> = None;
        let ctx_thr = self.policy.file.real_person.context_threshold;
        for c in &self.cats {
            let thr = c.threshold * scale;
            let mut top_sim = -1.0f32;
            let mut cat_fired: Option<(f32, String)> = None;
            for (ri, r) in readings.iter().enumerate() {
                let sim = r
                    .emb
                    .as_ref()
                    .map(|v| best(v, &c.exemplars))
                    .unwrap_or(-1.0);
                top_sim = top_sim.max(sim);
                let safe_sim = safe_sims[ri];
                let mut hits: Vec<&Term> = matches(&c.terms, &c.allow, &words[ri]);
                if let Some(extra) = rules.and_then(|r| r.extra.get(&c.name)) {
                    hits.extend(matches(extra, &c.allow, &words[ri]));
                }
                let pattern = c.patterns.iter().find(|p| p.is_match(&r.norm));
                let by_sim = exemplars_block && sim >= thr && sim - safe_sim >= margin;
                let this = if let Some(t) = hits.first() {
                    scores.insert(format!("terms.{}", c.name), hits.len() as f64);
                    Some((2.0 + sim, format!("term {:?}{}", t.text, r.note())))
                } else if let Some(p) = pattern {
                    scores.insert(format!("patterns.{}", c.name), 1.0);
                    Some((2.0 + sim, format!("pattern {:?}{}", p.as_str(), r.note())))
                } else if by_sim {
                    Some((
                        sim,
                        format!(
                            "similar to {} exemplars ({sim:.3} >= {thr:.3}){}",
                            c.name,
                            r.note()
                        ),
                    ))
                } else {
                    if exemplars_block
                        && context_hit.is_none()
                        && sim >= ctx_thr * scale
                        && sim - safe_sim >= margin
                    {
                        context_hit = Some(format!("{} context ({sim:.3})", c.name));
                    }
                    None
                };
                if let Some(t) = this {
                    if cat_fired.as_ref().is_none_or(|(s, _)| t.0 > *s) {
                        cat_fired = Some(t);
                    }
                }
            }
            if has_emb && !c.exemplars.is_empty() {
                scores.insert(format!("embedding.{}", c.name), top_sim as f64);
            }
            if let Some((strength, why)) = cat_fired {
                fired.push((c.name.clone(), strength, why));
            }
        }
        if let Some(h) = self.policy.head.as_ref().filter(|_| learned && has_emb) {
            // Highest probability per class over the readings, and which.
            let mut top = vec![(0.0f32, 0usize); h.classes.len()];
            for (ri, r) in readings.iter().enumerate() {
                if let Some(v) = &r.emb {
                    for (ci, p) in h.probabilities(&r.text, v).into_iter().enumerate() {
                        if p > top[ci].0 {
                            top[ci] = (p, ri);
                        }
                    }
                }
            }
            for (ci, c) in h.classes.iter().enumerate().skip(1) {
                let (p, ri) = top[ci];
                scores.insert(format!("head.{c}"), p as f64);
                let thr = h.thresholds[c] * scale;
                if p >= thr {
                    fired.push((
                        c.clone(),
                        1.0 + p,
                        format!(
                            "learned head: {c} {p:.3} >= {thr:.3}{}",
                            readings[ri].note()
                        ),
                    ));
                }
            }
        }
        if let Some(p) = &self.profanity {
            let (s, r) = readings.iter().map(|r| (p.score(&r.text), r)).fold(
                (f64::MIN, &readings[0]),
                |a, b| if b.0 > a.0 { b } else { a },
            );
            scores.insert("profanity".to_string(), s);
            if s >= self.policy.file.profanity.threshold {
                fired.push((
                    self.policy.file.profanity.category.clone(),
                    1.0 + s as f32,
                    format!("offensive language ({s:.3}){}", r.note()),
                ));
            }
        }
        let name = self
            .names
            .iter()
            .find(|n| words.iter().any(|w| !n.find(w).is_empty()));
        let mut verdict: Option<(String, String)> = None;
        if let Some(n) = name {
            scores.insert("real_person".to_string(), 1.0);
            let ctx = words
                .iter()
                .find_map(|w| matches(&self.context, &[], w).first().copied());
            let why = if let Some((c, _, w)) = fired.first() {
                Some(format!("{c}: {w}"))
            } else if let Some(t) = ctx {
                Some(format!("context term {:?}", t.text))
            } else if let Some(c) = &context_hit {
                Some(c.clone())
            } else if rules.map(|r| r.all_real_people).unwrap_or(false) {
                Some("tenant blocks every real person".to_string())
            } else {
                None
            };
            if let Some(why) = why {
                verdict = Some((
                    "real_person".into(),
                    format!("names a real person ({:?}) with {why}", n.text),
                ));
            }
        }
        if verdict.is_none() {
            fired.sort_by(|a, b| b.1.total_cmp(&a.1));
            verdict = fired.into_iter().next().map(|(c, _, why)| (c, why));
        }
        let latency_ms = t0.elapsed().as_secs_f64() * 1e3;
        let (allowed, category, reason) = match verdict {
            Some((category, reason)) => (false, Some(category), reason),
            None => (true, None, String::new()),
        };
        Ok(Decision {
            stage: Check::Prompt,
            allowed,
            category,
            reason,
            scores,
            policy_version: self.policy.version.clone(),
            model_versions: self.model_versions.clone(),
            latency_ms,
            text: None,
        })
    }
}

/// One reading of a text (see [`PromptChecker::readings`]).
struct Reading {
    /// What the encoder and the offensive-language model read.
    text: String,
    /// What terms and patterns match against.
    norm: String,
    unevaded: bool,
    emb: Option<Vec<f32>>,
}

impl Reading {
    /// How a reason names this reading.
    fn note(&self) -> String {
        if self.unevaded {
            format!(" (read without evasion: {:?})", self.norm)
        } else {
            String::new()
        }
    }
}

/// Loads the policy and both prompt models from `models_dir`.
pub fn load(policy_path: &Path, models_dir: &Path) -> Result<PromptChecker, SafetyError> {
    let policy = Policy::load(policy_path)?;
    let (encoder, profanity, versions) =
        super::models::load_prompt_models(models_dir, &policy.file.embedding.model)?;
    PromptChecker::new(policy, Some(encoder), Some(profanity), versions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::safety::policy::PolicyFile;

    const POLICY: &str = r#"
version = "test"
[real_person]
names = ["joe biden", "the pope"]
context_terms = ["naked", "fake", "confess*"]
[categories.sexual]
threshold = 0.5
terms = ["nude", "porn*"]
allow_terms = ["nude lipstick"]
[categories.violence_gore]
threshold = 0.5
terms = ["gore"]
patterns = ['\bhead (being )?cut off\b']
[categories.hate]
threshold = 0.5
terms = ["vermin"]
[negative_prompt]
steer_terms = { sexual = ["clothes", "clothed", "censor*"] }
text_categories = ["hate"]
[tenants.kids]
threshold_scale = 0.9
block_all_real_people = true
extra_terms = { violence_gore = ["blood"] }
"#;

    /// The policy logic alone (terms, patterns, names, tenants): the
    /// learned scorers are exercised against the real models in
    /// tests/safety.rs.
    fn checker() -> PromptChecker {
        let f: PolicyFile = toml::from_str(POLICY).unwrap();
        let names = f.real_person.names.clone();
        let p = Policy::build(f, names, POLICY).unwrap();
        PromptChecker::new(p, None, None, vec![]).unwrap()
    }

    #[test]
    fn terms_patterns_and_allowed_phrases() {
        let c = checker();
        let d = c.check("t", "A NUDE woman on a bed").unwrap();
        assert!(!d.allowed);
        assert_eq!(d.category.as_deref(), Some("sexual"));
        assert!(d.reason.contains("nude"), "{}", d.reason);
        assert!(!c.check("t", "pornographic video").unwrap().allowed);
        assert!(
            c.check("t", "a model trying nude lipstick")
                .unwrap()
                .allowed
        );
        let d = c.check("t", "a man's head being cut off").unwrap();
        assert_eq!(d.category.as_deref(), Some("violence_gore"));
        assert!(
            c.check("t", "a red fox running through snow")
                .unwrap()
                .allowed
        );
        assert!(d.policy_version.starts_with("test+"));
    }

    #[test]
    fn real_people_need_a_harmful_or_deceptive_context() {
        let c = checker();
        assert!(c.check("t", "joe biden giving a speech").unwrap().allowed);
        let d = c.check("t", "Joe Biden confessing to a crime").unwrap();
        assert_eq!(d.category.as_deref(), Some("real_person"));
        let d = c.check("t", "the pope in a nude scene").unwrap();
        assert_eq!(d.category.as_deref(), Some("real_person"), "{d:?}");
        assert!(c.check("t", "a popemobile driving by").unwrap().allowed);
    }

    #[test]
    fn tenant_overrides_only_add() {
        let c = checker();
        assert!(
            c.check("t", "a nosebleed, a drop of blood")
                .unwrap()
                .allowed
        );
        assert!(
            !c.check("kids", "a nosebleed, a drop of blood")
                .unwrap()
                .allowed
        );
        assert!(
            !c.check("kids", "joe biden giving a speech")
                .unwrap()
                .allowed
        );
        // Everything the base policy blocks stays blocked for the tenant.
        assert!(!c.check("kids", "gore").unwrap().allowed);
    }

    #[test]
    fn evasion_forms_are_read_as_meant() {
        let c = checker();
        for p in [
            "a n\u{0430}ked... no: a nud\u{0435} woman",
            "a n u d e woman",
            "p0rn0graphic video",
            "ａ ｎｕｄｅ woman",
        ] {
            let d = c.check("t", p).unwrap();
            assert_eq!(d.category.as_deref(), Some("sexual"), "{p}: {d:?}");
            assert!(d.reason.contains("read without evasion"), "{}", d.reason);
            assert_eq!(d.scores.get("evasion"), Some(&1.0));
        }
        // Invisible characters never split a word, in either reading.
        let d = c.check("t", "a nu\u{200b}de woman").unwrap();
        assert_eq!(d.category.as_deref(), Some("sexual"), "{d:?}");
        // The plain reading still decides plain prompts.
        let d = c.check("t", "A NUDE woman").unwrap();
        assert!(!d.reason.contains("evasion"), "{}", d.reason);
        assert!(
            c.check("t", "a 4k video of 3 cats in 1080p")
                .unwrap()
                .allowed
        );
    }

    #[test]
    fn the_negative_prompt_is_checked_for_steering_and_harmful_words() {
        let c = checker();
        // What a video is steered away from may name harm: that is safe.
        let d = c
            .check_job("t", "a woman on a beach", "nude, gore")
            .unwrap();
        assert!(d.allowed, "{d:?}");
        // Steering away from clothes is not.
        let d = c
            .check_job("t", "a woman on a beach", "blurry, cl0thed")
            .unwrap();
        assert!(!d.allowed);
        assert_eq!(d.category.as_deref(), Some("sexual"));
        assert_eq!(d.text, Some(PromptText::NegativePrompt));
        assert!(
            d.reason.starts_with("negative prompt steers"),
            "{}",
            d.reason
        );
        // Words that are harmful wherever they are written.
        let d = c.check_job("t", "a crowd", "those vermin").unwrap();
        assert_eq!(d.category.as_deref(), Some("hate"));
        assert_eq!(d.text, Some(PromptText::NegativePrompt));
        // A blocked prompt says so.
        let d = c.check_job("t", "gore", "").unwrap();
        assert_eq!(d.text, Some(PromptText::Prompt));
        assert!(c.check_job("t", "a red fox", "").unwrap().text.is_none());
    }

    #[test]
    fn looser_overrides_are_refused_at_load() {
        let text = POLICY.replace("threshold_scale = 0.9", "threshold_scale = 1.5");
        let f: PolicyFile = toml::from_str(&text).unwrap();
        let e = Policy::build(f, vec![], &text).err().unwrap();
        assert!(e.contains("tenants.kids.threshold_scale"), "{e}");
        let bad = POLICY.replace(r"\bhead", r"(\bhead");
        let f: PolicyFile = toml::from_str(&bad).unwrap();
        let e = Policy::build(f, vec![], &bad).err().unwrap();
        assert!(e.contains("categories.violence_gore.patterns"), "{e}");
    }
}
