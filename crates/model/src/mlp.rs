//! The MLP: standard (`post = act(x·W_in + b_in)`), gated (`post = act(x·W_gate) * (x·W_in) + b_in`, as
//! TransformerLens's `GatedMLP`) or SoLU with its inner norm, then `post·W_out + b_out`.

use burn_tensor::Tensor;
use tlens_cache_core::{
    ActFn, BlockHook, HookPoint, HookedTransformerConfig, Hooks, MlpKind, MlpWeights, Norm,
};

use crate::activation;
use crate::error::Result;
use crate::hooked::norm;
use crate::kernels::Kernels;
use crate::linear;

/// One layer's MLP on its normalised input `x` (`[batch, pos, d_model]`); returns its output before any
/// post-MLP norm.
pub(crate) fn forward<B: Kernels>(
    cfg: &HookedTransformerConfig,
    layer: usize,
    w: &MlpWeights<B>,
    x: Tensor<B, 3>,
    hooks: &mut Hooks<'_, B>,
) -> Result<Tensor<B, 3>> {
    let kind = cfg
        .mlp_kind()
        .expect("checked: blocks with MLP weights have an MLP kind");
    let b = |hook: BlockHook| HookPoint::Block(layer, hook);
    let input = |weight: &Tensor<B, 2>| linear::linear(x.clone(), weight.clone());
    let b_in = w.b_in.clone().unsqueeze::<3>();
    let post = match (kind, &w.W_gate) {
        (MlpKind::Gated(act), Some(w_gate)) => {
            let pre = input(w_gate);
            let pre = hooks.fire(b(BlockHook::MlpPre), pre)?;
            let pre_linear = input(&w.W_in);
            let pre_linear = hooks.fire(b(BlockHook::MlpPreLinear), pre_linear)?;
            activation::apply(act, pre) * pre_linear + b_in
        }
        (MlpKind::Gated(_), None) => unreachable!("a gated config's weights are read with W_gate"),
        (MlpKind::Standard(act), _) => {
            let pre = input(&w.W_in) + b_in;
            let pre = hooks.fire(b(BlockHook::MlpPre), pre)?;
            activation::apply(act, pre)
        }
        (MlpKind::Solu, _) => {
            let pre = input(&w.W_in) + b_in;
            let pre = hooks.fire(b(BlockHook::MlpPre), pre)?;
            let mid = activation::apply(ActFn::SoluLn, pre);
            let mid = hooks.fire(b(BlockHook::MlpMid), mid)?;
            norm(
                w.ln.as_ref(),
                mid,
                cfg.eps,
                |h| b(BlockHook::Norm(Norm::MlpLn, h)),
                hooks,
            )?
        }
    };
    let post = hooks.fire(b(BlockHook::MlpPost), post)?;
    Ok(linear::linear(post, w.W_out.clone()) + w.b_out.clone().unsqueeze::<3>())
}
