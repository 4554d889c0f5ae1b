//! Reading tar streams (plain or gzip-decoded) into the [`Extractor`].

use std::borrow::Cow;
use std::io::{self, Read};

use ::tar::{Archive, EntryType};

use super::extractor::{EntryKind, Extractor};
use super::ArchiveError;

impl Extractor<'_> {
    /// Extracts every entry of a tar stream, then reads the stream to its end.
    pub(super) fn tar<R: Read>(&mut self, reader: R) -> Result<(), ArchiveError> {
        let mut tar = Archive::new(reader);
        for entry in tar.entries().map_err(self.corrupt())? {
            let mut entry = entry.map_err(self.corrupt())?;
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let path = entry.path().map_err(self.corrupt())?.into_owned();
            let header = entry.header();
            let kind = match header.entry_type() {
                EntryType::Regular | EntryType::Continuous => EntryKind::File {
                    mode: header.mode().ok(),
                    size: entry.size(),
                },
                EntryType::Directory => EntryKind::Dir,
                t @ (EntryType::Symlink | EntryType::Link) => {
                    let target = entry
                        .link_name()
                        .map_err(self.corrupt())?
                        .map(Cow::into_owned)
                        .unwrap_or_default();
                    if t == EntryType::Symlink {
                        EntryKind::Symlink(Cow::Owned(target))
                    } else {
                        EntryKind::Hardlink(Cow::Owned(target))
                    }
                }
                // Metadata records (pax headers) carry no file of their own.
                EntryType::XGlobalHeader | EntryType::XHeader => continue,
                other => {
                    return Err(ArchiveError::UnsupportedEntry {
                        archive: self.archive.to_owned(),
                        entry: name,
                        kind: tar_kind_name(other),
                    })
                }
            };
            self.entry(&name, &path, kind, &mut entry)?;
        }
        // Read to the end so gzip checks its CRC and length trailer: a cut or damaged stream
        // is an error even when the tar end-of-archive blocks were intact.
        io::copy(&mut tar.into_inner(), &mut io::sink()).map_err(self.corrupt())?;
        Ok(())
    }
}

fn tar_kind_name(t: EntryType) -> String {
    match t {
        EntryType::Char => "character device".to_owned(),
        EntryType::Block => "block device".to_owned(),
        EntryType::Fifo => "fifo".to_owned(),
        EntryType::GNUSparse => "sparse file".to_owned(),
        other => format!("tar entry of type {:?}", other),
    }
}
