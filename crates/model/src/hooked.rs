//! [`HookedTransformer`]: a GPT-2-style transformer whose every intermediate activation is reported under its
//! TransformerLens hook name.

use std::sync::Arc;

use burn_tensor::{Bool, FloatDType, Tensor, backend::Backend};
use tlens_cache_core::error::closest;
use tlens_cache_core::{
    ActFn, ActivationCache, AttentionDir, BlockHook, BlockKind, BlockWeights, CacheError,
    CacheHook, Hook, HookPoint, HookedTransformerConfig, Hooks, ModelParams, NamesFilter, Norm,
    NormHook, NormWeights, RunOptions, TransformerWeights, hook_points, in_dtype,
};

use crate::error::{ModelError, Result};
use crate::kernels::Kernels;
use crate::rotary::Rotary;
use crate::tokens::TokenBatch;
use crate::{attention, mlp};

/// A hooked transformer: configuration, parameters and the device they live on.
#[derive(Clone, Debug)]
pub struct HookedTransformer<B: Backend> {
    params: Arc<ModelParams<B>>,
}

impl<B: Backend> HookedTransformer<B> {
    /// Builds a model from a config and parameters (already on their device), checking that tlens supports the config.
    pub fn new(cfg: HookedTransformerConfig, mut weights: TransformerWeights<B>) -> Result<Self> {
        check_supported(&cfg)?;
        for block in &mut weights.blocks {
            let attn = &mut block.attn;
            for w in [&mut attn.W_Q, &mut attn.W_K, &mut attn.W_V] {
                *w = crate::attention::input_major(w.clone());
            }
        }
        Ok(Self {
            params: Arc::new(ModelParams { cfg, weights }),
        })
    }

    /// The configuration.
    pub fn cfg(&self) -> &HookedTransformerConfig {
        &self.params.cfg
    }

    /// The parameters.
    pub fn weights(&self) -> &TransformerWeights<B> {
        &self.params.weights
    }

    /// Configuration and parameters together, as a cache holds them.
    pub fn params(&self) -> &Arc<ModelParams<B>> {
        &self.params
    }

    /// The device the parameters live on.
    pub fn device(&self) -> burn_tensor::Device<B> {
        self.params.weights.W_E.device()
    }

    /// Every hook this model fires in a full run, in firing order (from the hook schema, [`hook_points`]).
    pub fn hook_names(&self) -> Vec<String> {
        hook_points(self.cfg())
            .iter()
            .map(HookPoint::to_string)
            .collect()
    }
}

/// The forward pass, on backends with tlens's kernels.
impl<B: Kernels> HookedTransformer<B> {
    /// Logits `[batch, pos, d_vocab_out]` for a batch of tokens.
    pub fn forward(&self, tokens: &TokenBatch) -> Result<Tensor<B, 3>> {
        self.run(tokens, &mut Hooks::none(), None)
    }

    /// Logits of a run with forward hooks (TransformerLens's `run_with_hooks(fwd_hooks=...)`): each hook, in order,
    /// sees the activations at the hook points it fires at and may replace them.
    pub fn run_with_hooks(
        &self,
        tokens: &TokenBatch,
        hooks: &mut [&mut dyn Hook<B>],
    ) -> Result<Tensor<B, 3>> {
        let hooks = hooks.iter_mut().map(|h| reborrow(*h)).collect();
        self.run(tokens, &mut Hooks::new(hooks), None)
    }

    /// Runs the model and caches the activations the options ask for.
    ///
    /// Returns the output (logits, or the residual stream when `stop_at_layer` is given) and the cache. Unknown names
    /// in a `names_filter` list are an error that suggests the closest hook names.
    pub fn run_with_cache(
        &self,
        tokens: &TokenBatch,
        options: RunOptions,
    ) -> Result<(Tensor<B, 3>, ActivationCache<B>)> {
        self.run_with_hooks_and_cache(tokens, &mut [], options)
    }

    /// [`run_with_cache`](Self::run_with_cache) with forward hooks active: the hooks run first at each hook point, so
    /// the logits and the cache show what they changed (`with model.hooks(fwd_hooks): model.run_with_cache(...)`).
    pub fn run_with_hooks_and_cache(
        &self,
        tokens: &TokenBatch,
        hooks: &mut [&mut dyn Hook<B>],
        options: RunOptions,
    ) -> Result<(Tensor<B, 3>, ActivationCache<B>)> {
        let (output, cache) = self.run_cached(tokens, hooks, options)?;
        Ok((output, self.cache_of(cache)))
    }

    /// The cache a caching hook kept, with the model's parameters.
    pub(crate) fn cache_of(&self, cache: CacheHook<B>) -> ActivationCache<B> {
        let (options, entries) = cache.into_entries();
        ActivationCache::new(entries, self.params.clone(), options).with_kernels(B::cache_kernels())
    }

    /// A run with `hooks` and then a caching hook: the output and what the caching hook kept.
    pub(crate) fn run_cached(
        &self,
        tokens: &TokenBatch,
        hooks: &mut [&mut dyn Hook<B>],
        options: RunOptions,
    ) -> Result<(Tensor<B, 3>, CacheHook<B>)> {
        let all = self.hook_names();
        if let NamesFilter::Names(wanted) = &options.names_filter
            && let Some(bad) = wanted.iter().find(|w| !all.contains(w))
        {
            return Err(CacheError::UnknownHook {
                name: bad.clone(),
                suggestions: closest(bad, all.iter().map(String::as_str)),
            }
            .into());
        }
        let stop = options
            .stop_at_layer
            .map(|s| self.resolve_stop(s))
            .transpose()?;
        let mut cache = CacheHook::new(options).with_kernels(B::cache_kernels());
        let mut all_hooks: Vec<&mut dyn Hook<B>> = hooks.iter_mut().map(|h| reborrow(*h)).collect();
        all_hooks.push(&mut cache);
        let output = self.run(tokens, &mut Hooks::new(all_hooks), stop)?;
        Ok((output, cache))
    }

    fn resolve_stop(&self, stop: i64) -> Result<usize> {
        let n = self.cfg().n_layers as i64;
        let resolved = if stop < 0 { n + stop } else { stop };
        if !(0..=n).contains(&resolved) {
            return Err(CacheError::LayerOutOfRange {
                layer: stop,
                what: format!("stop_at_layer must lie in -{n}..={n}"),
            }
            .into());
        }
        Ok(resolved as usize)
    }

    /// The forward pass through `hooks`; stops before block `stop` (then returns the residual stream).
    fn run(
        &self,
        tokens: &TokenBatch,
        hooks: &mut Hooks<'_, B>,
        stop: Option<usize>,
    ) -> Result<Tensor<B, 3>> {
        self.run_from(tokens, hooks, None, stop)
    }

    /// Logits of a run that starts at block `layer` from a given residual stream (`[batch, pos, d_model]`, the
    /// `resid_pre` of that block), with hooks: the blocks before `layer` are not run again (TransformerLens's
    /// `start_at_layer`). Activation patching uses it: a patch at layer `l` leaves everything before `l` as it was.
    pub fn run_from_layer(
        &self,
        tokens: &TokenBatch,
        layer: usize,
        resid_pre: Tensor<B, 3>,
        hooks: &mut [&mut dyn Hook<B>],
    ) -> Result<Tensor<B, 3>> {
        let hooks = hooks.iter_mut().map(|h| reborrow(*h)).collect();
        self.run_from(
            tokens,
            &mut Hooks::new(hooks),
            Some((layer, resid_pre)),
            None,
        )
    }

    /// The token (and learned positional) embedding, with their hooks.
    fn embed(&self, tokens: &TokenBatch, hooks: &mut Hooks<'_, B>) -> Result<Tensor<B, 3>> {
        let w = self.weights();
        let (batch, pos, d_model) = (tokens.batch(), tokens.positions(), self.cfg().d_model);
        let device = self.device();
        let embed = w
            .W_E
            .clone()
            .select(0, tokens.to_flat_tensor::<B>(&device))
            .reshape([batch, pos, d_model]);
        let embed = hooks.fire(HookPoint::Embed, embed)?;
        let mut resid = embed;
        if let Some(w_pos) = &w.W_pos {
            let pos_embed = w_pos
                .clone()
                .narrow(0, 0, pos)
                .unsqueeze::<3>()
                .expand([batch, pos, d_model]);
            let pos_embed = hooks.fire(HookPoint::PosEmbed, pos_embed)?;
            resid = resid + pos_embed;
        }
        Ok(resid)
    }

    /// The forward pass from the embedding, or from block `start.0` with the residual stream `start.1`.
    fn run_from(
        &self,
        tokens: &TokenBatch,
        hooks: &mut Hooks<'_, B>,
        start: Option<(usize, Tensor<B, 3>)>,
        stop: Option<usize>,
    ) -> Result<Tensor<B, 3>> {
        let cfg = self.cfg();
        let w = self.weights();
        tokens.check(cfg.d_vocab, cfg.n_ctx)?;
        let (batch, pos) = (tokens.batch(), tokens.positions());
        let device = self.device();
        let (first, mut resid) = match start {
            Some((layer, resid)) => {
                let expected = [batch, pos, cfg.d_model];
                if resid.dims() != expected || layer >= cfg.n_layers {
                    return Err(CacheError::Shape(format!(
                        "a run from layer {layer} of {} needs a residual stream of shape {expected:?}, got {:?}",
                        cfg.n_layers,
                        resid.dims()
                    ))
                    .into());
                }
                // A stream read back from a cache is f32; the run continues in the model's precision.
                (layer, in_dtype(resid, w.dtype()))
            }
            None => (0, self.embed(tokens, hooks)?),
        };
        let ctx = ForwardContext {
            cfg,
            rotary: (!cfg.has_pos_embed()).then(|| Rotary::new(cfg, pos, w.dtype(), &device)),
        };
        for (l, block) in w
            .blocks
            .iter()
            .enumerate()
            .take(stop.unwrap_or(cfg.n_layers))
            .skip(first)
        {
            resid = block_forward(&ctx, l, block, resid, hooks)?;
        }
        if stop.is_some() {
            return Ok(resid);
        }
        let resid = norm(
            w.ln_final.as_ref(),
            resid,
            cfg.eps,
            HookPoint::LnFinal,
            hooks,
        )?;
        let resid = hooks.fire(HookPoint::UnembedIn, resid)?;
        let logits = B::fused_linear(resid, w.W_U.clone(), Some(w.b_U.clone()));
        // TransformerLens caps the logits after the unembed, so `unembed.hook_out` holds them uncapped.
        let logits = hooks.fire(HookPoint::UnembedOut, logits)?;
        Ok(soft_cap(logits, cfg.output_logits_soft_cap))
    }
}

/// What every block of one forward pass shares: the config and the rotary tables.
pub(crate) struct ForwardContext<'a, B: Backend> {
    pub(crate) cfg: &'a HookedTransformerConfig,
    /// Rotary tables for this sequence length; `None` with learned positions.
    pub(crate) rotary: Option<Rotary<B>>,
}

/// One transformer block: attention, then the MLP on the updated stream (sequential), or attention and MLP both on
/// the block's input (parallel: GPT-J, GPT-NeoX), with Gemma 2's norms after each sublayer when the model has them.
fn block_forward<B: Kernels>(
    ctx: &ForwardContext<'_, B>,
    l: usize,
    block: &BlockWeights<B>,
    resid: Tensor<B, 3>,
    hooks: &mut Hooks<'_, B>,
) -> Result<Tensor<B, 3>> {
    let eps = ctx.cfg.eps;
    let b = |hook: BlockHook| HookPoint::Block(l, hook);
    let at = |n: Norm| move |h: NormHook| b(BlockHook::Norm(n, h));
    let resid = hooks.fire(b(BlockHook::ResidPre), resid)?;
    let attn_in = norm(block.ln1.as_ref(), resid.clone(), eps, at(Norm::Ln1), hooks)?;
    let attn_out = attention::forward(ctx, l, &block.attn, attn_in, hooks)?;
    let attn_out = norm(
        block.ln1_post.as_ref(),
        attn_out,
        eps,
        at(Norm::Ln1Post),
        hooks,
    )?;
    let attn_out = hooks.fire(b(BlockHook::AttnOut), attn_out)?;
    let Some(mlp) = &block.mlp else {
        let resid = resid + attn_out;
        let resid = hooks.fire(b(BlockHook::ResidPost), resid)?;
        return Ok(resid);
    };
    let (mlp_in, resid) = match ctx.cfg.block_kind() {
        BlockKind::Parallel => (resid.clone(), resid + attn_out),
        BlockKind::Sequential | BlockKind::AttnOnly => {
            let mid = resid + attn_out;
            let mid = hooks.fire(b(BlockHook::ResidMid), mid)?;
            (mid.clone(), mid)
        }
    };
    let mlp_in = norm(block.ln2.as_ref(), mlp_in, eps, at(Norm::Ln2), hooks)?;
    let mlp_out = mlp::forward(ctx.cfg, l, mlp, mlp_in, hooks)?;
    let mlp_out = norm(
        block.ln2_post.as_ref(),
        mlp_out,
        eps,
        at(Norm::Ln2Post),
        hooks,
    )?;
    let mlp_out = hooks.fire(b(BlockHook::MlpOut), mlp_out)?;
    let resid = resid + mlp_out;
    let resid = hooks.fire(b(BlockHook::ResidPost), resid)?;
    Ok(resid)
}

/// A shorter borrow of a hook (a trait object's lifetime can only shrink through a function boundary).
fn reborrow<'a, B: Backend>(hook: &'a mut (dyn Hook<B> + '_)) -> &'a mut (dyn Hook<B> + 'a) {
    hook
}

/// A norm with its two hooks; the identity when the model has no normalisation there.
pub(crate) fn norm<B: Backend, const D: usize>(
    norm: Option<&NormWeights<B>>,
    x: Tensor<B, D>,
    eps: f64,
    at: impl Fn(NormHook) -> HookPoint,
    hooks: &mut Hooks<'_, B>,
) -> Result<Tensor<B, D>> {
    let Some(norm) = norm else { return Ok(x) };
    // TransformerLens normalises a half-precision model's stream in f32 and casts back before the norm's weights.
    let dtype = FloatDType::from(x.dtype());
    let (centred, scale) = norm.centre_and_scale(in_dtype(x, FloatDType::F32), eps);
    let scale = hooks.fire(at(NormHook::Scale), scale)?;
    let normalized = hooks.fire(at(NormHook::Normalized), centred / scale)?;
    Ok(norm.affine(in_dtype(normalized, dtype)))
}

/// Gemma's soft cap `cap·tanh(x / cap)`; the identity without a cap.
pub(crate) fn soft_cap<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    cap: Option<f64>,
) -> Tensor<B, D> {
    match cap {
        Some(cap) => (x / cap).tanh() * cap,
        None => x,
    }
}

/// `true` where a query may not see a key: keys after the query and, for a local layer of window `w`, keys `w` or
/// more positions before it (TransformerLens's `_make_causal_mask`).
pub(crate) fn causal_mask<B: Backend>(
    pos: usize,
    window: Option<usize>,
    device: &burn_tensor::Device<B>,
) -> Tensor<B, 4, Bool> {
    let future = Tensor::<B, 2, Bool>::tril_mask([pos, pos], 0, device);
    let masked = match window {
        Some(w) if w < pos => {
            let far_past = Tensor::<B, 2, Bool>::triu_mask([pos, pos], 1 - w as i64, device);
            future.bool_or(far_past)
        }
        _ => future,
    };
    masked.unsqueeze::<4>()
}

/// Rejects configurations whose forward pass tlens does not implement.
fn check_supported(cfg: &HookedTransformerConfig) -> Result<()> {
    let unsupported = |what: String| Err(ModelError::Unsupported(what));
    if cfg.attention_dir != AttentionDir::Causal {
        return unsupported("bidirectional attention (tlens runs causal language models)".into());
    }
    let flags = [
        ("use_split_qkv_input", cfg.use_split_qkv_input),
        ("use_hook_mlp_in", cfg.use_hook_mlp_in),
        ("use_attn_in", cfg.use_attn_in),
        ("use_hook_tokens", cfg.use_hook_tokens),
        ("post_embedding_ln", cfg.post_embedding_ln),
        (
            "gated_mlp with solu_ln",
            cfg.gated_mlp && cfg.act_fn == Some(ActFn::SoluLn),
        ),
        (
            "final_rms on a LayerNorm model",
            cfg.final_rms && cfg.normalization_type.is_some_and(|n| n.centers()),
        ),
    ];
    if let Some((name, _)) = flags.iter().find(|(_, on)| *on) {
        return unsupported(format!("{name} (tlens does not implement it)"));
    }
    Ok(())
}
