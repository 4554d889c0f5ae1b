//! Copies of local files (`file://` mirrors and `--from <path>`) through the `.part`.

use std::fs::File;
use std::path::Path;

use super::digest::{copy_hashing, CopyError, Hashers};
use super::error::io_err;
use super::target::Target;
use super::{FetchError, FetchOptions, Fetched};

/// Copies a local file through the `.part` with hashing; never resumes. `label` is what
/// [`Fetched::source`] and the errors name as the source.
pub(super) fn copy(
    src: &Path,
    label: &str,
    target: &Target<'_>,
    opts: &FetchOptions,
) -> Result<Fetched, FetchError> {
    let local_err = |source| FetchError::LocalSource {
        path: src.to_owned(),
        source,
    };
    let mut input = File::open(src).map_err(local_err)?;
    let total = input.metadata().map_err(local_err)?.len();
    let mut out = target.open_part(false)?;
    let mut hashers = Hashers::new();
    let bar = target.progress(opts.progress, Some(total), 0);
    let copied = copy_hashing(&mut input, &mut out, &mut hashers, &bar);
    bar.finish_and_clear();
    match copied {
        Ok(()) => target.finish(out, hashers, label),
        Err(CopyError::Read(e)) => {
            drop(out);
            target.remove_part()?;
            Err(local_err(e))
        }
        Err(CopyError::Write(e)) => Err(io_err("writing", &target.part)(e)),
    }
}
