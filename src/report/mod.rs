//! The report stage (`gl report`): a profile's tables and figures regenerated from the catalogue
//! alone — metrics, runs, epochs, and the checksummed embeddings and dataset images it indexes —
//! into `reports/<profile>/`, with `reports/README.md` linking every profile's report. Nothing
//! in the output depends on the time or the machine, so the same catalogue gives the same bytes.

pub mod ablation;
pub mod curves;
pub mod data;
pub mod environment;
pub mod figures;
#[cfg(test)]
mod fixtures;
pub mod gallery;
pub mod html;
pub mod leaderboard;
pub mod paired;
pub mod published;
pub mod sweep;
pub mod table;
pub mod tables;
pub mod tsne;

use crate::catalog::Catalog;
use crate::eval::embeddings_file::{self, EmbeddingSet};
use crate::fsutil::write_atomic;
use anyhow::{bail, ensure, Context, Result};
use data::{DatasetData, EmbeddingsRow, RunRow};
use figures::ProjectionPanel;
use html::Doc;
use published::Published;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use table::Table;

/// What the figures show, within limits that keep the report quick at SOP scale.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportParams {
    /// Classes in the 2-D projection (the lowest class ids of the test set).
    pub projection_classes: usize,
    /// Images per class in the projection (the first ones).
    pub projection_per_class: usize,
    pub tsne: tsne::TsneParams,
    pub gallery_queries: usize,
    pub gallery_k: usize,
    /// Thumbnail edge in pixels.
    pub thumb: u32,
    /// Tasks of the profile that were not fresh when the report was made (`gl report
    /// --allow-stale`), as "stage:task (status)": the footer says the report is built on them.
    pub stale: Vec<String>,
}

impl Default for ReportParams {
    fn default() -> Self {
        ReportParams {
            projection_classes: 10,
            projection_per_class: 30,
            tsne: tsne::TsneParams::default(),
            gallery_queries: 8,
            gallery_k: 5,
            thumb: 96,
            stale: Vec::new(),
        }
    }
}

/// Reads an embeddings file after checking it against the catalogue's checksum.
fn read_verified(e: &EmbeddingsRow) -> Result<EmbeddingSet> {
    let bytes = std::fs::read(&e.path).with_context(|| format!("reading {}", e.path.display()))?;
    let got = hex::encode(Sha256::digest(&bytes));
    ensure!(
        got == e.sha256,
        "{}: sha256 {got} differs from the catalogue's {} (changed since it was indexed: \
         re-run `gl embed`, or `gl index-runs`)",
        e.path.display(),
        e.sha256
    );
    embeddings_file::read(&e.path)
}

fn flat(set: &EmbeddingSet) -> Result<Vec<f32>> {
    Ok(Vec::<f32>::try_from(
        set.vectors
            .to_kind(tch::Kind::Float)
            .contiguous()
            .view([-1]),
    )?)
}

/// Rows of the projection: the first `per_class` rows of each of the `classes` lowest classes.
fn projection_rows(set: &EmbeddingSet, classes: usize, per_class: usize) -> Vec<(usize, usize)> {
    let mut ids: Vec<i64> = set.class_ids.clone();
    ids.sort_unstable();
    ids.dedup();
    let chosen: BTreeMap<i64, usize> = ids
        .into_iter()
        .take(classes)
        .enumerate()
        .map(|(i, c)| (c, i))
        .collect();
    let mut count = vec![0usize; chosen.len()];
    let mut rows = Vec::new();
    for (row, c) in set.class_ids.iter().enumerate() {
        if let Some(&k) = chosen.get(c) {
            if count[k] < per_class {
                count[k] += 1;
                rows.push((row, k));
            }
        }
    }
    rows
}

fn rows_f64(v: &[f32], dim: usize, rows: &[usize]) -> Vec<Vec<f64>> {
    rows.iter()
        .map(|&r| {
            v[r * dim..(r + 1) * dim]
                .iter()
                .map(|&x| x as f64)
                .collect()
        })
        .collect()
}

/// The test embeddings of a dataset's first Group Loss run, read and checked once for both the
/// projection and the gallery.
struct Shown<'a> {
    run: &'a RunRow,
    file: &'a EmbeddingsRow,
    set: EmbeddingSet,
}

/// [`Shown`] of `d`, or why there is none.
fn shown(d: &DatasetData) -> Result<std::result::Result<Shown<'_>, String>> {
    let Some(run) = d.first_run() else {
        return Ok(Err("no Group Loss run".into()));
    };
    let Some(file) = d.embeddings.get(&(run.run_id.clone(), "selected".into())) else {
        return Ok(Err(format!("no test embeddings of {}", run.run_id)));
    };
    Ok(Ok(Shown {
        run,
        file,
        set: read_verified(file)?,
    }))
}

/// The projection figure of `d`: t-SNE of the same test images under the untrained network
/// and the first Group Loss run.
fn projection(d: &DatasetData, s: &Shown, p: &ReportParams) -> Result<Option<String>> {
    let (run, sel, trained) = (s.run, s.file, &s.set);
    let rows = projection_rows(trained, p.projection_classes, p.projection_per_class);
    if rows.len() < 3 {
        return Ok(None);
    }
    let idx: Vec<usize> = rows.iter().map(|r| r.0).collect();
    let classes: Vec<usize> = rows.iter().map(|r| r.1).collect();
    let mut panels = Vec::new();
    if let Some(u) = d.untrained_embeddings() {
        let untrained = read_verified(u)?;
        ensure!(
            untrained.image_ids == trained.image_ids,
            "{} and {} hold different images",
            u.path.display(),
            sel.path.display()
        );
        let dim = untrained.dim() as usize;
        let x = rows_f64(&flat(&untrained)?, dim, &idx);
        panels.push(ProjectionPanel {
            title: "pretrained, untrained".into(),
            points: tsne::tsne(&x, p.tsne)?,
            classes: classes.clone(),
        });
    }
    let dim = trained.dim() as usize;
    let x = rows_f64(&flat(trained)?, dim, &idx);
    panels.push(ProjectionPanel {
        title: format!("Group Loss, seed {}", run.seed),
        points: tsne::tsne(&x, p.tsne)?,
        classes,
    });
    Ok(Some(figures::projection(&d.name, &panels)?))
}

/// The retrieval gallery of `d`'s first Group Loss run, or why there is none.
fn gallery_png(
    d: &DatasetData,
    s: &Shown,
    p: &ReportParams,
) -> Result<std::result::Result<Vec<u8>, String>> {
    let (sel, set) = (s.file, &s.set);
    let Some(root) = d.root.as_ref().filter(|r| r.is_dir()) else {
        return Ok(Err(format!(
            "the images of {} are not on this machine",
            d.name
        )));
    };
    let Some(ids) = &set.image_ids else {
        return Ok(Err(format!(
            "{} has no image_id column",
            sel.path.display()
        )));
    };
    let dim = set.dim() as usize;
    let v = flat(set)?;
    let thumb = |row: usize| -> Result<image::RgbImage> {
        let rel = d.images.get(&ids[row]).with_context(|| {
            format!(
                "image {} of {} is not in the catalogue's images",
                ids[row],
                sel.path.display()
            )
        })?;
        gallery::thumbnail(&root.join(rel), p.thumb)
    };
    let mut rows = Vec::new();
    for q in gallery::pick_queries(set.len(), p.gallery_queries) {
        let nn = gallery::neighbours(&v, dim, q, p.gallery_k);
        rows.push(gallery::GalleryRow {
            query: thumb(q)?,
            neighbours: nn
                .into_iter()
                .map(|j| Ok((thumb(j)?, set.class_ids[j] == set.class_ids[q])))
                .collect::<Result<_>>()?,
        });
    }
    Ok(Ok(gallery::render(&rows, p.thumb)?))
}

/// One generated file, relative to the report directory.
struct File {
    rel: String,
    bytes: Vec<u8>,
}

fn table_files(files: &mut Vec<File>, name: &str, t: &Table) {
    files.push(File {
        rel: format!("tables/{name}.md"),
        bytes: t.to_markdown().into_bytes(),
    });
    files.push(File {
        rel: format!("tables/{name}.tex"),
        bytes: t.to_latex(&format!("tab:{name}")).into_bytes(),
    });
}

/// Builds every file of the report of `profile`.
fn build(cat: &Catalog, project_root: &Path, profile: &str, p: &ReportParams) -> Result<Vec<File>> {
    let (data, failed) = data::load(cat, profile)?;
    let published = Published::load(project_root)?;
    let mut files = Vec::new();
    let mut md = Doc::new(&format!("# Report: profile `{}`\n\n", data.profile));
    if !data.description.is_empty() {
        md += &format!("{}.\n\n", data.description);
    }
    md += &format!(
        "Regenerated from the catalogue alone by `gl report --profile {0}` (the last stage of \
         `gl run --profile {0}`); the same catalogue gives the same bytes. Numbers are test-set \
         percentages of each run's selected epoch; ± is the sample standard deviation over \
         seeds. The paper's numbers come from `pipeline/published.toml`: {1} (checked against \
         {2}); \"—\" marks a number not given there.\n\n",
        data.profile, published.source.paper, published.source.checked_against
    );
    if !failed.is_empty() {
        md += &format!(
            "**Incomplete:** the latest run of these tasks failed, so their results are left \
             out: {}.\n\n",
            failed.join(", ")
        );
    }
    for d in &data.datasets {
        let pubd = published.rows(&d.name);
        let metrics = tables::metrics_table(d, pubd)?;
        let selection = tables::selection_table(d)?;
        table_files(&mut files, &d.name, &metrics);
        // A dataset with only a released checkpoint has no training runs to select epochs of.
        let selection = Some(selection).filter(|t| !t.rows.is_empty());
        if let Some(selection) = &selection {
            table_files(&mut files, &format!("{}-selection", d.name), selection);
        }
        md += &format!("## {}\n\n{}\n\n", d.name, metrics.caption);
        md.table(&metrics, false);
        md += "\n";
        if pubd.is_none() {
            md += "The paper reports no numbers for this dataset.\n\n";
        }
        if let Some(t) = paired::paired_table(d) {
            table_files(&mut files, &format!("{}-paired", d.name), &t);
            md += &format!("{}\n\n", t.caption);
            md.table(&t, false);
            md += &format!(
                "\n{}\n\nLaTeX: [`tables/{1}-paired.tex`](tables/{1}-paired.tex).\n\n",
                paired::summary(d),
                d.name
            );
        }
        match &selection {
            Some(selection) => {
                md += &format!("{}\n\n", selection.caption);
                md.table(selection, false);
                md += "\n";
                md += &format!(
                    "LaTeX: [`tables/{0}.tex`](tables/{0}.tex), [`tables/{0}-selection.tex`](tables/{0}-selection.tex).\n\n",
                    d.name
                );
            }
            None => md += &format!("LaTeX: [`tables/{0}.tex`](tables/{0}.tex).\n\n", d.name),
        }
        if let Some(s) = &d.sweep {
            let t = sweep::sweep_table(d, s)?;
            table_files(&mut files, &format!("{}-sweep", d.name), &t);
            md += &format!("### Sweep\n\n{}\n\n", t.caption);
            md.table(&t, true);
            md += &format!(
                "\nLaTeX: [`tables/{0}-sweep.tex`](tables/{0}-sweep.tex).\n\n",
                d.name
            );
        }
        for track in leaderboard::tracks(d) {
            let Some(t) = leaderboard::table(d, &track) else {
                continue;
            };
            let (name, heading) = match track.as_str() {
                "" => (format!("{}-leaderboard", d.name), "Leaderboard".to_string()),
                tr => (
                    format!("{}-leaderboard-{tr}", d.name),
                    format!("Leaderboard: {tr} start"),
                ),
            };
            table_files(&mut files, &name, &t);
            md += &format!("### {heading}\n\n{}\n\n", t.caption);
            md.table(&t, true);
            md += &format!(
                "\n{}\n\nLaTeX: [`tables/{name}.tex`](tables/{name}.tex).\n\n",
                leaderboard::summary(d, &track).unwrap_or_default(),
            );
        }
        for (objective, t) in ablation::tables(d).unwrap_or_default() {
            let name = format!("{}-ablation-{objective}", d.name);
            table_files(&mut files, &name, &t);
            md += &format!("### Ablation: {objective}\n\n{}\n\n", t.caption);
            md.table(&t, true);
            md += &format!("\n\nLaTeX: [`tables/{name}.tex`](tables/{name}.tex).\n\n");
        }
        let mut figure = |name: String, bytes: Vec<u8>, alt: &str, md: &mut Doc| {
            let rel = format!("figures/{name}");
            md.figure(&rel, alt, &bytes);
            files.push(File { rel, bytes });
        };
        for track in leaderboard::tracks(d) {
            if let Some(svg) = leaderboard::figure(d, &track).transpose()? {
                let name = match track.as_str() {
                    "" => format!("{}-leaderboard.svg", d.name),
                    tr => format!("{}-leaderboard-{tr}.svg", d.name),
                };
                figure(name, svg.into_bytes(), "test MAP@R per objective", &mut md);
            }
        }
        if let Some(s) = d
            .sweep
            .as_ref()
            .filter(|s| !s.tuned.is_empty() || s.ablation)
        {
            let (text, fig) = curves::benchmark_section(cat, &d.name, s)?;
            md += &text;
            if let Some(f) = fig {
                let name = f.rel.trim_start_matches("figures/").to_string();
                figure(name, f.bytes, "validation MAP@R per epoch", &mut md);
            }
        }
        // A benchmark's grids differ by objective: R@1 against one key would mix them.
        if let Some(s) = d
            .sweep
            .as_ref()
            .filter(|s| s.tuned.is_empty() && !s.ablation)
        {
            let summaries = sweep::summaries(s)?;
            for (k, key) in s.keys.iter().enumerate() {
                let svg = figures::sweep(&d.name, s, &summaries, k)?;
                let name = format!("{}-sweep-{key}.svg", d.name);
                figure(
                    name,
                    svg.into_bytes(),
                    &format!("R@1 against {key}"),
                    &mut md,
                );
            }
        }
        let summaries = tables::method_summaries(d)?;
        let ks = d.recall_ks();
        let svg = figures::recall_curves(d, &ks, &summaries, pubd)?;
        figure(
            format!("{}-recall.svg", d.name),
            svg.into_bytes(),
            "Recall@K",
            &mut md,
        );
        if !d.epochs.is_empty() {
            let svg = figures::training_curves(d)?;
            figure(
                format!("{}-training.svg", d.name),
                svg.into_bytes(),
                "training curves",
                &mut md,
            );
        }
        let shown = shown(d)?;
        let svg = match &shown {
            Ok(s) => projection(d, s, p)?,
            Err(_) => None,
        };
        if let Some(svg) = svg {
            md += &format!(
                "t-SNE of the test embeddings of the first {} classes (up to {} images each), \
                 before and after training:\n\n",
                p.projection_classes, p.projection_per_class
            );
            figure(
                format!("{}-tsne.svg", d.name),
                svg.into_bytes(),
                "t-SNE",
                &mut md,
            );
        }
        let gallery = match &shown {
            Ok(s) => gallery_png(d, s, p)?,
            Err(why) => Err(why.clone()),
        };
        match gallery {
            Ok(png) => {
                md += &format!(
                    "Retrieval: {} test queries (blue) of the first Group Loss run with their \
                     top-{} neighbours, green when of the query's class, red when not:\n\n",
                    p.gallery_queries, p.gallery_k
                );
                figure(
                    format!("{}-gallery.png", d.name),
                    png,
                    "retrieval gallery",
                    &mut md,
                );
            }
            Err(why) => md += &format!("No retrieval gallery: {why}.\n\n"),
        }
    }
    let footer = environment::footer(cat, &data, project_root)?;
    md.footer(&(footer + &stale_note(&p.stale)));
    files.push(File {
        rel: "README.md".into(),
        bytes: md.to_markdown().into_bytes(),
    });
    let title = format!("Report: profile {}", data.profile);
    files.push(File {
        rel: "index.html".into(),
        bytes: md.to_html(&title).into_bytes(),
    });
    Ok(files)
}

/// The footer's warning of a report made from stale results (empty when there were none).
fn stale_note(stale: &[String]) -> String {
    if stale.is_empty() {
        return String::new();
    }
    let more = match stale.len().saturating_sub(10) {
        0 => String::new(),
        n => format!(" and {n} more"),
    };
    format!(
        "\n**Made from stale results** (`gl report --allow-stale`): {} task(s) of the profile \
         were not fresh — {}{more}. `gl run` of the profile brings them up to date.\n",
        stale.len(),
        stale[..stale.len().min(10)].join(", ")
    )
}

/// Writes the report of `profile` to `<reports>/<profile>/` (replacing it whole: built in a
/// sibling directory, then swapped in) and refreshes `<reports>/README.md`. Returns the files
/// written, relative to `reports`.
pub fn generate(
    cat: &Catalog,
    project_root: &Path,
    reports: &Path,
    profile: &str,
    p: &ReportParams,
) -> Result<Vec<PathBuf>> {
    if profile.is_empty() || profile.contains(['/', '\\']) || profile.starts_with('.') {
        bail!("{profile:?} is not a profile name");
    }
    let files = build(cat, project_root, profile, p)?;
    std::fs::create_dir_all(reports).with_context(|| format!("creating {}", reports.display()))?;
    let _writer = lock_reports(reports)?;
    crate::tempfiles::remove_leftovers(reports, 0, &is_leftover)?;
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{profile}.staging-"))
        .tempdir_in(reports)
        .with_context(|| format!("creating a staging directory in {}", reports.display()))?;
    let mut written = Vec::new();
    for f in &files {
        write_atomic(&staging.path().join(&f.rel), &f.bytes)?;
        written.push(Path::new(profile).join(&f.rel));
    }
    let dest = reports.join(profile);
    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    std::fs::set_permissions(staging.path(), mode)?;
    crate::fsutil::replace_dir(staging.path(), &dest)
        .with_context(|| format!("moving the new report into {}", dest.display()))?;
    let _ = staging.keep(); // renamed: nothing left to remove
    write_index(reports)?;
    written.push(PathBuf::from("README.md"));
    Ok(written)
}

/// Takes an exclusive `flock` on the directory `reports` itself (no lock file in the
/// git-tracked tree), waiting for another `gl report` writing there: one writer swaps reports
/// in and removes what a killed one left.
fn lock_reports(reports: &Path) -> Result<std::fs::File> {
    use std::os::unix::io::AsRawFd;
    let dir =
        std::fs::File::open(reports).with_context(|| format!("opening {}", reports.display()))?;
    // SAFETY: flock on a descriptor we own; released when `dir` is closed.
    if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("locking {}", reports.display()));
    }
    Ok(dir)
}

/// What a killed `gl report` leaves in `reports/`: a staging directory (`.<profile>.staging-*`,
/// or `.<profile>.` and six letters or digits from before they were named so), a report set
/// aside (`.<profile>.old-*/previous/`) or the index's temporary file.
fn is_leftover(name: &str) -> bool {
    let legacy = name
        .strip_prefix('.')
        .and_then(|n| n.rsplit_once('.'))
        .is_some_and(|(base, tail)| {
            !base.is_empty() && tail.len() == 6 && tail.bytes().all(|b| b.is_ascii_alphanumeric())
        });
    legacy || crate::tempfiles::is_swap_leftover(name) || crate::tempfiles::is_temp_file(name)
}

/// `<reports>/README.md`: a link to every profile's report there.
fn write_index(reports: &Path) -> Result<()> {
    let mut names: Vec<String> = std::fs::read_dir(reports)
        .with_context(|| format!("listing {}", reports.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("README.md").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    let mut md = String::from(
        "# Reports\n\nOne directory per pipeline profile, each regenerated from the catalogue by \
         `gl report --profile <name>` (the last stage of `gl run`): a README with the tables and \
         figures, `tables/` (Markdown and LaTeX) and `figures/` (SVG, and the retrieval gallery \
         as PNG).\n\n",
    );
    for n in &names {
        md += &format!("- [{n}]({n}/README.md)\n");
    }
    write_atomic(&reports.join("README.md"), md.as_bytes())
}
