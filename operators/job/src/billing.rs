//! Prices and charges (`configs/pricing.toml`). Money is integer
//! micro-dollars (1 USD = 1,000,000 µ$), never a float: prices are parsed
//! from decimal strings, and a charge is `price per second × delivered
//! milliseconds / 1000`, which is an exact integer because every price must
//! be a whole number of tenths of a cent per second (µ$ per ms).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::spec::Tier;

/// Resolution classes the price table uses, by the short side of the
/// generated frame: <= 512 → 480p, <= 800 → 720p (LTX's 1280x704 and
/// 1344x768 presets are both "720p-class"), <= 1088 → 1080p, else 4k.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ResClass {
    #[serde(rename = "480p")]
    P480,
    #[serde(rename = "720p")]
    P720,
    #[serde(rename = "1080p")]
    P1080,
    #[serde(rename = "4k")]
    K4,
}

impl ResClass {
    pub fn of(width: u32, height: u32) -> ResClass {
        match width.min(height) {
            0..=512 => ResClass::P480,
            513..=800 => ResClass::P720,
            801..=1088 => ResClass::P1080,
            _ => ResClass::K4,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ResClass::P480 => "480p",
            ResClass::P720 => "720p",
            ResClass::P1080 => "1080p",
            ResClass::K4 => "4k",
        }
    }

    pub const ALL: [ResClass; 4] = [
        ResClass::P480,
        ResClass::P720,
        ResClass::P1080,
        ResClass::K4,
    ];
}

#[derive(Debug, thiserror::Error)]
pub enum PricingError {
    #[error("{path}: {msg}")]
    File { path: String, msg: String },
    #[error("pricing {key} = {value:?}: {msg}")]
    Value {
        key: String,
        value: String,
        msg: String,
    },
}

/// `configs/pricing.toml` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PricingFile {
    version: String,
    /// $ per second of delivered video, `[tiers.<tier>] "<class>" = "0.10"`.
    tiers: BTreeMap<String, BTreeMap<String, String>>,
    /// $ per second added when the job asks for audio.
    audio_per_second: String,
    compute: ComputeFile,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ComputeFile {
    /// Which accelerator the deployment runs on (a key of `hourly`).
    accelerator: String,
    /// $ per accelerator-hour.
    hourly: BTreeMap<String, String>,
}

/// The price table, in µ$ per second.
#[derive(Debug, Clone, PartialEq)]
pub struct Pricing {
    pub version: String,
    prices: BTreeMap<(Tier, ResClass), i64>,
    pub audio_micro_per_s: i64,
    pub accelerator: String,
    /// µ$ per accelerator-hour of the configured accelerator.
    pub accelerator_micro_per_hour: i64,
}

/// Parses a non-negative decimal dollar amount ("0.10", "3", "0.005") to
/// µ$, exactly; more than 6 decimals is an error, not a rounding.
pub fn parse_usd(key: &str, s: &str) -> Result<i64, PricingError> {
    let bad = |msg: &str| PricingError::Value {
        key: key.to_string(),
        value: s.to_string(),
        msg: msg.to_string(),
    };
    let t = s.trim().trim_start_matches('$');
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad("a dollar amount like \"0.10\""));
    }
    if frac.len() > 6 {
        return Err(bad("at most 6 decimals (micro-dollars)"));
    }
    let int: i64 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| bad("too large"))?
    };
    let frac_micro: i64 = format!("{frac:0<6}").parse().unwrap_or(0);
    int.checked_mul(1_000_000)
        .and_then(|v| v.checked_add(frac_micro))
        .ok_or_else(|| bad("too large"))
}

/// µ$ as dollars with 6 decimals ("0.037500").
pub fn format_usd(micro: i64) -> String {
    let sign = if micro < 0 { "-" } else { "" };
    let m = micro.unsigned_abs();
    format!("{sign}{}.{:06}", m / 1_000_000, m % 1_000_000)
}

fn tier_of(s: &str) -> Option<Tier> {
    match s {
        "premium" => Some(Tier::Premium),
        "standard" => Some(Tier::Standard),
        "free" => Some(Tier::Free),
        _ => None,
    }
}

impl Pricing {
    /// The table shipped in `configs/pricing.toml`, embedded.
    pub fn builtin() -> Pricing {
        Self::parse(
            include_str!("../../../configs/pricing.toml"),
            "configs/pricing.toml",
        )
        .expect("the shipped pricing.toml is valid")
    }

    pub fn load(path: &Path) -> Result<Pricing, PricingError> {
        let text = std::fs::read_to_string(path).map_err(|e| PricingError::File {
            path: path.display().to_string(),
            msg: e.to_string(),
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, path: &str) -> Result<Pricing, PricingError> {
        let f: PricingFile = toml::from_str(text).map_err(|e| PricingError::File {
            path: path.to_string(),
            msg: e.to_string(),
        })?;
        let mut prices = BTreeMap::new();
        for (tier_name, row) in &f.tiers {
            let tier = tier_of(tier_name).ok_or_else(|| PricingError::Value {
                key: format!("tiers.{tier_name}"),
                value: tier_name.clone(),
                msg: "tier must be premium, standard or free".into(),
            })?;
            for (class_name, price) in row {
                let key = format!("tiers.{tier_name}.{class_name}");
                let class = ResClass::ALL
                    .into_iter()
                    .find(|c| c.as_str() == class_name)
                    .ok_or_else(|| PricingError::Value {
                        key: key.clone(),
                        value: class_name.clone(),
                        msg: "resolution class must be 480p, 720p, 1080p or 4k".into(),
                    })?;
                prices.insert((tier, class), per_second(&key, price)?);
            }
        }
        for tier in [Tier::Premium, Tier::Standard, Tier::Free] {
            for class in ResClass::ALL {
                if !prices.contains_key(&(tier, class)) {
                    return Err(PricingError::Value {
                        key: format!("tiers.{tier}.{}", class.as_str()),
                        value: String::new(),
                        msg: "missing: every tier needs a price for every class".into(),
                    });
                }
            }
        }
        let hourly = f
            .compute
            .hourly
            .get(&f.compute.accelerator)
            .ok_or_else(|| PricingError::Value {
                key: "compute.accelerator".into(),
                value: f.compute.accelerator.clone(),
                msg: "not a key of [compute.hourly]".into(),
            })?;
        Ok(Pricing {
            version: f.version,
            prices,
            audio_micro_per_s: per_second("audio_per_second", &f.audio_per_second)?,
            accelerator_micro_per_hour: parse_usd(
                &format!("compute.hourly.{}", f.compute.accelerator),
                hourly,
            )?,
            accelerator: f.compute.accelerator,
        })
    }

    /// µ$ per second of video for a tier and class.
    pub fn price(&self, tier: Tier, class: ResClass) -> i64 {
        self.prices.get(&(tier, class)).copied().unwrap_or(0)
    }

    /// What a job delivering `frames` at `fps` costs the tenant.
    pub fn charge(
        &self,
        tier: Tier,
        width: u32,
        height: u32,
        frames: u32,
        fps: f64,
        audio: bool,
    ) -> Charge {
        let class = ResClass::of(width, height);
        let unit = self.price(tier, class) + if audio { self.audio_micro_per_s } else { 0 };
        let ms = billed_ms(frames, fps);
        Charge {
            price_version: self.version.clone(),
            resolution_class: class,
            billed_ms: ms,
            unit_micro_per_s: unit,
            // unit is a multiple of 1000 (checked at load): exact.
            amount_micro: unit / 1000 * ms as i64,
        }
    }

    /// µ$ of accelerator time.
    pub fn compute_cost_micro(&self, accelerator_s: f64) -> i64 {
        (accelerator_s * self.accelerator_micro_per_hour as f64 / 3600.0).round() as i64
    }
}

fn per_second(key: &str, s: &str) -> Result<i64, PricingError> {
    let v = parse_usd(key, s)?;
    if v % 1000 != 0 {
        return Err(PricingError::Value {
            key: key.to_string(),
            value: s.to_string(),
            msg: "per-second prices must be whole tenths of a cent (e.g. 0.105), so that \
                  charges per millisecond are exact"
                .into(),
        });
    }
    Ok(v)
}

/// Delivered video in milliseconds, rounded up: `frames / fps` seconds.
pub fn billed_ms(frames: u32, fps: f64) -> u64 {
    if !(fps.is_finite() && fps > 0.0) {
        return 0;
    }
    // The tiny epsilon keeps exact values (9 frames at 24 fps = 375 ms)
    // from rounding up through float error.
    ((frames as f64 * 1000.0 / fps) - 1e-6).ceil().max(0.0) as u64
}

/// One job's price.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Charge {
    pub price_version: String,
    pub resolution_class: ResClass,
    pub billed_ms: u64,
    pub unit_micro_per_s: i64,
    pub amount_micro: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_table_is_shipped() {
        let p = Pricing::builtin();
        let usd = |t, c| format_usd(p.price(t, c));
        assert_eq!(usd(Tier::Standard, ResClass::P720), "0.100000");
        assert_eq!(usd(Tier::Standard, ResClass::P1080), "0.200000");
        assert_eq!(usd(Tier::Standard, ResClass::K4), "0.500000");
        assert_eq!(usd(Tier::Premium, ResClass::P720), "0.150000");
        assert_eq!(usd(Tier::Premium, ResClass::P1080), "0.400000");
        assert_eq!(usd(Tier::Premium, ResClass::K4), "0.750000");
        assert_eq!(format_usd(p.audio_micro_per_s), "0.050000");
        assert_eq!(p.accelerator_micro_per_hour, 3_000_000);
    }

    #[test]
    fn money_parses_exactly() {
        assert_eq!(parse_usd("k", "0.10").unwrap(), 100_000);
        assert_eq!(parse_usd("k", "3").unwrap(), 3_000_000);
        assert_eq!(parse_usd("k", ".5").unwrap(), 500_000);
        assert_eq!(parse_usd("k", "0.000001").unwrap(), 1);
        for bad in ["", ".", "-1", "1e3", "0.0000001", "abc", "1.2.3"] {
            let e = parse_usd("tiers.free.480p", bad).unwrap_err().to_string();
            assert!(e.contains("tiers.free.480p"), "{bad}: {e}");
        }
        assert_eq!(format_usd(-37_500), "-0.037500");
    }

    #[test]
    fn charges_are_price_times_delivered_seconds() {
        let p = Pricing::builtin();
        // 121 frames at 24 fps = 5.041666.. s → 5042 ms at $0.20/s (1080p).
        let c = p.charge(Tier::Standard, 1920, 1088, 121, 24.0, false);
        assert_eq!(c.resolution_class, ResClass::P1080);
        assert_eq!(c.billed_ms, 5042);
        assert_eq!(c.amount_micro, 200 * 5042);
        let c = p.charge(Tier::Premium, 3840, 2176, 9, 24.0, true);
        assert_eq!(c.billed_ms, 375);
        assert_eq!(c.amount_micro, (750 + 50) * 375);
        // Property: for every tier, class, frame count and common fps the
        // charge is exactly unit/1000 µ$ per billed ms, and billed ms is the
        // smallest whole ms covering the video.
        for tier in [Tier::Premium, Tier::Standard, Tier::Free] {
            for (w, h) in [
                (832, 480),
                (1280, 704),
                (1344, 768),
                (1920, 1088),
                (3840, 2176),
            ] {
                for n in (1..=481).step_by(8) {
                    for fps in [24.0, 25.0, 30.0, 23.976, 60.0] {
                        let c = p.charge(tier, w, h, n, fps, false);
                        let exact = n as f64 * 1000.0 / fps;
                        assert!(c.billed_ms as f64 >= exact - 1e-6);
                        assert!((c.billed_ms as f64) < exact + 1.0);
                        assert_eq!(
                            c.amount_micro * 1000,
                            c.unit_micro_per_s * c.billed_ms as i64
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn bad_tables_name_the_key() {
        let base = Pricing::builtin();
        assert!(base.version.len() > 3);
        let text = include_str!("../../../configs/pricing.toml");
        let e = Pricing::parse(&text.replacen("\"0.10\"", "\"0.1005\"", 1), "p.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("tenths of a cent"), "{e}");
        let e = Pricing::parse(
            &text.replace("accelerator = \"H100\"", "accelerator = \"TPU\""),
            "p.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("compute.accelerator"), "{e}");
    }

    #[test]
    fn classes_follow_the_short_side() {
        assert_eq!(ResClass::of(832, 480), ResClass::P480);
        assert_eq!(ResClass::of(256, 256), ResClass::P480);
        assert_eq!(ResClass::of(1280, 704), ResClass::P720);
        assert_eq!(ResClass::of(768, 1344), ResClass::P720);
        assert_eq!(ResClass::of(1920, 1088), ResClass::P1080);
        assert_eq!(ResClass::of(3840, 2176), ResClass::K4);
    }
}
