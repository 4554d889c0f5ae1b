//! Exact k-nearest-neighbour search for retrieval metrics: every row of an N×D embedding matrix
//! is a query against all other rows (itself excluded), by blocks of queries × gallery rows so
//! that memory is bounded by the block size, not by N², on whatever device the embeddings live
//! on (a GPU when the run has one).
//!
//! Ranking is total and the same for every block size and device: by similarity, descending,
//! and among equal similarities by gallery index, ascending. Each block keeps its candidates as
//! one `i64` key per (similarity, index) pair — the similarity's f32 bits mapped to an
//! order-preserving integer in the high 32 bits, the complement of the index in the low 32 — so
//! the running top-k across blocks is a single `topk` over keys with no ties left to break.
//!
//! Two strategies give the same neighbours: on a GPU, libtorch `topk` per block; on a CPU, a
//! one-pass selection into per-query buffers over the upper triangle of the (symmetric)
//! similarity matrix, which halves the matrix products ([`Strategy`]).

use crate::eval::topk::RunningTopK;
use anyhow::{ensure, Result};
use tch::{Device, Kind, Tensor};

/// How neighbours are ranked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Similarity {
    /// Cosine: rows are L2-normalised first, then ranked by inner product (the paper's
    /// evaluation: Euclidean distance between normalised embeddings ranks the same).
    #[default]
    Cosine,
    /// Euclidean distance between the rows as given (ranked by 2·q·g − ‖g‖²).
    Euclidean,
}

impl std::str::FromStr for Similarity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cosine" => Ok(Similarity::Cosine),
            "euclidean" => Ok(Similarity::Euclidean),
            _ => Err(format!("unknown similarity {s:?} (cosine, euclidean)")),
        }
    }
}

/// Block sizes of the search. The similarity block is `queries × gallery` f32 values; the
/// defaults keep it at 64 MiB (plus its top-k), whatever N is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunks {
    pub queries: i64,
    pub gallery: i64,
}

impl Default for Chunks {
    fn default() -> Self {
        Chunks {
            queries: 1024,
            gallery: 16384,
        }
    }
}

impl Chunks {
    /// Blocks of about `mib` MiB of similarities (1024 queries, the gallery chunk to fit).
    pub fn for_budget(mib: usize) -> Self {
        let elems = (mib.max(1) as i64) << 18; // MiB / 4 bytes
        let queries = 1024.min(elems);
        Chunks {
            queries,
            gallery: (elems / queries).max(1),
        }
    }
}

/// How [`Index::search`] selects neighbours. Both rank by the same total order; their
/// similarities come from differently shaped matrix products, so two candidates within a
/// rounding error of each other may swap (the tests compare them on random data).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// [`Strategy::Running`] on the CPU, [`Strategy::TopkBlocks`] on a GPU.
    #[default]
    Auto,
    /// libtorch `topk` per block of query chunk × gallery chunk, merged by key (fast on a GPU;
    /// memory bounded by the block size alone).
    #[serde(rename = "blocks")]
    TopkBlocks,
    /// One pass per block into per-query buffers ([`super::topk`]), over the upper triangle of
    /// the symmetric similarity matrix (fast on a CPU; N × 1.25k keys of 8 bytes and a block
    /// plus its transpose besides; runs on the CPU whatever the embeddings' device).
    #[serde(rename = "triangle")]
    Running,
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Strategy::Auto),
            "blocks" => Ok(Strategy::TopkBlocks),
            "triangle" => Ok(Strategy::Running),
            _ => Err(format!("unknown search {s:?} (auto, blocks, triangle)")),
        }
    }
}

/// The `k` nearest neighbours of the queries `start..start + len`: gallery indices and
/// similarities, both `len × k`, nearest first.
#[derive(Debug)]
pub struct Neighbours {
    pub start: i64,
    pub indices: Tensor,
    pub similarities: Tensor,
}

/// Prepared embeddings: f32 on their device, normalised for cosine.
pub struct Index {
    x: Tensor,
    /// ‖g‖² per row, for Euclidean ranking.
    sq_norms: Option<Tensor>,
    n: i64,
}

impl Index {
    /// Validates `embeddings` (N×D, finite) and prepares them for `similarity`.
    pub fn new(embeddings: &Tensor, similarity: Similarity) -> Result<Self> {
        let size = embeddings.size();
        ensure!(
            size.len() == 2,
            "embeddings must be N×D, got shape {size:?}"
        );
        ensure!(
            size[0] < (1 << 31),
            "at most 2^31 embeddings, got {}",
            size[0]
        );
        let x = embeddings.to_kind(Kind::Float);
        ensure!(
            bool::try_from(x.isfinite().all())?,
            "embeddings contain NaN or infinite values"
        );
        let (x, sq_norms) = match similarity {
            // Rows already of unit length (as `gl embed` writes them) are used as they are: no
            // second N×D copy at SOP scale.
            Similarity::Cosine if is_unit_norm(&x)? => (x, None),
            Similarity::Cosine => (l2_normalise(&x), None),
            Similarity::Euclidean => {
                let sq = (&x * &x).sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
                (x, Some(sq))
            }
        };
        Ok(Index {
            n: size[0],
            x,
            sq_norms,
        })
    }

    pub fn len(&self) -> i64 {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    pub fn device(&self) -> Device {
        self.x.device()
    }

    /// Calls `visit` with the `k` nearest neighbours of every query chunk, in order.
    /// `k` must be below N (a query has N − 1 candidates).
    pub fn search(
        &self,
        k: i64,
        chunks: Chunks,
        visit: impl FnMut(Neighbours) -> Result<()>,
    ) -> Result<()> {
        self.search_with(k, chunks, Strategy::Auto, visit)
    }

    /// [`Index::search`] with a chosen [`Strategy`] (both give the same neighbours).
    pub fn search_with(
        &self,
        k: i64,
        chunks: Chunks,
        strategy: Strategy,
        mut visit: impl FnMut(Neighbours) -> Result<()>,
    ) -> Result<()> {
        ensure!(
            k >= 1 && k < self.n,
            "k = {k} neighbours asked of {} embeddings (at most N − 1)",
            self.n
        );
        ensure!(
            chunks.queries >= 1 && chunks.gallery >= 1,
            "chunk sizes must be ≥ 1, got {chunks:?}"
        );
        let running = match strategy {
            Strategy::Auto => self.device() == Device::Cpu,
            Strategy::Running => true,
            Strategy::TopkBlocks => false,
        };
        tch::no_grad(|| {
            if running {
                return self.search_running(k, chunks, &mut visit);
            }
            let bar = crate::progress::bar(self.n as u64, "exact search (queries)");
            let mut start = 0;
            while start < self.n {
                let len = chunks.queries.min(self.n - start);
                bar.inc(len as u64);
                let keys = self.chunk_keys(start, len, k, chunks.gallery)?;
                let (indices, similarities) = decode(&keys);
                visit(Neighbours {
                    start,
                    indices,
                    similarities,
                })?;
                start += len;
            }
            bar.finish_and_clear();
            Ok(())
        })
    }

    /// The CPU search: square blocks of the upper triangle of the similarity matrix (it is
    /// symmetric for cosine; for Euclidean only the ‖·‖² offset differs by direction), each
    /// block offered to the running top-k of its rows and, transposed, of its columns — half
    /// the matrix products of a plain blocked search.
    fn search_running(
        &self,
        k: i64,
        chunks: Chunks,
        visit: &mut dyn FnMut(Neighbours) -> Result<()>,
    ) -> Result<()> {
        let n = self.n;
        // The selection runs on the CPU; embeddings elsewhere are copied here first.
        let x = self.x.to_device(Device::Cpu);
        let side = ((chunks.queries as f64 * chunks.gallery as f64).sqrt() as i64).max(1);
        let mut best = RunningTopK::new(n as usize, k as usize);
        tracing::debug!(
            "exact search: {n} queries, k = {k}, blocks of {side}², buffers of {} MiB",
            best.bytes() >> 20
        );
        let sq: Option<Vec<f32>> = match &self.sq_norms {
            Some(t) => Some(Vec::<f32>::try_from(t.to_device(Device::Cpu))?),
            None => None,
        };
        let offset = |start: i64, len: i64| {
            sq.as_ref()
                .map(|v| &v[start as usize..(start + len) as usize])
        };
        let bar = crate::progress::bar(n as u64, "exact search (queries)");
        let mut i0 = 0;
        while i0 < n {
            let bi = side.min(n - i0);
            let xi = x.narrow(0, i0, bi);
            let mut j0 = i0;
            while j0 < n {
                let bj = side.min(n - j0);
                let d = xi.matmul(&x.narrow(0, j0, bj).tr()).contiguous();
                let (ui, uj) = (bi as usize, bj as usize);
                best.offer(
                    cpu_floats(&d)?,
                    ui,
                    uj,
                    i0 as usize,
                    j0 as usize,
                    offset(j0, bj),
                );
                if j0 != i0 {
                    let t = d.tr().contiguous();
                    best.offer(
                        cpu_floats(&t)?,
                        uj,
                        ui,
                        j0 as usize,
                        i0 as usize,
                        offset(i0, bi),
                    );
                }
                j0 += bj;
            }
            i0 += bi;
            bar.inc(bi as u64);
        }
        bar.finish_and_clear();
        let mut start = 0;
        while start < n {
            let len = chunks.queries.min(n - start);
            let (mut idx, mut sim) = (Vec::new(), Vec::new());
            for q in start..start + len {
                let (i, s) = best.best(q as usize);
                idx.extend(i);
                sim.extend(s);
            }
            visit(Neighbours {
                start,
                indices: Tensor::from_slice(&idx).view([len, k]),
                similarities: Tensor::from_slice(&sim).view([len, k]),
            })?;
            start += len;
        }
        Ok(())
    }

    /// Top-`k` keys (sorted, largest first) of queries `start..start + len` over all gallery
    /// blocks.
    fn chunk_keys(&self, start: i64, len: i64, k: i64, gallery: i64) -> Result<Tensor> {
        let device = self.device();
        let q = self.x.narrow(0, start, len);
        let own = Tensor::arange_start(start, start + len, (Kind::Int64, device));
        let mut best: Option<Tensor> = None;
        let mut g0 = 0;
        while g0 < self.n {
            let glen = gallery.min(self.n - g0);
            let g = self.x.narrow(0, g0, glen);
            let mut sim = q.matmul(&g.tr());
            if let Some(sq) = &self.sq_norms {
                sim = sim * 2.0 - sq.narrow(0, g0, glen).unsqueeze(0);
            }
            // The query itself is not a neighbour: rows whose own index falls in this block.
            let in_block = own.ge(g0).logical_and(&own.lt(g0 + glen));
            if bool::try_from(in_block.any())? {
                let rows = in_block.nonzero().squeeze_dim(1);
                let cols = own.index_select(0, &rows) - g0;
                let _ = sim.index_put_(
                    &[Some(rows), Some(cols)],
                    &Tensor::from(f32::NEG_INFINITY).to_device(device),
                    false,
                );
            }
            let keys = block_top_keys(&sim, g0, k.min(glen))?;
            best = Some(match best {
                None => keys,
                Some(b) => {
                    let both = Tensor::cat(&[b, keys], 1);
                    let kk = k.min(both.size()[1]);
                    both.topk(kk, 1, true, true).0
                }
            });
            g0 += glen;
        }
        let best = best.expect("N ≥ 2 gives one gallery block");
        // One block may hold fewer than k candidates; the merge sorted all others.
        Ok(best.topk(k, 1, true, true).0)
    }
}

/// The f32 values of a contiguous CPU tensor, without a copy.
fn cpu_floats(t: &Tensor) -> Result<&[f32]> {
    ensure!(
        t.device() == Device::Cpu && t.kind() == Kind::Float && t.is_contiguous(),
        "internal: expected a contiguous f32 CPU tensor"
    );
    let n = t.numel();
    // SAFETY: the tensor is contiguous f32 on the CPU, holds `n` elements, and outlives the
    // returned slice (borrowed from `t`).
    Ok(unsafe { std::slice::from_raw_parts(t.data_ptr() as *const f32, n) })
}

/// Every row has L2 norm 1 within 1e-5.
fn is_unit_norm(x: &Tensor) -> Result<bool> {
    let dev = x.norm_scalaropt_dim(2, [1], false) - 1.0;
    Ok(x.size()[0] == 0 || f64::try_from(dev.abs().max())? <= 1e-5)
}

/// Rows scaled to unit L2 norm (a zero row stays zero).
pub fn l2_normalise(x: &Tensor) -> Tensor {
    x / x.norm_scalaropt_dim(2, [1], true).clamp_min(1e-12)
}

/// The top-`kk` keys of one similarity block whose first column is gallery index `g0`.
///
/// `topk` on the f32 values picks candidates fast; only a row whose `kk`-th value is tied with
/// a value left out (more than `kk` values ≥ it) is ranked again over all its keys, so ties at
/// the boundary go to the lower index as everywhere else.
fn block_top_keys(sim: &Tensor, g0: i64, kk: i64) -> Result<Tensor> {
    let device = sim.device();
    let (vals, idx) = sim.topk(kk, 1, true, false);
    let mut keys = encode(&vals, &(idx + g0));
    let kth = vals.amin([1], true);
    let ambiguous = sim
        .ge_tensor(&kth)
        .sum_dim_intlist([1i64].as_slice(), false, Kind::Int64)
        .gt(kk);
    if bool::try_from(ambiguous.any())? {
        let rows = ambiguous.nonzero().squeeze_dim(1);
        let sub = sim.index_select(0, &rows);
        let cols = Tensor::arange_start(g0, g0 + sim.size()[1], (Kind::Int64, device))
            .unsqueeze(0)
            .expand_as(&sub);
        let exact = encode(&sub, &cols).topk(kk, 1, true, false).0;
        let _ = keys.index_copy_(0, &rows, &exact);
    }
    Ok(keys)
}

const LOW: i64 = 1 << 32;

/// Packs f32 similarities and gallery indices (same shape) into order-preserving i64 keys.
fn encode(sim: &Tensor, index: &Tensor) -> Tensor {
    // + 0.0 turns −0.0 into +0.0, which compare equal as floats and must as keys.
    let bits = (sim + 0.0).contiguous().view_dtype(Kind::Int);
    let ord = order_bits(&bits).to_kind(Kind::Int64);
    ord * LOW + (LOW - 1 - index)
}

/// Unpacks keys into (gallery indices, f32 similarities).
fn decode(keys: &Tensor) -> (Tensor, Tensor) {
    let ord = keys.floor_divide_scalar(LOW);
    let index = (LOW - 1) - (keys - &ord * LOW);
    let bits = order_bits(&ord.to_kind(Kind::Int));
    (index, bits.view_dtype(Kind::Float))
}

/// The involution between IEEE-754 f32 bits (as i32) and integers that sort like the floats:
/// non-negative floats keep their bits, negative ones have all but the sign bit flipped.
fn order_bits(bits: &Tensor) -> Tensor {
    bits.bitwise_xor(0x7fff_ffff_i64)
        .where_self(&bits.lt(0), bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_sort_like_floats() {
        let v = [
            -f32::INFINITY,
            -2.5,
            -1e-30,
            -0.0,
            0.0,
            1e-30,
            0.5,
            1.0,
            3.0,
        ];
        let sim = Tensor::from_slice(&v).view([1, -1]);
        let idx = Tensor::from_slice(&[0i64, 1, 2, 3, 4, 5, 6, 7, 8]).view([1, -1]);
        let keys = encode(&sim, &idx);
        let (i, s) = decode(&keys);
        assert_eq!(
            Vec::<i64>::try_from(i.view([-1])).unwrap(),
            (0..9).collect::<Vec<_>>()
        );
        let back = Vec::<f32>::try_from(s.view([-1])).unwrap();
        for (a, b) in back.iter().zip(v) {
            assert!(*a == b, "{a} != {b}");
        }
        let k = Vec::<i64>::try_from(keys.view([-1])).unwrap();
        // −0.0 and +0.0 are equal similarities: the lower index (3) ranks first.
        for w in [0, 1, 2, 4, 5, 6, 7].map(|j| (k[j], k[j + 1])) {
            assert!(w.0 < w.1 || w == (k[3], k[4]), "{w:?}");
        }
        assert!(k[3] > k[4], "tie on zero: index 3 ranks above index 4");
    }
}
