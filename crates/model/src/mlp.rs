//! The MLP: standard (`post = act(x·W_in + b_in)`), gated (`post = act(x·W_gate) * (x·W_in) + b_in`, as
//! TransformerLens's `GatedMLP`) or SoLU with its inner norm, then `post·W_out + b_out`.

use burn_tensor::{FloatDType, Tensor};
use tlens_cache_core::{
    ActFn, BlockHook, HookPoint, HookedTransformerConfig, Hooks, MlpKind, MlpWeights, Norm,
    in_dtype,
};

use crate::activation;
use crate::error::Result;
use crate::hooked::norm;
use crate::kernels::Kernels;

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
    let input = |weight: &Tensor<B, 2>, bias: Option<&Tensor<B, 1>>| {
        B::fused_linear(x.clone(), weight.clone(), bias.cloned())
    };
    let post = match (kind, &w.W_gate) {
        (MlpKind::Gated(act), Some(w_gate)) => {
            let pre = input(w_gate, None);
            let pre = hooks.fire(b(BlockHook::MlpPre), pre)?;
            let pre_linear = input(&w.W_in, None);
            let pre_linear = hooks.fire(b(BlockHook::MlpPreLinear), pre_linear)?;
            // TransformerLens: `act(pre) * pre_linear + b_in`, three PyTorch ops (b_in is not in the product).
            let dtype = FloatDType::from(pre.dtype());
            B::half_ops(activation::apply(act, pre), |a| {
                let like = FloatDType::from(a.dtype());
                let product = a * in_dtype(pre_linear, like);
                activation::rounded(product, dtype)
                    + in_dtype(w.b_in.clone(), like).unsqueeze::<3>()
            })
        }
        (MlpKind::Gated(_), None) => unreachable!("a gated config's weights are read with W_gate"),
        (MlpKind::Standard(act), _) => {
            let pre = input(&w.W_in, Some(&w.b_in));
            let pre = hooks.fire(b(BlockHook::MlpPre), pre)?;
            activation::apply(act, pre)
        }
        (MlpKind::Solu, _) => {
            let pre = input(&w.W_in, Some(&w.b_in));
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
    Ok(B::fused_linear(
        post,
        w.W_out.clone(),
        Some(w.b_out.clone()),
    ))
}
