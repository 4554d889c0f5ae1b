//! Per-phase time profiles of a training step, ours and the reference's, printed side by side
//! so a benchmark says *where* the two differ, not only by how much.

use crate::train::epoch::StepPhases;
use anyhow::{Context, Result};

/// The phases both sides report, in step order (the names of [`StepPhases::named`] and of the
/// `phases_s` object the Python references print).
pub const PHASES: [&str; 6] = [
    "zero_grad",
    "handoff",
    "forward",
    "loss",
    "backward",
    "optimizer",
];

/// Seconds per phase, in [`PHASES`] order.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Profile(pub [f64; 6]);

impl From<&StepPhases> for Profile {
    fn from(p: &StepPhases) -> Self {
        Profile(p.named().map(|(_, s)| s))
    }
}

impl Profile {
    /// Reads `{"zero_grad": s, "handoff": s, …}` as a reference prints it; every phase must be
    /// present.
    pub fn from_json(v: &serde_json::Value) -> Result<Self> {
        let mut out = [0.0; 6];
        for (slot, name) in out.iter_mut().zip(PHASES) {
            *slot = v[name]
                .as_f64()
                .with_context(|| format!("the reference's phases_s has no number {name:?}"))?;
        }
        Ok(Profile(out))
    }

    /// Phase-wise median of `profiles` (zeros when empty).
    pub fn median(profiles: &[Profile]) -> Profile {
        if profiles.is_empty() {
            return Profile::default();
        }
        let mut out = [0.0; 6];
        for (i, slot) in out.iter_mut().enumerate() {
            let mut xs: Vec<f64> = profiles.iter().map(|p| p.0[i]).collect();
            *slot = crate::bench::median(&mut xs);
        }
        Profile(out)
    }

    pub fn total(&self) -> f64 {
        self.0.iter().sum()
    }

    /// Lines of a table: one header, one row per phase with both sides' ms and their ratio
    /// (reference / ours, above 1 where we are faster), then the sums.
    pub fn table(title: &str, ours: &Profile, reference: &Profile) -> Vec<String> {
        let row = |name: &str, a: f64, b: f64| {
            let ratio = if a > 0.0 { b / a } else { f64::NAN };
            format!(
                "  {name:<10} {:>10.1} {:>10.1} {ratio:>8.3}",
                a * 1e3,
                b * 1e3
            )
        };
        let mut lines = vec![format!(
            "{title} phases (median ms)\n  {:<10} {:>10} {:>10} {:>8}",
            "phase", "gl", "reference", "ratio"
        )];
        for (i, name) in PHASES.iter().enumerate() {
            lines.push(row(name, ours.0[i], reference.0[i]));
        }
        lines.push(row("sum", ours.total(), reference.total()));
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_names_follow_the_step() {
        let names = StepPhases::default().named().map(|(n, _)| n);
        assert_eq!(names, PHASES);
    }

    #[test]
    fn json_needs_every_phase_and_medians_are_per_phase() {
        let full = serde_json::json!({
            "zero_grad": 1.0, "handoff": 2.0, "forward": 3.0,
            "loss": 4.0, "backward": 5.0, "optimizer": 6.0
        });
        let p = Profile::from_json(&full).unwrap();
        assert_eq!(p.0, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let mut partial = full.clone();
        partial.as_object_mut().unwrap().remove("backward");
        let e = Profile::from_json(&partial).unwrap_err();
        assert!(format!("{e:#}").contains("backward"), "{e:#}");
        let q = Profile([3.0, 0.0, 1.0, 1.0, 1.0, 1.0]);
        let r = Profile([2.0, 9.0, 1.0, 1.0, 1.0, 1.0]);
        assert_eq!(
            Profile::median(&[p, q, r]).0,
            [2.0, 2.0, 1.0, 1.0, 1.0, 1.0]
        );
        assert_eq!(p.total(), 21.0);
    }
}
