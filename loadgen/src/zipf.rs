//! Zipf sampling over ranks `0..n`: rank `k` (0-based) is chosen with probability proportional
//! to `1 / (k + 1)^s`. Hand-made (a table of the cumulative distribution and a binary search)
//! so that skewed route choice needs no dependency beyond `rand`.

/// The most ranks a table is built for (8 bytes each).
pub const MAX_RANKS: usize = 1_000_000;

/// A Zipf distribution over `n` ranks with exponent `s`.
#[derive(Debug, Clone)]
pub struct Zipf {
    /// cdf[k] = P(rank <= k); the last entry is 1.
    cdf: Vec<f64>,
}

impl Zipf {
    /// `n` in `1..=MAX_RANKS`, `s` finite and >= 0 (0 is uniform).
    pub fn new(n: usize, s: f64) -> Result<Self, String> {
        if n == 0 || n > MAX_RANKS {
            return Err(format!("Zipf over {n} ranks: need 1..={MAX_RANKS}"));
        }
        if !s.is_finite() || s < 0.0 {
            return Err(format!("Zipf exponent {s}: need a finite number >= 0"));
        }
        let mut cdf = Vec::with_capacity(n);
        let mut sum = 0.0;
        for k in 1..=n {
            sum += (k as f64).powf(-s);
            cdf.push(sum);
        }
        for c in &mut cdf {
            *c /= sum;
        }
        if let Some(last) = cdf.last_mut() {
            *last = 1.0;
        }
        Ok(Self { cdf })
    }

    /// The rank for a uniform random number `u` in `[0, 1)`.
    pub fn rank(&self, u: f64) -> usize {
        self.cdf
            .partition_point(|&c| c <= u)
            .min(self.cdf.len() - 1)
    }

    /// Probability of rank `k`.
    pub fn probability(&self, k: usize) -> f64 {
        match k {
            0 => self.cdf[0],
            k if k < self.cdf.len() => self.cdf[k] - self.cdf[k - 1],
            _ => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn rank_k_is_chosen_in_proportion_to_one_over_k_to_the_s() {
        let zipf = Zipf::new(100, 1.0).unwrap();
        let harmonic: f64 = (1..=100).map(|k| 1.0 / k as f64).sum();
        assert!((zipf.probability(0) - 1.0 / harmonic).abs() < 1e-12);
        assert!((zipf.probability(1) - 0.5 / harmonic).abs() < 1e-12);
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let mut counts = [0u32; 100];
        let draws = 200_000;
        for _ in 0..draws {
            counts[zipf.rank(rng.random::<f64>())] += 1;
        }
        let share = |k: usize| counts[k] as f64 / draws as f64;
        assert!(
            (share(0) - zipf.probability(0)).abs() < 0.01,
            "{}",
            share(0)
        );
        assert!(
            (share(9) - zipf.probability(9)).abs() < 0.005,
            "{}",
            share(9)
        );
        assert!(share(0) > 5.0 * share(9));
    }

    #[test]
    fn exponent_zero_is_uniform_and_ranks_stay_in_range() {
        let zipf = Zipf::new(4, 0.0).unwrap();
        for k in 0..4 {
            assert!((zipf.probability(k) - 0.25).abs() < 1e-12);
        }
        assert_eq!(zipf.rank(0.0), 0);
        assert_eq!(zipf.rank(0.999_999), 3);
        assert_eq!(zipf.rank(1.0), 3);
    }

    #[test]
    fn invalid_parameters_are_refused() {
        assert!(Zipf::new(0, 1.0).is_err());
        assert!(Zipf::new(MAX_RANKS + 1, 1.0).is_err());
        assert!(Zipf::new(10, -1.0).is_err());
        assert!(Zipf::new(10, f64::NAN).is_err());
    }
}
