//! Erlang C: the M/M/c queue's waiting probability and mean wait, the
//! theory the simulator is checked against.

/// Probability that an arrival waits, for `c` servers at offered load
/// `a = λ/μ` (Erlang B by its stable recurrence, then C from B).
pub fn wait_probability(c: u32, a: f64) -> f64 {
    let mut b = 1.0;
    for k in 1..=c {
        b = a * b / (k as f64 + a * b);
    }
    let rho = a / c as f64;
    b / (1.0 - rho * (1.0 - b))
}

/// Mean queue wait of M/M/c with arrival rate `lambda` and mean service
/// `mean_s`.
pub fn mean_wait(c: u32, lambda: f64, mean_s: f64) -> f64 {
    let a = lambda * mean_s;
    wait_probability(c, a) / (c as f64 / mean_s - lambda)
}

#[cfg(test)]
mod tests {
    #[test]
    fn textbook_values() {
        // M/M/1: P(wait) = ρ, W = ρ/(μ-λ).
        assert!((super::wait_probability(1, 0.8) - 0.8).abs() < 1e-12);
        assert!((super::mean_wait(1, 0.8, 1.0) - 4.0).abs() < 1e-9);
        // M/M/2 at a = 1 (ρ = 0.5): C = 1/3.
        assert!((super::wait_probability(2, 1.0) - 1.0 / 3.0).abs() < 1e-12);
    }
}
