//! `gl bench eval`: exact Recall@K + MAP@R at SOP scale (60,502 × 1024 by default) — our
//! chunked search on the chosen device against faiss-cpu `IndexFlatIP` + the same metrics in
//! NumPy (`tests/reference/eval_ref.py bench`), on the same synthetic vectors, in the same run.
//! Prints both times, both peak resident memories, checks that the metrics agree, and ends with
//! `SPEEDUP eval <faiss time / ours>`.
//!
//! The vectors: `classes` random centres, images assigned round-robin (SOP's 5–6 per class),
//! each a centre plus Gaussian noise, L2-normalised; generated in row blocks so generation does
//! not inflate the peak.

use crate::bench::{print_speedups, Comparison, Reference};
use crate::cli::BenchEvalArgs;
use crate::eval::kmeans::{kmeans, KMeansParams};
use crate::eval::knn::{l2_normalise, Chunks};
use crate::eval::nmi::nmi;
use crate::eval::retrieval::{self, RetrievalParams};
use anyhow::{ensure, Context, Result};
use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Resolved settings.
#[derive(Debug)]
pub struct Settings {
    pub args: BenchEvalArgs,
    pub device: Device,
    pub reference: Option<Reference>,
}

impl Settings {
    pub fn resolve(args: BenchEvalArgs) -> Result<Self> {
        ensure!(
            args.n >= 2 && args.dim >= 1 && args.classes >= 1 && args.classes <= args.n,
            "need n ≥ 2, dim ≥ 1 and 1 ≤ classes ≤ n"
        );
        ensure!(!args.ks.is_empty(), "--ks names no K");
        let device = args.device.resolve()?;
        let reference = match args.no_reference {
            true => None,
            false => Some(Reference::resolve(args.reference.clone())?),
        };
        Ok(Settings {
            args,
            device,
            reference,
        })
    }
}

/// Peak resident set size of this process so far, in MiB.
fn peak_rss_mib() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    u.ru_maxrss as f64 / 1024.0
}

/// The synthetic set: (N×D normalised f32 on the CPU, labels).
fn synthetic(n: i64, dim: i64, classes: i64, noise: f64, seed: u64) -> (Tensor, Vec<i64>) {
    tch::manual_seed(seed as i64);
    let centres = Tensor::randn([classes, dim], (Kind::Float, Device::Cpu));
    let labels: Vec<i64> = (0..n).map(|i| i % classes).collect();
    let x = Tensor::empty([n, dim], (Kind::Float, Device::Cpu));
    let block = 4096;
    let mut start = 0;
    while start < n {
        let len = block.min(n - start);
        let ids = Tensor::from_slice(&labels[start as usize..(start + len) as usize]);
        let rows = centres.index_select(0, &ids)
            + Tensor::randn([len, dim], (Kind::Float, Device::Cpu)) * noise;
        x.narrow(0, start, len).copy_(&l2_normalise(&rows));
        start += len;
    }
    (x, labels)
}

fn write_raw<T: tch::kind::Element>(path: &std::path::Path, t: &Tensor) -> Result<()>
where
    Vec<T>: TryFrom<Tensor, Error = tch::TchError>,
{
    let v = Vec::<T>::try_from(t.contiguous().view([-1]))?;
    let bytes: &[u8] = unsafe {
        // SAFETY: plain numeric elements, read as bytes for a raw little-endian file.
        std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v.as_slice()))
    };
    let mut f =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)?;
    Ok(())
}

/// k-means (k = classes) on the same vectors: seeding and Lloyd iterations timed, NMI printed.
fn time_kmeans(x: &Tensor, labels: &[i64], a: &BenchEvalArgs, device: Device) -> Result<()> {
    use rand::SeedableRng;
    let mut p = KMeansParams::new(a.classes as usize);
    p.restarts = 1;
    p.max_iter = a.kmeans_iters;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(a.seed);
    crate::device::synchronize(device);
    let t0 = Instant::now();
    let c = kmeans(&x.to_device(device), &p, &mut rng)?;
    crate::device::synchronize(device);
    println!(
        "k-means {:>8.2} s  k = {}, {} Lloyd iterations (k-means++ seeding included), inertia {:.1}, NMI {:.3}",
        t0.elapsed().as_secs_f64(),
        a.classes,
        c.iterations,
        c.inertia,
        100.0 * nmi(labels, &c.labels)?
    );
    Ok(())
}

pub fn run(s: Settings) -> Result<ExitCode> {
    let a = &s.args;
    let (x, labels) = synthetic(a.n, a.dim, a.classes, a.noise, a.seed);
    println!(
        "bench eval: {} × {} vectors, {} classes (noise {}), K = {:?}, device {:?}, blocks of {} MiB",
        a.n, a.dim, a.classes, a.noise, a.ks, s.device, a.chunk_mib
    );
    let tmp = tempfile::tempdir()?;
    let (vec_path, lab_path) = (
        tmp.path().join("vectors.f32"),
        tmp.path().join("labels.i64"),
    );
    if s.reference.is_some() {
        write_raw::<f32>(&vec_path, &x)?;
        write_raw::<i64>(&lab_path, &Tensor::from_slice(&labels))?;
    }
    let before = peak_rss_mib();
    let p = RetrievalParams {
        recall_ks: a.ks.clone(),
        map_at_r: true,
        chunks: Chunks::for_budget(a.chunk_mib),
        search: a.search,
        ..Default::default()
    };
    crate::device::synchronize(s.device);
    let t0 = Instant::now();
    let ours = retrieval::evaluate(&x.to_device(s.device), &labels, &p)?;
    crate::device::synchronize(s.device);
    let ours_s = t0.elapsed().as_secs_f64();
    let peak = peak_rss_mib();
    let fmt = |r: &[(usize, f64)], map: Option<f64>| {
        let mut parts: Vec<String> = r
            .iter()
            .map(|(k, v)| format!("R@{k} {:.3}", 100.0 * v))
            .collect();
        parts.push(format!("MAP@R {:.3}", 100.0 * map.unwrap_or(f64::NAN)));
        parts.join(" ")
    };
    println!(
        "gl     {:>8.2} s  peak RSS {:>7.0} MiB (+{:.0} MiB over the vectors and libtorch)  {}",
        ours_s,
        peak,
        peak - before,
        fmt(&ours.recall, ours.map_at_r)
    );
    if a.kmeans_iters > 0 {
        time_kmeans(&x, &labels, a, s.device)?;
    }
    let Some(reference) = &s.reference else {
        return Ok(ExitCode::SUCCESS);
    };
    let ks: Vec<String> = a.ks.iter().map(|k| k.to_string()).collect();
    let r = reference
        .run_json(
            "eval_ref.py",
            &[
                "bench".into(),
                format!("--vectors={}", vec_path.display()),
                format!("--labels={}", lab_path.display()),
                format!("--n={}", a.n),
                format!("--dim={}", a.dim),
                format!("--ks={}", ks.join(",")),
            ],
        )
        .context("faiss reference (pip install faiss-cpu in the venv; `just bench` does)")?;
    let ref_s = r["seconds"].as_f64().context("reference: no seconds")?;
    let ref_recall: Vec<(usize, f64)> =
        a.ks.iter()
            .map(|k| (*k, r["recall"][k.to_string()].as_f64().unwrap_or(f64::NAN)))
            .collect();
    let ref_map = r["map_at_r"].as_f64();
    println!(
        "faiss  {:>8.2} s  peak RSS {:>7.0} MiB (faiss {} IndexFlatIP, {} threads, + NumPy metrics)  {}",
        ref_s,
        r["peak_rss_mb"].as_f64().unwrap_or(f64::NAN),
        r["faiss"].as_str().unwrap_or("?"),
        r["threads"],
        fmt(&ref_recall, ref_map)
    );
    // Same metrics on the same vectors, up to float32 near-ties (a few queries at most).
    let tol = 1e-3;
    for ((k, ours), (_, theirs)) in ours.recall.iter().zip(&ref_recall) {
        ensure!(
            (ours - theirs).abs() <= tol,
            "R@{k}: {ours} (gl) vs {theirs} (faiss) differ by more than {tol}"
        );
    }
    ensure!(
        (ours.map_at_r.unwrap_or(f64::NAN) - ref_map.unwrap_or(f64::NAN)).abs() <= tol,
        "MAP@R: {:?} (gl) vs {ref_map:?} (faiss) differ by more than {tol}",
        ours.map_at_r
    );
    print_speedups(&[Comparison {
        name: "eval".into(),
        ours_s,
        reference_s: ref_s,
    }]);
    Ok(ExitCode::SUCCESS)
}
