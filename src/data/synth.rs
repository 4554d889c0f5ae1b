//! `gl synth`: a synthetic dataset in the Stanford Online Products layout — many classes of tiny
//! images — for exercising fetch, the catalogue, prepare and evaluation at SOP scale
//! (11,318 + 11,316 classes) without the real 3 GB archive.
//!
//! It writes one tar archive (no intermediate files) and a registry entry under
//! `<data_dir>/registry.d/`, so `gl fetch <name>` takes the same path as a real dataset.

use anyhow::{ensure, Context, Result};
use rand::{Rng, SeedableRng};
use std::io::Write;
use std::path::{Path, PathBuf};

/// What to generate.
#[derive(Debug, Clone)]
pub struct SynthSpec {
    /// Checked: it names `data/synth/<name>.tar` and `data/registry.d/<name>.toml`.
    pub name: crate::names::Name,
    /// Classes in total; the first ⌊c/2⌋ train, the rest test (like SOP's two files).
    pub classes: u32,
    pub per_class: u32,
    /// Side of the square PNG images in pixels.
    pub size: u32,
    pub seed: u64,
    /// Per-image shift of the class colour, uniform in ± `jitter` per channel (0: none, and
    /// the same bytes as before the option existed).
    pub jitter: u8,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct SynthOutput {
    pub archive: PathBuf,
    pub registry_entry: PathBuf,
    pub images: u64,
    pub train_images: u64,
}

impl SynthSpec {
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.classes >= 2,
            "--classes must be ≥ 2 (one train, one test class)"
        );
        ensure!(self.per_class >= 1, "--per-class must be ≥ 1");
        ensure!(
            (4..=256).contains(&self.size),
            "--size must be in 4..=256 pixels"
        );
        Ok(())
    }
}

/// Writes `<data_dir>/synth/<name>.tar` and `<data_dir>/registry.d/<name>.toml`.
pub fn generate(spec: &SynthSpec, data_dir: &Path) -> Result<SynthOutput> {
    spec.validate()?;
    let root = "Stanford_Online_Products";
    let archive = data_dir.join("synth").join(format!("{}.tar", spec.name));
    std::fs::create_dir_all(archive.parent().unwrap_or(data_dir))
        .with_context(|| format!("creating {}", data_dir.join("synth").display()))?;
    let tmp = crate::tempfiles::temp_file_in(archive.parent().unwrap_or(data_dir))?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(tmp.as_file()));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(spec.seed);
    let n_train_classes = spec.classes / 2;
    let mut lists = [
        String::from("image_id class_id super_class_id path\n"),
        String::from("image_id class_id super_class_id path\n"),
    ];
    let mut image_id = 0u64;
    let mut train_images = 0u64;
    for class in 1..=spec.classes {
        let base: [u8; 3] = rng.random();
        let which = usize::from(class > n_train_classes);
        for k in 0..spec.per_class {
            image_id += 1;
            if which == 0 {
                train_images += 1;
            }
            let rel = format!("synth_final/{class:06}_{k}.png");
            lists[which].push_str(&format!("{image_id} {class} 1 {rel}\n"));
            let colour = match spec.jitter {
                0 => base,
                j => base.map(|c| {
                    let j = i16::from(j);
                    (i16::from(c) + rng.random_range(-j..=j)).clamp(0, 255) as u8
                }),
            };
            let png = tiny_png(spec.size, colour, &mut rng)?;
            append(&mut tar, &format!("{root}/{rel}"), &png)?;
        }
    }
    append(
        &mut tar,
        &format!("{root}/Ebay_train.txt"),
        lists[0].as_bytes(),
    )?;
    append(
        &mut tar,
        &format!("{root}/Ebay_test.txt"),
        lists[1].as_bytes(),
    )?;
    tar.into_inner()
        .context("finishing the tar archive")?
        .flush()
        .context("writing the tar archive")?;
    crate::fsutil::persist(tmp, &archive)?;

    let entry = registry_text(spec, &archive);
    let registry_entry = registry_path(spec, data_dir);
    crate::fsutil::write_atomic(&registry_entry, entry.as_bytes())?;
    Ok(SynthOutput {
        archive,
        registry_entry,
        images: image_id,
        train_images,
    })
}

/// `<data_dir>/registry.d/<name>.toml`, the set's registry entry.
pub fn registry_path(spec: &SynthSpec, data_dir: &Path) -> PathBuf {
    data_dir
        .join(crate::data::registry::LOCAL_REGISTRY_DIR)
        .join(format!("{}.toml", spec.name))
}

/// The `title` line of a registry entry: it carries every parameter of a synthetic set.
fn title_line(entry: &str) -> Option<&str> {
    entry.lines().find(|l| l.starts_with("title = "))
}

/// The parameters (the registry entry's title) of the synthetic set already registered under
/// `spec`'s name when they differ from `spec`'s; `None` when there is none or it is the same
/// set (regenerating it gives the same bytes). A set re-made with other parameters would no
/// longer match the sha256 `gl fetch` pinned for its archive.
pub fn other_parameters(spec: &SynthSpec, data_dir: &Path) -> Result<Option<String>> {
    let path = registry_path(spec, data_dir);
    let old = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let new = registry_text(spec, Path::new(""));
    Ok(match (title_line(&old), title_line(&new)) {
        (Some(o), Some(n)) if o == n => None,
        (o, _) => Some(o.unwrap_or("not written by `gl synth`").to_string()),
    })
}

/// The registry entry of the set `spec` describes, its archive at `archive`.
fn registry_text(spec: &SynthSpec, archive: &Path) -> String {
    let root = "Stanford_Online_Products";
    let n_train_classes = spec.classes / 2;
    let image_id = u64::from(spec.classes) * u64::from(spec.per_class);
    let train_images = u64::from(n_train_classes) * u64::from(spec.per_class);
    let train_classes = u64::from(n_train_classes);
    format!(
        "# Written by `gl synth`: a synthetic SOP-shaped dataset (not real data).\n\
         [datasets.{name}]\n\
         title = \"Synthetic SOP-shaped set ({classes} classes × {per} images, {size}px{jitter}, seed {seed})\"\n\
         license = \"synthetic, no restrictions\"\n\
         root = \"{root}\"\n\
         layout = {{ kind = \"sop\" }}\n\
         expect = {{ images = {images}, classes = {classes}, train_images = {train_images}, test_images = {test_images}, train_classes = {train_classes}, test_classes = {test_classes} }}\n\n\
         [[datasets.{name}.files]]\n\
         name = \"{name}.tar\"\n\
         urls = [\"file://{archive}\"]\n",
        name = spec.name,
        classes = spec.classes,
        per = spec.per_class,
        size = spec.size,
        seed = spec.seed,
        jitter = match spec.jitter {
            0 => String::new(),
            j => format!(", colour jitter ±{j}"),
        },
        images = image_id,
        test_images = image_id - train_images,
        test_classes = u64::from(spec.classes) - train_classes,
        archive = archive.display(),
    )
}

fn append<W: Write>(tar: &mut tar::Builder<W>, path: &str, bytes: &[u8]) -> Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_size(bytes.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    tar.append_data(&mut h, path, bytes)
        .with_context(|| format!("adding {path} to the archive"))
}

/// A `size`×`size` RGB PNG: the class colour plus per-image noise.
fn tiny_png(size: u32, base: [u8; 3], rng: &mut impl Rng) -> Result<Vec<u8>> {
    let mut pixels = Vec::with_capacity((size * size * 3) as usize);
    for _ in 0..size * size {
        for c in base {
            pixels.push(c.saturating_add(rng.random_range(0..32)));
        }
    }
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, size, size);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().context("encoding a PNG")?;
    w.write_image_data(&pixels).context("encoding a PNG")?;
    w.finish().context("encoding a PNG")?;
    Ok(out)
}
