//! Attention heads one by one: `compute_head_results`, `stack_head_results`, and `stack_activation`.

use burn_tensor::Tensor;
use burn_tensor::backend::Backend;

use crate::cache::ActivationCache;
use crate::dyn_tensor::DynTensor;
use crate::error::Result;
use crate::hook_names::CacheKey;
use crate::hook_point::{BlockHook, HookPoint};
use crate::kernels::MatmulFn;
use crate::ln::ApplyLnToStack;
use crate::slice::Slice;
use crate::stack::{Stack, concat_rows};
use crate::weights::as_f32;

/// Arguments of [`ActivationCache::stack_head_results`], with TransformerLens's names and defaults.
#[derive(Clone, Debug, Default)]
pub struct StackHeadResults {
    /// Heads of every layer before this one (`None`/`-1`: all layers). Default `None`.
    pub layer: Option<i64>,
    /// Append `"remainder"`: the stream entering `layer` minus the heads' sum. Default `false`.
    pub incl_remainder: bool,
    /// Positions to keep. Default all.
    pub pos_slice: Slice,
    /// Normalise with the cached scale of `layer`'s `ln1` (`ln_final` for all layers). Default `false`.
    pub apply_ln: bool,
}

impl<B: Backend> ActivationCache<B> {
    /// Caches every head's output `blocks.{l}.attn.hook_result` (`[*batch, pos, n_heads, d_model]`, without `b_O`)
    /// computed from `hook_z` and `W_O`, as TransformerLens's `compute_head_results`. Each key is inserted right
    /// after its layer's `hook_z`, where a run with `use_attn_result` would have fired it.
    ///
    /// Layers whose result is already cached are left alone (TransformerLens checks layer 0 only). Needs `hook_z` of
    /// every other layer.
    ///
    /// ```
    /// use tlens_cache_core::testing;
    /// let mut cache = testing::random_cache::<burn_ndarray::NdArray>(1, 4);
    /// cache.compute_head_results().unwrap();
    /// assert_eq!(cache.get(("result", 1)).unwrap().shape(), [1, 4, 4, 16]);
    /// ```
    pub fn compute_head_results(&mut self) -> Result<()> {
        for l in 0..self.n_layers() {
            let key = HookPoint::Block(l, BlockHook::Result).to_string();
            if self.entries.contains_key(&key) {
                continue;
            }
            let z_point = HookPoint::Block(l, BlockHook::Z);
            let z = self.need("compute_head_results", z_point)?;
            // A view of the heads-first product, which nothing else holds: TransformerLens's order without a copy
            // (453 MB at GPT-2 small's 8×128), and `head_results` moving the heads back gets the product's layout.
            let result = self.head_results_from_z(l, z)?.moved_view(0, -2)?;
            let at = self
                .entries
                .get_index_of(&z_point.to_string())
                .map_or(self.entries.len(), |i| i + 1);
            self.entries.shift_insert(at, key, result.into());
        }
        Ok(())
    }

    /// Layer `layer`'s head outputs from its `hook_z`, heads first: `[..., H, dh] -> [H, ..., D]` (see
    /// [`head_outputs`]).
    fn head_results_from_z(&self, layer: usize, z: DynTensor<B>) -> Result<DynTensor<B>> {
        let w_o = as_f32(self.model.weights.blocks[layer].attn.W_O.clone());
        let [heads, d_head, d_model] = w_o.dims();
        let lead = &z.shape()[..z.rank().saturating_sub(2)];
        let mut out_shape = vec![heads];
        out_shape.extend_from_slice(lead);
        out_shape.push(d_model);
        let rows = lead.iter().product();
        let z = z.reshape(&[rows, heads, d_head])?.into_tensor::<3>()?;
        DynTensor::new(head_outputs(z, w_o, self.kernels.matmul)).reshape(&out_shape)
    }

    /// Layer `layer`'s head results, pos-sliced and heads first (`[H, ..., D]`): cached `hook_result` if present,
    /// else computed from `hook_z` (sliced first, so only the kept positions are contracted). A cached result comes
    /// back as a view of the cache's memory, which the caller copies before anything can write to it.
    fn head_results(
        &self,
        method: &'static str,
        layer: usize,
        pos_slice: &Slice,
    ) -> Result<DynTensor<B>> {
        if let Some(result) = self.entry(HookPoint::Block(layer, BlockHook::Result)) {
            return pos_slice
                .apply(result.clone(), -3, "pos_slice")?
                .moved_view(-2, 0);
        }
        let z = self.need(method, HookPoint::Block(layer, BlockHook::Z))?;
        let z = pos_slice.apply(z, -3, "pos_slice")?;
        self.head_results_from_z(layer, z)
    }

    /// Every head's output before `layer`, one row per head (`L{l}H{h}`, layer-major), as TransformerLens's
    /// `stack_head_results`: `[layer·n_heads, *batch_and_pos, d_model]`.
    ///
    /// Head results come from the cache when present, otherwise from `hook_z` and `W_O` without changing the cache.
    /// With `incl_remainder`, a last row `"remainder"` holds the stream entering `layer` minus the heads' sum; for
    /// `layer` 0 that is `resid_pre` of layer 0 (TransformerLens returns the *final* stream there). Without heads or
    /// remainder the stack has zero rows.
    ///
    /// ```
    /// use tlens_cache_core::{testing, StackHeadResults};
    /// let cache = testing::random_cache::<burn_ndarray::NdArray>(1, 4);
    /// let heads = cache.stack_head_results(StackHeadResults { layer: Some(1), incl_remainder: true, ..Default::default() }).unwrap();
    /// assert_eq!(heads.labels, ["L0H0", "L0H1", "L0H2", "L0H3", "remainder"]);
    /// ```
    pub fn stack_head_results(&self, args: StackHeadResults) -> Result<Stack<B>> {
        const METHOD: &str = "stack_head_results";
        let layer = self.resolve_layer(args.layer, METHOD)?;
        let heads = self.cfg().n_heads;
        let mut rows = Vec::with_capacity(layer + 1);
        let mut labels = Vec::with_capacity(layer * heads + 1);
        for l in 0..layer {
            rows.push(self.head_results(METHOD, l, &args.pos_slice)?);
            labels.extend((0..heads).map(|h| format!("L{l}H{h}")));
        }
        // The concatenation copies the rows, which may be views of the cache; a single row is copied here, so that
        // `apply_ln`, which may normalise in place, never writes into the cache.
        let mut tensor = match rows.as_slice() {
            [row] if row.numel() > 0 => rows.pop().expect("one row").copied(),
            _ => concat_rows(rows, || self.empty_rows(METHOD, &args.pos_slice, None))?,
        };
        if args.incl_remainder {
            let stream = self.stream_into(METHOD, layer, &args.pos_slice)?;
            tensor = self.append_remainder(METHOD, tensor, stream)?;
            labels.push("remainder".to_string());
        }
        if args.apply_ln {
            tensor = self.apply_ln_to_stack(
                tensor,
                ApplyLnToStack {
                    layer: Some(layer as i64),
                    pos_slice: args.pos_slice,
                    ..Default::default()
                },
            )?;
        }
        Ok(Stack { tensor, labels })
    }

    /// The residual stream entering `layer`, pos-sliced: `resid_pre` of layer 0 for `layer` 0, otherwise
    /// `resid_post` of `layer − 1` (the key TransformerLens reads).
    pub(crate) fn stream_into(
        &self,
        method: &'static str,
        layer: usize,
        pos_slice: &Slice,
    ) -> Result<DynTensor<B>> {
        let point = if layer == 0 {
            HookPoint::Block(0, BlockHook::ResidPre)
        } else {
            HookPoint::Block(layer - 1, BlockHook::ResidPost)
        };
        pos_slice.apply(self.need(method, point)?, -2, "pos_slice")
    }

    /// Appends `target − Σ rows` to a stack as one more row (the whole `target` when the stack has no rows).
    pub(crate) fn append_remainder(
        &self,
        method: &'static str,
        stack: DynTensor<B>,
        target: DynTensor<B>,
    ) -> Result<DynTensor<B>> {
        let want = &stack.shape()[1..];
        if target.shape() != want {
            return Err(crate::error::CacheError::Shape(format!(
                "{method}: the remainder target {:?} does not match the stack's rows {want:?}",
                target.shape()
            )));
        }
        if stack.dim(0)? == 0 {
            return target.unsqueeze(0);
        }
        let remainder = target.sub(stack.clone().sum_axis(0)?)?;
        DynTensor::cat(vec![stack, remainder.unsqueeze(0)?], 0)
    }

    /// The activation `activation_name` of every layer before `layer`, stacked: TransformerLens's
    /// `stack_activation` (`cache[(name, l, sublayer_type)]` for each `l`). `layer` 0 gives a stack with zero rows
    /// (shaped like layer 0's activation); TransformerLens raises.
    ///
    /// ```
    /// use tlens_cache_core::testing;
    /// let cache = testing::random_cache::<burn_ndarray::NdArray>(1, 4);
    /// let scales = cache.stack_activation("scale", None, Some("ln1")).unwrap();
    /// assert_eq!(scales.shape(), [2, 1, 4, 1]);
    /// ```
    pub fn stack_activation(
        &self,
        activation_name: &str,
        layer: Option<i64>,
        sublayer_type: Option<&str>,
    ) -> Result<DynTensor<B>> {
        let layer = self.resolve_layer(layer, "stack_activation")?;
        let key = |l: usize| {
            CacheKey::Parts(
                activation_name.to_string(),
                Some(l as i64),
                sublayer_type.map(str::to_string),
            )
        };
        if layer == 0 {
            let mut shape = self.get(key(0))?.shape();
            shape.insert(0, 0);
            return Ok(DynTensor::zeros(&shape, &self.device()));
        }
        let parts = (0..layer)
            .map(|l| self.get(key(l)))
            .collect::<Result<Vec<_>>>()?;
        DynTensor::stack(parts)
    }
}

/// Every head's output before the sum over heads, `z[n, h, :] @ W_O[h]`: `z` `[N, H, d_head]` and `W_O`
/// `[H, d_head, D]` give `[H, N, D]`, heads first.
///
/// One batched GEMM with the heads as its batch (`[H, N, d_head] @ [H, d_head, D]`). Broadcasting `W_O` over the
/// rows instead (`[N, H, 1, d_head] @ [H, d_head, D]`, the obvious reading of TransformerLens's einsum) costs N·H
/// matrix–vector products on ndarray and a materialised `[N·H, d_head, D]` copy of `W_O` on libtorch (GPT-2 small's
/// `compute_head_results` + `stack_head_results` at 8×128 on tch, result copied to the host: 19.4 s that way, 1.4 s
/// this way). `matmul` computes it: the backend's kernel ([`CacheKernels::matmul`](crate::CacheKernels::matmul)),
/// or burn's own product.
///
/// ```
/// use burn_tensor::Tensor;
/// use tlens_cache_core::head_outputs;
/// type B = burn_ndarray::NdArray;
/// let device = Default::default();
/// // Two rows, two heads of size 1, d_model 3: head h's output is z[n, h] · W_O[h, 0, :].
/// let z = Tensor::<B, 3>::from_floats([[[1.0], [2.0]], [[3.0], [4.0]]], &device);
/// let w_o = Tensor::<B, 3>::from_floats([[[1.0, 0.0, 0.0]], [[0.0, 1.0, 1.0]]], &device);
/// let out = head_outputs(z, w_o, |lhs, rhs| lhs.matmul(rhs));
/// assert_eq!(out.dims(), [2, 2, 3]);
/// let expected = Tensor::<B, 3>::from_floats(
///     [[[1.0, 0.0, 0.0], [3.0, 0.0, 0.0]], [[0.0, 2.0, 2.0], [0.0, 4.0, 4.0]]],
///     &device,
/// );
/// out.into_data().assert_eq(&expected.into_data(), true);
/// ```
pub fn head_outputs<B: Backend>(
    z: Tensor<B, 3>,
    w_o: Tensor<B, 3>,
    matmul: MatmulFn<B>,
) -> Tensor<B, 3> {
    let [rows, heads, _] = z.dims();
    let [_, _, d_model] = w_o.dims();
    matmul(z.swap_dims(0, 1).unsqueeze(), w_o.unsqueeze()).reshape([heads, rows, d_model])
}
