//! A reference that stays up between a benchmark's rounds (`tests/reference/serve.py`).
//!
//! Starting a fresh interpreter per round compares `gl`'s long-lived, warmed-up process with a
//! new one, and lets the previous reference's exit (gigabytes freed and handed back to the
//! hypervisor) overlap `gl`'s timed steps. In a session both sides live for the whole benchmark
//! and take turns, one round at a time, idle while the other is timed.

use super::Reference;
use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Read, Seek, Write};
use std::process::{Child, ChildStdin, ChildStdout, Stdio};

/// A running `python <script> serve …`: one JSON reply per line.
pub struct ReferenceSession {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    /// The child's standard error, for the error when it fails.
    stderr: std::fs::File,
    what: String,
}

impl ReferenceSession {
    /// Starts `python <dir>/<script> <args…>` and reads its first reply (set-up and check done).
    pub fn start(
        reference: &Reference,
        script: &str,
        args: &[String],
    ) -> Result<(Self, serde_json::Value)> {
        let (mut cmd, what) = reference.command(script, args)?;
        let stderr = tempfile::tempfile().context("a temporary file for the reference's stderr")?;
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr.try_clone()?))
            .spawn()
            .with_context(|| reference.start_error())?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().context("the reference's stdout")?);
        let mut session = ReferenceSession {
            child,
            stdin,
            stdout,
            stderr,
            what,
        };
        let ready = session.reply()?;
        Ok((session, ready))
    }

    /// Asks for one timed round and returns its reply.
    pub fn round(&mut self) -> Result<serde_json::Value> {
        let stdin = self
            .stdin
            .as_mut()
            .context("the reference session is closed")?;
        let sent = stdin.write_all(b"round\n").and_then(|()| stdin.flush());
        if let Err(e) = sent {
            let tail = self.stderr_tail();
            bail!("{}: sending a round: {e}; {tail}", self.what);
        }
        let reply = self.reply()?;
        if let Some(e) = reply["error"].as_str() {
            bail!("{}: {e}", self.what);
        }
        Ok(reply)
    }

    /// The next line of standard output as JSON; the reference's stderr when there is none.
    fn reply(&mut self) -> Result<serde_json::Value> {
        let mut line = String::new();
        let n = self
            .stdout
            .read_line(&mut line)
            .with_context(|| format!("reading from {}", self.what))?;
        if n == 0 {
            let status = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
            let tail = self.stderr_tail();
            bail!("{} ended without a reply ({status}): {tail}", self.what);
        }
        serde_json::from_str(line.trim())
            .with_context(|| format!("parsing the JSON printed by {}: {line}", self.what))
    }

    /// The end of what the reference wrote to stderr.
    fn stderr_tail(&mut self) -> String {
        let mut text = String::new();
        let _ = self.stderr.rewind();
        let _ = self.stderr.read_to_string(&mut text);
        let tail: Vec<&str> = text.trim().lines().rev().take(20).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

/// Runs `rounds` rounds of both sides taking turns, who goes first alternating (the reference in
/// even rounds), so that a drift of the machine's speed within a round weighs on both alike.
pub fn take_turns(
    rounds: usize,
    mut reference: impl FnMut() -> Result<()>,
    mut ours: impl FnMut() -> Result<()>,
) -> Result<()> {
    for r in 0..rounds {
        if r % 2 == 0 {
            reference()?;
            ours()?;
        } else {
            ours()?;
            reference()?;
        }
    }
    Ok(())
}

impl Drop for ReferenceSession {
    /// Closes the reference's input (it exits at end of input) and reaps it.
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::ensure;

    /// A `Reference` whose "python" is `sh`, running `script` written to a temporary directory.
    fn shell(script: &str) -> (tempfile::TempDir, Reference) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ref.sh"), script).unwrap();
        let r = Reference {
            python: "sh".into(),
            dir: dir.path().to_path_buf(),
        };
        (dir, r)
    }

    #[test]
    fn rounds_are_answered_in_turn_and_a_dead_reference_is_an_error_with_its_stderr() {
        let (_dir, r) = shell(
            "echo '{\"ready\": 1}'\nread a\necho \"{\\\"got\\\": \\\"$a\\\"}\"\nread b\n\
             echo 'boom: out of memory' >&2\nexit 3\n",
        );
        let (mut session, ready) = ReferenceSession::start(&r, "ref.sh", &[]).unwrap();
        assert_eq!(ready["ready"], 1);
        assert_eq!(session.round().unwrap()["got"], "round");
        let e = format!("{:#}", session.round().unwrap_err());
        assert!(
            e.contains("ended without a reply") && e.contains("boom: out of memory"),
            "{e}"
        );
    }

    #[test]
    fn an_error_reply_and_garbage_are_errors() {
        let (_dir, r) = shell(
            "echo '{}'\nread a\necho '{\"error\": \"unknown request\"}'\nread b\necho 'not json'\n",
        );
        let (mut session, _) = ReferenceSession::start(&r, "ref.sh", &[]).unwrap();
        let e = format!("{:#}", session.round().unwrap_err());
        assert!(e.contains("unknown request"), "{e}");
        let e = format!("{:#}", session.round().unwrap_err());
        assert!(
            e.contains("parsing the JSON") && e.contains("not json"),
            "{e}"
        );
    }

    #[test]
    fn turns_alternate_who_goes_first_and_stop_at_an_error() {
        let order = std::cell::RefCell::new(String::new());
        let order = &order;
        let side = |c: char| {
            move || -> Result<()> {
                order.borrow_mut().push(c);
                ensure!(order.borrow().len() < 6, "stop");
                Ok(())
            }
        };
        take_turns(2, side('r'), side('o')).unwrap();
        assert_eq!(*order.borrow(), "roor");
        assert!(take_turns(5, side('r'), side('o')).is_err());
        assert_eq!(*order.borrow(), "roorro");
    }

    #[test]
    fn a_missing_script_is_an_error_naming_it() {
        let (_dir, r) = shell("");
        let e = format!(
            "{:#}",
            ReferenceSession::start(&r, "nope.py", &[]).err().unwrap()
        );
        assert!(e.contains("nope.py") && e.contains("not found"), "{e}");
    }
}
