//! `gl` as a real background process, for the tests that stop it mid-work (docs/reliability.md,
//! "what survives what"): starting it with its output in a log file, polling for what it does,
//! sending it signals, and reading the writer lock a run directory's owner holds.

use super::gl_cli;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// `gl --threads 1 ARGS… --project-dir P` started in the background, its stdout and stderr in
/// `P/<log>` (read it with [`log`]).
pub fn spawn_gl(p: &Path, args: &[&str], log: &str) -> Child {
    command(p, args, log).spawn().expect("starting gl")
}

/// [`spawn_gl`] under an address-space limit of `bytes` (`RLIMIT_AS`): an allocation over it
/// fails for real, as it would on a machine with that much memory.
pub fn spawn_gl_limited(p: &Path, args: &[&str], log: &str, bytes: u64) -> Child {
    let mut cmd = command(p, args, log);
    use std::os::unix::process::CommandExt;
    // SAFETY: only setrlimit (async-signal-safe) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            match libc::setrlimit(libc::RLIMIT_AS, &lim) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
    }
    cmd.spawn().expect("starting gl")
}

/// The command of [`spawn_gl`]: this build's `gl` (or `GL_TEST_BIN`'s), one thread, the
/// project directory last, both output streams into one log file.
fn command(p: &Path, args: &[&str], log: &str) -> Command {
    let out = std::fs::File::create(p.join(log)).unwrap();
    let mut cmd = Command::new(gl_cli::bin());
    cmd.args(["--threads", "1"])
        .args(args)
        .arg("--project-dir")
        .arg(p)
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    cmd
}

/// What a process started by [`spawn_gl`] has written to `P/<name>` so far (empty before it
/// exists).
pub fn log(p: &Path, name: &str) -> String {
    std::fs::read_to_string(p.join(name)).unwrap_or_default()
}

/// Polls `probe` every 100 ms until it returns something, for at most `secs` seconds (then
/// fails the test, naming `what` it waited for).
pub fn wait_for<T>(secs: u64, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < end, "waited {secs} s for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether process `pid` still runs (a zombie awaiting its reaper does not).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.trim_start().to_string()))
        .is_some_and(|r| !r.starts_with('Z') && !r.starts_with('X'))
}

/// Sends signal `sig` (a name: `KILL`, `TERM`, `INT`) to process `pid` with `kill(1)`; fails
/// the test if it cannot be sent.
pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

/// The pid a held `writer.lock` names ("pid N on HOST since T").
pub fn holder(lock: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(lock).ok()?;
    let pid = text.strip_prefix("pid ")?.split_whitespace().next()?;
    pid.parse().ok()
}

/// The `writer.lock` of the first started run (its `config.json` written: before that the
/// directory is not a run the catalogue lists) whose lock some process holds now.
pub fn held_run_lock(p: &Path) -> Option<PathBuf> {
    let runs = std::fs::read_dir(p.join("data/runs")).ok()?;
    runs.filter_map(|e| Some(e.ok()?.path()))
        .filter(|d| d.join("config.json").is_file())
        .map(|d| d.join("writer.lock"))
        .find(|l| grouploss::writer_lock::WriterLock::held(l).unwrap_or(false))
}

/// Whether some process holds `lock` now.
pub fn held(lock: &Path) -> bool {
    grouploss::writer_lock::WriterLock::held(lock).unwrap()
}
