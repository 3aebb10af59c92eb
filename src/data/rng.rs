//! Small deterministic pseudo-random number generator (SplitMix64).
//!
//! The data module needs bit-identical streams on every platform (the synthetic dataset is
//! defined by its seed), so it uses this self-contained generator instead of an external crate.
//! Only integer arithmetic and exact float conversions are used.

/// Golden-ratio increment of SplitMix64.
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function: a strong 64-bit mixer (bijective).
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hashes three integers (e.g. seed, identity, image index) into one 64-bit seed.
pub fn hash3(a: u64, b: u64, c: u64) -> u64 {
    let h = mix64(a.wrapping_add(GAMMA));
    let h = mix64(h ^ b.wrapping_mul(0xD6E8_FEB8_6659_FD93).wrapping_add(GAMMA));
    mix64(h ^ c.wrapping_mul(0xA076_1D64_78BD_642F).wrapping_add(GAMMA))
}

/// 64-bit FNV-1a of `bytes`: a stable fingerprint (not a random stream) for comparing
/// configurations across processes and images across platforms.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// SplitMix64 generator: tiny state, good statistical quality, fully deterministic.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// Creates a generator from a 64-bit seed.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GAMMA);
        mix64(self.state)
    }

    /// Uniform `f32` in `[0, 1)` with 24 random bits (the conversion is exact).
    pub fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / 16_777_216.0)
    }

    /// Uniform `f32` in `[lo, hi)`.
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.f32()
    }

    /// Uniform `f32` in `[-a, a)`.
    pub fn sym(&mut self, a: f32) -> f32 {
        a * (2.0 * self.f32() - 1.0)
    }

    /// Uniform integer in `[0, n)`; returns 0 when `n == 0`.
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        // Multiply-shift reduction: deterministic and nearly unbiased for small n.
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// `true` with probability `p`.
    pub fn chance(&mut self, p: f32) -> bool {
        self.f32() < p
    }

    /// Approximately standard-normal value (Irwin–Hall sum of four uniforms, scaled to unit
    /// variance); bounded in `[-3.46, 3.46]`.
    pub fn normal(&mut self) -> f32 {
        let s = self.f32() + self.f32() + self.f32() + self.f32();
        (s - 2.0) * 1.732_050_8
    }

    /// Index drawn from unnormalised `weights` (returns 0 for empty or all-zero weights).
    pub fn weighted(&mut self, weights: &[f32]) -> usize {
        let total: f32 = weights.iter().sum();
        if weights.is_empty() || total <= 0.0 {
            return 0;
        }
        let mut t = self.f32() * total;
        for (i, w) in weights.iter().enumerate() {
            if t < *w {
                return i;
            }
            t -= *w;
        }
        weights.len() - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_reference_values() {
        // The FNV-1a 64-bit test vectors of the reference implementation (fnv_test.c by
        // Landon Curt Noll): "" hashes to the offset basis, "a" and "foobar" as listed there.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn splitmix_reference_values() {
        // Reference outputs of SplitMix64 seeded with 0 (from the published C code).
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn uniform_ranges_and_moments() {
        let mut r = SplitMix64::new(42);
        let n = 100_000;
        let mut sum = 0.0f64;
        let mut sum_n = 0.0f64;
        let mut sum_n2 = 0.0f64;
        for _ in 0..n {
            let u = r.f32();
            assert!((0.0..1.0).contains(&u));
            sum += u as f64;
            let z = r.normal() as f64;
            sum_n += z;
            sum_n2 += z * z;
            assert!(r.below(7) < 7);
        }
        let mean = sum / n as f64;
        assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
        let m = sum_n / n as f64;
        let var = sum_n2 / n as f64 - m * m;
        assert!(m.abs() < 0.02 && (var - 1.0).abs() < 0.03, "normal mean {m} var {var}");
        assert_eq!(r.below(0), 0);
    }

    #[test]
    fn hash3_separates_inputs() {
        assert_ne!(hash3(1, 2, 3), hash3(1, 3, 2));
        assert_ne!(hash3(0, 0, 0), hash3(0, 0, 1));
        assert_eq!(hash3(5, 6, 7), hash3(5, 6, 7));
    }
}
