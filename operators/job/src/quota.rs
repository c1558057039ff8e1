//! Per-tenant quotas (`configs/quotas.toml`) and the book that enforces
//! them. Admission reserves (one concurrent slot, the job's video seconds
//! for the month) under one lock, so however many submits race, the
//! reservations never exceed a limit; a finished job consumes its seconds
//! (completed) or releases them (failed, cancelled).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::billing::ResClass;
use crate::spec::Tier;

/// One tenant's limits (`[default]` or `[tenant.<name>]`; a tenant entry
/// overrides only the fields it sets).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Jobs admitted and not yet finished, at most.
    pub max_concurrent: u32,
    /// Delivered video per calendar month (UTC), seconds.
    pub monthly_video_seconds: f64,
    /// Highest resolution class: 480p, 720p, 1080p or 4k.
    pub max_resolution: ResClass,
    /// Tiers the tenant may submit to.
    pub tiers: Vec<Tier>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsPatch {
    max_concurrent: Option<u32>,
    monthly_video_seconds: Option<f64>,
    max_resolution: Option<ResClass>,
    tiers: Option<Vec<Tier>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotaFile {
    default: Limits,
    #[serde(default)]
    tenant: BTreeMap<String, LimitsPatch>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QuotaConfig {
    default: Limits,
    tenants: BTreeMap<String, Limits>,
}

#[derive(Debug, thiserror::Error)]
#[error("{path}: {msg}")]
pub struct QuotaConfigError {
    pub path: String,
    pub msg: String,
}

impl QuotaConfig {
    pub fn builtin() -> QuotaConfig {
        Self::parse(
            include_str!("../../../configs/quotas.toml"),
            "configs/quotas.toml",
        )
        .expect("the shipped quotas.toml is valid")
    }

    pub fn load(path: &Path) -> Result<QuotaConfig, QuotaConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| QuotaConfigError {
            path: path.display().to_string(),
            msg: e.to_string(),
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, path: &str) -> Result<QuotaConfig, QuotaConfigError> {
        let f: QuotaFile = toml::from_str(text).map_err(|e| QuotaConfigError {
            path: path.to_string(),
            msg: e.to_string(),
        })?;
        let check = |who: &str, l: &Limits| {
            if !(l.monthly_video_seconds.is_finite() && l.monthly_video_seconds >= 0.0) {
                return Err(QuotaConfigError {
                    path: path.to_string(),
                    msg: format!("{who}.monthly_video_seconds must be >= 0"),
                });
            }
            Ok(())
        };
        check("default", &f.default)?;
        let mut tenants = BTreeMap::new();
        for (name, p) in f.tenant {
            let d = &f.default;
            let l = Limits {
                max_concurrent: p.max_concurrent.unwrap_or(d.max_concurrent),
                monthly_video_seconds: p.monthly_video_seconds.unwrap_or(d.monthly_video_seconds),
                max_resolution: p.max_resolution.unwrap_or(d.max_resolution),
                tiers: p.tiers.unwrap_or_else(|| d.tiers.clone()),
            };
            check(&format!("tenant.{name}"), &l)?;
            tenants.insert(name, l);
        }
        Ok(QuotaConfig {
            default: f.default,
            tenants,
        })
    }

    pub fn limits(&self, tenant: &str) -> &Limits {
        self.tenants.get(tenant).unwrap_or(&self.default)
    }

    /// The limits that need no counting (tier, resolution class): the same
    /// answer on every node. Returns the tenant's limits for the counted
    /// ones (concurrency, monthly seconds), which whoever holds the counts
    /// checks: [`QuotaBook`] in one process, the database in a fleet.
    pub fn check_shape(&self, a: &Ask) -> Result<&Limits, QuotaError> {
        let l = self.limits(a.tenant);
        if !l.tiers.contains(&a.tier) {
            return Err(QuotaError::Tier {
                asked: a.tier,
                allowed: l
                    .tiers
                    .iter()
                    .map(|t| t.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        if a.class > l.max_resolution {
            return Err(QuotaError::Resolution {
                max: l.max_resolution.as_str(),
                asked: a.class.as_str(),
            });
        }
        Ok(l)
    }
}

impl Limits {
    /// The monthly allowance in whole milliseconds.
    pub fn monthly_ms(&self) -> u64 {
        (self.monthly_video_seconds * 1000.0).round() as u64
    }
}

/// Why admission refused a job: the limit and the usage, in words.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QuotaError {
    #[error("quota: concurrent jobs limit {limit} reached (current {current})")]
    Concurrent { limit: u32, current: u32 },
    #[error(
        "quota: monthly video seconds limit {:.3} s for {month}: used {:.3} s, reserved {:.3} s, this job {:.3} s",
        *limit_ms as f64 / 1000.0, *used_ms as f64 / 1000.0, *reserved_ms as f64 / 1000.0, *job_ms as f64 / 1000.0
    )]
    MonthlySeconds {
        month: String,
        limit_ms: u64,
        used_ms: u64,
        reserved_ms: u64,
        job_ms: u64,
    },
    #[error("quota: resolution {asked} is above the tenant's highest, {max}")]
    Resolution {
        max: &'static str,
        asked: &'static str,
    },
    #[error("quota: tier {asked} is not allowed for this tenant (allowed: {allowed})")]
    Tier { asked: Tier, allowed: String },
}

#[derive(Debug, Default)]
struct Usage {
    month: String,
    used_ms: u64,
    /// Admitted, unfinished jobs and what each reserved.
    running: HashMap<String, Reservation>,
}

#[derive(Debug, Clone, Copy)]
struct Reservation {
    ms: u64,
    /// Set while the job is back in the broker (a timeout hand-back): its
    /// redelivery takes the reservation up again; one that never returns
    /// here (another process took it) lapses after [`HANDED_BACK_TTL`].
    handed_back: Option<Instant>,
}

/// How long a handed-back job's reservation waits for its redelivery.
pub const HANDED_BACK_TTL: Duration = Duration::from_secs(15 * 60);

/// The live per-tenant counters.
#[derive(Debug)]
pub struct QuotaBook {
    cfg: QuotaConfig,
    usage: Mutex<HashMap<String, Usage>>,
}

/// What a job asks of its tenant's quota.
#[derive(Debug, Clone)]
pub struct Ask<'a> {
    pub tenant: &'a str,
    pub job_id: &'a str,
    pub tier: Tier,
    pub class: ResClass,
    pub video_ms: u64,
    /// `yyyy-mm` (UTC) the job is admitted in.
    pub month: &'a str,
}

impl QuotaBook {
    pub fn new(cfg: QuotaConfig) -> QuotaBook {
        QuotaBook {
            cfg,
            usage: Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &QuotaConfig {
        &self.cfg
    }

    /// Adds seconds already delivered this month (from durable records, at
    /// start-up).
    pub fn add_used(&self, tenant: &str, month: &str, ms: u64) {
        let mut u = self.usage.lock().expect("quota book poisoned");
        let e = u.entry(tenant.to_string()).or_default();
        roll(e, month);
        e.used_ms += ms;
    }

    /// Reserves a slot and the job's seconds, or says which limit stops it.
    /// A job already holding a reservation (a duplicate delivery) is let
    /// through without a second one.
    pub fn try_reserve(&self, a: &Ask) -> Result<(), QuotaError> {
        let l = self.cfg.check_shape(a)?;
        let mut u = self.usage.lock().expect("quota book poisoned");
        let e = u.entry(a.tenant.to_string()).or_default();
        roll(e, a.month);
        if let Some(r) = e.running.get_mut(a.job_id) {
            // A duplicate delivery, or the redelivery of a job handed back.
            r.handed_back = None;
            return Ok(());
        }
        e.running.retain(|_, r| {
            r.handed_back
                .is_none_or(|at| at.elapsed() < HANDED_BACK_TTL)
        });
        if e.running.len() as u32 >= l.max_concurrent {
            return Err(QuotaError::Concurrent {
                limit: l.max_concurrent,
                current: e.running.len() as u32,
            });
        }
        let limit_ms = l.monthly_ms();
        let reserved: u64 = e.running.values().map(|r| r.ms).sum();
        if e.used_ms + reserved + a.video_ms > limit_ms {
            return Err(QuotaError::MonthlySeconds {
                month: e.month.clone(),
                limit_ms,
                used_ms: e.used_ms,
                reserved_ms: reserved,
                job_ms: a.video_ms,
            });
        }
        e.running.insert(
            a.job_id.to_string(),
            Reservation {
                ms: a.video_ms,
                handed_back: None,
            },
        );
        Ok(())
    }

    /// Keeps a job's reservation while it is back in the broker (handed
    /// back for a retry): its redelivery must not be refused for the slot
    /// or the seconds it already held.
    pub fn hand_back(&self, tenant: &str, job_id: &str) {
        let mut u = self.usage.lock().expect("quota book poisoned");
        if let Some(r) = u.get_mut(tenant).and_then(|e| e.running.get_mut(job_id)) {
            r.handed_back = Some(Instant::now());
        }
    }

    /// Ends a job's reservation: its seconds count as used when it
    /// `delivered`, and are released otherwise.
    pub fn finish(&self, tenant: &str, job_id: &str, delivered: bool) {
        let mut u = self.usage.lock().expect("quota book poisoned");
        if let Some(e) = u.get_mut(tenant) {
            if let Some(r) = e.running.remove(job_id) {
                if delivered {
                    e.used_ms += r.ms;
                }
            }
        }
    }

    /// (running jobs, used ms this month) of a tenant.
    pub fn usage(&self, tenant: &str) -> (u32, u64) {
        let u = self.usage.lock().expect("quota book poisoned");
        u.get(tenant)
            .map(|e| (e.running.len() as u32, e.used_ms))
            .unwrap_or((0, 0))
    }
}

/// How long a reservation lasts after its node last vouched for it (a
/// running job's lease heartbeat does; a job handed back or a node that
/// died does not): the same span as [`HANDED_BACK_TTL`].
pub const RESERVATION_TTL: Duration = HANDED_BACK_TTL;

/// A new month starts from zero used (reservations carry over).
fn roll(e: &mut Usage, month: &str) {
    if e.month != month {
        if !e.month.is_empty() && e.month.as_str() > month {
            return; // a late job from the previous month: count it in the current one
        }
        e.month = month.to_string();
        e.used_ms = 0;
    }
}

/// `yyyy-mm` (UTC) of a Unix time in milliseconds.
pub fn month_of_ms(ms: u64) -> String {
    let (y, m, _) = civil_from_days((ms / 86_400_000) as i64);
    format!("{y:04}-{m:02}")
}

/// `yyyy-mm-dd` (UTC) of a Unix time in milliseconds.
pub fn date_of_ms(ms: u64) -> String {
    let (y, m, d) = civil_from_days((ms / 86_400_000) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn book(extra: &str) -> QuotaBook {
        let text = format!(
            "[default]\nmax_concurrent = 10\nmonthly_video_seconds = 3.0\nmax_resolution = \"1080p\"\n\
             tiers = [\"standard\", \"free\"]\n{extra}"
        );
        QuotaBook::new(QuotaConfig::parse(&text, "q.toml").unwrap())
    }

    fn ask<'a>(job: &'a str, ms: u64) -> Ask<'a> {
        Ask {
            tenant: "acme",
            job_id: job,
            tier: Tier::Standard,
            class: ResClass::P480,
            video_ms: ms,
            month: "2026-11",
        }
    }

    #[test]
    fn monthly_seconds_stop_exactly_at_the_limit() {
        let b = book("");
        for i in 0..8 {
            let id = format!("j{i}");
            b.try_reserve(&ask(&id, 375)).unwrap();
            b.finish("acme", &id, true);
        }
        assert_eq!(b.usage("acme"), (0, 3000));
        let e = b.try_reserve(&ask("j8", 375)).unwrap_err();
        assert!(
            matches!(e, QuotaError::MonthlySeconds { used_ms: 3000, .. }),
            "{e}"
        );
        assert!(
            e.to_string().contains("limit 3.000 s") && e.to_string().contains("used 3.000 s"),
            "{e}"
        );
        // A new month starts over.
        let mut a = ask("j9", 375);
        a.month = "2026-12";
        b.try_reserve(&a).unwrap();
    }

    #[test]
    fn failed_jobs_release_their_seconds() {
        let b = book("");
        b.try_reserve(&ask("a", 3000)).unwrap();
        assert!(b.try_reserve(&ask("b", 1)).is_err());
        b.finish("acme", "a", false);
        b.try_reserve(&ask("b", 3000)).unwrap();
    }

    #[test]
    fn tier_and_resolution_limits_name_themselves() {
        let b = book("[tenant.acme]\nmax_resolution = \"720p\"\n");
        let mut a = ask("x", 1);
        a.tier = Tier::Premium;
        assert!(b
            .try_reserve(&a)
            .unwrap_err()
            .to_string()
            .contains("tier premium"));
        let mut a = ask("x", 1);
        a.class = ResClass::P1080;
        let e = b.try_reserve(&a).unwrap_err().to_string();
        assert!(e.contains("1080p") && e.contains("720p"), "{e}");
    }

    #[test]
    fn racing_reservations_never_over_admit() {
        // Property: 16 threads x 50 attempts, with releases interleaved;
        // the number running never exceeds the limit at any instant.
        let b = Arc::new(book("[tenant.acme]\nmonthly_video_seconds = 1000000.0\n"));
        let max_seen = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let hs: Vec<_> = (0..16)
            .map(|t| {
                let (b, max_seen) = (b.clone(), max_seen.clone());
                std::thread::spawn(move || {
                    for i in 0..50 {
                        let id = format!("t{t}-{i}");
                        if b.try_reserve(&ask(&id, 1)).is_ok() {
                            let (n, _) = b.usage("acme");
                            max_seen.fetch_max(n, std::sync::atomic::Ordering::SeqCst);
                            std::thread::yield_now();
                            b.finish("acme", &id, i % 2 == 0);
                        }
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        let m = max_seen.load(std::sync::atomic::Ordering::SeqCst);
        assert!((1..=10).contains(&m), "{m}");
        assert_eq!(b.usage("acme").0, 0);
    }

    #[test]
    fn a_handed_back_job_keeps_its_reservation() {
        let b = book("[tenant.acme]\nmax_concurrent = 1\n");
        b.try_reserve(&ask("long", 1000)).unwrap();
        b.hand_back("acme", "long");
        // Its slot and seconds are still held: nobody else gets them...
        assert!(b.try_reserve(&ask("other", 1)).is_err());
        // ...and its redelivery is not refused.
        b.try_reserve(&ask("long", 1000)).unwrap();
        b.finish("acme", "long", true);
        assert_eq!(b.usage("acme"), (0, 1000));
    }

    #[test]
    fn dates() {
        assert_eq!(month_of_ms(0), "1970-01");
        assert_eq!(date_of_ms(1_795_812_585_904), "2026-11-27");
        assert_eq!(date_of_ms(951_782_400_000), "2000-02-29");
    }

    #[test]
    fn the_shipped_default_is_conservative() {
        // A tenant nobody listed gets a trial: no 4K, no premium capacity.
        let q = QuotaConfig::builtin();
        let l = q.limits("anyone");
        assert!(l.max_concurrent >= 1 && l.max_concurrent <= 2, "{l:?}");
        assert!(l.max_resolution <= ResClass::P720, "{l:?}");
        assert_eq!(l.tiers, vec![Tier::Free], "{l:?}");
        assert!(l.monthly_video_seconds <= 60.0, "{l:?}");
    }
}
