//! Every local GPU: with several devices, the local executor gives each task that computes on a
//! GPU one device of its own (`CUDA_VISIBLE_DEVICES=<index>` in its environment, so the task's
//! `cuda:0` is that device and its run id is the same on any of them), round robin over the
//! devices free at its start, at most `tasks_per_gpu` tasks per device. Tasks that compute
//! nothing on a GPU (fetch, prepare, weights, report) get none and are not held back.

use anyhow::{bail, ensure, Context, Result};

/// The devices the local executor hands out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gpus {
    /// Device indices (as CUDA numbers them on this machine); empty: tasks get no variable.
    pub devices: Vec<usize>,
    /// Tasks at once on one device.
    pub per_device: usize,
    /// Tasks whose `--device` is `cpu` get one too (only with `GL_GPUS`: how a test fakes a
    /// machine with several GPUs on one without any).
    pub cpu_tasks: bool,
}

/// `GL_GPUS`: a comma-separated list of device indices (`0,1,2`).
pub fn parse_list(text: &str) -> Result<Vec<usize>> {
    let list: Vec<usize> = text
        .split(',')
        .map(|s| {
            s.trim().parse::<usize>().with_context(|| {
                format!(
                    "{}={text:?}: {s:?} is not a device index (expected e.g. 0,1,2)",
                    crate::env_vars::GPUS
                )
            })
        })
        .collect::<Result<_>>()?;
    no_repeats(&list, crate::env_vars::GPUS)?;
    Ok(list)
}

fn no_repeats(list: &[usize], what: &str) -> Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    if let Some(d) = list.iter().find(|d| !seen.insert(**d)) {
        bail!("{what} {list:?} lists device {d} twice");
    }
    Ok(())
}

/// The devices to spread over: `env` (`GL_GPUS`) or the `detected` count, narrowed to the
/// profile's `gpus` key when it has one (each must be there). Spreading is on when a list was
/// given (`GL_GPUS` or `gpus`) or, detected, with several devices and several jobs — so a
/// machine with one GPU or none runs as before.
pub fn resolve(
    env: Option<&str>,
    detected: impl FnOnce() -> usize,
    profile: Option<&[usize]>,
    per_device: usize,
    jobs: usize,
) -> Result<Gpus> {
    ensure!(per_device >= 1, "tasks_per_gpu must be ≥ 1");
    let from_env = match env.map(str::trim).filter(|s| !s.is_empty()) {
        Some(text) => Some(parse_list(text)?),
        None => None,
    };
    let explicit = from_env.is_some() || profile.is_some();
    if !explicit && jobs < 2 {
        return Ok(Gpus::default());
    }
    let available = from_env
        .clone()
        .unwrap_or_else(|| (0..detected()).collect());
    let devices = match profile {
        Some(want) => {
            no_repeats(want, "gpus")?;
            ensure!(!want.is_empty(), "gpus = [] names no device");
            if let Some(d) = want.iter().find(|d| !available.contains(d)) {
                bail!("gpus = {want:?}: device {d} is not one of this machine's {available:?}");
            }
            want.to_vec()
        }
        None if explicit || available.len() >= 2 => available,
        None => Vec::new(),
    };
    Ok(Gpus {
        devices,
        per_device,
        cpu_tasks: from_env.is_some(),
    })
}

impl Gpus {
    /// Whether a task with arguments `argv` gets a device: it computes (`--device`) on
    /// `cuda:0` (what `auto` resolves to, and `cuda`), or on `cpu` when [`Gpus::cpu_tasks`]; a
    /// task pinned to `cuda:N`, N ≥ 1, keeps its device.
    pub fn wants(&self, argv: &[String]) -> bool {
        if self.devices.is_empty() {
            return false;
        }
        let device = argv
            .iter()
            .position(|a| a == "--device")
            .and_then(|p| argv.get(p + 1));
        match device.map(String::as_str) {
            Some("cuda:0" | "cuda" | "auto") => true,
            Some("cpu") => self.cpu_tasks,
            _ => false,
        }
    }

    /// The device for the next task: the first, from `cursor` on (wrapping), whose `load`
    /// (tasks on it now, per position of [`Gpus::devices`]) is under [`Gpus::per_device`].
    /// Returns its position; `None` when every device is full.
    pub fn pick(&self, load: &[usize], cursor: usize) -> Option<usize> {
        let n = self.devices.len();
        (0..n)
            .map(|k| (cursor + k) % n)
            .find(|&p| load.get(p).copied().unwrap_or(0) < self.per_device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpus(devices: &[usize], per: usize) -> Gpus {
        Gpus {
            devices: devices.to_vec(),
            per_device: per,
            cpu_tasks: false,
        }
    }

    /// Round robin from the cursor, skipping full devices; none when all are full.
    #[test]
    fn pick_is_round_robin_over_free_devices() {
        let g = gpus(&[0, 1, 2], 1);
        assert_eq!(g.pick(&[0, 0, 0], 0), Some(0));
        assert_eq!(g.pick(&[1, 0, 0], 1), Some(1));
        assert_eq!(g.pick(&[1, 1, 0], 2), Some(2));
        assert_eq!(g.pick(&[1, 0, 1], 2), Some(1));
        assert_eq!(g.pick(&[1, 1, 1], 0), None);
        assert_eq!(gpus(&[0, 1], 2).pick(&[1, 2], 1), Some(0));
    }

    /// Nothing to spread on a machine with one GPU or none unless asked; GL_GPUS and the
    /// profile's list win; a profile device the machine lacks is an error naming the key.
    #[test]
    fn resolve_spreads_only_with_several_devices_or_a_list() {
        let none = resolve(None, || 0, None, 1, 4).unwrap();
        assert!(none.devices.is_empty());
        assert!(resolve(None, || 1, None, 1, 4).unwrap().devices.is_empty());
        assert!(resolve(None, || 4, None, 1, 1).unwrap().devices.is_empty());
        assert_eq!(resolve(None, || 3, None, 1, 2).unwrap().devices, [0, 1, 2]);
        let env = resolve(Some("0,1,2"), || 0, None, 1, 3).unwrap();
        assert_eq!(env.devices, [0, 1, 2]);
        assert!(env.cpu_tasks);
        let narrowed = resolve(Some("0,1,2"), || 0, Some(&[0, 2]), 1, 3).unwrap();
        assert_eq!(narrowed.devices, [0, 2]);
        let e = resolve(None, || 2, Some(&[3]), 1, 3).unwrap_err();
        assert!(format!("{e:#}").contains("gpus = [3]"), "{e:#}");
        let e = resolve(Some("0,x"), || 0, None, 1, 3).unwrap_err();
        assert!(format!("{e:#}").contains("GL_GPUS"), "{e:#}");
        assert!(resolve(Some("1,1"), || 0, None, 1, 3).is_err());
        assert!(resolve(None, || 2, None, 0, 3).is_err());
    }

    /// Computing tasks on cuda:0 get a device; cpu ones only with GL_GPUS; pinned and
    /// non-computing ones never.
    #[test]
    fn only_tasks_that_compute_on_the_first_gpu_want_one() {
        let argv = |d: &str| vec!["train".to_string(), "--device".into(), d.into()];
        let mut g = gpus(&[0, 1], 1);
        assert!(g.wants(&argv("cuda:0")));
        assert!(!g.wants(&argv("cuda:1")));
        assert!(!g.wants(&argv("cpu")));
        assert!(!g.wants(&["report".to_string()]));
        g.cpu_tasks = true;
        assert!(g.wants(&argv("cpu")));
        assert!(!gpus(&[], 1).wants(&argv("cuda:0")));
    }
}
