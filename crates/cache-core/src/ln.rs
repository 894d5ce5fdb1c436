//! `apply_ln_to_stack`: treating every component of a residual stack as the input of a norm.

use burn_tensor::backend::Backend;

use crate::cache::ActivationCache;
use crate::dyn_tensor::DynTensor;
use crate::error::{CacheError, Result};
use crate::hook_point::{BlockHook, HookPoint, Norm, NormHook};
use crate::slice::Slice;

/// Arguments of [`ActivationCache::apply_ln_to_stack`], with TransformerLens's names and defaults.
#[derive(Clone, Debug)]
pub struct ApplyLnToStack {
    /// The layer whose input the stack is (`None`/`-1`: the unembed, i.e. `ln_final`). Default `None`.
    pub layer: Option<i64>,
    /// Use the MLP's norm (`ln2`) of `layer` instead of attention's (`ln1`). Default `false`.
    pub mlp_input: bool,
    /// The position slice that was applied to the stack; it is applied to the cached scale. Default none.
    pub pos_slice: Slice,
    /// A batch slice applied to the stack (axis 1, when `has_batch_dim`) and to the scale. Default none.
    pub batch_slice: Slice,
    /// Whether the stack has a batch axis right after the component axis. Default `true`.
    pub has_batch_dim: bool,
    /// For the unembed (`layer` = `n_layers`): run each component through `ln_final` with its own statistics (and
    /// its weights, if not folded) instead of dividing by the cached scale — the logit lens. Default `false`.
    pub recompute_ln: bool,
}

impl Default for ApplyLnToStack {
    fn default() -> Self {
        Self {
            layer: None,
            mlp_input: false,
            pos_slice: Slice::All,
            batch_slice: Slice::All,
            has_batch_dim: true,
            recompute_ln: false,
        }
    }
}

impl<B: Backend> ActivationCache<B> {
    /// Applies the norm in front of `layer` to every component of `residual_stack` (`[n, *batch_and_pos, d_model]`),
    /// using the scale cached in this run, as TransformerLens's `apply_ln_to_stack`.
    ///
    /// LayerNorm models centre each component, then divide by the cached `hook_scale` of `ln1` (or `ln2` with
    /// `mlp_input`, `ln_final` for the unembed); RMSNorm models only divide. The norm's weights are not applied
    /// (fold them with `fold_ln`). With `recompute_ln` and the unembed, each component goes through `ln_final` with
    /// fresh statistics instead.
    ///
    /// Differences from TransformerLens: a model without normalisation still gets `batch_slice` applied (TransformerLens
    /// returns the stack untouched, so shapes depend on the model); `recompute_ln` works on stacks whose components are
    /// single vectors (TransformerLens issue #1677).
    ///
    /// Errors: a layer out of range, a stack whose last axis is not `d_model` or whose other axes do not broadcast with
    /// the cached scale, a scale the cache does not hold.
    ///
    /// ```
    /// use tlens_cache_core::{testing, ApplyLnToStack, AccumulatedResid};
    /// let cache = testing::random_cache::<burn_ndarray::NdArray>(2, 5);
    /// let acc = cache.accumulated_resid(AccumulatedResid { pos_slice: (-1).into(), ..Default::default() }).unwrap();
    /// let normed = cache
    ///     .apply_ln_to_stack(acc.tensor.clone(), ApplyLnToStack { pos_slice: (-1).into(), ..Default::default() })
    ///     .unwrap();
    /// assert_eq!(normed.shape(), acc.tensor.shape()); // [3, batch 2, d_model]
    /// ```
    pub fn apply_ln_to_stack(
        &self,
        residual_stack: DynTensor<B>,
        args: ApplyLnToStack,
    ) -> Result<DynTensor<B>> {
        const METHOD: &str = "apply_ln_to_stack";
        let layer = self.resolve_layer(args.layer, METHOD)?;
        let d_model = self.cfg().d_model;
        let shape = residual_stack.shape();
        if shape.len() < 2 || shape[shape.len() - 1] != d_model {
            return Err(CacheError::Shape(format!(
                "{METHOD} needs a stack [n_components, ..., d_model={d_model}], got {shape:?}"
            )));
        }
        let mut stack = residual_stack;
        if args.has_batch_dim && args.batch_slice != Slice::All {
            if shape.len() < 3 {
                return Err(CacheError::Shape(format!(
                    "{METHOD}: batch_slice needs a batch axis after the component axis, but the stack is {shape:?} \
                     (pass has_batch_dim=false for a stack without one)"
                )));
            }
            stack = args.batch_slice.apply(stack, 1, "batch_slice")?;
        }
        let Some(norm) = self.cfg().normalization_type else {
            return Ok(stack);
        };
        if args.recompute_ln
            && layer == self.n_layers()
            && let Some(ln_final) = &self.model.weights.ln_final
        {
            return ln_final.forward_dyn(stack, self.cfg().eps);
        }
        let (scale, key) = self.cached_scale(
            METHOD,
            layer,
            args.mlp_input,
            &args.pos_slice,
            &args.batch_slice,
        )?;
        check_fits(METHOD, &stack, &scale, &key)?;
        stack.normalise(scale, norm.centers(), self.kernels.normalise)
    }

    /// The cached `hook_scale` of the norm in front of `layer` (`ln_final` for `n_layers`), pos- and batch-sliced.
    pub(crate) fn cached_scale(
        &self,
        method: &'static str,
        layer: usize,
        mlp_input: bool,
        pos_slice: &Slice,
        batch_slice: &Slice,
    ) -> Result<(DynTensor<B>, String)> {
        let point = if layer == self.n_layers() {
            HookPoint::LnFinal(NormHook::Scale)
        } else {
            let norm = if mlp_input { Norm::Ln2 } else { Norm::Ln1 };
            HookPoint::Block(layer, BlockHook::Norm(norm, NormHook::Scale))
        };
        let key = point.to_string();
        let mut scale = self.need(method, point)?;
        scale = pos_slice.apply(scale, -2, "pos_slice")?;
        if self.has_batch_dim {
            scale = batch_slice.apply(scale, 0, "batch_slice")?;
        }
        Ok((scale, key))
    }
}

/// Checks that a stack and a cached scale broadcast, before burn sees them.
pub(crate) fn check_fits<B: Backend>(
    method: &str,
    stack: &DynTensor<B>,
    scale: &DynTensor<B>,
    key: &str,
) -> Result<()> {
    DynTensor::<B>::broadcast_shape(&stack.shape(), &scale.shape())
        .map(|_| ())
        .map_err(|_| {
            CacheError::Shape(format!(
                "{method}: a stack of shape {:?} does not fit the cached `{key}` of shape {:?} (after pos_slice and \
                 batch_slice); its axes after the component axis must be the cache's batch/position axes",
                stack.shape(),
                scale.shape()
            ))
        })
}
