//! Fresh linear layers initialised as PyTorch's `nn.Linear` does, value for value.
//!
//! tch's `nn::linear` with the default config differs from `torch.nn.Linear` (what the official
//! Group Loss code builds) twice: its weight is Kaiming-uniform with the ReLU gain, bound
//! √6/√fan_in (√6 times wider), and it creates the bias before the weight, so even equal bounds
//! would draw each from the other's part of the random stream. `nn.Linear.reset_parameters`
//! draws the weight first, `kaiming_uniform_(w, a=√5)` = U(−1/√in, 1/√in), then the bias
//! U(−1/√in, 1/√in); both are `uniform_` on the global CPU generator, so after the same
//! `manual_seed` [`torch_linear`] gives the same tensors bit for bit (`tests/it/linear_init.rs`
//! checks it against PyTorch).

use tch::nn;

/// How a run draws its fresh head layers (the recipe key `head_init`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadInit {
    /// [`torch_linear`]: PyTorch's `nn.Linear`, what the official code and every loss's
    /// reference implementation start from.
    #[default]
    Torch,
    /// tch's default `nn::linear` (bias first, Kaiming-uniform with the ReLU gain): what this
    /// project used before numerics version 3, kept for the ablation that measures it.
    Tch,
}

/// The weight's bound as `torch.nn.init.kaiming_uniform_(w, a=√5)` computes it in f64:
/// √3·(√(2/(1+a²))/√fan_in). It is 1/√fan_in up to the last bit of the f64 (0.031249999999999997
/// for fan_in 1024), a difference `uniform_` loses when it casts the bounds to f32 (for every
/// fan_in ≤ 4·10⁶, checked) but keeps for an f64 weight; computed PyTorch's way, the bound
/// is PyTorch's in both.
fn kaiming_uniform_a_sqrt5_bound(fan_in: i64) -> f64 {
    let a = 5f64.sqrt();
    let gain = (2.0 / (1.0 + a * a)).sqrt();
    3f64.sqrt() * (gain / (fan_in as f64).sqrt())
}

/// A linear layer `in_dim → out_dim` under `path` (`weight` out×in, `bias` out), drawn as
/// `torch.nn.Linear(in_dim, out_dim)` draws it: the weight first, U(−b, b), then the bias,
/// U(−b, b), with b = 1/√in_dim.
pub fn torch_linear<'a, T: std::borrow::Borrow<nn::Path<'a>>>(
    path: T,
    in_dim: i64,
    out_dim: i64,
) -> nn::Linear {
    let path = path.borrow();
    let wb = kaiming_uniform_a_sqrt5_bound(in_dim);
    let ws = path.var(
        "weight",
        &[out_dim, in_dim],
        nn::Init::Uniform { lo: -wb, up: wb },
    );
    let bb = 1.0 / (in_dim as f64).sqrt();
    let bs = path.var("bias", &[out_dim], nn::Init::Uniform { lo: -bb, up: bb });
    nn::Linear { ws, bs: Some(bs) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_bound_is_one_over_sqrt_fan_in_to_the_last_f64_bit_and_equal_in_f32() {
        for fan_in in 1..=65_536 {
            let b = kaiming_uniform_a_sqrt5_bound(fan_in);
            let r = 1.0 / (fan_in as f64).sqrt();
            assert!(
                (b - r).abs() <= 2.0 * f64::EPSILON * r,
                "fan_in {fan_in}: {b} vs {r}"
            );
            assert_eq!(b as f32, r as f32, "fan_in {fan_in}");
        }
    }
}
