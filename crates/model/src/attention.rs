//! Attention: query, key and value projections (grouped-query when the model has fewer key/value heads), Qwen 3's
//! per-head query/key norm, rotary embeddings, scaled and soft-capped scores under the causal (or local) mask, the
//! pattern, and the heads' output — with TransformerLens's hooks in its order (`components/abstract_attention.py`).

use burn_tensor::{Tensor, backend::Backend};
use tlens_cache_core::{
    AttentionWeights, BlockHook, HookPoint, Hooks, Norm, NormHook, head_outputs,
};

use crate::error::Result;
use crate::hooked::{ForwardContext, norm};
use crate::kernels::Kernels;

/// One layer's attention on its normalised input `x` (`[batch, pos, d_model]`); returns its output before any
/// post-attention norm.
pub(crate) fn forward<B: Kernels>(
    ctx: &ForwardContext<'_, B>,
    layer: usize,
    w: &AttentionWeights<B>,
    x: Tensor<B, 3>,
    hooks: &mut Hooks<'_, B>,
) -> Result<Tensor<B, 3>> {
    let cfg = ctx.cfg;
    let [batch, pos, d_model] = x.dims();
    let (heads, d_head) = (cfg.n_heads, cfg.d_head);
    let b = |hook: BlockHook| HookPoint::Block(layer, hook);
    let q = project(&x, &w.W_Q, &w.b_Q);
    let q = hooks.fire(b(BlockHook::Q), q)?;
    let k = project(&x, &w.W_K, &w.b_K);
    let k = hooks.fire(b(BlockHook::K), k)?;
    let v = project(&x, &w.W_V, &w.b_V);
    let v = hooks.fire(b(BlockHook::V), v)?;
    let (q, k) = match (&w.q_norm, &w.k_norm) {
        (Some(qn), Some(kn)) => (
            head_norm(
                qn,
                q,
                cfg.eps,
                |h| b(BlockHook::Norm(Norm::QNorm, h)),
                hooks,
            )?,
            head_norm(
                kn,
                k,
                cfg.eps,
                |h| b(BlockHook::Norm(Norm::KNorm, h)),
                hooks,
            )?,
        ),
        _ => (q, k),
    };
    let (q, k) = match &ctx.rotary {
        Some(rotary) => {
            let q = rotary.apply(q);
            let q = hooks.fire(b(BlockHook::RotQ), q)?;
            let k = rotary.apply(k);
            let k = hooks.fire(b(BlockHook::RotK), k)?;
            (q, k)
        }
        None => (q, k),
    };
    let (k, v) = (repeat_kv(k, heads), repeat_kv(v, heads));

    let mut scale = if cfg.use_attn_scale {
        cfg.attn_scale
    } else {
        1.0
    };
    if cfg.scale_attn_by_inverse_layer_idx {
        scale *= (layer + 1) as f64;
    }
    let (q, k_t, v) = (
        q.swap_dims(1, 2),
        k.permute([0, 2, 3, 1]),
        v.swap_dims(1, 2),
    );
    let scores_of = |q: Tensor<B, 4>, k_t: Tensor<B, 4>| {
        B::half_ops(B::matmul(q, k_t, None), |s| {
            B::causal_scores(s, scale, cfg.attn_scores_soft_cap, cfg.attn_window(layer))
        })
    };
    // A hook on the scores can mask a whole query row (an attention knockout); its softmax is then NaN, which
    // TransformerLens turns into zeros. Without such a hook every row keeps its diagonal, so runs skip the check.
    let pattern_of = |scores, nan_to_zero| B::half_ops(scores, |s| B::pattern(s, nan_to_zero));
    let scores_hooked = hooks.fires_at(b(BlockHook::AttnScores));
    let z = if scores_hooked || hooks.fires_at(b(BlockHook::Pattern)) {
        let scores = hooks.fire(b(BlockHook::AttnScores), scores_of(q, k_t))?;
        let pattern = hooks.fire(b(BlockHook::Pattern), pattern_of(scores, scores_hooked))?;
        B::matmul(pattern, v, None)
    } else {
        // Nobody looks at the scores or the pattern: compute them a few heads at a time.
        attend_in_chunks(q, k_t, v, B::ATTENTION_CHUNK_BYTES, |q, k_t, v| {
            B::matmul(pattern_of(scores_of(q, k_t), false), v, None)
        })
    }
    // `[batch, pos, heads, d_head]` laid out in that order once, here: the output projection needs it so, and a cache
    // given the strided view would copy it a second time.
    .swap_dims(1, 2)
    .reshape([batch, pos, heads * d_head])
    .reshape([batch, pos, heads, d_head]);
    let z = hooks.fire(b(BlockHook::Z), z)?;

    if cfg.use_attn_result {
        let result = head_outputs(
            z.reshape([batch * pos, heads, d_head]),
            w.W_O.clone(),
            |lhs, rhs| B::matmul(lhs, rhs, None),
        )
        .reshape([heads, batch, pos, d_model])
        .permute([1, 2, 0, 3]);
        let result = hooks.fire(b(BlockHook::Result), result)?;
        Ok(result.sum_dim(2).reshape([batch, pos, d_model]) + w.b_O.clone().unsqueeze::<3>())
    } else {
        let w_o = w.W_O.clone().reshape([heads * d_head, d_model]);
        Ok(B::fused_linear(
            z.reshape([batch, pos, heads * d_head]),
            w_o,
            Some(w.b_O.clone()),
        ))
    }
}

/// A projection weight `[heads, d_model, d_head]` kept in memory as one `[d_model, heads·d_head]` matrix and seen
/// through a `[heads, d_model, d_head]` view: the same values, but [`project`] then reads the matrix it multiplies by
/// without copying it. Stored heads-first, the weight was copied into that layout on every forward pass: 24 MB per
/// layer on Llama 3.2 1B, 2% of a flex forward pass in `copy_contiguous` plus the fresh pages it writes.
pub(crate) fn input_major<B: Backend>(w: Tensor<B, 3>) -> Tensor<B, 3> {
    let [heads, d_model, d_head] = w.dims();
    w.swap_dims(0, 1)
        .reshape([d_model, heads * d_head])
        .reshape([d_model, heads, d_head])
        .swap_dims(0, 1)
}

/// `x · W + b` for every head at once (`W [heads, d_model, d_head]` flattened to `[d_model, heads·d_head]`, as
/// TransformerLens's `F.linear`), giving `[batch, pos, heads, d_head]`.
fn project<B: Kernels>(
    x: &Tensor<B, 3>,
    weight: &Tensor<B, 3>,
    bias: &Tensor<B, 2>,
) -> Tensor<B, 4> {
    let [batch, pos, d_model] = x.dims();
    let [heads, _, d_head] = weight.dims();
    let flat = weight
        .clone()
        .swap_dims(0, 1)
        .reshape([d_model, heads * d_head]);
    let bias = bias.clone().reshape([heads * d_head]);
    B::fused_linear(x.clone(), flat, Some(bias)).reshape([batch, pos, heads, d_head])
}

/// Qwen 3's RMS norm over each head's vector. TransformerLens flattens to `[batch·pos·heads, d_head]` first, so its
/// `hook_scale` / `hook_normalized` have that shape; tlens records the same.
fn head_norm<B: Backend>(
    w: &tlens_cache_core::NormWeights<B>,
    x: Tensor<B, 4>,
    eps: f64,
    at: impl Fn(NormHook) -> HookPoint,
    hooks: &mut Hooks<'_, B>,
) -> Result<Tensor<B, 4>> {
    let [batch, pos, heads, d_head] = x.dims();
    let flat = x.reshape([batch * pos * heads, d_head]);
    Ok(norm(Some(w), flat, eps, at, hooks)?.reshape([batch, pos, heads, d_head]))
}

/// `attend(q, kᵀ, v)` (`[batch, heads, pos, d_head]`, `[batch, heads, d_head, pos]`, `[batch, heads, pos, d_head]`:
/// the pattern times the values) over slices of the batch and the heads, at most `budget` bytes of f32 scores at a
/// time, concatenated: the same values, since every head is computed on its own either way. Each slice's buffers are
/// then small enough for the allocator to reuse freed memory rather than map fresh, zeroed pages (glibc maps anything
/// of 32 MiB or more afresh): GPT-2 small at 4×1024 has 200 MB of scores per layer, and its forward pass on flex took
/// 9.0 s whole against 7.3 s in 4 MiB slices (16 MiB slices took 10.5 s).
fn attend_in_chunks<B: Backend>(
    q: Tensor<B, 4>,
    k_t: Tensor<B, 4>,
    v: Tensor<B, 4>,
    budget: usize,
    attend: impl Fn(Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) -> Tensor<B, 4>,
) -> Tensor<B, 4> {
    let [batch, heads, pos, _] = q.dims();
    let head_bytes = pos * k_t.dims()[3] * 4;
    let heads_at_once = (budget / head_bytes).clamp(1, heads);
    let batch_at_once = match heads_at_once == heads {
        true => (budget / (heads * head_bytes)).clamp(1, batch),
        false => 1,
    };
    if (batch_at_once, heads_at_once) == (batch, heads) {
        return attend(q, k_t, v);
    }
    let mut rows = Vec::with_capacity(batch.div_ceil(batch_at_once));
    for i in (0..batch).step_by(batch_at_once) {
        let mut parts = Vec::with_capacity(heads.div_ceil(heads_at_once));
        for h in (0..heads).step_by(heads_at_once) {
            let (nb, nh) = (batch_at_once.min(batch - i), heads_at_once.min(heads - h));
            let part = |t: &Tensor<B, 4>| t.clone().narrow(0, i, nb).narrow(1, h, nh);
            parts.push(attend(part(&q), part(&k_t), part(&v)));
        }
        rows.push(concat(parts, 1));
    }
    concat(rows, 0)
}

/// `Tensor::cat`, without a copy for a single part.
fn concat<B: Backend>(mut parts: Vec<Tensor<B, 4>>, dim: usize) -> Tensor<B, 4> {
    match parts.len() {
        1 => parts.pop().expect("one part"),
        _ => Tensor::cat(parts, dim),
    }
}

/// Grouped-query attention: each key/value head serves `heads / kv_heads` consecutive query heads
/// (`torch.repeat_interleave` over the head axis).
fn repeat_kv<B: Backend>(x: Tensor<B, 4>, heads: usize) -> Tensor<B, 4> {
    let [batch, pos, kv_heads, d_head] = x.dims();
    if kv_heads == heads {
        return x;
    }
    let group = heads / kv_heads;
    x.unsqueeze_dim::<5>(3)
        .expand([batch, pos, kv_heads, group, d_head])
        .reshape([batch, pos, heads, d_head])
}

#[cfg(test)]
mod tests {
    use burn_flex::Flex;
    use burn_tensor::{Tensor, activation::softmax};

    use super::attend_in_chunks;

    /// Slicing the batch and the heads changes no bit: every budget, from one head at a time to all at once, gives
    /// what the whole computation gives.
    #[test]
    fn attention_in_chunks_is_attention_whole() {
        let device = Default::default();
        let (batch, heads, pos, d_head) = (3, 5, 7, 4);
        let tensor = |seed: f32, shape: [usize; 4]| {
            let n: usize = shape.iter().product();
            let values: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37 + seed).sin()).collect();
            Tensor::<Flex, 1>::from_floats(values.as_slice(), &device).reshape(shape)
        };
        let q = tensor(0.1, [batch, heads, pos, d_head]);
        let k_t = tensor(0.7, [batch, heads, d_head, pos]);
        let v = tensor(1.3, [batch, heads, pos, d_head]);
        let attend = |q: Tensor<Flex, 4>, k_t, v| softmax(q.matmul(k_t), 3).matmul(v);
        let whole = attend(q.clone(), k_t.clone(), v.clone()).into_data();
        let head = pos * pos * 4;
        for budget in [
            1,
            head,
            2 * head,
            heads * head,
            2 * heads * head,
            usize::MAX,
        ] {
            let chunked = attend_in_chunks(q.clone(), k_t.clone(), v.clone(), budget, attend);
            chunked.into_data().assert_eq(&whole, true);
        }
    }
}
