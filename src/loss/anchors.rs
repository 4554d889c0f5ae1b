//! Which samples of a batch are anchors: the "labelled" points whose prior X⁰ is one-hot.

use rand::seq::index::sample;
use rand::Rng;
use std::collections::HashMap;

/// How the k anchors per class are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case", deny_unknown_fields)]
pub enum Anchors {
    /// The first k samples of each class in batch order (official).
    FirstK { k: i64 },
    /// k samples of each class drawn uniformly without replacement by the caller's RNG.
    Random { k: i64 },
}

/// An anchor rule that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnchorError {
    #[error("anchors per class k must be ≥ 0, got {0}")]
    NegativeK(i64),
}

impl Anchors {
    /// Validated constructor of the official rule.
    pub fn first_k(k: i64) -> Result<Self, AnchorError> {
        Anchors::FirstK { k }.validated()
    }

    /// Returns `self` if k ≥ 0.
    pub fn validated(self) -> Result<Self, AnchorError> {
        match self {
            Anchors::FirstK { k } | Anchors::Random { k } if k < 0 => {
                Err(AnchorError::NegativeK(k))
            }
            ok => Ok(ok),
        }
    }

    /// Anchors per class.
    pub fn k(&self) -> i64 {
        match *self {
            Anchors::FirstK { k } | Anchors::Random { k } => k,
        }
    }

    /// The anchor mask of a batch. A class with at most k samples has all of them as anchors.
    /// `rng` is used only by [`Anchors::Random`], so the official rule is deterministic.
    pub fn mask<R: Rng + ?Sized>(
        &self,
        labels: &[i64],
        rng: &mut R,
    ) -> Result<Vec<bool>, AnchorError> {
        let k = self.validated()?.k() as usize;
        let mut mask = vec![false; labels.len()];
        match self {
            Anchors::FirstK { .. } => {
                let mut seen: HashMap<i64, usize> = HashMap::new();
                for (m, l) in mask.iter_mut().zip(labels) {
                    let c = seen.entry(*l).or_insert(0);
                    *m = *c < k;
                    *c += 1;
                }
            }
            Anchors::Random { .. } => {
                // Group positions by class in order of first appearance, so the draw depends
                // only on the batch and the RNG state, never on hash order.
                let mut order: Vec<i64> = Vec::new();
                let mut members: HashMap<i64, Vec<usize>> = HashMap::new();
                for (i, l) in labels.iter().enumerate() {
                    members
                        .entry(*l)
                        .or_insert_with(|| {
                            order.push(*l);
                            Vec::new()
                        })
                        .push(i);
                }
                for l in order {
                    let idx = &members[&l];
                    for j in sample(rng, idx.len(), k.min(idx.len())) {
                        mask[idx[j]] = true;
                    }
                }
            }
        }
        Ok(mask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn first_k_in_batch_order() {
        let labels = [3, 1, 3, 3, 1, 2];
        let m = Anchors::first_k(2)
            .unwrap()
            .mask(&labels, &mut ChaCha8Rng::seed_from_u64(0))
            .unwrap();
        assert_eq!(m, vec![true, true, true, false, true, true]);
    }

    #[test]
    fn random_picks_k_per_class_and_is_seeded() {
        let labels: Vec<i64> = (0..5).flat_map(|c| std::iter::repeat_n(c, 7)).collect();
        let a = Anchors::Random { k: 3 };
        let m1 = a.mask(&labels, &mut ChaCha8Rng::seed_from_u64(7)).unwrap();
        let m2 = a.mask(&labels, &mut ChaCha8Rng::seed_from_u64(7)).unwrap();
        let m3 = a.mask(&labels, &mut ChaCha8Rng::seed_from_u64(8)).unwrap();
        assert_eq!(m1, m2);
        assert_ne!(m1, m3, "a different seed should choose different anchors");
        for c in 0..5 {
            let count = labels
                .iter()
                .zip(&m1)
                .filter(|(l, m)| **l == c && **m)
                .count();
            assert_eq!(count, 3);
        }
    }

    #[test]
    fn negative_k_is_an_error() {
        assert_eq!(Anchors::first_k(-1), Err(AnchorError::NegativeK(-1)));
        let r = Anchors::Random { k: -2 }.mask(&[0], &mut ChaCha8Rng::seed_from_u64(0));
        assert_eq!(r, Err(AnchorError::NegativeK(-2)));
    }
}
