//! One writer per directory: an exclusive `flock` on a lock file inside it, released when the
//! process ends however it ends (a SIGKILL included), so a stale lock never needs clearing by
//! hand. The file names the holder (pid, host, since when) for the error a second writer gets.

use anyhow::{bail, Context, Result};
use std::io::{Read, Seek, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// Held for as long as the value lives.
#[derive(Debug)]
pub struct WriterLock {
    _file: std::fs::File,
    pub path: PathBuf,
}

impl WriterLock {
    /// Takes the lock file `path` (creating its directory), or fails at once naming the
    /// process that holds it; `what` says what the lock guards ("the run directory …").
    pub fn acquire(path: &Path, what: &str) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: flock on a descriptor we own; it is released when the file is closed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            bail!(
                "{} is locked by another gl writing {what} ({}): wait for it to finish, or \
                 stop it",
                path.display(),
                holder.trim()
            );
        }
        file.set_len(0)?;
        file.rewind()?;
        writeln!(
            file,
            "pid {} on {} since {}",
            std::process::id(),
            hostname(),
            crate::clock::unix_now()
        )?;
        Ok(WriterLock {
            _file: file,
            path: path.to_path_buf(),
        })
    }
}

impl WriterLock {
    /// As [`WriterLock::acquire`], but while another process holds the lock, retries every
    /// 200 ms for up to `wait` (saying once that it waits, naming the holder) before failing as
    /// `acquire` does. For writers of disjoint files in one directory that a pipeline may start
    /// at once — `gl embed` / `gl evaluate` of a run's selected and untrained models — where
    /// refusing the second would fail a correct plan.
    pub fn acquire_waiting(path: &Path, what: &str, wait: std::time::Duration) -> Result<Self> {
        let start = std::time::Instant::now();
        let mut said = false;
        loop {
            match Self::acquire(path, what) {
                Ok(l) => return Ok(l),
                Err(e) if start.elapsed() >= wait => return Err(e),
                Err(e) => {
                    if !said {
                        tracing::warn!("{e:#}; waiting up to {} s", wait.as_secs());
                        said = true;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
            }
        }
    }

    /// Whether some process holds the lock file `path` now (false when it does not exist).
    /// Within the holding process itself this is true as well.
    pub fn held(path: &Path) -> Result<bool> {
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
        };
        // SAFETY: as in `acquire`; a shared probe, released when `file` closes.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
        Ok(rc != 0)
    }
}

/// This machine's name (a run directory may be shared between cluster nodes).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiting_writer_gets_the_lock_once_released_or_fails_after_its_wait() {
        use std::time::Duration;
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("writer.lock");
        let first = WriterLock::acquire(&path, "x").unwrap();
        let e = WriterLock::acquire_waiting(&path, "x", Duration::from_millis(300)).unwrap_err();
        assert!(e.to_string().contains("is locked by another gl"), "{e}");
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(400));
            drop(first);
        });
        WriterLock::acquire_waiting(&path, "x", Duration::from_secs(30)).unwrap();
        release.join().unwrap();
    }

    #[test]
    fn a_second_holder_is_refused_with_the_first_named_and_admitted_after_it() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("x/writer.lock");
        let first = WriterLock::acquire(&path, "x").unwrap();
        let e = WriterLock::acquire(&path, "x").unwrap_err().to_string();
        assert!(
            e.contains("writer.lock") && e.contains(&format!("pid {}", std::process::id())),
            "{e}"
        );
        assert!(WriterLock::held(&path).unwrap());
        drop(first);
        assert!(!WriterLock::held(&path).unwrap());
        WriterLock::acquire(&path, "x").unwrap();
    }
}
