//! Progress bars on stderr (indicatif), hidden when not wanted or not a terminal.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar counting `len` items, labelled `label`; hidden when `show` is false.
pub fn items(show: bool, len: u64, label: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{msg} {bar:30} {pos}/{len} {per_sec} eta {eta}")
    {
        bar.set_style(style);
    }
    bar.set_message(label.to_string());
    bar
}

/// Whether the bars of [`bar`] show: a command's `--quiet` turns them off for the process.
static SHOWN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Shows or hides every later [`bar`] of this process (`--quiet` of `gl embed`, `gl evaluate`),
/// so that the library code deep below a command needs no flag passed down.
pub fn set_shown(show: bool) {
    SHOWN.store(show, std::sync::atomic::Ordering::Relaxed);
}

/// A bar counting `len` items, labelled `label`: shown only when not turned off with
/// [`set_shown`] and stderr is a terminal (a task's log, a pipe get nothing).
pub fn bar(len: u64, label: &str) -> ProgressBar {
    use std::io::IsTerminal;
    let show = SHOWN.load(std::sync::atomic::Ordering::Relaxed) && std::io::stderr().is_terminal();
    items(show, len, label)
}
