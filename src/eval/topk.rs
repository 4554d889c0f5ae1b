//! Running top-k of many queries at once on the CPU, fed block by block with similarities, in
//! one pass over each block (the way faiss keeps its heaps): an element enters a query's buffer
//! only when it beats the query's current k-th best, and a full buffer is cut back to the best k
//! with a linear-time selection. Used by [`super::knn`] on the CPU, where a `topk` kernel over
//! every block would cost as much as the matrix product itself.
//!
//! The order is the total order of [`super::knn`]: similarity descending, then gallery index
//! ascending, compared as one `u64` key (order-preserving bits of the f32 similarity, then the
//! complement of the index), so the result does not depend on the order blocks arrive in.

use rayon::prelude::*;

/// The key of (similarity, gallery index): larger is nearer.
#[inline]
pub fn key(sim: f32, index: u32) -> u64 {
    // + 0.0 turns −0.0 into +0.0: equal similarities must give equal high bits.
    let bits = (sim + 0.0).to_bits();
    let ord = if bits >> 31 == 1 {
        !bits
    } else {
        bits | 0x8000_0000
    };
    (u64::from(ord) << 32) | u64::from(u32::MAX - index)
}

/// The (similarity, gallery index) of a key.
#[inline]
pub fn unkey(key: u64) -> (f32, u32) {
    let ord = (key >> 32) as u32;
    let bits = if ord >> 31 == 1 {
        ord & 0x7fff_ffff
    } else {
        !ord
    };
    (f32::from_bits(bits), u32::MAX - (key as u32))
}

/// Per-query buffers of keys; query q owns `keys[q * cap..(q + 1) * cap]`.
pub struct RunningTopK {
    k: usize,
    cap: usize,
    keys: Vec<u64>,
    len: Vec<u32>,
    /// A key must be greater than this to enter (the k-th best after the last cut; 0 before).
    floor: Vec<u64>,
}

impl RunningTopK {
    /// Buffers for `queries` queries keeping the best `k` (≥ 1) each.
    pub fn new(queries: usize, k: usize) -> Self {
        // Room for k/4 newcomers between cuts: memory (8 bytes a slot) against cut frequency.
        let cap = k + (k / 4).max(32);
        RunningTopK {
            k,
            cap,
            keys: vec![0; queries * cap],
            len: vec![0; queries],
            floor: vec![0; queries],
        }
    }

    /// Bytes held by the buffers.
    pub fn bytes(&self) -> usize {
        self.keys.len() * 8 + self.len.len() * 4 + self.floor.len() * 8
    }

    /// Offers a block of similarities: row r (of `rows`, row-major, `cols` wide) belongs to query
    /// `q0 + r`, column c to gallery index `g0 + c`. `offset[c]`, when given, is subtracted
    /// from 2·value (Euclidean ranking: 2·q·g − ‖g‖²). A query never meets itself.
    pub fn offer(
        &mut self,
        block: &[f32],
        rows: usize,
        cols: usize,
        q0: usize,
        g0: usize,
        offset: Option<&[f32]>,
    ) {
        assert_eq!(block.len(), rows * cols, "block of {rows}×{cols}");
        let (k, cap) = (self.k, self.cap);
        let keys = &mut self.keys[q0 * cap..(q0 + rows) * cap];
        let len = &mut self.len[q0..q0 + rows];
        let floor = &mut self.floor[q0..q0 + rows];
        keys.par_chunks_mut(cap)
            .zip(len.par_iter_mut())
            .zip(floor.par_iter_mut())
            .enumerate()
            .for_each(|(r, ((buf, n), fl))| {
                let row = &block[r * cols..(r + 1) * cols];
                let own = q0 + r;
                for (c, &v) in row.iter().enumerate() {
                    let s = match offset {
                        Some(o) => 2.0 * v - o[c],
                        None => v,
                    };
                    let g = g0 + c;
                    let kk = key(s, g as u32);
                    if kk > *fl && g != own {
                        buf[*n as usize] = kk;
                        *n += 1;
                        if *n as usize == cap {
                            *fl = cut(buf, k);
                            *n = k as u32;
                        }
                    }
                }
            });
    }

    /// The best `k` of query `q`, nearest first: (gallery indices, similarities).
    pub fn best(&mut self, q: usize) -> (Vec<i64>, Vec<f32>) {
        let cap = self.cap;
        let n = self.len[q] as usize;
        let buf = &mut self.keys[q * cap..q * cap + n];
        buf.sort_unstable_by(|a, b| b.cmp(a));
        buf.iter()
            .take(self.k)
            .map(|&kk| {
                let (s, i) = unkey(kk);
                (i as i64, s)
            })
            .unzip()
    }
}

/// Keeps the `k` largest keys of a full buffer in its first `k` slots; returns the smallest of
/// them (the new floor).
fn cut(buf: &mut [u64], k: usize) -> u64 {
    let (_, kth, _) = buf.select_nth_unstable_by(k - 1, |a, b| b.cmp(a));
    *kth
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_order_like_similarity_then_lower_index() {
        let pairs = [
            (-1.0f32, 3u32),
            (-0.0, 9),
            (0.0, 2),
            (0.5, 7),
            (0.5, 1),
            (1.0, 0),
        ];
        let keys: Vec<u64> = pairs.iter().map(|&(s, i)| key(s, i)).collect();
        // Increasing keys: −1, then the tie at zero (index 9 below index 2), 0.5 (7 below 1), 1.
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
        for (&(s, i), &kk) in pairs.iter().zip(&keys) {
            let (s2, i2) = unkey(kk);
            assert_eq!((s2, i2), (s + 0.0, i));
        }
        assert!(key(f32::NEG_INFINITY, 0) < key(-3.0e38, 0));
    }

    #[test]
    fn running_top_k_equals_a_full_sort_in_any_block_order() {
        // 3 queries over 500 gallery items with many ties (values in 0..10).
        let (q, n, k) = (3, 500, 40);
        let sim: Vec<f32> = (0..q * n).map(|i| ((i * 7919) % 11) as f32).collect();
        let mut want = Vec::new();
        for r in 0..q {
            let mut all: Vec<u64> = (0..n)
                .filter(|&g| g != r)
                .map(|g| key(sim[r * n + g], g as u32))
                .collect();
            all.sort_unstable_by(|a, b| b.cmp(a));
            want.push(all[..k].to_vec());
        }
        for width in [500, 37, 1] {
            let mut t = RunningTopK::new(q, k);
            let mut g0 = 0;
            while g0 < n {
                let w = width.min(n - g0);
                let block: Vec<f32> = (0..q)
                    .flat_map(|r| sim[r * n + g0..r * n + g0 + w].to_vec())
                    .collect();
                t.offer(&block, q, w, 0, g0, None);
                g0 += w;
            }
            for (r, wanted) in want.iter().enumerate() {
                let (idx, s) = t.best(r);
                let got: Vec<u64> = idx
                    .iter()
                    .zip(&s)
                    .map(|(&i, &v)| key(v, i as u32))
                    .collect();
                assert_eq!(&got, wanted, "query {r}, blocks of {width}");
            }
        }
    }
}
