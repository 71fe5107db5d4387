//! The one random number generator of training: SplitMix64 and a Fisher-Yates shuffle,
//! written out here rather than taken from `rand`.
//!
//! `rand` documents that `StdRng`'s algorithm, and the way its `random_range`, `random_bool`
//! and `shuffle` consume the stream, may change between releases: a dependency upgrade would
//! then silently change every trial's numbers, and a resumed checkpoint would continue a
//! different run than it started. Everything random in a run (the validation split, the
//! epoch order, augmentation, dropout masks and the initial weights) draws from this
//! generator instead, so the same seed gives the same numbers bit for bit on every release.
//! The tests pin its output.

/// SplitMix64 (Steele, Lea and Flood; Vigna's reference constants): 64 bits of state, one
/// add and a few multiply-xorshifts per output. Not for cryptography; good and fast enough
/// for shuffles, crops and masks, and every seed (0 included) is a good one.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator whose stream is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 uniform bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`), without modulo bias: outputs from the incomplete last
    /// multiple of `n` are redrawn.
    pub fn below(&mut self, n: u64) -> u64 {
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let x = self.next_u64();
            if x < zone {
                return x % n;
            }
        }
    }

    /// Uniform in `[0, 1)`: the top 53 bits, so every value is an exact multiple of 2^-53.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A fair coin (the top bit, SplitMix64's best).
    pub fn coin(&mut self) -> bool {
        self.next_u64() >> 63 == 1
    }

    /// Shuffles `v` in place (Fisher-Yates, from the back, one [`Self::below`] per element
    /// but the first): every permutation equally likely.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stream may never change: runs, checkpoints and recorded trials depend on it.
    #[test]
    fn the_stream_is_pinned() {
        // Seed 0: the reference implementation's first outputs.
        let mut r = SplitMix64::new(0);
        assert_eq!(
            [r.next_u64(), r.next_u64(), r.next_u64()],
            [
                0xe220_a839_7b1d_cdaf,
                0x6e78_9e6a_a1b9_65f4,
                0x06c4_5d18_8009_454f
            ]
        );
        let mut r = SplitMix64::new(0);
        assert_eq!(
            r.next_f64(),
            (0xe220_a839_7b1d_cdafu64 >> 11) as f64 / 2f64.powi(53)
        );
        // The coin is the top bit: 0x6e78... is tails, 0xe220... heads.
        assert!(!r.coin());
        assert!(SplitMix64::new(0).coin());
        let mut v: Vec<u32> = (0..10).collect();
        SplitMix64::new(5).shuffle(&mut v);
        assert_eq!(v, [3, 6, 0, 4, 5, 1, 2, 9, 7, 8]);
    }

    #[test]
    fn draws_stay_in_range() {
        let mut r = SplitMix64::new(9);
        let mut seen = [0u32; 9];
        for _ in 0..9000 {
            seen[r.below(9) as usize] += 1;
            let u = r.next_f64();
            assert!((0.0..1.0).contains(&u));
        }
        // Roughly uniform: each of the 9 values about 1,000 times.
        assert!(seen.iter().all(|&k| (850..1150).contains(&k)), "{seen:?}");
        assert_eq!(SplitMix64::new(3).below(1), 0);
    }
}
