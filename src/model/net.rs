//! The network a run trains: backbone → optional embedding layer → features f, and a linear
//! classifier over the training classes whose logits z give the Group Loss priors softmax(z/τ)
//! (and the auxiliary cross-entropy). Variables: `backbone.*` (the backbone's reference names),
//! `embedding.{weight,bias}`, `classifier.{weight,bias}`.
//! Both head layers are drawn as `torch.nn.Linear` draws them ([`crate::model::linear`]).

use crate::model::execution::Execution;
use crate::model::linear::{torch_linear, HeadInit};
use crate::model::{spec, Backbone, BackboneSpec, ForwardMode};
use anyhow::{ensure, Result};
use tch::nn::{self, Module};
use tch::Tensor;

/// Shape of the network on top of the backbone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadParams {
    /// Size of a linear embedding after the pooled features, or `None` (the paper: the
    /// backbone's pooled features themselves).
    pub embedding_dim: Option<i64>,
    /// m: classes of the classifier (the training classes).
    pub num_classes: i64,
    /// How the fresh head layers are drawn (PyTorch's `nn.Linear`, or tch's default for the
    /// ablation that measures the difference).
    pub init: HeadInit,
}

/// Backbone + embedding + classifier.
#[derive(Debug)]
pub struct EmbeddingNet {
    spec: &'static BackboneSpec,
    backbone: Box<dyn Backbone>,
    embedding: Option<nn::Linear>,
    classifier: nn::Linear,
    execution: Execution,
}

/// One forward pass: features f (N×D, what the Group Loss and retrieval use) and logits z (N×m).
#[derive(Debug)]
pub struct NetOutput {
    pub features: Tensor,
    pub logits: Tensor,
}

impl EmbeddingNet {
    /// Builds the named backbone under `root / "backbone"` and the head under `root`.
    pub fn new(root: &nn::Path, backbone: &str, head: HeadParams) -> Result<Self> {
        let spec = spec(backbone)?;
        ensure!(
            head.num_classes >= 1,
            "the classifier needs ≥ 1 class, got {}",
            head.num_classes
        );
        if let Some(d) = head.embedding_dim {
            ensure!(d >= 1, "embedding_dim must be ≥ 1 (or 0 for none), got {d}");
        }
        let backbone_net = (spec.build)(&(root / "backbone"));
        let linear = |path: nn::Path, i: i64, o: i64| match head.init {
            HeadInit::Torch => torch_linear(path, i, o),
            HeadInit::Tch => nn::linear(path, i, o, Default::default()),
        };
        let embedding = head
            .embedding_dim
            .map(|d| linear(root / "embedding", spec.feature_dim, d));
        let dim = head.embedding_dim.unwrap_or(spec.feature_dim);
        let classifier = linear(root / "classifier", dim, head.num_classes);
        Ok(EmbeddingNet {
            spec,
            backbone: backbone_net,
            embedding,
            classifier,
            execution: Execution::default(),
        })
    }

    /// The backbone's registry entry.
    pub fn spec(&self) -> &'static BackboneSpec {
        self.spec
    }

    /// D of [`NetOutput::features`].
    pub fn feature_dim(&self) -> i64 {
        self.embedding
            .as_ref()
            .map_or(self.spec.feature_dim, |e| e.ws.size()[0])
    }

    /// How the forward runs (memory format, autocast). Convert the variables with
    /// [`crate::model::execution::convert_variables`] to the same memory format.
    pub fn set_execution(&mut self, execution: Execution) {
        self.execution = execution;
    }

    /// Features only (evaluation, embedding a dataset): always f32, whatever the autocast.
    pub fn features(&self, xs: &Tensor, mode: ForwardMode) -> Tensor {
        let xs = self.execution.input(xs);
        self.execution.run(xs.device(), || {
            let f = self.backbone.forward_features(&xs, mode);
            match &self.embedding {
                Some(e) => e.forward(&f),
                None => f,
            }
        })
    }

    /// The classifier's weight (m×d): the proxies or class weights of the classifier-based
    /// losses.
    pub fn classifier_weight(&self) -> &Tensor {
        &self.classifier.ws
    }

    /// Features and classifier logits.
    pub fn forward(&self, xs: &Tensor, mode: ForwardMode) -> NetOutput {
        let features = self.features(xs, mode);
        let logits = self.classifier.forward(&features);
        NetOutput { features, logits }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn::VarStore, Device};

    fn max_abs(t: &Tensor) -> f64 {
        t.abs().max().double_value(&[])
    }

    /// The head uses [`torch_linear`]: weights and biases within nn.Linear's 1/√fan_in (tch's
    /// default weight would reach √6/√fan_in), and the weight drawn before the bias.
    #[test]
    fn head_layers_are_initialised_like_torch_nn_linear() {
        let vs = VarStore::new(Device::Cpu);
        let head = HeadParams {
            embedding_dim: Some(64),
            num_classes: 10,
            init: Default::default(),
        };
        let net = EmbeddingNet::new(&vs.root(), "tiny_cnn", head).unwrap();
        let vars = vs.variables();
        for (layer, fan_in) in [("embedding", net.spec().feature_dim), ("classifier", 64)] {
            let b = 1.0 / (fan_in as f64).sqrt();
            for v in ["weight", "bias"] {
                let m = max_abs(&vars[&format!("{layer}.{v}")]);
                assert!(m <= b, "{layer}.{v}: max |x| = {m} > 1/√{fan_in} = {b}");
            }
            let m = max_abs(&vars[&format!("{layer}.weight")]);
            assert!(
                m > 0.9 * b,
                "{layer}.weight: max |x| = {m} ≪ 1/√{fan_in} = {b}"
            );
        }
        assert_eq!(net.classifier_weight().size(), [10, 64]);
    }

    /// `head_init = "tch"` (the ablation's switch) gives tch's default back: weights beyond
    /// nn.Linear's bound, up to √6/√fan_in.
    #[test]
    fn the_tch_head_init_is_wider() {
        let vs = VarStore::new(Device::Cpu);
        let head = HeadParams {
            embedding_dim: None,
            num_classes: 10,
            init: HeadInit::Tch,
        };
        let net = EmbeddingNet::new(&vs.root(), "tiny_cnn", head).unwrap();
        let fan_in = net.spec().feature_dim as f64;
        let m = max_abs(net.classifier_weight());
        assert!(m > 1.0 / fan_in.sqrt(), "max |w| = {m}");
        assert!(m <= 6f64.sqrt() / fan_in.sqrt(), "max |w| = {m}");
    }
}
