//! The model's parameters, laid out as TransformerLens's state dict (`blocks.0.attn.W_Q` is `[n_heads, d_model, d_head]`).
//!
//! They live here, not in the model crate, because the cache's methods read them (`W_O` for head results, `W_out` for
//! neuron results, `W_U` for logit attribution, `ln_final` for the logit lens). Cloning is cheap: burn tensors share
//! their storage.

use burn_tensor::{Tensor, backend::Backend};

use crate::config::NormalizationType;
use crate::dyn_tensor::DynTensor;
use crate::error::Result;

/// A norm's learned parameters: LN has both, RMS only `w`, the `Pre` forms neither.
#[derive(Clone, Debug)]
pub struct NormWeights<B: Backend> {
    /// The norm's kind.
    pub kind: NormalizationType,
    /// Weight `[d]` (`LN`, `RMS`).
    pub w: Option<Tensor<B, 1>>,
    /// Bias `[d]` (`LN`).
    pub b: Option<Tensor<B, 1>>,
}

/// What a norm computes, with the two values TransformerLens hooks.
pub struct NormOutput<B: Backend, const D: usize> {
    /// `sqrt(mean(x²) + eps)` over the last axis (of the centred `x` for LN), shape `[..., 1]` (`hook_scale`).
    pub scale: Tensor<B, D>,
    /// `x / scale` before the affine parameters (`hook_normalized`).
    pub normalized: Tensor<B, D>,
    /// The norm's output (`normalized · w + b`).
    pub output: Tensor<B, D>,
}

impl<B: Backend> NormWeights<B> {
    /// A norm without parameters of the given kind (its `Pre` form).
    pub fn pre(kind: NormalizationType) -> Self {
        Self {
            kind: kind.folded(),
            w: None,
            b: None,
        }
    }

    /// Applies the norm over the last axis, in the order and precision TransformerLens uses.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>, eps: f64) -> NormOutput<B, D> {
        let (x, scale) = self.centre_and_scale(x, eps);
        let normalized = x / scale.clone();
        let output = self.affine(normalized.clone());
        NormOutput {
            scale,
            normalized,
            output,
        }
    }

    /// The first half of the norm: the input centred (LN) and its scale `sqrt(mean(x²) + eps)` (`hook_scale`).
    /// The normalised value is `centred / scale` (`hook_normalized`), the output [`NormWeights::affine`] of it.
    pub fn centre_and_scale<const D: usize>(
        &self,
        x: Tensor<B, D>,
        eps: f64,
    ) -> (Tensor<B, D>, Tensor<B, D>) {
        let x = if self.kind.centers() {
            x.clone() - x.mean_dim(D - 1)
        } else {
            x
        };
        let scale = (x.clone().powi_scalar(2).mean_dim(D - 1) + eps).sqrt();
        (x, scale)
    }

    /// The second half of the norm: `normalized · w + b` with the weights it has.
    pub fn affine<const D: usize>(&self, normalized: Tensor<B, D>) -> Tensor<B, D> {
        let mut output = normalized;
        if let Some(w) = &self.w {
            output = output * w.clone().unsqueeze::<D>();
        }
        if let Some(b) = &self.b {
            output = output + b.clone().unsqueeze::<D>();
        }
        output
    }

    /// Applies the norm to every vector of a [`DynTensor`] (last axis), with fresh statistics.
    pub fn forward_dyn(&self, x: DynTensor<B>, eps: f64) -> Result<DynTensor<B>> {
        let rank = x.rank();
        let t = x.physical_tensor().clone();
        Ok(DynTensor::from_physical(self.forward(t, eps).output, rank))
    }
}

/// One attention layer: `W_Q [H, D, dh]`, `W_K/W_V [H_kv, D, dh]`, `W_O [H, dh, D]`, `b_Q [H, dh]`,
/// `b_K/b_V [H_kv, dh]`, `b_O [D]`; `H_kv` is `n_key_value_heads` (grouped-query attention) or `H`.
#[derive(Clone, Debug)]
#[allow(non_snake_case)]
pub struct AttentionWeights<B: Backend> {
    /// Query weights `[H, D, dh]`.
    pub W_Q: Tensor<B, 3>,
    /// Key weights `[H_kv, D, dh]` (TransformerLens's `_W_K` under grouped-query attention).
    pub W_K: Tensor<B, 3>,
    /// Value weights `[H_kv, D, dh]` (`_W_V` under grouped-query attention).
    pub W_V: Tensor<B, 3>,
    /// Output weights `[H, dh, D]`.
    pub W_O: Tensor<B, 3>,
    /// Query bias `[H, dh]`.
    pub b_Q: Tensor<B, 2>,
    /// Key bias `[H_kv, dh]`.
    pub b_K: Tensor<B, 2>,
    /// Value bias `[H_kv, dh]`.
    pub b_V: Tensor<B, 2>,
    /// Output bias `[D]`.
    pub b_O: Tensor<B, 1>,
    /// The RMS norm over each head's queries (`attn.q_ln`, Qwen 3), width `d_head`.
    pub q_norm: Option<NormWeights<B>>,
    /// The RMS norm over each head's keys (`attn.k_ln`, Qwen 3), width `d_head`.
    pub k_norm: Option<NormWeights<B>>,
}

/// One MLP: `W_in [D, M]`, `b_in [M]`, `W_out [M, D]`, `b_out [D]`; a gated MLP's `W_gate [D, M]`; for SoLU its
/// inner norm `mlp.ln`.
#[derive(Clone, Debug)]
#[allow(non_snake_case)]
pub struct MlpWeights<B: Backend> {
    /// Input weights `[D, M]`.
    pub W_in: Tensor<B, 2>,
    /// Input bias `[M]`.
    pub b_in: Tensor<B, 1>,
    /// The gate's weights `[D, M]` of a gated MLP (SwiGLU, GeGLU).
    pub W_gate: Option<Tensor<B, 2>>,
    /// Output weights `[M, D]`.
    pub W_out: Tensor<B, 2>,
    /// Output bias `[D]`.
    pub b_out: Tensor<B, 1>,
    /// SoLU's LayerNorm over the MLP width (`mlp.ln`), for `act_fn = solu_ln`.
    pub ln: Option<NormWeights<B>>,
}

/// One transformer block.
#[derive(Clone, Debug)]
pub struct BlockWeights<B: Backend> {
    /// Norm before attention (`ln1`); absent without normalisation.
    pub ln1: Option<NormWeights<B>>,
    /// Attention.
    pub attn: AttentionWeights<B>,
    /// Norm after attention (`ln1_post`, Gemma 2).
    pub ln1_post: Option<NormWeights<B>>,
    /// Norm before the MLP (`ln2`); absent without normalisation or MLP.
    pub ln2: Option<NormWeights<B>>,
    /// The MLP; absent in attention-only models.
    pub mlp: Option<MlpWeights<B>>,
    /// Norm after the MLP (`ln2_post`, Gemma 2).
    pub ln2_post: Option<NormWeights<B>>,
}

/// All parameters of a hooked transformer.
#[derive(Clone, Debug)]
#[allow(non_snake_case)]
pub struct TransformerWeights<B: Backend> {
    /// Token embedding `[V, D]`.
    pub W_E: Tensor<B, 2>,
    /// Positional embedding `[n_ctx, D]`; absent with rotary embeddings.
    pub W_pos: Option<Tensor<B, 2>>,
    /// The blocks, in order.
    pub blocks: Vec<BlockWeights<B>>,
    /// The final norm; absent without normalisation.
    pub ln_final: Option<NormWeights<B>>,
    /// Unembedding `[D, V_out]`.
    pub W_U: Tensor<B, 2>,
    /// Unembedding bias `[V_out]`.
    pub b_U: Tensor<B, 1>,
}

impl<B: Backend> NormWeights<B> {
    /// The same parameters on another device.
    pub fn to_device(&self, device: &burn_tensor::Device<B>) -> Self {
        Self {
            kind: self.kind,
            w: self.w.as_ref().map(|t| t.clone().to_device(device)),
            b: self.b.as_ref().map(|t| t.clone().to_device(device)),
        }
    }
}

/// An optional norm on another device.
fn norm_to<B: Backend>(
    n: &Option<NormWeights<B>>,
    device: &burn_tensor::Device<B>,
) -> Option<NormWeights<B>> {
    n.as_ref().map(|n| n.to_device(device))
}

impl<B: Backend> TransformerWeights<B> {
    /// The same parameters on another device.
    pub fn to_device(&self, device: &burn_tensor::Device<B>) -> Self {
        let blocks = self
            .blocks
            .iter()
            .map(|b| BlockWeights {
                ln1: norm_to(&b.ln1, device),
                attn: AttentionWeights {
                    W_Q: b.attn.W_Q.clone().to_device(device),
                    W_K: b.attn.W_K.clone().to_device(device),
                    W_V: b.attn.W_V.clone().to_device(device),
                    W_O: b.attn.W_O.clone().to_device(device),
                    b_Q: b.attn.b_Q.clone().to_device(device),
                    b_K: b.attn.b_K.clone().to_device(device),
                    b_V: b.attn.b_V.clone().to_device(device),
                    b_O: b.attn.b_O.clone().to_device(device),
                    q_norm: norm_to(&b.attn.q_norm, device),
                    k_norm: norm_to(&b.attn.k_norm, device),
                },
                ln1_post: norm_to(&b.ln1_post, device),
                ln2: norm_to(&b.ln2, device),
                mlp: b.mlp.as_ref().map(|m| MlpWeights {
                    W_in: m.W_in.clone().to_device(device),
                    b_in: m.b_in.clone().to_device(device),
                    W_gate: m.W_gate.as_ref().map(|t| t.clone().to_device(device)),
                    W_out: m.W_out.clone().to_device(device),
                    b_out: m.b_out.clone().to_device(device),
                    ln: norm_to(&m.ln, device),
                }),
                ln2_post: norm_to(&b.ln2_post, device),
            })
            .collect();
        Self {
            W_E: self.W_E.clone().to_device(device),
            W_pos: self.W_pos.as_ref().map(|t| t.clone().to_device(device)),
            blocks,
            ln_final: norm_to(&self.ln_final, device),
            W_U: self.W_U.clone().to_device(device),
            b_U: self.b_U.clone().to_device(device),
        }
    }
}
