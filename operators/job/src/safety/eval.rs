//! `vidflow safety eval`: runs the prompt checker over a labelled JSONL
//! set (`prompt`, `label` allow|block, `category`) and reports the block
//! rate per harmful category, the false-positive rate over the `allow`
//! lines, each with a 95% Wilson interval (so a small set is not read as
//! more certain than it is), and latency percentiles. A line may carry a
//! `negative_prompt`; both texts are checked as a job's are.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{PromptChecker, SafetyError};

#[derive(Debug, Deserialize)]
pub struct Labelled {
    pub prompt: String,
    #[serde(default)]
    pub negative_prompt: String,
    pub label: String,
    pub category: String,
    /// How the prompt is written (our corpus: `plain`, `misspelled`,
    /// `leetspeak`, ...); sets that carry it are also reported by style.
    #[serde(default)]
    pub style: Option<String>,
}

/// Per writing style: harmful prompts and how many were blocked, benign
/// prompts and how many were blocked.
#[derive(Debug, Default, Clone, Serialize)]
pub struct StyleRates {
    pub harmful: usize,
    pub harmful_blocked: usize,
    pub benign: usize,
    pub benign_blocked: usize,
}

/// Parses the set; a bad line is an error naming its number.
pub fn parse_set(text: &str) -> Result<Vec<Labelled>, SafetyError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let l: Labelled = serde_json::from_str(line).map_err(|e| SafetyError::Input {
            field: format!("line {}", i + 1),
            msg: e.to_string(),
        })?;
        if l.label != "allow" && l.label != "block" {
            return Err(SafetyError::Input {
                field: format!("line {} label", i + 1),
                msg: format!("{:?}: must be allow or block", l.label),
            });
        }
        out.push(l);
    }
    Ok(out)
}

#[derive(Debug, Serialize)]
pub struct Miss {
    pub prompt: String,
    pub label: String,
    pub category: String,
    /// What the checker said (its category, or "allow").
    pub got: String,
    pub reason: String,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub n: usize,
    pub policy_version: String,
    pub model_versions: Vec<String>,
    /// Blocked share of each harmful category's prompts.
    pub block_rate: BTreeMap<String, f64>,
    /// 95% Wilson interval of each block rate.
    pub block_rate_ci95: BTreeMap<String, (f64, f64)>,
    /// Prompts per harmful category.
    pub counts: BTreeMap<String, usize>,
    /// Blocked share of the `allow` prompts.
    pub false_positive_rate: f64,
    pub false_positive_ci95: (f64, f64),
    pub allow_count: usize,
    pub latency_ms_p50: f64,
    pub latency_ms_p95: f64,
    pub latency_ms_max: f64,
    pub misses: Vec<Miss>,
    /// By writing style, for sets whose lines carry `style`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub by_style: BTreeMap<String, StyleRates>,
    /// Every prompt's decision and scores (with `--details`, for tuning).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<Detail>,
}

#[derive(Debug, Serialize)]
pub struct Detail {
    pub prompt: String,
    pub label: String,
    pub category: String,
    pub got: String,
    pub scores: BTreeMap<String, f64>,
}

/// The 95% Wilson score interval of `k` successes in `n` trials: unlike
/// the normal approximation it stays inside 0..=1 and is honest at rates
/// near 0 or 1, where ours live (100 of 100 blocked is [96.3%, 100%]).
pub fn wilson95(k: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let z = 1.959_963_984_540_054_f64;
    let (k, n) = (k as f64, n as f64);
    let p = k / n;
    let d = 1.0 + z * z / n;
    let centre = (p + z * z / (2.0 * n)) / d;
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / d;
    // At k = 0 and k = n the bound is exactly 0 or 1; say so rather than
    // leave the rounding of centre ∓ half.
    let lo = if k == 0.0 {
        0.0
    } else {
        (centre - half).max(0.0)
    };
    let hi = if k == n {
        1.0
    } else {
        (centre + half).min(1.0)
    };
    (lo, hi)
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    // Nearest rank.
    let r = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[r.clamp(1, sorted.len()) - 1]
}

pub fn run(
    checker: &PromptChecker,
    set: &[Labelled],
    tenant: &str,
    details: bool,
) -> Result<Report, SafetyError> {
    // One untimed call: the first pays one-off allocation and page-in costs
    // that a running service has already paid.
    if let Some(first) = set.first() {
        checker.check_job(tenant, &first.prompt, &first.negative_prompt)?;
    }
    let mut lat = Vec::with_capacity(set.len());
    let mut blocked: BTreeMap<String, usize> = BTreeMap::new();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let (mut fp, mut allow_n) = (0usize, 0usize);
    let mut misses = Vec::new();
    let mut detail = Vec::new();
    let mut by_style: BTreeMap<String, StyleRates> = BTreeMap::new();
    for l in set {
        let t0 = Instant::now();
        let d = checker.check_job(tenant, &l.prompt, &l.negative_prompt)?;
        lat.push(t0.elapsed().as_secs_f64() * 1e3);
        let wrong = if l.label == "block" {
            *counts.entry(l.category.clone()).or_default() += 1;
            if !d.allowed {
                *blocked.entry(l.category.clone()).or_default() += 1;
            }
            d.allowed
        } else {
            allow_n += 1;
            if !d.allowed {
                fp += 1;
            }
            !d.allowed
        };
        if let Some(st) = &l.style {
            let r = by_style.entry(st.clone()).or_default();
            if l.label == "block" {
                r.harmful += 1;
                r.harmful_blocked += usize::from(!d.allowed);
            } else {
                r.benign += 1;
                r.benign_blocked += usize::from(!d.allowed);
            }
        }
        if details {
            detail.push(Detail {
                prompt: l.prompt.clone(),
                label: l.label.clone(),
                category: l.category.clone(),
                got: d.category.clone().unwrap_or_else(|| "allow".into()),
                scores: d.scores.clone(),
            });
        }
        if wrong {
            misses.push(Miss {
                prompt: l.prompt.clone(),
                label: l.label.clone(),
                category: l.category.clone(),
                got: d.category.clone().unwrap_or_else(|| "allow".into()),
                reason: d.reason.clone(),
            });
        }
    }
    lat.sort_by(f64::total_cmp);
    Ok(Report {
        n: set.len(),
        policy_version: checker.policy.version.clone(),
        model_versions: checker.model_versions().to_vec(),
        block_rate: counts
            .iter()
            .map(|(c, &n)| {
                (
                    c.clone(),
                    *blocked.get(c).unwrap_or(&0) as f64 / n.max(1) as f64,
                )
            })
            .collect(),
        block_rate_ci95: counts
            .iter()
            .map(|(c, &n)| (c.clone(), wilson95(*blocked.get(c).unwrap_or(&0), n)))
            .collect(),
        counts,
        false_positive_rate: fp as f64 / allow_n.max(1) as f64,
        false_positive_ci95: wilson95(fp, allow_n),
        allow_count: allow_n,
        latency_ms_p50: percentile(&lat, 50.0),
        latency_ms_p95: percentile(&lat, 95.0),
        latency_ms_max: lat.last().copied().unwrap_or(0.0),
        misses,
        by_style,
        details: detail,
    })
}

/// The report's figures as a plain-text table, without the prompts (what a
/// log of a held-out set may show).
pub fn summary(r: &Report) -> String {
    let mut s = format!(
        "policy {}  models {}\n{:<20} {:>7} {:>10}  {}\n",
        r.policy_version,
        r.model_versions.join(", "),
        "category",
        "prompts",
        "blocked",
        "95% interval"
    );
    let ci = |(lo, hi): (f64, f64)| format!("[{:.1}%, {:.1}%]", lo * 100.0, hi * 100.0);
    for (c, rate) in &r.block_rate {
        s.push_str(&format!(
            "{:<20} {:>7} {:>9.1}%  {}\n",
            c,
            r.counts.get(c).unwrap_or(&0),
            rate * 100.0,
            ci(r.block_rate_ci95.get(c).copied().unwrap_or((0.0, 1.0)))
        ));
    }
    s.push_str(&format!(
        "{:<20} {:>7} {:>9.1}%  {}  (false positives)\n",
        "allow",
        r.allow_count,
        r.false_positive_rate * 100.0,
        ci(r.false_positive_ci95)
    ));
    s.push_str(&format!(
        "latency per prompt: p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms\n",
        r.latency_ms_p50, r.latency_ms_p95, r.latency_ms_max
    ));
    if !r.by_style.is_empty() {
        s.push_str(&format!(
            "{:<20} {:>16} {:>16}\n",
            "style", "harmful blocked", "benign blocked"
        ));
        let pct =
            |k: usize, n: usize| format!("{k}/{n} {:.1}%", 100.0 * k as f64 / n.max(1) as f64);
        for (st, x) in &r.by_style {
            s.push_str(&format!(
                "{:<20} {:>16} {:>16}\n",
                st,
                pct(x.harmful_blocked, x.harmful),
                pct(x.benign_blocked, x.benign)
            ));
        }
    }
    s
}

/// The report as a plain-text table, then every miss with its prompt.
pub fn table(r: &Report) -> String {
    let mut s = summary(r);
    for m in &r.misses {
        s.push_str(&format!(
            "miss [{} {}] -> {}: {:?} {}\n",
            m.label, m.category, m.got, m.prompt, m.reason
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_intervals_match_the_textbook() {
        // 100 of 100: the lower bound is 96.30%; 0 of 500: the upper 0.76%.
        let (lo, hi) = wilson95(100, 100);
        assert!((lo - 0.9630).abs() < 1e-4 && hi == 1.0, "{lo} {hi}");
        let (lo, hi) = wilson95(0, 500);
        assert!(lo == 0.0 && (hi - 0.00762).abs() < 1e-4, "{hi}");
        // 78 of 100: [0.6894, 0.8505].
        let (lo, hi) = wilson95(78, 100);
        assert!(
            (lo - 0.6894).abs() < 1e-3 && (hi - 0.8505).abs() < 1e-3,
            "{lo} {hi}"
        );
        assert_eq!(wilson95(0, 0), (0.0, 1.0));
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(|x| x as f64).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 95.0), 95.0);
        assert_eq!(percentile(&[3.0], 95.0), 3.0);
    }

    #[test]
    fn bad_lines_are_named() {
        let e =
            parse_set("{\"prompt\":\"a\",\"label\":\"allow\",\"category\":\"safe\"}\nnot json\n")
                .err()
                .unwrap();
        assert!(e.to_string().contains("line 2"), "{e}");
        let e = parse_set("{\"prompt\":\"a\",\"label\":\"maybe\",\"category\":\"safe\"}")
            .err()
            .unwrap();
        assert!(e.to_string().contains("line 1 label"), "{e}");
    }
}

/// The frame check over labelled images (`<dir>/allow/*`, `<dir>/block/*`,
/// PNG or JPEG), each scored as a one-frame video.
#[derive(Debug, Serialize, Default)]
pub struct VisualReport {
    pub allow_count: usize,
    pub block_count: usize,
    /// Blocked share of `block/` images.
    pub detection_rate: f64,
    /// Blocked share of `allow/` images.
    pub false_positive_rate: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p95: f64,
    pub scores: BTreeMap<String, f64>,
}

impl VisualReport {
    pub fn total(&self) -> usize {
        self.allow_count + self.block_count
    }

    pub fn table(&self) -> String {
        let mut s = format!(
            "{:<8} {:>6} {:>9}\nallow    {:>6} {:>8.1}%  (false positives)\nblock    {:>6} {:>8.1}%  (detected)\nlatency per image: p50 {:.1} ms, p95 {:.1} ms\n",
            "label",
            "images",
            "blocked",
            self.allow_count,
            self.false_positive_rate * 100.0,
            self.block_count,
            self.detection_rate * 100.0,
            self.latency_ms_p50,
            self.latency_ms_p95
        );
        for (k, v) in &self.scores {
            s.push_str(&format!("  {k}: nsfw {v:.4}\n"));
        }
        s
    }
}

pub fn eval_visual(
    checker: &super::VisualChecker,
    dir: &std::path::Path,
) -> Result<VisualReport, SafetyError> {
    let mut r = VisualReport::default();
    let mut lat = Vec::new();
    let (mut fp, mut hit) = (0usize, 0usize);
    for label in ["allow", "block"] {
        let sub = dir.join(label);
        let Ok(rd) = std::fs::read_dir(&sub) else {
            continue;
        };
        let mut files: Vec<_> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for f in files {
            let img = image::open(&f).map_err(|e| SafetyError::Input {
                field: f.display().to_string(),
                msg: e.to_string(),
            })?;
            let rgb = img.to_rgb8();
            let (w, h) = (rgb.width() as usize, rgb.height() as usize);
            let t0 = Instant::now();
            let d = checker.check("", w, h, 1, rgb.as_raw())?;
            lat.push(t0.elapsed().as_secs_f64() * 1e3);
            let name = format!(
                "{label}/{}",
                f.file_name().unwrap_or_default().to_string_lossy()
            );
            r.scores
                .insert(name, d.scores.get("nsfw.max").copied().unwrap_or(0.0));
            if label == "allow" {
                r.allow_count += 1;
                fp += usize::from(!d.allowed);
            } else {
                r.block_count += 1;
                hit += usize::from(!d.allowed);
            }
        }
    }
    lat.sort_by(f64::total_cmp);
    r.detection_rate = hit as f64 / r.block_count.max(1) as f64;
    r.false_positive_rate = fp as f64 / r.allow_count.max(1) as f64;
    r.latency_ms_p50 = percentile(&lat, 50.0);
    r.latency_ms_p95 = percentile(&lat, 95.0);
    Ok(r)
}
