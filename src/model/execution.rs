//! How a network's forward pass runs, apart from what it computes: the memory format of its
//! activations and convolution weights, and mixed precision. Both are recipe keys
//! (`memory_format`, `autocast`), off by default; both are meant for the GPU (Tensor Cores read
//! NHWC and bf16). On a CPU channels-last can pay too (oneDNN skips its layout conversions: the
//! demo's EfficientNet-Lite0 epoch ran 1.55× faster on 2 cores), bf16 rarely (docs/training.md).
//!
//! * `memory_format = "channels_last"`: every 4-d variable (convolution kernels) is re-strided
//!   to NHWC once, and each input batch too, so convolutions, BatchNorm and pooling run in
//!   channels-last kernels without per-layer layout conversions. Values are unchanged.
//! * `autocast = "bf16"`: the backbone and the embedding run under libtorch's autocast for the
//!   training device with bfloat16 (matmuls and convolutions in bf16, reductions in f32, as
//!   `torch.autocast(device, dtype=torch.bfloat16)`); the features leave it as f32, so the
//!   classifier, the loss and its replicator dynamics stay in f32. Weights and optimiser state
//!   stay f32 (no loss scaling is needed with bf16's f32 exponent range).

use tch::{nn, Device, Kind, Tensor};

/// Memory layout of activations and convolution weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryFormat {
    /// NCHW, contiguous (PyTorch's default).
    #[default]
    Contiguous,
    /// NHWC strides on NCHW-shaped tensors (`torch.channels_last`).
    ChannelsLast,
}

/// Mixed precision of the network's forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Autocast {
    /// Everything in f32.
    #[default]
    Off,
    /// libtorch autocast with bfloat16 for the backbone and embedding.
    Bf16,
}

/// The two settings together, as an [`crate::model::net::EmbeddingNet`] applies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Execution {
    pub memory_format: MemoryFormat,
    pub autocast: Autocast,
}

/// `t` in `format`: a 4-d tensor re-strided (values unchanged); other ranks as they are.
pub fn to_format(t: &Tensor, format: MemoryFormat) -> Tensor {
    match format {
        MemoryFormat::ChannelsLast if t.dim() == 4 => {
            // The NHWC copy, viewed back as NCHW: the strides of `torch.channels_last`.
            t.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
        }
        _ => t.shallow_clone(),
    }
}

/// Whether a 4-d `t` has channels-last strides (C fastest, then W, H, N).
pub fn is_channels_last(t: &Tensor) -> bool {
    let (size, stride) = (t.size(), t.stride());
    if size.len() != 4 {
        return false;
    }
    let (c, h, w) = (size[1], size[2], size[3]);
    stride[1] == 1 && stride[3] == c && stride[2] == c * w && stride[0] == c * h * w
}

/// Re-strides every 4-d variable of `vs` to `format` in place (their values unchanged). Run it
/// before an optimiser takes the variables, as `model.to(memory_format=…)` before
/// `torch.optim.*(model.parameters())`.
pub fn convert_variables(vs: &nn::VarStore, format: MemoryFormat) {
    if format == MemoryFormat::Contiguous {
        return;
    }
    tch::no_grad(|| {
        for (_, mut v) in vs.variables() {
            if v.dim() == 4 {
                let converted = to_format(&v, format);
                v.set_data(&converted);
            }
        }
    });
}

// libtorch's C++ autocast state (`at::autocast`, ATen/autocast_mode.h), exported by
// libtorch_cpu and linked through torch-sys. tch wraps only the deprecated CUDA/float16 form,
// so the device type and dtype setters are declared here. `c10::DeviceType` and
// `c10::ScalarType` are `enum class : int8_t`; all four functions are plain, non-throwing
// accessors of thread-local state.
mod ffi {
    extern "C" {
        #[link_name = "_ZN2at8autocast20set_autocast_enabledEN3c1010DeviceTypeEb"]
        pub fn set_autocast_enabled(device_type: i8, enabled: bool);
        #[link_name = "_ZN2at8autocast19is_autocast_enabledEN3c1010DeviceTypeE"]
        pub fn is_autocast_enabled(device_type: i8) -> bool;
        #[link_name = "_ZN2at8autocast18set_autocast_dtypeEN3c1010DeviceTypeENS1_10ScalarTypeE"]
        pub fn set_autocast_dtype(device_type: i8, dtype: i8);
        #[link_name = "_ZN2at8autocast18get_autocast_dtypeEN3c1010DeviceTypeE"]
        pub fn get_autocast_dtype(device_type: i8) -> i8;
        #[link_name = "_ZN2at8autocast11clear_cacheEv"]
        pub fn clear_cache();
    }
}

/// `c10::DeviceType` values.
const DEVICE_CPU: i8 = 0;
const DEVICE_CUDA: i8 = 1;
/// `c10::ScalarType::BFloat16`.
const SCALAR_BF16: i8 = 15;

/// libtorch's device type of `device` (autocast state is per type, not per device index).
fn device_type(device: Device) -> i8 {
    match device {
        Device::Cuda(_) => DEVICE_CUDA,
        _ => DEVICE_CPU,
    }
}

/// Autocast enabled for one device type while it lives; on drop the previous state is restored
/// and the cache of casted weights cleared (the weights change at the next optimiser step).
/// Thread-local, as libtorch's autocast: create it on the thread that runs the forward.
pub struct AutocastGuard {
    device_type: i8,
    was_enabled: bool,
    old_dtype: i8,
}

impl AutocastGuard {
    /// Enables bf16 autocast for `device`'s type (CPU, or CUDA for any `cuda:N`).
    pub fn bf16(device: Device) -> Self {
        let device_type = device_type(device);
        // SAFETY: thread-local flag accessors of libtorch (see `ffi`).
        unsafe {
            let guard = AutocastGuard {
                device_type,
                was_enabled: ffi::is_autocast_enabled(device_type),
                old_dtype: ffi::get_autocast_dtype(device_type),
            };
            ffi::set_autocast_dtype(device_type, SCALAR_BF16);
            ffi::set_autocast_enabled(device_type, true);
            guard
        }
    }

    /// Whether autocast is on for `device`'s type on this thread.
    pub fn is_enabled(device: Device) -> bool {
        // SAFETY: a thread-local flag read.
        unsafe { ffi::is_autocast_enabled(device_type(device)) }
    }
}

impl Drop for AutocastGuard {
    fn drop(&mut self) {
        // SAFETY: thread-local flag accessors of libtorch (see `ffi`).
        unsafe {
            ffi::set_autocast_enabled(self.device_type, self.was_enabled);
            ffi::set_autocast_dtype(self.device_type, self.old_dtype);
            if !self.was_enabled {
                ffi::clear_cache();
            }
        }
    }
}

impl Execution {
    /// The input batch in this execution's memory format.
    pub fn input(&self, xs: &Tensor) -> Tensor {
        to_format(xs, self.memory_format)
    }

    /// Runs `f` (the backbone and embedding) under this execution's autocast on `device`; its
    /// output comes back as f32.
    pub fn run(&self, device: Device, f: impl FnOnce() -> Tensor) -> Tensor {
        match self.autocast {
            Autocast::Off => f(),
            Autocast::Bf16 => {
                let out = {
                    let _guard = AutocastGuard::bf16(device);
                    f()
                };
                out.to_kind(Kind::Float)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_last_keeps_values_and_sets_nhwc_strides() {
        let t = Tensor::randn([2, 3, 4, 5], (Kind::Float, Device::Cpu));
        let c = to_format(&t, MemoryFormat::ChannelsLast);
        assert!(is_channels_last(&c), "strides {:?}", c.stride());
        assert!(!is_channels_last(&t));
        assert!(c.equal(&t));
        let v = Tensor::randn([7], (Kind::Float, Device::Cpu));
        assert_eq!(to_format(&v, MemoryFormat::ChannelsLast).stride(), [1]);
        assert_eq!(to_format(&t, MemoryFormat::Contiguous).stride(), t.stride());
    }

    #[test]
    fn variables_are_restrided_in_place() {
        let vs = nn::VarStore::new(Device::Cpu);
        let conv = nn::conv2d(vs.root() / "c", 3, 8, 3, Default::default());
        let before = conv.ws.copy();
        convert_variables(&vs, MemoryFormat::ChannelsLast);
        // The module's own handle sees the new layout: the variable was changed, not replaced.
        assert!(is_channels_last(&conv.ws));
        assert!(conv.ws.equal(&before));
        assert!(conv.ws.requires_grad());
        assert_eq!(conv.bs.as_ref().unwrap().dim(), 1);
    }

    /// The tiny CNN's features and gradients in both layouts, and under bf16 autocast.
    #[test]
    fn a_network_computes_the_same_in_every_execution() {
        use crate::model::net::{EmbeddingNet, HeadParams};
        use crate::model::ForwardMode;
        let head = HeadParams {
            embedding_dim: Some(16),
            num_classes: 5,
            init: Default::default(),
        };
        // Weights and input made once (other tests draw from the global generator meanwhile).
        let first = nn::VarStore::new(Device::Cpu);
        EmbeddingNet::new(&first.root(), "tiny_cnn", head).unwrap();
        let xs = Tensor::randn([4, 3, 32, 32], (Kind::Float, Device::Cpu));
        let run = |execution: Execution| {
            let mut vs = nn::VarStore::new(Device::Cpu);
            let mut net = EmbeddingNet::new(&vs.root(), "tiny_cnn", head).unwrap();
            vs.copy(&first).unwrap();
            convert_variables(&vs, execution.memory_format);
            net.set_execution(execution);
            let out = net.forward(&xs, ForwardMode::TRAIN);
            out.logits.square().sum(Kind::Float).backward();
            let grad = vs.variables()["backbone.s0.conv.weight"].grad();
            (out.features, out.logits, grad)
        };
        let (f, z, g) = run(Execution::default());
        assert!(!is_channels_last(&g));
        let (fc, zc, gc) = run(Execution {
            memory_format: MemoryFormat::ChannelsLast,
            ..Execution::default()
        });
        // The gradient follows its weight's layout (PyTorch's gradient layout contract).
        assert!(is_channels_last(&gc), "strides {:?}", gc.stride());
        let close = |a: &Tensor, b: &Tensor, tol: f64| {
            let rel = ((a - b).abs().max() / b.abs().max()).double_value(&[]);
            assert!(rel <= tol, "relative difference {rel:e} > {tol:e}");
        };
        close(&fc, &f, 1e-5);
        close(&zc, &z, 1e-5);
        close(&gc, &g, 1e-4);
        let (fb, zb, _) = run(Execution {
            autocast: Autocast::Bf16,
            ..Execution::default()
        });
        assert_eq!((fb.kind(), zb.kind()), (Kind::Float, Kind::Float));
        close(&fb, &f, 5e-2);
        assert!(!fb.equal(&f), "bf16 autocast changed nothing");
    }

    #[test]
    fn autocast_casts_convolutions_inside_the_guard_only() {
        let x = Tensor::randn([1, 3, 8, 8], (Kind::Float, Device::Cpu));
        let w = Tensor::randn([4, 3, 3, 3], (Kind::Float, Device::Cpu));
        let conv = || x.conv2d(&w, None::<Tensor>, [1, 1], [0, 0], [1, 1], 1);
        assert!(!AutocastGuard::is_enabled(Device::Cpu));
        {
            let _g = AutocastGuard::bf16(Device::Cpu);
            assert!(AutocastGuard::is_enabled(Device::Cpu));
            assert_eq!(conv().kind(), Kind::BFloat16);
        }
        assert!(!AutocastGuard::is_enabled(Device::Cpu));
        assert_eq!(conv().kind(), Kind::Float);
        let e = Execution {
            autocast: Autocast::Bf16,
            ..Execution::default()
        };
        let y = e.run(Device::Cpu, conv);
        assert_eq!(y.kind(), Kind::Float);
        // bf16 has 8 significant bits: close to, not equal to, the f32 result.
        let exact = conv();
        let rel = ((&y - &exact).abs().max() / exact.abs().max()).double_value(&[]);
        assert!(rel > 0.0 && rel < 2e-2, "relative error {rel}");
    }
}
