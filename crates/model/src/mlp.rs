//! The MLP: standard (`post = act(x·W_in + b_in)`), gated (`post = act(x·W_gate) * (x·W_in) + b_in`, as
//! TransformerLens's `GatedMLP`) or SoLU with its inner norm, then `post·W_out + b_out`.

use burn_tensor::{Tensor, backend::Backend};
use tlens_cache_core::{
    ActFn, BlockHook, HookPoint, HookRecorder, HookedTransformerConfig, MlpWeights, Norm,
};

use crate::activation;
use crate::error::Result;
use crate::hooked::norm;

/// One layer's MLP on its normalised input `x` (`[batch, pos, d_model]`); returns its output before any
/// post-MLP norm.
pub(crate) fn forward<B: Backend>(
    cfg: &HookedTransformerConfig,
    layer: usize,
    w: &MlpWeights<B>,
    x: Tensor<B, 3>,
    rec: &mut HookRecorder<B>,
) -> Result<Tensor<B, 3>> {
    let act = cfg
        .act_fn
        .expect("checked: models with MLPs have an activation");
    let b = |hook: BlockHook| HookPoint::Block(layer, hook);
    let linear = |weight: &Tensor<B, 2>| x.clone().matmul(weight.clone().unsqueeze::<3>());
    let b_in = w.b_in.clone().unsqueeze::<3>();
    let post = if let Some(w_gate) = &w.W_gate {
        let pre = linear(w_gate);
        rec.record(b(BlockHook::MlpPre), &pre)?;
        let pre_linear = linear(&w.W_in);
        rec.record(b(BlockHook::MlpPreLinear), &pre_linear)?;
        activation::apply(act, pre) * pre_linear + b_in
    } else {
        let pre = linear(&w.W_in) + b_in;
        rec.record(b(BlockHook::MlpPre), &pre)?;
        if act == ActFn::SoluLn {
            let mid = activation::apply(act, pre);
            rec.record(b(BlockHook::MlpMid), &mid)?;
            norm(
                w.ln.as_ref(),
                mid,
                cfg.eps,
                |h| b(BlockHook::Norm(Norm::MlpLn, h)),
                rec,
            )?
        } else {
            activation::apply(act, pre)
        }
    };
    rec.record(b(BlockHook::MlpPost), &post)?;
    Ok(post.matmul(w.W_out.clone().unsqueeze::<3>()) + w.b_out.clone().unsqueeze::<3>())
}
