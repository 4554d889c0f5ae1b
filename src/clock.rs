//! The one clock `gl` records: whole seconds since the Unix epoch (0 for a clock set before
//! 1970), for the "since when" of locks, failures, runs and superseded directories.

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
