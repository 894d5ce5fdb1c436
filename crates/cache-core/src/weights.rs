//! The model's parameters, laid out as TransformerLens's state dict (`blocks.0.attn.W_Q` is `[n_heads, d_model, d_head]`).
//!
//! They live here, not in the model crate, because the cache's methods read them (`W_O` for head results, `W_out` for
//! neuron results, `W_U` for logit attribution, `ln_final` for the logit lens). Cloning is cheap: burn tensors share
//! their storage.

use burn_tensor::{DType, FloatDType, Tensor, backend::Backend};

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

    /// The second half of the norm: `normalized · w + b` with the weights it has, in `normalized`'s precision (the
    /// cache's methods give f32 activations to a model's bf16 norm).
    pub fn affine<const D: usize>(&self, normalized: Tensor<B, D>) -> Tensor<B, D> {
        let dtype = FloatDType::from(normalized.dtype());
        let like = |p: &Tensor<B, 1>| in_dtype(p.clone(), dtype);
        let mut output = normalized;
        if let Some(w) = &self.w {
            output = output * like(w).unsqueeze::<D>();
        }
        if let Some(b) = &self.b {
            output = output + like(b).unsqueeze::<D>();
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

/// A function applied to every parameter tensor, whatever its rank (a closure cannot be generic over the rank):
/// what [`TransformerWeights::map`] takes.
pub trait ParamMap<B: Backend> {
    /// The new value of one parameter.
    fn apply<const D: usize>(&self, t: Tensor<B, D>) -> Tensor<B, D>;
}

/// [`ParamMap`]: every parameter moved to a device.
struct ToDevice<'a, B: Backend>(&'a burn_tensor::Device<B>);

impl<B: Backend> ParamMap<B> for ToDevice<'_, B> {
    fn apply<const D: usize>(&self, t: Tensor<B, D>) -> Tensor<B, D> {
        t.to_device(self.0)
    }
}

/// [`ParamMap`]: every parameter cast to a precision.
struct Cast(FloatDType);

impl<B: Backend> ParamMap<B> for Cast {
    fn apply<const D: usize>(&self, t: Tensor<B, D>) -> Tensor<B, D> {
        in_dtype(t, self.0)
    }
}

impl<B: Backend> NormWeights<B> {
    /// The same norm with `f` applied to its parameters.
    pub fn map(self, f: &impl ParamMap<B>) -> Self {
        Self {
            kind: self.kind,
            w: self.w.map(|t| f.apply(t)),
            b: self.b.map(|t| f.apply(t)),
        }
    }
}

/// An optional norm with `f` applied to its parameters.
fn norm_map<B: Backend>(n: Option<NormWeights<B>>, f: &impl ParamMap<B>) -> Option<NormWeights<B>> {
    n.map(|n| n.map(f))
}

impl<B: Backend> TransformerWeights<B> {
    /// The same parameters with `f` applied to each: moved to another device, cast to another precision. Each
    /// parameter is released as soon as its replacement exists, so a cast holds both precisions of one tensor at a
    /// time, not of the whole model.
    pub fn map(self, f: &impl ParamMap<B>) -> Self {
        let blocks = self
            .blocks
            .into_iter()
            .map(|b| BlockWeights {
                ln1: norm_map(b.ln1, f),
                attn: AttentionWeights {
                    W_Q: f.apply(b.attn.W_Q),
                    W_K: f.apply(b.attn.W_K),
                    W_V: f.apply(b.attn.W_V),
                    W_O: f.apply(b.attn.W_O),
                    b_Q: f.apply(b.attn.b_Q),
                    b_K: f.apply(b.attn.b_K),
                    b_V: f.apply(b.attn.b_V),
                    b_O: f.apply(b.attn.b_O),
                    q_norm: norm_map(b.attn.q_norm, f),
                    k_norm: norm_map(b.attn.k_norm, f),
                },
                ln1_post: norm_map(b.ln1_post, f),
                ln2: norm_map(b.ln2, f),
                mlp: b.mlp.map(|m| MlpWeights {
                    W_in: f.apply(m.W_in),
                    b_in: f.apply(m.b_in),
                    W_gate: m.W_gate.map(|t| f.apply(t)),
                    W_out: f.apply(m.W_out),
                    b_out: f.apply(m.b_out),
                    ln: norm_map(m.ln, f),
                }),
                ln2_post: norm_map(b.ln2_post, f),
            })
            .collect();
        Self {
            W_E: f.apply(self.W_E),
            W_pos: self.W_pos.map(|t| f.apply(t)),
            blocks,
            ln_final: norm_map(self.ln_final, f),
            W_U: f.apply(self.W_U),
            b_U: f.apply(self.b_U),
        }
    }

    /// The same parameters on another device.
    pub fn to_device(self, device: &burn_tensor::Device<B>) -> Self {
        self.map(&ToDevice(device))
    }

    /// The same parameters in another precision (rounded to nearest even).
    pub fn cast(self, dtype: FloatDType) -> Self {
        self.map(&Cast(dtype))
    }

    /// The precision the parameters are kept (and the model computes) in.
    pub fn dtype(&self) -> FloatDType {
        self.W_E.dtype().into()
    }
}

/// `t` in precision `dtype`, untouched when it already is (burn-ndarray copies on a cast to the same precision).
pub fn in_dtype<B: Backend, const D: usize>(t: Tensor<B, D>, dtype: FloatDType) -> Tensor<B, D> {
    if t.dtype() == DType::from(dtype) {
        t
    } else {
        t.cast(dtype)
    }
}

/// `f(x)` computed in f32 and rounded once to `x`'s precision: how a half-precision model runs a chain of element-wise
/// ops (an activation, a softmax), as PyTorch's half kernels compute in f32 and round their result. Only the last
/// bit of a value can differ from TransformerLens's, which rounds after each op of a chain.
pub fn via_f32<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    f: impl FnOnce(Tensor<B, D>) -> Tensor<B, D>,
) -> Tensor<B, D> {
    let dtype = FloatDType::from(x.dtype());
    in_dtype(f(in_dtype(x, FloatDType::F32)), dtype)
}

/// A weight as f32, for the cache's methods, which compute in f32 whatever precision the model runs in.
pub(crate) fn as_f32<B: Backend, const D: usize>(t: Tensor<B, D>) -> Tensor<B, D> {
    in_dtype(t, FloatDType::F32)
}
