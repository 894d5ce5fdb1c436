//! Attention: query, key and value projections (grouped-query when the model has fewer key/value heads), Qwen 3's
//! per-head query/key norm, rotary embeddings, scaled and soft-capped scores under the causal (or local) mask, the
//! pattern, and the heads' output — with TransformerLens's hooks in its order (`components/abstract_attention.py`).

use burn_tensor::{Tensor, backend::Backend};
use tlens_cache_core::{
    AttentionWeights, BlockHook, Derived, DynTensor, HookPoint, Hooks, Norm, NormHook, head_outputs,
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
    let mut scale = if cfg.use_attn_scale {
        cfg.attn_scale
    } else {
        1.0
    };
    if cfg.scale_attn_by_inverse_layer_idx {
        scale *= (layer + 1) as f64;
    }
    let scores = Scores {
        scale,
        cap: cfg.attn_scores_soft_cap,
        window: cfg.attn_window(layer),
    };
    let (scores_at, pattern_at) = (b(BlockHook::AttnScores), b(BlockHook::Pattern));
    let scores_hooked = hooks.fires_at(scores_at);
    let seen = scores_hooked || hooks.fires_at(pattern_at);
    let q = q.swap_dims(1, 2);
    let v = repeat_kv(v, heads).swap_dims(1, 2);
    let z = if seen && !(hooks.take_derived(scores_at) && hooks.take_derived(pattern_at)) {
        // A hook reads or changes the scores or the pattern: both are computed whole.
        let k_t = keys_last(k, heads);
        let scores = hooks.fire(scores_at, scores.of(q, k_t))?;
        // A hook on the scores can mask a whole query row (an attention knockout); its softmax is then NaN, which
        // TransformerLens turns into zeros. Without such a hook every row keeps its diagonal, so runs skip the check.
        let pattern = hooks.fire(pattern_at, Scores::pattern(scores, scores_hooked))?;
        B::matmul(pattern, v, None)
    } else {
        if seen {
            // Only the cache wants them: it keeps their recipe, from the queries and keys it holds anyway.
            hooks.fire_derived(scores_at, &scores.derived(&q, &k, heads, false))?;
            hooks.fire_derived(pattern_at, &scores.derived(&q, &k, heads, true))?;
        }
        // The scores and the pattern a few heads at a time.
        let k_t = keys_last(k, heads);
        in_chunks([q, k_t, v], B::ATTENTION_CHUNK_BYTES, |[q, k_t, v]| {
            B::matmul(Scores::pattern(scores.of(q, k_t), false), v, None)
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

/// How a layer turns queries and keys into attention scores: the scale, the soft cap and the local window.
#[derive(Clone, Copy)]
struct Scores {
    scale: f64,
    cap: Option<f64>,
    window: Option<usize>,
}

impl Scores {
    /// The masked scores of `q` (`[batch, heads, pos, d_head]`) against `kᵀ` (`[batch, heads, d_head, key]`).
    fn of<B: Kernels>(self, q: Tensor<B, 4>, k_t: Tensor<B, 4>) -> Tensor<B, 4> {
        B::half_ops(B::matmul(q, k_t, None), |s| {
            B::causal_scores(s, self.scale, self.cap, self.window)
        })
    }

    /// The pattern of masked scores (`nan_to_zero`: a fully masked row gives zeros).
    fn pattern<B: Kernels>(scores: Tensor<B, 4>, nan_to_zero: bool) -> Tensor<B, 4> {
        B::half_ops(scores, |s| B::pattern(s, nan_to_zero))
    }

    /// The scores (with `pattern`, the pattern) of `q` against the keys `k` (`[batch, key, kv_heads, d_head]`) as a
    /// cache's derived activation: computed when read, in the slices the forward pass computes them in.
    fn derived<B: Kernels>(
        self,
        q: &Tensor<B, 4>,
        k: &Tensor<B, 4>,
        heads: usize,
        pattern: bool,
    ) -> Derived<B> {
        let [batch, _, pos, _] = q.dims();
        let shape = vec![batch, heads, pos, k.dims()[1]];
        let (q, k) = (q.clone(), k.clone());
        Derived::new(shape, move || {
            let inputs = [q.clone(), keys_last(k.clone(), heads)];
            DynTensor::new(in_chunks(inputs, B::ATTENTION_CHUNK_BYTES, |[q, k_t]| {
                let scores = self.of(q, k_t);
                match pattern {
                    true => Self::pattern(scores, false),
                    false => scores,
                }
            }))
        })
    }
}

/// The keys `[batch, key, kv_heads, d_head]` as every query head sees them, keys last: `[batch, heads, d_head, key]`.
fn keys_last<B: Backend>(k: Tensor<B, 4>, heads: usize) -> Tensor<B, 4> {
    repeat_kv(k, heads).permute([0, 2, 3, 1])
}

/// `f` of `inputs` (each `[batch, heads, ..]`; the first is the queries `[batch, heads, pos, d_head]`) over slices of
/// the batch and the heads, with at most `budget` bytes of f32 scores at a time, concatenated: the same values, since
/// every head is computed on its own either way, and the same slices for the same shapes, so that a cache's derived
/// scores and pattern are the ones the forward pass used. Each slice's buffers are then small enough for the
/// allocator to reuse freed memory rather than map fresh, zeroed pages (glibc maps anything of 32 MiB or more afresh):
/// GPT-2 small at 4×1024 has 200 MB of scores per layer, and its forward pass on flex took 9.0 s whole against 7.3 s
/// in 4 MiB slices (16 MiB slices took 10.5 s).
fn in_chunks<B: Backend, const N: usize>(
    inputs: [Tensor<B, 4>; N],
    budget: usize,
    f: impl Fn([Tensor<B, 4>; N]) -> Tensor<B, 4>,
) -> Tensor<B, 4> {
    let [batch, heads, pos, _] = inputs[0].dims();
    let keys = inputs[1].dims()[3];
    let head_bytes = pos * keys * 4;
    let heads_at_once = (budget / head_bytes).clamp(1, heads);
    let batch_at_once = match heads_at_once == heads {
        true => (budget / (heads * head_bytes)).clamp(1, batch),
        false => 1,
    };
    if (batch_at_once, heads_at_once) == (batch, heads) {
        return f(inputs);
    }
    let mut rows = Vec::with_capacity(batch.div_ceil(batch_at_once));
    for i in (0..batch).step_by(batch_at_once) {
        let mut parts = Vec::with_capacity(heads.div_ceil(heads_at_once));
        for h in (0..heads).step_by(heads_at_once) {
            let (nb, nh) = (batch_at_once.min(batch - i), heads_at_once.min(heads - h));
            parts.push(f(std::array::from_fn(|j| {
                inputs[j].clone().narrow(0, i, nb).narrow(1, h, nh)
            })));
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

    use super::in_chunks;

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
        let attend = |[q, k_t, v]: [Tensor<Flex, 4>; 3]| softmax(q.matmul(k_t), 3).matmul(v);
        let whole = attend([q.clone(), k_t.clone(), v.clone()]).into_data();
        let head = pos * pos * 4;
        for budget in [
            1,
            head,
            2 * head,
            heads * head,
            2 * heads * head,
            usize::MAX,
        ] {
            let chunked = in_chunks([q.clone(), k_t.clone(), v.clone()], budget, attend);
            chunked.into_data().assert_eq(&whole, true);
        }
    }
}
