//! A small cache with random values, for examples and tests that need one without loading a model.
//!
//! The activations are random but keep the residual stream's identities (`resid_mid = resid_pre + attn_out`,
//! `resid_post = resid_mid + mlp_out`, `hook_scale` computed from the stream it normalises), which is all the
//! stacking methods rely on. For values that match a real forward pass, build the cache with `tlens-model`.

use std::sync::Arc;

use burn_tensor::{Tensor, TensorData, backend::Backend};
use indexmap::IndexMap;

use crate::cache::{ActivationCache, ModelParams};
use crate::config::{ActFn, HookedTransformerConfig, MlpKind, NormalizationType};
use crate::dyn_tensor::DynTensor;
use crate::hook_point::{BlockHook, HookPoint, Norm, NormHook};
use crate::recorder::RunOptions;
use crate::weights::{AttentionWeights, BlockWeights, MlpWeights, NormWeights, TransformerWeights};

/// Dimensions of the random model: 2 layers, `d_model` 16, 4 heads of 4, `d_mlp` 32, 20 tokens, LayerNorm (`LNPre`,
/// as after `fold_ln`).
pub fn random_config() -> HookedTransformerConfig {
    let mut cfg = HookedTransformerConfig::new(2, 16, 16, 4, 20).expect("a valid config");
    cfg.d_mlp = 32;
    cfg.act_fn = Some(ActFn::GeluNew);
    cfg.normalization_type = Some(NormalizationType::LNPre);
    cfg
}

/// Deterministic pseudo-random values in `[-scale, scale)`.
struct Lcg {
    state: u64,
    scale: f32,
}

impl Lcg {
    fn tensor<B: Backend, const D: usize>(
        &mut self,
        shape: [usize; D],
        device: &burn_tensor::Device<B>,
    ) -> Tensor<B, D> {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = (0..n)
            .map(|_| {
                self.state = self
                    .state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (((self.state >> 40) as f32 / (1u64 << 23) as f32) - 1.0) * self.scale
            })
            .collect();
        Tensor::from_data(TensorData::new(values, shape), device)
    }
}

/// Random parameters for [`random_config`] on `device`.
pub fn random_params<B: Backend>(device: &burn_tensor::Device<B>) -> ModelParams<B> {
    random_params_for(random_config(), 7, 1.0, device)
}

/// Random parameters for any config with weight-free norms (`LNPre` or `RMSPre`, as after `fold_ln`) and MLPs —
/// grouped-query attention, gated MLPs and rotary positions included: every value uniform in
/// `[-scale, scale)`, reproducible from `seed` on every backend. Benchmarks use it for the GPT-2-small and
/// Llama-3.2-1B shapes.
pub fn random_params_for<B: Backend>(
    cfg: HookedTransformerConfig,
    seed: u64,
    scale: f32,
    device: &burn_tensor::Device<B>,
) -> ModelParams<B> {
    let (d, h, kv, dh, m, v) = (
        cfg.d_model,
        cfg.n_heads,
        cfg.kv_heads(),
        cfg.d_head,
        cfg.d_mlp,
        cfg.d_vocab,
    );
    let mut rng = Lcg { state: seed, scale };
    let kind = cfg
        .normalization_type
        .unwrap_or(NormalizationType::LNPre)
        .folded();
    let norm = || Some(NormWeights::pre(kind));
    let blocks = (0..cfg.n_layers)
        .map(|_| BlockWeights {
            ln1: norm(),
            attn: AttentionWeights {
                W_Q: rng.tensor([h, d, dh], device),
                W_K: rng.tensor([kv, d, dh], device),
                W_V: rng.tensor([kv, d, dh], device),
                W_O: rng.tensor([h, dh, d], device),
                b_Q: rng.tensor([h, dh], device),
                b_K: rng.tensor([kv, dh], device),
                b_V: rng.tensor([kv, dh], device),
                b_O: rng.tensor([d], device),
                q_norm: None,
                k_norm: None,
            },
            ln1_post: None,
            ln2: norm(),
            mlp: Some(MlpWeights {
                W_in: rng.tensor([d, m], device),
                b_in: rng.tensor([m], device),
                W_gate: matches!(cfg.mlp_kind(), Some(MlpKind::Gated(_)))
                    .then(|| rng.tensor([d, m], device)),
                W_out: rng.tensor([m, d], device),
                b_out: rng.tensor([d], device),
                ln: None,
            }),
            ln2_post: None,
        })
        .collect();
    let weights = TransformerWeights {
        W_E: rng.tensor([v, d], device),
        W_pos: cfg
            .has_pos_embed()
            .then(|| rng.tensor([cfg.n_ctx, d], device)),
        blocks,
        ln_final: norm(),
        W_U: rng.tensor([d, cfg.d_vocab_out], device),
        b_U: rng.tensor([cfg.d_vocab_out], device),
    };
    ModelParams { cfg, weights }
}

/// A cache of `batch` sequences of `pos` positions with random activations for [`random_params`], on the backend's
/// default device, holding every hook of a full run in firing order.
///
/// ```
/// let cache = tlens_cache_core::testing::random_cache::<burn_ndarray::NdArray>(2, 3);
/// assert_eq!(cache.get("blocks.1.hook_resid_post").unwrap().shape(), [2, 3, 16]);
/// ```
pub fn random_cache<B: Backend>(batch: usize, pos: usize) -> ActivationCache<B> {
    let device = Default::default();
    let params = random_params::<B>(&device);
    let cfg = params.cfg.clone();
    let (d, h, dh, m) = (cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp);
    let mut rng = Lcg {
        state: 11,
        scale: 1.0,
    };
    let mut entries: IndexMap<String, DynTensor<B>> = IndexMap::new();
    let mut put = |k: HookPoint, t: DynTensor<B>| {
        entries.insert(k.to_string(), t);
    };
    let norm = |x: &Tensor<B, 3>| {
        params.weights.blocks[0]
            .ln1
            .as_ref()
            .expect("LNPre")
            .forward(x.clone(), cfg.eps)
    };
    let embed = rng.tensor([batch, pos, d], &device);
    let pos_embed = rng
        .tensor::<B, 2>([pos, d], &device)
        .unsqueeze::<3>()
        .expand([batch, pos, d]);
    put(HookPoint::Embed, DynTensor::new(embed.clone()));
    put(HookPoint::PosEmbed, DynTensor::new(pos_embed.clone()));
    let mut resid = embed + pos_embed;
    for l in 0..cfg.n_layers {
        let b = |hook: BlockHook| HookPoint::Block(l, hook);
        let at = |n: Norm, h: NormHook| b(BlockHook::Norm(n, h));
        put(b(BlockHook::ResidPre), DynTensor::new(resid.clone()));
        let n1 = norm(&resid);
        put(at(Norm::Ln1, NormHook::Scale), DynTensor::new(n1.scale));
        put(
            at(Norm::Ln1, NormHook::Normalized),
            DynTensor::new(n1.normalized),
        );
        for hook in [BlockHook::Q, BlockHook::K, BlockHook::V] {
            put(
                b(hook),
                DynTensor::new(rng.tensor([batch, pos, h, dh], &device)),
            );
        }
        for hook in [BlockHook::AttnScores, BlockHook::Pattern] {
            put(
                b(hook),
                DynTensor::new(rng.tensor([batch, h, pos, pos], &device)),
            );
        }
        put(
            b(BlockHook::Z),
            DynTensor::new(rng.tensor([batch, pos, h, dh], &device)),
        );
        let attn_out = rng.tensor([batch, pos, d], &device);
        put(b(BlockHook::AttnOut), DynTensor::new(attn_out.clone()));
        resid = resid + attn_out;
        put(b(BlockHook::ResidMid), DynTensor::new(resid.clone()));
        let n2 = norm(&resid);
        put(at(Norm::Ln2, NormHook::Scale), DynTensor::new(n2.scale));
        put(
            at(Norm::Ln2, NormHook::Normalized),
            DynTensor::new(n2.normalized),
        );
        for hook in [BlockHook::MlpPre, BlockHook::MlpPost] {
            put(
                b(hook),
                DynTensor::new(rng.tensor([batch, pos, m], &device)),
            );
        }
        let mlp_out = rng.tensor([batch, pos, d], &device);
        put(b(BlockHook::MlpOut), DynTensor::new(mlp_out.clone()));
        resid = resid + mlp_out;
        put(b(BlockHook::ResidPost), DynTensor::new(resid.clone()));
    }
    let nf = norm(&resid);
    put(
        HookPoint::LnFinal(NormHook::Scale),
        DynTensor::new(nf.scale),
    );
    put(
        HookPoint::LnFinal(NormHook::Normalized),
        DynTensor::new(nf.normalized.clone()),
    );
    put(HookPoint::UnembedIn, DynTensor::new(nf.normalized.clone()));
    let logits = nf
        .normalized
        .matmul(params.weights.W_U.clone().unsqueeze::<3>())
        + params.weights.b_U.clone().unsqueeze::<3>();
    put(HookPoint::UnembedOut, DynTensor::new(logits));
    ActivationCache::new(entries, Arc::new(params), RunOptions::default())
}
