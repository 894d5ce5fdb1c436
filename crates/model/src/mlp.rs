//! The MLP: standard (`post = act(x·W_in + b_in)`), gated (`post = act(x·W_gate) * (x·W_in) + b_in`, as
//! TransformerLens's `GatedMLP`) or SoLU with its inner norm, then `post·W_out + b_out`.

use burn_tensor::{FloatDType, Tensor};
use tlens_cache_core::{
    ActFn, BlockHook, Derived, DynTensor, HookPoint, HookedTransformerConfig, Hooks, MlpKind,
    MlpWeights, Norm, in_dtype,
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
    let post_at = b(BlockHook::MlpPost);
    let post_of = match (kind, &w.W_gate) {
        (MlpKind::Gated(act), Some(w_gate)) => {
            let pre = input(w_gate, None);
            let pre = hooks.fire(b(BlockHook::MlpPre), pre)?;
            let pre_linear = input(&w.W_in, None);
            let pre_linear = hooks.fire(b(BlockHook::MlpPreLinear), pre_linear)?;
            Post::Gated(act, pre, pre_linear, w.b_in.clone())
        }
        (MlpKind::Gated(_), None) => unreachable!("a gated config's weights are read with W_gate"),
        (MlpKind::Standard(act), _) => {
            let pre = input(&w.W_in, Some(&w.b_in));
            Post::Standard(act, hooks.fire(b(BlockHook::MlpPre), pre)?)
        }
        (MlpKind::Solu, _) => {
            let pre = input(&w.W_in, Some(&w.b_in));
            let pre = hooks.fire(b(BlockHook::MlpPre), pre)?;
            let mid = activation::apply(ActFn::SoluLn, pre);
            let mid = hooks.fire(b(BlockHook::MlpMid), mid)?;
            Post::Computed(norm(
                w.ln.as_ref(),
                mid,
                cfg.eps,
                |h| b(BlockHook::Norm(Norm::MlpLn, h)),
                hooks,
            )?)
        }
    };
    // The recipe holds its inputs, so it is kept only where a hook (the cache) keeps them too.
    let inputs_seen = match &post_of {
        Post::Standard(..) => hooks.fires_at(b(BlockHook::MlpPre)),
        Post::Gated(..) => {
            hooks.fires_at(b(BlockHook::MlpPre)) && hooks.fires_at(b(BlockHook::MlpPreLinear))
        }
        Post::Computed(_) => false,
    };
    let post = if inputs_seen && hooks.fires_at(post_at) && hooks.take_derived(post_at) {
        // Only the cache wants the activations: it keeps their recipe.
        let recipe = post_of.clone();
        let shape = x.dims()[..2].iter().copied().chain([cfg.d_mlp]).collect();
        hooks.fire_derived(
            post_at,
            &Derived::new(shape, move || DynTensor::new(recipe.clone().compute())),
        )?;
        post_of.compute()
    } else {
        hooks.fire(post_at, post_of.compute())?
    };
    Ok(B::fused_linear(
        post,
        w.W_out.clone(),
        Some(w.b_out.clone()),
    ))
}

/// What `hook_post` is computed from: a standard MLP's activation of `hook_pre`, a gated one's of `hook_pre` times
/// `hook_pre_linear` plus `b_in`, or (SoLU, after its norm) the value itself. The first two are functions of cached
/// activations alone, so a cache may keep them as their recipe.
#[derive(Clone)]
enum Post<B: Kernels> {
    Standard(ActFn, Tensor<B, 3>),
    Gated(ActFn, Tensor<B, 3>, Tensor<B, 3>, Tensor<B, 1>),
    Computed(Tensor<B, 3>),
}

impl<B: Kernels> Post<B> {
    fn compute(self) -> Tensor<B, 3> {
        match self {
            Post::Standard(act, pre) => activation::apply(act, pre),
            // TransformerLens: `act(pre) * pre_linear + b_in`, three PyTorch ops (b_in is not in the product).
            Post::Gated(act, pre, pre_linear, b_in) => {
                let dtype = FloatDType::from(pre.dtype());
                B::half_ops(activation::apply(act, pre), |a| {
                    let like = FloatDType::from(a.dtype());
                    let product = a * in_dtype(pre_linear, like);
                    activation::rounded(product, dtype) + in_dtype(b_in, like).unsqueeze::<3>()
                })
            }
            Post::Computed(post) => post,
        }
    }
}
