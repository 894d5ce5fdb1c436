//! Gradient caches: `run_with_cache(incl_bwd=True)` on an autodiff backend. Every kept hook point gets a zero leaf
//! added to its activation; the metric's gradient with respect to that leaf is the gradient with respect to the
//! activation, cached as `<hook name>_grad` (TransformerLens's backward hooks).

use burn_tensor::{Tensor, backend::AutodiffBackend};
use tlens_cache_core::dyn_tensor::MAX_RANK;
use tlens_cache_core::{ActivationCache, DynTensor, Hook, HookPoint, NamesFilter, RunOptions};

use crate::error::Result;
use crate::hooked::HookedTransformer;
use crate::kernels::Kernels;
use crate::patching::Metric;
use crate::tokens::TokenBatch;

/// Adds a zero leaf that requires a gradient to every activation the names filter keeps.
struct GradProbes<B: AutodiffBackend> {
    filter: NamesFilter,
    probes: Vec<(HookPoint, Vec<usize>, Tensor<B, MAX_RANK>)>,
}

impl<B: AutodiffBackend> Hook<B> for GradProbes<B> {
    fn fires_at(&self, point: HookPoint) -> bool {
        match &self.filter {
            NamesFilter::All => true,
            filter => filter.keeps(&point.to_string()),
        }
    }

    fn apply(
        &mut self,
        point: HookPoint,
        activation: &DynTensor<B>,
    ) -> tlens_cache_core::Result<Option<DynTensor<B>>> {
        let x = activation.physical_tensor();
        let probe = x.zeros_like().require_grad();
        self.probes.push((point, activation.shape(), probe.clone()));
        Ok(Some(activation.clone().map(|x| x + probe)))
    }
}

impl<B: AutodiffBackend + Kernels> HookedTransformer<B> {
    /// [`run_with_hooks_and_cache`](Self::run_with_hooks_and_cache), then back-propagates `metric` of the logits and
    /// adds TransformerLens's gradient entries `<hook name>_grad` (in the order the backward pass reaches them) for
    /// every hook the names filter keeps.
    pub fn run_with_cache_and_grads(
        &self,
        tokens: &TokenBatch,
        hooks: &mut [&mut dyn Hook<B>],
        options: RunOptions,
        metric: &dyn Metric<B>,
    ) -> Result<(Tensor<B, 3>, ActivationCache<B>)> {
        let mut probes = GradProbes {
            filter: options.names_filter.clone(),
            probes: Vec::new(),
        };
        let mut all: Vec<&mut dyn Hook<B>> = hooks
            .iter_mut()
            .map(|h| &mut **h as &mut dyn Hook<B>)
            .collect();
        all.push(&mut probes);
        let (logits, mut cache) = self.run_cached(tokens, &mut all, options)?;
        let grads = metric.value(logits.clone())?.backward();
        for (point, shape, probe) in probes.probes.into_iter().rev() {
            if let Some(grad) = probe.grad(&grads) {
                let grad =
                    DynTensor::new(Tensor::<B, MAX_RANK>::from_inner(grad)).reshape(&shape)?;
                cache.keep(format!("{point}_grad"), point, grad)?;
            }
        }
        Ok((logits, self.cache_of(cache)))
    }
}

impl<B: AutodiffBackend + Kernels> HookedTransformer<B> {
    /// Attribution patching: the first-order estimate of what patching each clean activation into the corrupted run
    /// would change the metric by, `Σ grad_corrupted · (clean − corrupted)`, from one clean run and one corrupted run
    /// with gradients, instead of a forward pass per patch.
    ///
    /// `hook` picks the activation of every layer; the result is `[n_layers, ...]`, summed over the batch, and for
    /// vectors (`resid_*`, `attn_out`, `mlp_out`, and the heads' `q`, `k`, `v`, `z`) also over their last axis:
    /// `[n_layers, pos]` for the residual stream, `[n_layers, pos, head]` for heads, `[n_layers, pos, d_mlp]` for
    /// neurons (`mlp.hook_post`), `[n_layers, head, query, key]` for patterns.
    pub fn attribution_patch(
        &self,
        hook: tlens_cache_core::BlockHook,
        clean: &TokenBatch,
        corrupted: &TokenBatch,
        metric: &dyn Metric<B>,
    ) -> Result<DynTensor<B>> {
        use tlens_cache_core::BlockHook::*;
        let names: Vec<String> = (0..self.cfg().n_layers)
            .map(|l| HookPoint::Block(l, hook).to_string())
            .collect();
        let options = || RunOptions {
            names_filter: NamesFilter::Names(names.clone()),
            ..Default::default()
        };
        let (_, clean_cache) = self.run_with_cache(clean, options())?;
        let (_, corrupted_cache) =
            self.run_with_cache_and_grads(corrupted, &mut [], options(), metric)?;
        let sum_last = matches!(
            hook,
            ResidPre | ResidMid | ResidPost | AttnOut | MlpOut | Q | K | V | Z | RotQ | RotK
        );
        let per_layer = names
            .iter()
            .map(|name| {
                let delta = clean_cache
                    .get(name.as_str())?
                    .sub(corrupted_cache.get(name.as_str())?)?;
                let grad = corrupted_cache.get(format!("{name}_grad"))?;
                let mut attribution = grad.mul(delta)?.sum_axis(0)?;
                if sum_last {
                    attribution = attribution.sum_axis(-1)?;
                }
                Ok(attribution)
            })
            .collect::<std::result::Result<Vec<_>, tlens_cache_core::CacheError>>()?;
        Ok(DynTensor::stack(per_layer)?)
    }
}
