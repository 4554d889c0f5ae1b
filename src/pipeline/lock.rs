//! One `gl run` per data directory: a [`WriterLock`] on `<data>/pipeline.lock`.

use crate::writer_lock::WriterLock;
use anyhow::Result;
use std::path::Path;

/// Held for as long as the value lives.
#[derive(Debug)]
pub struct DataLock(pub WriterLock);

impl DataLock {
    /// Takes the lock of `data_dir`, or fails at once naming the process that holds it; then
    /// removes what killed `gl` processes left in `<data>/tmp/` (a live one's stays).
    pub fn acquire(data_dir: &Path) -> Result<Self> {
        let lock = WriterLock::acquire(&data_dir.join("pipeline.lock"), "this data directory")?;
        crate::tempfiles::clean_scratch_or_warn(data_dir);
        Ok(DataLock(lock))
    }
}
