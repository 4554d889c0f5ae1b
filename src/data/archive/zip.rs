//! Reading zip files into the [`Extractor`].

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::PathBuf;

use ::zip::ZipArchive;

use super::extractor::{EntryKind, Extractor};
use super::ArchiveError;

impl Extractor<'_> {
    /// Extracts every entry of a zip file; the unix mode, where stored, tells links and
    /// special files apart.
    pub(super) fn zip(&mut self, file: File) -> Result<(), ArchiveError> {
        let archive = self.archive;
        let zip_err = |source| ArchiveError::Zip {
            archive: archive.to_owned(),
            source,
        };
        let mut zip = ZipArchive::new(BufReader::new(file)).map_err(zip_err)?;
        for i in 0..zip.len() {
            let mut entry = zip.by_index(i).map_err(zip_err)?;
            let name = String::from_utf8_lossy(entry.name_raw()).into_owned();
            let path = PathBuf::from(&name);
            let file_type = entry.unix_mode().map_or(0, |m| m & 0o170_000);
            let kind = if entry.is_dir() || file_type == 0o040_000 {
                EntryKind::Dir
            } else if entry.is_symlink() || file_type == 0o120_000 {
                // A zip symlink stores its target as the entry's content.
                let mut target = Vec::new();
                (&mut entry)
                    .take(64 * 1024)
                    .read_to_end(&mut target)
                    .map_err(self.corrupt())?;
                let target = PathBuf::from(String::from_utf8_lossy(&target).into_owned());
                EntryKind::Symlink(Cow::Owned(target))
            } else if file_type == 0 || file_type == 0o100_000 {
                EntryKind::File {
                    mode: entry.unix_mode(),
                    size: entry.size(),
                }
            } else {
                return Err(ArchiveError::UnsupportedEntry {
                    archive: self.archive.to_owned(),
                    entry: name,
                    kind: format!("special file (mode {file_type:o})"),
                });
            };
            self.entry(&name, &path, kind, &mut entry)?;
        }
        Ok(())
    }
}
