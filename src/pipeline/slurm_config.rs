//! The `[slurm]` table of a pipeline profile: `sbatch` resources for every array and per
//! stage, the stages the coordinator runs itself, the poll interval. Read with the profile
//! ([`super::profile`]), used by the Slurm executor ([`super::slurm`]).

use std::collections::BTreeMap;

/// `sbatch` resources of a stage's array (all optional: the cluster's defaults apply).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Resources {
    pub partition: Option<String>,
    pub account: Option<String>,
    /// `--time`, e.g. `"24:00:00"`.
    pub time: Option<String>,
    pub cpus_per_task: Option<u32>,
    /// `--mem`, e.g. `"32G"`.
    pub mem: Option<String>,
    /// `--gres`, e.g. `"gpu:1"`.
    pub gres: Option<String>,
    /// More `sbatch` options, one per entry (`"--qos=high"`).
    pub extra: Vec<String>,
}

impl Resources {
    /// `self` with the options `over` sets.
    pub(super) fn merged(&self, over: &Resources) -> Resources {
        Resources {
            partition: over.partition.clone().or(self.partition.clone()),
            account: over.account.clone().or(self.account.clone()),
            time: over.time.clone().or(self.time.clone()),
            cpus_per_task: over.cpus_per_task.or(self.cpus_per_task),
            mem: over.mem.clone().or(self.mem.clone()),
            gres: over.gres.clone().or(self.gres.clone()),
            extra: self.extra.iter().chain(&over.extra).cloned().collect(),
        }
    }

    pub(super) fn options(&self) -> Vec<String> {
        let mut o = Vec::new();
        let mut opt = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                o.push(format!("--{k}={v}"));
            }
        };
        opt("partition", &self.partition);
        opt("account", &self.account);
        opt("time", &self.time);
        opt("cpus-per-task", &self.cpus_per_task.map(|c| c.to_string()));
        opt("mem", &self.mem);
        opt("gres", &self.gres);
        o.extend(self.extra.iter().cloned());
        o
    }
}

fn default_local() -> Vec<String> {
    ["fetch", "weights", "prepare", "report"]
        .into_iter()
        .map(String::from)
        .collect()
}

fn default_poll() -> f64 {
    2.0
}

/// The profile's `[slurm]` table.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmConfig {
    /// Every array's resources…
    #[serde(default)]
    pub resources: Resources,
    /// …and per stage what differs (`[slurm.stages.train] gres = "gpu:1"`).
    #[serde(default)]
    pub stages: BTreeMap<String, Resources>,
    /// Stages run by the coordinator itself.
    #[serde(default = "default_local")]
    pub local_stages: Vec<String>,
    /// Seconds between two looks at the exit files and `squeue`.
    #[serde(default = "default_poll")]
    pub poll_seconds: f64,
}

impl Default for SlurmConfig {
    fn default() -> Self {
        SlurmConfig {
            resources: Resources::default(),
            stages: BTreeMap::new(),
            local_stages: default_local(),
            poll_seconds: default_poll(),
        }
    }
}
