//! SIGTERM and SIGINT as a request to stop, not a sudden death: `gl train` and `gl run` install
//! [`install`], which only notes the signal; the work checks [`check`] (or [`received`]) at safe
//! points — between training steps, while the coordinator waits for its tasks — and stops there,
//! so the process can record how the run ended (`runs.status` `interrupted`) before it exits.
//! A second signal of either kind kills at once (the handler is reset after the first).

use std::sync::atomic::{AtomicI32, Ordering};

/// The signal received (0: none).
static RECEIVED: AtomicI32 = AtomicI32::new(0);

extern "C" fn note(sig: libc::c_int) {
    // Async-signal-safe: one atomic store.
    RECEIVED.store(sig, Ordering::SeqCst);
}

/// Notes SIGTERM and SIGINT from now on instead of dying of them; the first of them resets
/// both to the default, so a second one kills as usual.
pub fn install() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: a handler that only stores to an atomic; sigaction with a zeroed struct,
        // the handler set and an empty mask.
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = note as extern "C" fn(libc::c_int) as libc::sighandler_t;
            act.sa_flags = libc::SA_RESTART | libc::SA_RESETHAND;
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaction(sig, &act, std::ptr::null_mut());
        }
    }
}

/// The signal received since [`install`], if any.
pub fn received() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Stopped by a signal: the error [`check`] returns, found again with `downcast_ref`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stopped by {}", signal_name(*.0))]
pub struct Interrupted(pub i32);

impl Interrupted {
    /// The exit code of a process stopped by the signal, as a shell reports it (128 + signal).
    pub fn exit_code(self) -> u8 {
        (128 + self.0).clamp(0, 255) as u8
    }

    /// `SIGTERM`, `SIGINT`, …
    pub fn name(self) -> &'static str {
        signal_name(self.0)
    }
}

/// `Err(Interrupted)` once a signal was received: the caller stops at this safe point.
pub fn check() -> Result<(), Interrupted> {
    match received() {
        Some(s) => Err(Interrupted(s)),
        None => Ok(()),
    }
}

/// The `Interrupted` in `e`'s chain, if it is one.
pub fn of(e: &anyhow::Error) -> Option<Interrupted> {
    e.chain()
        .find_map(|c| c.downcast_ref::<Interrupted>().copied())
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interruption_is_found_in_an_error_chain_with_its_exit_code() {
        let e = anyhow::Error::new(Interrupted(libc::SIGTERM)).context("epoch 3");
        let i = of(&e).expect("found");
        assert_eq!((i.name(), i.exit_code()), ("SIGTERM", 143));
        assert_eq!(Interrupted(libc::SIGINT).exit_code(), 130);
        assert!(of(&anyhow::anyhow!("other")).is_none());
    }
}
