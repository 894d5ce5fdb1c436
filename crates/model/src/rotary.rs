//! Rotary positional embeddings, computed as TransformerLens's `AbstractAttention.calculate_sin_cos_rotary` and
//! `apply_rotary` do (in f32, the same operations in the same order), so `hook_rot_q` / `hook_rot_k` match.

use burn_tensor::{FloatDType, Tensor, TensorData, backend::Backend};
use tlens_cache_core::{HookedTransformerConfig, in_dtype};

use crate::kernels::Kernels;

/// The sine and cosine tables of one forward pass (`[1, positions, 1, rotary_dim]`), shared by every layer.
pub(crate) struct Rotary<B: Backend> {
    sin: Tensor<B, 4>,
    cos: Tensor<B, 4>,
    adjacent_pairs: bool,
}

impl<B: Backend> Rotary<B> {
    /// The tables for positions `0..positions`, computed in f32 and cast to the model's precision `dtype`.
    pub(crate) fn new(
        cfg: &HookedTransformerConfig,
        positions: usize,
        dtype: FloatDType,
        device: &burn_tensor::Device<B>,
    ) -> Self {
        let dims = cfg.rotary_dims();
        let freq = frequencies(cfg);
        // TransformerLens repeats each frequency for its pair: `(d 2)` for adjacent pairs, `(2 d)` for halves.
        let column = |j: usize| {
            if cfg.rotary_adjacent_pairs {
                freq[j / 2]
            } else {
                freq[j % (dims / 2)]
            }
        };
        let mut sin = Vec::with_capacity(positions * dims);
        let mut cos = Vec::with_capacity(positions * dims);
        for p in 0..positions {
            for j in 0..dims {
                let angle = p as f32 / column(j);
                sin.push(angle.sin());
                cos.push(angle.cos());
            }
        }
        let table = |v: Vec<f32>| {
            let t = Tensor::<B, 2>::from_data(TensorData::new(v, [positions, dims]), device);
            in_dtype(t, dtype).reshape([1, positions, 1, dims])
        };
        Self {
            sin: table(sin),
            cos: table(cos),
            adjacent_pairs: cfg.rotary_adjacent_pairs,
        }
    }
}

impl<B: Kernels> Rotary<B> {
    /// Rotates the first `rotary_dim` dimensions of each head of `x` (`[batch, pos, heads, d_head]`).
    pub(crate) fn apply(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        B::rotary(x, &self.sin, &self.cos, self.adjacent_pairs)
    }
}

/// [`Kernels::rotary`] in burn's generic ops, as TransformerLens's `apply_rotary`: `x·cos + rotate_every_two(x)·sin`
/// on the first `rotary_dim` dimensions (the tables' width), the rest passed through.
pub(crate) fn rotate<B: Backend>(
    x: Tensor<B, 4>,
    sin: &Tensor<B, 4>,
    cos: &Tensor<B, 4>,
    adjacent_pairs: bool,
) -> Tensor<B, 4> {
    let [batch, pos, heads, d_head] = x.dims();
    let dims = sin.dims()[3];
    let x_rot = x.clone().narrow(3, 0, dims);
    let flipped = rotate_every_two(x_rot.clone(), adjacent_pairs);
    let rotated = x_rot * cos.clone() + flipped * sin.clone();
    if dims == d_head {
        return rotated;
    }
    let x_pass = x.narrow(3, dims, d_head - dims);
    Tensor::cat(vec![rotated, x_pass], 3).reshape([batch, pos, heads, d_head])
}

/// `[x0, x1] -> [-x1, x0]` for each rotated pair: adjacent elements (GPT-J) or the two halves (GPT-NeoX, Llama).
fn rotate_every_two<B: Backend>(x: Tensor<B, 4>, adjacent_pairs: bool) -> Tensor<B, 4> {
    let [batch, pos, heads, dims] = x.dims();
    if adjacent_pairs {
        let pairs = x.reshape([batch * pos * heads, dims / 2, 2]);
        let (even, odd) = (pairs.clone().narrow(2, 0, 1), pairs.narrow(2, 1, 1));
        Tensor::cat(vec![-odd, even], 2).reshape([batch, pos, heads, dims])
    } else {
        let half = dims / 2;
        let (first, second) = (x.clone().narrow(3, 0, half), x.narrow(3, half, half));
        Tensor::cat(vec![-second, first], 3)
    }
}

/// The `rotary_dim / 2` wavelengths (`freq` in TransformerLens): `base^(i / (rotary_dim/2))`, or Llama 3.1's
/// NTK-by-parts rescaling of them.
fn frequencies(cfg: &HookedTransformerConfig) -> Vec<f32> {
    let dims = cfg.rotary_dims();
    let base = cfg.rotary_base as f32;
    if !cfg.use_ntk_by_parts_rope {
        let half = dims as f32 / 2.0;
        return (0..dims / 2).map(|i| base.powf(i as f32 / half)).collect();
    }
    let factor = cfg.ntk_by_parts_factor as f32;
    let (low, high) = (
        cfg.ntk_by_parts_low_freq_factor as f32,
        cfg.ntk_by_parts_high_freq_factor as f32,
    );
    let old_ctx = cfg.ntk_original_ctx_len as f32;
    let (low_wavelen, high_wavelen) = (old_ctx / low, old_ctx / high);
    (0..dims / 2)
        .map(|i| {
            let inv_freq = 1.0 / base.powf((2 * i) as f32 / dims as f32);
            let wavelen = 2.0 * std::f32::consts::PI / inv_freq;
            let scaled = if wavelen > low_wavelen {
                inv_freq / factor
            } else {
                inv_freq
            };
            let smooth = (old_ctx / wavelen - low) / (high - low);
            let smoothed = (1.0 - smooth) * scaled / factor + smooth * scaled;
            let medium = wavelen >= high_wavelen && wavelen <= low_wavelen;
            1.0 / if medium { smoothed } else { scaled }
        })
        .collect()
}
