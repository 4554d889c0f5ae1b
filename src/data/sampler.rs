//! Class-balanced batch samplers for Group Loss training: each batch is `classes_per_batch`
//! runs of `samples_per_class` items, every run from one class, because the Group Loss needs
//! several samples per class in a batch (its anchors are "the first k samples of each class in
//! batch order", see `loss::anchors`).
//!
//! # What an epoch is
//!
//! P = `classes_per_batch`, K = `samples_per_class`, s_c = items of class c, M = max_c s_c.
//! [`epoch`] returns the whole epoch as batches of dataset indices; call it once per epoch with
//! the same RNG to reshuffle, as the official `__iter__` does.
//!
//! [`SamplerKind::Official`] reproduces `CombineSampler` of the official code (below):
//! - every class is shuffled, then extended by its own first `min(s_c, M − s_c + 1)` items, to
//!   length L_c = min(2·s_c, M + 1), and cut into ⌊L_c / K⌋ runs of K; the rest is dropped;
//! - the runs of all classes are shuffled together and cut into ⌊Σ_c ⌊L_c/K⌋ / P⌋ batches of P
//!   runs (`drop_last=True`); the leftover runs are dropped;
//! - so a class with 2·s_c < K **never appears** (SOP with K = 6: its 2-image classes); a class
//!   with s_c < K ≤ 2·s_c appears with repeated images inside its run; a class with
//!   s_c ≤ (M + 1)/2 is its permutation twice over, so its later runs reuse the items of its
//!   earlier ones (verbatim when K divides s_c): small classes are doubled, not brought up to M;
//! - the same class **can fill two runs of one batch** (runs are shuffled independently of
//!   class), so a batch may hold fewer than P distinct classes; the anchors of such a class then
//!   all come from its first run. This is kept, not fixed: it is what the paper trained with.
//!
//! [`SamplerKind::Corrected`] keeps the batch shape and uses every item of every class:
//! - every class is shuffled and cut into ⌈s_c / K⌉ runs; a short last run is topped up with
//!   other items of the same class drawn without replacement, and a class with s_c < K gives
//!   one run holding all its items once, topped up by draws with replacement from the class;
//! - the runs are dealt to B = max(⌈Σ_c ⌈s_c/K⌉ / P⌉, max_c ⌈s_c/K⌉) batches so that the P runs
//!   of a batch are P **distinct** classes; a batch left with fewer than P runs is filled with
//!   a fresh run of a random class absent from it; run order and batch order are shuffled;
//! - nothing is dropped: every item appears at least once per epoch; items repeat only in
//!   top-ups and fill runs. Top-ups come after the class's own items inside a run, so the first
//!   min(s_c, K) samples of a run (the anchors) are distinct items.
//!
//! # The official code
//!
//! `dvl-tum/group_loss`, commit `7d832310eeb8738e7c719d780acc730babd03dd6`,
//! `combine_sampler.py` (`CombineSampler.__iter__`, `self.max` = largest class size):
//! ```python
//! l_inds = list(map(lambda a: random.sample(a, len(a)), self.l_inds))
//! for inds in l_inds:
//!     n_els = self.max - len(inds) + 1  # take out 1?
//!     inds.extend(inds[:n_els])  # max + 1
//! split_list_of_indices = []
//! for inds in l_inds:
//!     # drop the last < n_cl elements
//!     while len(inds) >= self.n_cl:
//!         split_list_of_indices.append(inds[:self.n_cl])
//!         inds = inds[self.n_cl:]
//! random.shuffle(split_list_of_indices)
//! self.flat_list = [item for sublist in split_list_of_indices for item in sublist]
//! ```
//! `data_utility.py` (`create_loaders`): classes in order of first appearance in `Dataset.ys`,
//! ```python
//! dl_tr = torch.utils.data.DataLoader(Dataset, batch_size=size_batch, shuffle=False,
//!     sampler=CombineSampler(list_of_indices_for_each_class, num_classes_iter, num_elements_class),
//!     num_workers=num_workers, drop_last=True, pin_memory=True)
//! ```
//! with `batch_size = args.num_classes_iter * args.num_elements_class` (`train.py`; P × K is
//! 6 × 9 for CUB, 5 × 7 for Cars, 10 × 6 for SOP). Only the random source differs: Python's
//! unseeded global `random` (`random.sample(a, len(a))`, a permutation, and `random.shuffle`)
//! becomes [`SliceRandom::shuffle`] with the caller's RNG, called in the same order (every class
//! in first-appearance order, then the runs), so which items can appear, how many runs and
//! batches an epoch has and what is dropped are identical; the permutations themselves differ.

use rand::seq::{index, SliceRandom};
use rand::Rng;
use std::collections::HashMap;

/// Which sampler builds the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamplerKind {
    /// `CombineSampler` of the official code, faithfully (small classes dropped, repeated
    /// classes within a batch possible).
    Official,
    /// Every item of every class at least once per epoch, P distinct classes per batch.
    Corrected,
}

/// Parameters of a sampler; [`SamplerParams::new`] / [`SamplerParams::validated`] check them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SamplerParams {
    /// P: runs (classes) per batch, `num_classes_iter` in the official code.
    pub classes_per_batch: usize,
    /// K: items per run, `num_elements_class` in the official code.
    pub samples_per_class: usize,
    /// Which sampler.
    pub kind: SamplerKind,
}

/// Parameters or labels a sampler cannot work with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SamplerError {
    #[error("classes_per_batch must be ≥ 1, got 0")]
    ZeroClassesPerBatch,
    #[error("samples_per_class must be ≥ 1, got 0")]
    ZeroSamplesPerClass,
    #[error("batch size {classes_per_batch} × {samples_per_class} overflows usize")]
    BatchSizeOverflow {
        classes_per_batch: usize,
        samples_per_class: usize,
    },
    #[error("no labels: an epoch needs at least one dataset item")]
    EmptyLabels,
    #[error(
        "the corrected sampler needs ≥ classes_per_batch = {needed} distinct classes, got {found}"
    )]
    TooFewClasses { needed: usize, found: usize },
}

impl SamplerParams {
    /// Validated constructor.
    pub fn new(
        classes_per_batch: usize,
        samples_per_class: usize,
        kind: SamplerKind,
    ) -> Result<Self, SamplerError> {
        SamplerParams {
            classes_per_batch,
            samples_per_class,
            kind,
        }
        .validated()
    }

    /// Returns `self` if P ≥ 1, K ≥ 1 and P × K fits in `usize`.
    pub fn validated(self) -> Result<Self, SamplerError> {
        if self.classes_per_batch == 0 {
            return Err(SamplerError::ZeroClassesPerBatch);
        }
        if self.samples_per_class == 0 {
            return Err(SamplerError::ZeroSamplesPerClass);
        }
        self.classes_per_batch
            .checked_mul(self.samples_per_class)
            .ok_or(SamplerError::BatchSizeOverflow {
                classes_per_batch: self.classes_per_batch,
                samples_per_class: self.samples_per_class,
            })?;
        Ok(self)
    }

    /// P × K, the number of items in every batch.
    pub fn batch_size(&self) -> Result<usize, SamplerError> {
        let p = self.validated()?;
        Ok(p.classes_per_batch * p.samples_per_class)
    }
}

/// Dataset indices grouped by class, classes in order of first appearance in `labels` (the
/// official `defaultdict` order), so the RNG is consumed in an order independent of hashing.
fn group_by_class(labels: &[i64]) -> Vec<Vec<usize>> {
    let mut slot: HashMap<i64, usize> = HashMap::new();
    let mut classes: Vec<Vec<usize>> = Vec::new();
    for (i, l) in labels.iter().enumerate() {
        let c = *slot.entry(*l).or_insert_with(|| {
            classes.push(Vec::new());
            classes.len() - 1
        });
        classes[c].push(i);
    }
    classes
}

/// Checks the parameters and the labels shared by both kinds, returning the classes.
fn prepare(params: &SamplerParams, labels: &[i64]) -> Result<Vec<Vec<usize>>, SamplerError> {
    let p = params.validated()?;
    if labels.is_empty() {
        return Err(SamplerError::EmptyLabels);
    }
    let classes = group_by_class(labels);
    if p.kind == SamplerKind::Corrected && classes.len() < p.classes_per_batch {
        return Err(SamplerError::TooFewClasses {
            needed: p.classes_per_batch,
            found: classes.len(),
        });
    }
    Ok(classes)
}

/// Runs of class c in the official sampler: ⌊min(2·s_c, M + 1) / K⌋.
fn official_runs(size: usize, max: usize, k: usize) -> usize {
    (size + size.min(max - size + 1)) / k
}

/// The number of batches [`epoch`] returns for these labels; it does not depend on the RNG,
/// so a schedule or progress bar can know it up front (the official `__len__` is 0 until the
/// first epoch has been drawn).
pub fn batches_per_epoch(params: &SamplerParams, labels: &[i64]) -> Result<usize, SamplerError> {
    let classes = prepare(params, labels)?;
    let (p, k) = (params.classes_per_batch, params.samples_per_class);
    let max = classes.iter().map(Vec::len).max().unwrap_or(0);
    Ok(match params.kind {
        SamplerKind::Official => {
            classes
                .iter()
                .map(|c| official_runs(c.len(), max, k))
                .sum::<usize>()
                / p
        }
        SamplerKind::Corrected => {
            let runs: usize = classes.iter().map(|c| c.len().div_ceil(k)).sum();
            runs.div_ceil(p).max(max.div_ceil(k))
        }
    })
}

/// One epoch: a list of batches of dataset indices (`labels[i]` is the class of item i), each
/// batch P runs of K items, every run from one class and contiguous. See the module doc for
/// what each kind includes, drops and repeats. Errors on invalid parameters, empty labels, and
/// (corrected only) fewer than P distinct classes; the official kind returns an empty epoch
/// where its runs do not fill one batch, as the official loader does.
pub fn epoch(
    params: &SamplerParams,
    labels: &[i64],
    rng: &mut impl Rng,
) -> Result<Vec<Vec<usize>>, SamplerError> {
    let classes = prepare(params, labels)?;
    Ok(match params.kind {
        SamplerKind::Official => official_epoch(params, &classes, rng),
        SamplerKind::Corrected => corrected_epoch(params, &classes, rng),
    })
}

/// `CombineSampler.__iter__` followed by `DataLoader(batch_size = P·K, drop_last=True)`.
fn official_epoch(
    p: &SamplerParams,
    classes: &[Vec<usize>],
    rng: &mut impl Rng,
) -> Vec<Vec<usize>> {
    let k = p.samples_per_class;
    let max = classes.iter().map(Vec::len).max().unwrap_or(0);
    // l_inds = list(map(lambda a: random.sample(a, len(a)), self.l_inds))
    let shuffled: Vec<Vec<usize>> = classes
        .iter()
        .map(|c| {
            let mut inds = c.clone();
            inds.shuffle(rng);
            inds
        })
        .collect();
    let mut padded: Vec<Vec<usize>> = Vec::with_capacity(shuffled.len());
    for mut inds in shuffled {
        // n_els = self.max - len(inds) + 1; inds.extend(inds[:n_els]) — a slice past the end
        // is truncated in Python, so at most len(inds) items are appended.
        let n_els = max - inds.len() + 1;
        inds.extend_from_within(..n_els.min(inds.len()));
        padded.push(inds);
    }
    let mut runs: Vec<&[usize]> = Vec::new();
    for inds in &padded {
        // while len(inds) >= self.n_cl: take inds[:n_cl]  (the last < n_cl are dropped)
        runs.extend(inds.chunks_exact(k));
    }
    // random.shuffle(split_list_of_indices)
    runs.shuffle(rng);
    // flat list cut into batches of P·K = P whole runs; drop_last=True drops the rest.
    runs.chunks_exact(p.classes_per_batch)
        .map(|batch| batch.concat())
        .collect()
}

/// A run of K items of one class: the class shuffled, its first min(s, K) items, then (s < K)
/// draws with replacement. Used for fill runs.
fn fresh_run(class: &[usize], k: usize, rng: &mut impl Rng) -> Vec<usize> {
    let mut run = class.to_vec();
    run.shuffle(rng);
    run.truncate(k);
    while run.len() < k {
        run.push(class[rng.random_range(0..class.len())]);
    }
    run
}

/// The corrected epoch (module doc): all items, P distinct classes per batch.
fn corrected_epoch(
    p: &SamplerParams,
    classes: &[Vec<usize>],
    rng: &mut impl Rng,
) -> Vec<Vec<usize>> {
    let (want, k) = (p.classes_per_batch, p.samples_per_class);
    // Per class: a permutation cut into ⌈s/K⌉ runs, the short last one topped up.
    let mut per_class: Vec<Vec<Vec<usize>>> = Vec::with_capacity(classes.len());
    for class in classes {
        let mut perm = class.clone();
        perm.shuffle(rng);
        let s = perm.len();
        let mut runs: Vec<Vec<usize>> = perm.chunks(k).map(<[usize]>::to_vec).collect();
        if let Some(last) = runs.last_mut() {
            let missing = k - last.len();
            if s >= k {
                // Distinct top-ups from the earlier runs' items: s − r ≥ K − r of them.
                let earlier = &perm[..s - last.len()];
                let picks = index::sample(rng, earlier.len(), missing);
                last.extend(picks.iter().map(|i| earlier[i]));
            } else {
                last.extend((0..missing).map(|_| class[rng.random_range(0..s)]));
            }
        }
        per_class.push(runs);
    }
    // Deal the runs, classes in random order and each class's runs consecutive, round-robin
    // over B batches: B ≥ the runs of any class, so no batch gets one class twice, and B ≥
    // total/P, so no batch gets more than P runs.
    let total: usize = per_class.iter().map(Vec::len).sum();
    let longest = per_class.iter().map(Vec::len).max().unwrap_or(0);
    let n_batches = total.div_ceil(want).max(longest);
    let mut order: Vec<usize> = (0..classes.len()).collect();
    order.shuffle(rng);
    let mut batches: Vec<Vec<(usize, Vec<usize>)>> = vec![Vec::with_capacity(want); n_batches];
    let mut j = 0;
    for &c in &order {
        for run in std::mem::take(&mut per_class[c]) {
            batches[j % n_batches].push((c, run));
            j += 1;
        }
    }
    // Fill short batches with fresh runs of absent classes (there are ≥ P classes).
    for batch in &mut batches {
        while batch.len() < want {
            let c = rng.random_range(0..classes.len());
            if batch.iter().all(|(b, _)| *b != c) {
                batch.push((c, fresh_run(&classes[c], k, rng)));
            }
        }
        batch.shuffle(rng);
    }
    batches.shuffle(rng);
    batches
        .into_iter()
        .map(|b| b.into_iter().flat_map(|(_, run)| run).collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use std::collections::{BTreeMap, HashSet};

    /// Labels with `sizes[c]` items of class c, classes interleaved so grouping is exercised.
    fn labels_of(sizes: &[usize]) -> Vec<i64> {
        let mut out = Vec::new();
        let longest = sizes.iter().copied().max().unwrap_or(0);
        for round in 0..longest {
            for (c, &s) in sizes.iter().enumerate() {
                if round < s {
                    out.push(c as i64 * 7 - 3); // arbitrary, negative ids included
                }
            }
        }
        out
    }

    fn params(p: usize, k: usize, kind: SamplerKind) -> SamplerParams {
        SamplerParams::new(p, k, kind).unwrap()
    }

    fn draw(pr: &SamplerParams, labels: &[i64], seed: u64) -> Vec<Vec<usize>> {
        epoch(pr, labels, &mut ChaCha8Rng::seed_from_u64(seed)).unwrap()
    }

    /// The class of each run of a batch, after checking every run is one class.
    fn run_classes(batch: &[usize], labels: &[i64], k: usize) -> Vec<i64> {
        assert_eq!(batch.len() % k, 0);
        batch
            .chunks(k)
            .map(|run| {
                let c = labels[run[0]];
                assert!(run.iter().all(|&i| labels[i] == c), "mixed run {run:?}");
                c
            })
            .collect()
    }

    /// Runs of each class over an epoch.
    fn runs_per_class(ep: &[Vec<usize>], labels: &[i64], k: usize) -> BTreeMap<i64, usize> {
        let mut m = BTreeMap::new();
        for b in ep {
            for c in run_classes(b, labels, k) {
                *m.entry(c).or_insert(0) += 1;
            }
        }
        m
    }

    const SOP_LIKE: [usize; 11] = [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];

    #[test]
    fn official_batches_are_p_runs_of_k_items_of_one_class_each() {
        let labels = labels_of(&[60, 30, 45, 29, 58, 60, 31]);
        let pr = params(6, 9, SamplerKind::Official);
        let ep = draw(&pr, &labels, 1);
        assert_eq!(ep.len(), batches_per_epoch(&pr, &labels).unwrap());
        assert!(!ep.is_empty());
        for b in &ep {
            assert_eq!(b.len(), 54);
            assert_eq!(run_classes(b, &labels, 9).len(), 6);
        }
    }

    #[test]
    fn official_counts_match_python_combine_sampler() {
        // Expected numbers from the official combine_sampler.py (torch.utils.data stubbed):
        //   l = [list(range(o, o + s)) for o, s in zip(offsets, sizes)]
        //   flat = list(iter(CombineSampler(l, P, K))); n = len(flat) // (P * K)  # drop_last
        //   runs per class = Counter(label[flat[i]] for i in range(0, len(flat), K))
        // [12,3,2,6] P=1 K=6 -> 5 batches, runs {0: 2, 1: 1, 3: 2}; P=4 K=6 -> 1;
        // [60,30,45,29] P=6 K=9 -> 4, {0: 6, 1: 6, 2: 6, 3: 6}; [10,4] P=1 K=4 -> 4, {0: 2, 1: 2}.
        let cases: [(&[usize], usize, usize, usize); 4] = [
            (&[12, 3, 2, 6], 1, 6, 5),
            (&[12, 3, 2, 6], 4, 6, 1),
            (&[60, 30, 45, 29], 6, 9, 4),
            (&[10, 4], 1, 4, 4),
        ];
        for (sizes, p, k, batches) in cases {
            let labels = labels_of(sizes);
            let pr = params(p, k, SamplerKind::Official);
            assert_eq!(batches_per_epoch(&pr, &labels).unwrap(), batches);
            let ep = draw(&pr, &labels, 3);
            assert_eq!(ep.len(), batches, "sizes {sizes:?}");
        }
        let labels = labels_of(&[12, 3, 2, 6]);
        let ep = draw(&params(1, 6, SamplerKind::Official), &labels, 0);
        let got = runs_per_class(&ep, &labels, 6);
        assert_eq!(got, BTreeMap::from([(-3, 2), (4, 1), (18, 2)]));
    }

    #[test]
    fn official_never_uses_classes_with_fewer_than_half_k_items_and_doubles_small_ones() {
        // K = 6: the 2-item class (2·2 < 6) never appears, as in the official code; the
        // 3-item class appears as one run holding each item twice; the 6-item class (M/2)
        // gives two identical runs.
        let sizes = [12, 3, 2, 6];
        let labels = labels_of(&sizes);
        let (two, three, six) = (11, 4, 18); // class ids of sizes 2, 3, 6
        for seed in 0..50 {
            let ep = draw(&params(1, 6, SamplerKind::Official), &labels, seed);
            assert!(
                ep.iter().flatten().all(|&i| labels[i] != two),
                "seed {seed}"
            );
            let runs = |c: i64| ep.iter().filter(|b| labels[b[0]] == c).collect::<Vec<_>>();
            let r3 = runs(three);
            assert_eq!(r3.len(), 1);
            let mut items = r3[0].clone();
            items.sort_unstable();
            assert!(items.chunks(2).all(|pair| pair[0] == pair[1]), "{items:?}");
            assert_eq!(items.iter().collect::<HashSet<_>>().len(), 3);
            let r6 = runs(six);
            assert_eq!(r6.len(), 2);
            assert_eq!(r6[0], r6[1]);
        }
    }

    #[test]
    fn official_pads_the_largest_class_with_one_repeated_item() {
        // M = 9, K = 5: 9 + 1 = 10 items, two runs, exactly one item twice.
        let labels = vec![0i64; 9];
        let ep = draw(&params(1, 5, SamplerKind::Official), &labels, 9);
        assert_eq!(ep.len(), 2);
        let all: Vec<usize> = ep.concat();
        assert_eq!(all.iter().copied().collect::<HashSet<_>>().len(), 9);
        assert_eq!(all.len(), 10);
    }

    #[test]
    fn official_can_put_one_class_in_two_runs_of_a_batch() {
        // Two classes of 20, P = 2, K = 5: 4 runs each; with runs shuffled regardless of
        // class, some batch holds the same class twice (P(no such batch) = 16/70 per epoch).
        let labels = labels_of(&[20, 20]);
        let pr = params(2, 5, SamplerKind::Official);
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let repeated = (0..20)
            .flat_map(|_| epoch(&pr, &labels, &mut rng).unwrap())
            .filter(|b| {
                let cs = run_classes(b, &labels, 5);
                cs[0] == cs[1]
            })
            .count();
        assert!(repeated > 0);
    }

    #[test]
    fn official_with_too_few_runs_for_one_batch_gives_an_empty_epoch() {
        let labels = vec![1i64, 1, 1];
        let ep = draw(&params(4, 2, SamplerKind::Official), &labels, 0);
        assert_eq!(ep, Vec::<Vec<usize>>::new());
    }

    #[test]
    fn corrected_batches_have_p_distinct_classes_each_contiguous() {
        for (sizes, p, k) in [
            (&SOP_LIKE[..], 4, 6),
            (&[60, 30, 45, 29, 58, 60, 31][..], 6, 9),
            (&[100, 1, 1][..], 2, 5), // one class dominates: B = 20 > ⌈22/2⌉, fill runs
            (&[3, 3, 3][..], 3, 1),
        ] {
            let labels = labels_of(sizes);
            let pr = params(p, k, SamplerKind::Corrected);
            let ep = draw(&pr, &labels, 2);
            assert_eq!(ep.len(), batches_per_epoch(&pr, &labels).unwrap());
            for b in &ep {
                assert_eq!(b.len(), p * k);
                let cs = run_classes(b, &labels, k);
                let distinct: HashSet<_> = cs.iter().collect();
                assert_eq!(distinct.len(), p, "{sizes:?}: {cs:?}");
            }
        }
    }

    #[test]
    fn corrected_covers_every_class_and_every_item() {
        let labels = labels_of(&SOP_LIKE);
        let pr = params(4, 6, SamplerKind::Corrected);
        for seed in 0..20 {
            let ep = draw(&pr, &labels, seed);
            let seen: HashSet<usize> = ep.iter().flatten().copied().collect();
            assert_eq!(seen.len(), labels.len(), "seed {seed}");
            let classes = runs_per_class(&ep, &labels, 6);
            assert_eq!(classes.len(), SOP_LIKE.len());
        }
    }

    #[test]
    fn corrected_runs_of_large_classes_hold_distinct_items_and_anchors_are_real() {
        let labels = labels_of(&[7, 2]);
        let ep = draw(&params(2, 4, SamplerKind::Corrected), &labels, 4);
        for b in &ep {
            for run in b.chunks(4) {
                let distinct = run.iter().collect::<HashSet<_>>().len();
                if labels[run[0]] == -3 {
                    assert_eq!(distinct, 4, "7-item class run {run:?}");
                } else {
                    assert_eq!(distinct, 2);
                    assert_ne!(run[0], run[1], "both items first: {run:?}");
                }
            }
        }
    }

    #[test]
    fn same_seed_same_epoch_other_seed_other_epoch_and_epochs_reshuffle() {
        let labels = labels_of(&[60, 30, 45, 29, 58, 60, 31]);
        for kind in [SamplerKind::Official, SamplerKind::Corrected] {
            let pr = params(3, 4, kind);
            assert_eq!(draw(&pr, &labels, 11), draw(&pr, &labels, 11));
            assert_ne!(draw(&pr, &labels, 11), draw(&pr, &labels, 12));
            let mut rng = ChaCha8Rng::seed_from_u64(11);
            let first = epoch(&pr, &labels, &mut rng).unwrap();
            let second = epoch(&pr, &labels, &mut rng).unwrap();
            assert_eq!(first, draw(&pr, &labels, 11));
            assert_ne!(first, second);
        }
    }

    #[test]
    fn invalid_params_are_errors() {
        use SamplerError::*;
        let k = SamplerKind::Official;
        assert_eq!(SamplerParams::new(0, 3, k), Err(ZeroClassesPerBatch));
        assert_eq!(SamplerParams::new(3, 0, k), Err(ZeroSamplesPerClass));
        let big = SamplerParams::new(usize::MAX, 2, k);
        assert!(matches!(big, Err(BatchSizeOverflow { .. })), "{big:?}");
        // Unvalidated params reach epoch() through the pub fields: still an Err.
        let raw = SamplerParams {
            samples_per_class: 0,
            ..params(2, 1, k)
        };
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        assert_eq!(epoch(&raw, &[0, 0, 1], &mut rng), Err(ZeroSamplesPerClass));
        assert_eq!(raw.batch_size(), Err(ZeroSamplesPerClass));
        assert_eq!(params(6, 9, k).batch_size(), Ok(54));
        let corrected = params(3, 2, SamplerKind::Corrected);
        let few = epoch(&corrected, &[0, 0, 5, 5], &mut rng);
        let want = TooFewClasses {
            needed: 3,
            found: 2,
        };
        assert_eq!(few, Err(want));
    }

    #[test]
    fn empty_labels_are_an_error_for_both_kinds() {
        for kind in [SamplerKind::Official, SamplerKind::Corrected] {
            let pr = params(2, 2, kind);
            let mut rng = ChaCha8Rng::seed_from_u64(0);
            assert_eq!(epoch(&pr, &[], &mut rng), Err(SamplerError::EmptyLabels));
            assert_eq!(batches_per_epoch(&pr, &[]), Err(SamplerError::EmptyLabels));
        }
    }
}
