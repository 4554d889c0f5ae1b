//! Writing a run's checkpoints: after each epoch the model and optimiser state go to
//! `checkpoint-eNNN/` (built in `checkpoint-eNNN.tmp/`, renamed when complete), and the model
//! again to `selected-eNNN.safetensors` when the selection rule picks the epoch. Every file's
//! sha256 goes into the [`RunState`] (fsynced first, directories too), which the caller writes
//! next as the commit point; what the state no longer names is pruned by
//! [`RunDir::prune`](crate::train::run_dir::RunDir::prune).

use crate::train::radam::RAdam;
use crate::train::run_dir::{EpochRecord, RunDir, RunState};
use crate::train::selection::{self, Bests, Rule};
use anyhow::{Context, Result};
use tch::nn;

/// Writes the checkpoints of one run directory.
#[derive(Debug, Clone, Copy)]
pub struct Checkpointer<'a> {
    pub dir: &'a RunDir,
}

impl<'a> Checkpointer<'a> {
    pub fn new(dir: &'a RunDir) -> Self {
        Checkpointer { dir }
    }

    /// Writes epoch `rec.epoch`'s checkpoint and, if `rule` selects the epoch, the selected
    /// model; updates `state` (not yet written: the caller commits it).
    pub fn commit(
        &self,
        vs: &nn::VarStore,
        opt: &RAdam,
        rule: Rule,
        state: &mut RunState,
        rec: &EpochRecord,
    ) -> Result<()> {
        self.save_epoch(vs, opt, state, rec.epoch)?;
        let mut bests = Bests {
            val: state.best_val,
            test: state.best_test,
        };
        let (val, test) = rule.values(rec);
        let select = selection::update(rule, &mut bests, rec.epoch, val, test);
        (state.best_val, state.best_test) = (bests.val, bests.test);
        if select {
            self.save_selected(vs, state, rec.epoch)?;
        }
        state.forget_stale();
        // The state that names these files is written next: their directory entries first.
        crate::fsutil::sync_dir(&self.dir.root)
    }

    /// `checkpoint-eNNN/{model,optimizer}.safetensors`, replacing any leftover of a run killed
    /// while writing it.
    fn save_epoch(
        &self,
        vs: &nn::VarStore,
        opt: &RAdam,
        state: &mut RunState,
        epoch: usize,
    ) -> Result<()> {
        let root = &self.dir.root;
        let name = RunDir::checkpoint_name(epoch);
        let tmp = root.join(format!("{name}.tmp"));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        write_contiguous(&variables(vs), &tmp.join("model.safetensors"))?;
        write_contiguous(&opt.state_tensors(), &tmp.join("optimizer.safetensors"))?;
        let final_dir = root.join(&name);
        let _ = std::fs::remove_dir_all(&final_dir);
        std::fs::rename(&tmp, &final_dir)
            .with_context(|| format!("renaming into {}", final_dir.display()))?;
        state.epoch = epoch;
        state.checkpoint = name.clone();
        for file in ["model.safetensors", "optimizer.safetensors"] {
            state.commit_file(self.dir, &format!("{name}/{file}"))?;
        }
        crate::fsutil::sync_dir(&final_dir)
    }

    /// `selected-eNNN.safetensors`, written to a temporary name and renamed.
    fn save_selected(&self, vs: &nn::VarStore, state: &mut RunState, epoch: usize) -> Result<()> {
        let file = RunDir::selected_name(epoch);
        let tmp = self.dir.root.join(format!("{file}.tmp.safetensors"));
        write_contiguous(&variables(vs), &tmp)?;
        std::fs::rename(&tmp, self.dir.root.join(&file))
            .with_context(|| format!("renaming into {file}"))?;
        state.commit_file(self.dir, &file)?;
        state.selected = Some(file);
        state.selected_epoch = Some(epoch);
        Ok(())
    }
}

/// The variables of `vs` by name.
fn variables(vs: &nn::VarStore) -> Vec<(String, tch::Tensor)> {
    vs.variables().into_iter().collect()
}

/// Writes the variables of `vs` as safetensors, each in its contiguous layout (what
/// `VarStore::save` refuses for re-strided, e.g. channels-last, variables).
pub fn save_variables(vs: &nn::VarStore, path: &std::path::Path) -> Result<()> {
    write_contiguous(&variables(vs), path)
}

/// Writes named tensors as safetensors, each in its contiguous (row-major NCHW) layout
/// whatever its strides in memory (e.g. channels-last convolution weights), so a checkpoint
/// reads back the same in any memory format.
fn write_contiguous(named: &[(String, tch::Tensor)], path: &std::path::Path) -> Result<()> {
    let dense: Vec<(&str, tch::Tensor)> = named
        .iter()
        .map(|(n, t)| (n.as_str(), t.contiguous()))
        .collect();
    tch::Tensor::write_safetensors(&dense, path)
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::config::{SelectMetric, Selection};
    use crate::train::radam::RAdamParams;

    fn by_r1(selection: Selection) -> Rule {
        Rule {
            selection,
            metric: SelectMetric::RecallAt1,
        }
    }

    fn record(epoch: usize, val_r1: f64) -> EpochRecord {
        EpochRecord::fixture(epoch, val_r1, None, None)
    }

    #[test]
    fn checkpoints_are_complete_digested_and_the_selection_rule_applies() {
        let d = tempfile::tempdir().unwrap();
        let dir = RunDir::new(d.path().to_path_buf());
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let w = vs.root().var("w", &[3], nn::Init::Const(1.0));
        let opt = RAdam::new(vec![w.shallow_clone()], RAdamParams::default()).unwrap();
        let cp = Checkpointer::new(&dir);
        let mut st = RunState::default();

        // A leftover of a run killed mid-write is replaced, not trusted.
        std::fs::create_dir_all(d.path().join("checkpoint-e001.tmp")).unwrap();
        std::fs::write(d.path().join("checkpoint-e001.tmp/junk"), b"x").unwrap();
        cp.commit(&vs, &opt, by_r1(Selection::Val), &mut st, &record(1, 0.6))
            .unwrap();
        assert!(!d.path().join("checkpoint-e001.tmp").exists());
        assert!(!d.path().join("checkpoint-e001/junk").exists());
        assert_eq!((st.epoch, st.checkpoint.as_str()), (1, "checkpoint-e001"));
        assert_eq!(st.selected.as_deref(), Some("selected-e001.safetensors"));
        for rel in [
            "checkpoint-e001/model.safetensors",
            "checkpoint-e001/optimizer.safetensors",
            "selected-e001.safetensors",
        ] {
            let want = crate::fsutil::file_sha256(&d.path().join(rel)).unwrap();
            assert_eq!(st.sha256.get(rel), Some(&want), "{rel}");
            st.verified(&dir, rel).unwrap();
        }

        // A worse epoch under validation selection keeps the earlier model…
        tch::no_grad(|| {
            let _ = w.shallow_clone().fill_(2.0);
        });
        cp.commit(&vs, &opt, by_r1(Selection::Val), &mut st, &record(2, 0.4))
            .unwrap();
        assert_eq!((st.epoch, st.selected_epoch), (2, Some(1)));
        assert!(st.sha256.contains_key("checkpoint-e002/model.safetensors"));
        assert!(!st.sha256.contains_key("checkpoint-e001/model.safetensors"));
        // …and the last-epoch rule takes it anyway.
        cp.commit(&vs, &opt, by_r1(Selection::Last), &mut st, &record(3, 0.1))
            .unwrap();
        assert_eq!(st.selected_epoch, Some(3));
        assert!(!st.sha256.contains_key("selected-e001.safetensors"));

        // A flipped byte is caught by the digest.
        let model = d.path().join("checkpoint-e003/model.safetensors");
        let mut bytes = std::fs::read(&model).unwrap();
        let n = bytes.len();
        bytes[n - 1] ^= 0xff;
        std::fs::write(&model, bytes).unwrap();
        assert!(st
            .verified(&dir, "checkpoint-e003/model.safetensors")
            .is_err());
    }
}
