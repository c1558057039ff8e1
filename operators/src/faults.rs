//! Fault injection for the reliability tests and `vidflow chaos`, off
//! unless `VIDFLOW_FAULT` is set in the environment:
//!
//! - `VIDFLOW_FAULT=<point>` (or `<point>@<n>`): abort the process (no
//!   cleanup, no ack: what a SIGKILL or a reclaimed spot instance does) the
//!   first (n-th) time `<point>` is reached;
//! - `VIDFLOW_FAULT=random:<p>`: at every point, abort with probability
//!   `p` (seeded from the pid and clock, so each process differs);
//! - `VIDFLOW_FAIL=<point>`: make the operation at `<point>` fail with an
//!   error instead (e.g. `checkpoint_write_error`: an object-store write
//!   failure), every time.
//!
//! Points are the [`Fault`] variants, named in the environment by
//! [`Fault::name`]; operations that can be made to fail are the [`Failing`]
//! variants. Stage code names a point by its variant, never by a string.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// A place where the process may be killed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// After a denoising step, before its progress and checkpoint.
    MidStep,
    /// Just before a checkpoint's atomic put.
    CheckpointWrite,
    /// At the start of a VAE decode.
    Decode,
    /// Before the MP4 is stored.
    OutputWrite,
    /// Record and ledger written, message not acked.
    AfterCommit,
}

impl Fault {
    pub const ALL: [Fault; 5] = [
        Fault::MidStep,
        Fault::CheckpointWrite,
        Fault::Decode,
        Fault::OutputWrite,
        Fault::AfterCommit,
    ];

    /// The point's name in `VIDFLOW_FAULT`.
    pub fn name(self) -> &'static str {
        match self {
            Fault::MidStep => "mid_step",
            Fault::CheckpointWrite => "checkpoint_write",
            Fault::Decode => "decode",
            Fault::OutputWrite => "output_write",
            Fault::AfterCommit => "after_commit",
        }
    }
}

/// An operation that `VIDFLOW_FAIL` can make return an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failing {
    /// A checkpoint's object-store write.
    CheckpointWriteError,
}

impl Failing {
    pub fn name(self) -> &'static str {
        match self {
            Failing::CheckpointWriteError => "checkpoint_write_error",
        }
    }
}

enum Mode {
    Off,
    /// Abort at the n-th time (1-based) the point is reached.
    At(String, u64),
    Random(f64),
}

fn mode() -> &'static Mode {
    static M: OnceLock<Mode> = OnceLock::new();
    M.get_or_init(|| match std::env::var("VIDFLOW_FAULT") {
        Ok(v) if v.starts_with("random:") => v[7..].parse().map(Mode::Random).unwrap_or(Mode::Off),
        Ok(v) if !v.is_empty() => match v.split_once('@') {
            Some((p, n)) => Mode::At(p.to_string(), n.parse().unwrap_or(1)),
            None => Mode::At(v, 1),
        },
        _ => Mode::Off,
    })
}

fn next_random() -> f64 {
    static S: AtomicU64 = AtomicU64::new(0);
    let mut s = S.load(Ordering::Relaxed);
    if s == 0 {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        s = t ^ ((std::process::id() as u64) << 32) | 1;
    }
    // SplitMix64.
    s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
    S.store(s, Ordering::Relaxed);
    let mut z = s;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
}

/// Where the process may be killed (`VIDFLOW_FAULT`).
pub fn point(at: Fault) {
    let name = at.name();
    let hit = match mode() {
        Mode::Off => false,
        Mode::At(p, n) => {
            static HITS: AtomicU64 = AtomicU64::new(0);
            p == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 >= *n
        }
        Mode::Random(p) => next_random() < *p,
    };
    if hit {
        eprintln!("VIDFLOW_FAULT: aborting at {name}");
        tracing::warn!(point = name, "VIDFLOW_FAULT: aborting here");
        std::process::abort();
    }
}

/// Whether `op` should fail (`VIDFLOW_FAIL`).
pub fn fail(op: Failing) -> bool {
    let name = op.name();
    static F: OnceLock<Option<String>> = OnceLock::new();
    F.get_or_init(|| std::env::var("VIDFLOW_FAIL").ok())
        .as_deref()
        == Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_names_are_distinct_and_snake_case() {
        let names: std::collections::HashSet<_> = Fault::ALL.iter().map(|f| f.name()).collect();
        assert_eq!(names.len(), Fault::ALL.len());
        assert!(names
            .iter()
            .all(|n| n.chars().all(|c| c.is_ascii_lowercase() || c == '_')));
        assert_eq!(
            Failing::CheckpointWriteError.name(),
            "checkpoint_write_error"
        );
    }
}
