//! Weight processing as TransformerLens's `from_pretrained` does it (spec §7): `fold_ln`, `center_writing_weights`,
//! `center_unembed`, `fold_value_biases`, in that order, each switchable.

use burn_tensor::{Tensor, backend::Backend};
use serde::{Deserialize, Serialize};
use tlens_cache_core::{HookedTransformerConfig, NormWeights, Precision, TransformerWeights};

/// How the weights are prepared, as `from_pretrained`'s keyword arguments: which processing steps to apply
/// ([`Default`] is all of them) and the precision to keep them in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Processing {
    /// Fold each norm's weight (and LN's bias) into the weights that read from it; norms become `LNPre`/`RMSPre`.
    pub fold_ln: bool,
    /// Remove the mean over `d_model` from everything that writes to the residual stream (LN models only).
    pub center_writing_weights: bool,
    /// Remove the mean over the vocabulary from the unembedding (logits shift by a constant per position).
    pub center_unembed: bool,
    /// Move the value biases into the output bias.
    pub fold_value_biases: bool,
    /// The precision the model keeps its weights and computes in (`from_pretrained(dtype=...)`). As TransformerLens,
    /// f16 and bf16 weights are rounded to that precision, processed in f32 and rounded again; the forward pass then
    /// runs in it, except the norms, which upcast to f32 (so `hook_scale` and `hook_normalized` are f32). Needs a
    /// backend that computes in it (flex, tch, cuda; not ndarray).
    pub dtype: Precision,
}

impl Default for Processing {
    fn default() -> Self {
        Self {
            fold_ln: true,
            center_writing_weights: true,
            center_unembed: true,
            fold_value_biases: true,
            dtype: Precision::F32,
        }
    }
}

impl Processing {
    /// No processing: the weights as stored (`from_pretrained_no_processing`).
    pub fn none() -> Self {
        Self {
            fold_ln: false,
            center_writing_weights: false,
            center_unembed: false,
            fold_value_biases: false,
            dtype: Precision::F32,
        }
    }
}

/// Applies the processing in TransformerLens's order and returns the config the processed weights belong to.
pub fn process<B: Backend>(
    mut cfg: HookedTransformerConfig,
    w: &mut TransformerWeights<B>,
    p: Processing,
) -> HookedTransformerConfig {
    let norm = cfg.normalization_type;
    // TransformerLens decides both centring steps on the norm type before folding changes it.
    let centers = norm.is_some_and(|n| n.centers());
    if p.fold_ln
        && let Some(kind) = norm
    {
        fold_ln(w, kind.centers());
        cfg.normalization_type = Some(kind.folded());
    }
    if p.center_writing_weights && centers {
        center_writing_weights(w);
    }
    // A soft cap on the logits is not invariant to a constant shift, so TransformerLens skips centring then.
    if p.center_unembed && cfg.output_logits_soft_cap.is_none() {
        w.W_U = w.W_U.clone() - w.W_U.clone().mean_dim(1);
        w.b_U = w.b_U.clone() - w.b_U.clone().mean_dim(0);
    }
    if p.fold_value_biases {
        for block in &mut w.blocks {
            let a = &mut block.attn;
            let [h, dh, d] = a.W_O.dims();
            // Under grouped-query attention each value head serves `h / kv` consecutive query heads.
            let kv = a.b_V.dims()[0];
            let b_v = a
                .b_V
                .clone()
                .reshape([kv, 1, dh])
                .expand([kv, h / kv, dh])
                .reshape([h, dh, 1]);
            let folded = (b_v * a.W_O.clone()).sum_dim(0).sum_dim(1).reshape([d]);
            a.b_O = a.b_O.clone() + folded;
            a.b_V = a.b_V.zeros_like();
        }
    }
    cfg
}

/// Folds a norm into one weight that reads from it (axis `D-2` of `weight` is the norm's width) and its bias:
/// `bias += Σ_d norm.b[d] · weight[.., d, :]`, then `weight *= norm.w` along that axis, then (LN) centre `weight` over it.
fn fold_into<B: Backend, const D: usize, const E: usize>(
    norm: &NormWeights<B>,
    weight: &mut Tensor<B, D>,
    bias: &mut Tensor<B, E>,
    center: bool,
) {
    let along = |v: &Tensor<B, 1>| {
        let mut shape = [1; D];
        shape[D - 2] = v.dims()[0];
        v.clone().reshape(shape)
    };
    if let Some(b) = &norm.b {
        *bias = bias.clone()
            + (weight.clone() * along(b))
                .sum_dim(D - 2)
                .reshape(bias.dims());
    }
    if let Some(w) = &norm.w {
        *weight = weight.clone() * along(w);
    }
    if center {
        *weight = weight.clone() - weight.clone().mean_dim(D - 2);
    }
}

/// `fold_ln`: every norm's parameters move into the weights that read from it; LN also centres those weights.
fn fold_ln<B: Backend>(w: &mut TransformerWeights<B>, center: bool) {
    for block in &mut w.blocks {
        if let Some(ln1) = block.ln1.take() {
            let a = &mut block.attn;
            fold_into(&ln1, &mut a.W_Q, &mut a.b_Q, center);
            fold_into(&ln1, &mut a.W_K, &mut a.b_K, center);
            fold_into(&ln1, &mut a.W_V, &mut a.b_V, center);
            block.ln1 = Some(NormWeights::pre(ln1.kind));
        }
        if let (Some(ln2), Some(mlp)) = (block.ln2.take(), block.mlp.as_mut()) {
            if let Some(w_gate) = mlp.W_gate.as_mut() {
                // The gate has no bias: what LN's bias adds through it is not folded (TransformerLens folds it
                // into b_in only through W_in).
                let mut no_bias = Tensor::<B, 1>::zeros([w_gate.dims()[1]], &w_gate.device());
                fold_into(&ln2, w_gate, &mut no_bias, center);
            }
            fold_into(&ln2, &mut mlp.W_in, &mut mlp.b_in, center);
            block.ln2 = Some(NormWeights::pre(ln2.kind));
        }
        if let Some(mlp) = block.mlp.as_mut()
            && let Some(ln) = mlp.ln.take()
        {
            fold_into(&ln, &mut mlp.W_out, &mut mlp.b_out, center);
            mlp.ln = Some(NormWeights::pre(ln.kind));
        }
    }
    if let Some(ln_final) = w.ln_final.take() {
        fold_into(&ln_final, &mut w.W_U, &mut w.b_U, center);
        w.ln_final = Some(NormWeights::pre(ln_final.kind));
    }
}

/// `center_writing_weights`: everything that writes to the residual stream gets mean zero over `d_model`.
fn center_writing_weights<B: Backend>(w: &mut TransformerWeights<B>) {
    w.W_E = w.W_E.clone() - w.W_E.clone().mean_dim(1);
    if let Some(w_pos) = w.W_pos.as_mut() {
        *w_pos = w_pos.clone() - w_pos.clone().mean_dim(1);
    }
    for block in &mut w.blocks {
        let a = &mut block.attn;
        a.W_O = a.W_O.clone() - a.W_O.clone().mean_dim(2);
        a.b_O = a.b_O.clone() - a.b_O.clone().mean_dim(0);
        if let Some(mlp) = block.mlp.as_mut() {
            mlp.W_out = mlp.W_out.clone() - mlp.W_out.clone().mean_dim(1);
            mlp.b_out = mlp.b_out.clone() - mlp.b_out.clone().mean_dim(0);
        }
    }
}
