//! One `gl run` per data directory: an exclusive `flock` on `<data>/pipeline.lock`, released
//! when the process ends however it ends. The file names the holder for the error message.

use anyhow::{bail, Context, Result};
use std::io::{Read, Seek, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// Held for as long as the value lives.
#[derive(Debug)]
pub struct DataLock {
    _file: std::fs::File,
    pub path: PathBuf,
}

impl DataLock {
    /// Takes the lock of `data_dir`, or fails at once naming the process that holds it.
    pub fn acquire(data_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let path = data_dir.join("pipeline.lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: flock on a descriptor we own; it is released when the file is closed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            bail!(
                "{} is locked by another gl writing this data directory ({}): wait for it to \
                 finish, or stop it",
                path.display(),
                holder.trim()
            );
        }
        file.set_len(0)?;
        file.rewind()?;
        writeln!(
            file,
            "pid {} since {}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        )?;
        Ok(DataLock { _file: file, path })
    }
}
