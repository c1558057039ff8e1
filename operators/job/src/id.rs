//! Job ids (ULID-style, time-ordered) and the default seed derived from one.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Crockford base32 (no I, L, O, U), as ULID uses.
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Length of a generated job id.
pub const JOB_ID_LEN: usize = 26;

const RANDOM_MASK: u128 = (1u128 << 80) - 1;

/// Last (timestamp, random) handed out, for monotonicity within a process.
static LAST: Mutex<Option<(u64, u128)>> = Mutex::new(None);

/// A new job id: 26 characters of Crockford base32 encoding a 48-bit Unix
/// millisecond timestamp followed by 80 random bits (the ULID layout), so ids
/// sort by creation time as strings. Within one process ids are strictly
/// increasing: a second id in the same millisecond (or after the clock steps
/// back) reuses the last timestamp and increments the random part.
pub fn generate_job_id() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut buf = [0u8; 10];
    if getrandom::fill(&mut buf).is_err() {
        // No OS entropy: the clock's nanoseconds still spread ids apart.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        buf.copy_from_slice(&nanos.to_le_bytes()[..10]);
    }
    let random = buf.iter().fold(0u128, |acc, b| (acc << 8) | *b as u128);
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    let (ms, rnd) = match *last {
        Some((lms, lrnd)) if now <= lms => (lms, (lrnd + 1) & RANDOM_MASK),
        _ => (now, random),
    };
    *last = Some((ms, rnd));
    job_id_from_parts(ms, rnd)
}

/// Encodes a job id from its parts (timestamp truncated to 48 bits, random
/// part to 80 bits).
pub fn job_id_from_parts(timestamp_ms: u64, random: u128) -> String {
    let v: u128 = (((timestamp_ms as u128) & ((1u128 << 48) - 1)) << 80) | (random & RANDOM_MASK);
    (0..JOB_ID_LEN)
        .map(|i| {
            let shift = 5 * (JOB_ID_LEN - 1 - i);
            CROCKFORD[((v >> shift) & 31) as usize] as char
        })
        .collect()
}

/// The millisecond timestamp of a generated job id; `None` for ids that are
/// not 26 Crockford base32 characters (client-supplied keys).
pub fn job_id_timestamp_ms(id: &str) -> Option<u64> {
    if id.len() != JOB_ID_LEN {
        return None;
    }
    let mut v: u128 = 0;
    for (i, c) in id.bytes().enumerate() {
        let d = CROCKFORD
            .iter()
            .position(|&x| x == c.to_ascii_uppercase())? as u128;
        if i == 0 && d > 7 {
            return None; // would overflow 128 bits
        }
        v = (v << 5) | d;
    }
    Some((v >> 80) as u64)
}

/// The seed a job gets when it gives none: a fixed function of the job id
/// (64-bit FNV-1a over a versioned prefix and the id, then the SplitMix64
/// finaliser), so a redelivered job renders the same video. Stable across
/// releases: changing it changes every default-seeded video.
pub fn default_seed(job_id: &str) -> u64 {
    let h = b"vidflow-seed-v1:"
        .iter()
        .chain(job_id.as_bytes())
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ *b as u64).wrapping_mul(0x100_0000_01b3)
        });
    let mut z = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Whether `s` matches `[A-Za-z0-9_-]{1,64}` (tenants and job ids: safe as a
/// path segment and an object-store key component).
pub fn is_safe_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Top-level prefixes of the object store that belong to the service
/// (job records, checkpoints, safety decisions, attempt counts, analytics):
/// no tenant may be named like one, since a tenant's outputs and inputs
/// live under `<tenant>/`.
pub const RESERVED_TENANTS: &[&str] = &["jobs", "checkpoints", "safety", "attempts", "analytics"];

/// Whether `s` may name a tenant: a safe id that is not a reserved prefix.
pub fn is_tenant_name(s: &str) -> bool {
    is_safe_id(s) && !RESERVED_TENANTS.contains(&s)
}

/// A job's identity across the platform: job ids are chosen by clients
/// (`job_id`, `client_key`), so two tenants may well both have `order-1`.
/// Every per-job structure (cancels, jobs in flight, de-duplication,
/// records, safety decisions) is keyed by this pair, never by the id alone.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobKey {
    pub tenant: String,
    pub job_id: String,
}

impl JobKey {
    pub fn new(tenant: impl Into<String>, job_id: impl Into<String>) -> JobKey {
        JobKey {
            tenant: tenant.into(),
            job_id: job_id.into(),
        }
    }
}

impl std::fmt::Display for JobKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.tenant, self.job_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_by_tenant() {
        let a = JobKey::new("acme", "order-1");
        assert_ne!(a, JobKey::new("globex", "order-1"));
        assert_eq!(a.to_string(), "acme/order-1");
    }

    #[test]
    fn parts_roundtrip() {
        let id = job_id_from_parts(1_700_000_000_123, 0x1234_5678_9abc_def0_1234);
        assert_eq!(id.len(), 26);
        assert!(is_safe_id(&id));
        assert_eq!(job_id_timestamp_ms(&id), Some(1_700_000_000_123));
        assert_eq!(job_id_from_parts(0, 0), "0".repeat(26));
    }

    #[test]
    fn generated_ids_increase() {
        let ids: Vec<String> = (0..1000).map(|_| generate_job_id()).collect();
        for w in ids.windows(2) {
            assert!(w[0] < w[1], "{} !< {}", w[0], w[1]);
        }
    }
}
