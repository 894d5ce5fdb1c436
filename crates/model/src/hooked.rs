//! [`HookedTransformer`]: a GPT-2-style transformer whose every intermediate activation is reported under its
//! TransformerLens hook name.

use std::sync::Arc;

use burn_tensor::{Bool, Tensor, activation::softmax, backend::Backend};
use tlens_cache_core::error::closest;
use tlens_cache_core::{
    ActFn, ActivationCache, AttentionWeights, CacheError, HookRecorder, HookedTransformerConfig,
    MlpWeights, ModelParams, NamesFilter, NormWeights, RunOptions, TransformerWeights,
    head_outputs,
};

use crate::activation;
use crate::error::{ModelError, Result};
use crate::tokens::TokenBatch;

/// A hooked transformer: configuration, parameters and the device they live on.
#[derive(Clone, Debug)]
pub struct HookedTransformer<B: Backend> {
    params: Arc<ModelParams<B>>,
}

impl<B: Backend> HookedTransformer<B> {
    /// Builds a model from a config and parameters (already on their device), checking that tlens supports the config.
    pub fn new(cfg: HookedTransformerConfig, weights: TransformerWeights<B>) -> Result<Self> {
        check_supported(&cfg)?;
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

    /// Every hook this model fires in a full run, in firing order.
    pub fn hook_names(&self) -> Vec<String> {
        let cfg = self.cfg();
        let mut names = vec!["hook_embed".to_string(), "hook_pos_embed".to_string()];
        let norm = cfg.normalization_type.is_some();
        for l in 0..cfg.n_layers {
            let b = |s: &str| format!("blocks.{l}.{s}");
            names.push(b("hook_resid_pre"));
            if norm {
                names.extend([b("ln1.hook_scale"), b("ln1.hook_normalized")]);
            }
            names.extend(
                [
                    "attn.hook_q",
                    "attn.hook_k",
                    "attn.hook_v",
                    "attn.hook_attn_scores",
                    "attn.hook_pattern",
                    "attn.hook_z",
                ]
                .map(b),
            );
            if cfg.use_attn_result {
                names.push(b("attn.hook_result"));
            }
            names.push(b("hook_attn_out"));
            if cfg.has_mlp() {
                names.push(b("hook_resid_mid"));
                if norm {
                    names.extend([b("ln2.hook_scale"), b("ln2.hook_normalized")]);
                }
                names.push(b("mlp.hook_pre"));
                if cfg.act_fn == Some(ActFn::SoluLn) {
                    names.extend([
                        b("mlp.hook_mid"),
                        b("mlp.ln.hook_scale"),
                        b("mlp.ln.hook_normalized"),
                    ]);
                }
                names.extend([b("mlp.hook_post"), b("hook_mlp_out")]);
            }
            names.push(b("hook_resid_post"));
        }
        if norm {
            names.extend([
                "ln_final.hook_scale".to_string(),
                "ln_final.hook_normalized".to_string(),
            ]);
        }
        names.extend([
            "unembed.hook_in".to_string(),
            "unembed.hook_out".to_string(),
        ]);
        names
    }

    /// Logits `[batch, pos, d_vocab_out]` for a batch of tokens.
    pub fn forward(&self, tokens: &TokenBatch) -> Result<Tensor<B, 3>> {
        self.run(tokens, &mut HookRecorder::disabled(), None)
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
        let mut recorder = HookRecorder::new(options);
        let output = self.run(tokens, &mut recorder, stop)?;
        let (options, entries) = recorder.into_entries();
        Ok((
            output,
            ActivationCache::new(entries, self.params.clone(), options),
        ))
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

    /// The forward pass, reporting every hook to `rec`; stops before block `stop` (then returns the residual stream).
    fn run(
        &self,
        tokens: &TokenBatch,
        rec: &mut HookRecorder<B>,
        stop: Option<usize>,
    ) -> Result<Tensor<B, 3>> {
        let cfg = self.cfg();
        let w = self.weights();
        tokens.check(cfg.vocab(), cfg.n_ctx)?;
        let (batch, pos) = (tokens.batch(), tokens.positions());
        let d_model = cfg.d_model;
        let device = self.device();

        let embed = w
            .W_E
            .clone()
            .select(0, tokens.to_flat_tensor::<B>(&device))
            .reshape([batch, pos, d_model]);
        rec.record("hook_embed", &embed)?;
        let pos_embed = w
            .W_pos
            .clone()
            .narrow(0, 0, pos)
            .unsqueeze::<3>()
            .expand([batch, pos, d_model]);
        rec.record("hook_pos_embed", &pos_embed)?;
        let mut resid = embed + pos_embed;

        let mask = causal_mask::<B>(pos, &device);
        for (l, block) in w
            .blocks
            .iter()
            .enumerate()
            .take(stop.unwrap_or(cfg.n_layers))
        {
            let b = |s: &str| format!("blocks.{l}.{s}");
            rec.record(&b("hook_resid_pre"), &resid)?;
            let attn_in = self.norm(block.ln1.as_ref(), resid.clone(), &b("ln1"), rec)?;
            let attn_out = self.attention(l, &block.attn, attn_in, &mask, rec)?;
            rec.record(&b("hook_attn_out"), &attn_out)?;
            resid = resid + attn_out;
            if let Some(mlp) = &block.mlp {
                rec.record(&b("hook_resid_mid"), &resid)?;
                let mlp_in = self.norm(block.ln2.as_ref(), resid.clone(), &b("ln2"), rec)?;
                let mlp_out = self.mlp(l, mlp, mlp_in, rec)?;
                rec.record(&b("hook_mlp_out"), &mlp_out)?;
                resid = resid + mlp_out;
            }
            rec.record(&b("hook_resid_post"), &resid)?;
        }
        if stop.is_some() {
            return Ok(resid);
        }
        let resid = self.norm(w.ln_final.as_ref(), resid, "ln_final", rec)?;
        rec.record("unembed.hook_in", &resid)?;
        let logits = resid.matmul(w.W_U.clone().unsqueeze::<3>()) + w.b_U.clone().unsqueeze::<3>();
        rec.record("unembed.hook_out", &logits)?;
        Ok(logits)
    }

    /// A norm with its two hooks; the identity when the model has no normalisation.
    fn norm<const D: usize>(
        &self,
        norm: Option<&NormWeights<B>>,
        x: Tensor<B, D>,
        prefix: &str,
        rec: &mut HookRecorder<B>,
    ) -> Result<Tensor<B, D>> {
        let Some(norm) = norm else { return Ok(x) };
        let out = norm.forward(x, self.cfg().eps);
        rec.record(&format!("{prefix}.hook_scale"), &out.scale)?;
        rec.record(&format!("{prefix}.hook_normalized"), &out.normalized)?;
        Ok(out.output)
    }

    fn attention(
        &self,
        layer: usize,
        w: &AttentionWeights<B>,
        x: Tensor<B, 3>,
        mask: &Tensor<B, 4, Bool>,
        rec: &mut HookRecorder<B>,
    ) -> Result<Tensor<B, 3>> {
        let cfg = self.cfg();
        let [batch, pos, d_model] = x.dims();
        let (heads, d_head) = (cfg.heads(), cfg.d_head);
        let b = |s: &str| format!("blocks.{layer}.attn.{s}");
        // [H, D, dh] -> [D, H·dh] so one matmul gives every head, as TransformerLens's F.linear does.
        let project = |wt: &Tensor<B, 3>, bias: &Tensor<B, 2>| -> Tensor<B, 4> {
            let flat = wt
                .clone()
                .swap_dims(0, 1)
                .reshape([d_model, heads * d_head]);
            (x.clone().matmul(flat.unsqueeze::<3>()) + bias.clone().reshape([1, 1, heads * d_head]))
                .reshape([batch, pos, heads, d_head])
        };
        let q = project(&w.W_Q, &w.b_Q);
        rec.record(&b("hook_q"), &q)?;
        let k = project(&w.W_K, &w.b_K);
        rec.record(&b("hook_k"), &k)?;
        let v = project(&w.W_V, &w.b_V);
        rec.record(&b("hook_v"), &v)?;

        let mut scale = if cfg.use_attn_scale {
            cfg.attn_scale
        } else {
            1.0
        };
        if cfg.scale_attn_by_inverse_layer_idx {
            scale *= (layer + 1) as f64;
        }
        let scores = q.swap_dims(1, 2).matmul(k.permute([0, 2, 3, 1])) / scale;
        let scores = if cfg.attn_scores_soft_cap > 0.0 {
            (scores / cfg.attn_scores_soft_cap).tanh() * cfg.attn_scores_soft_cap
        } else {
            scores
        };
        let scores = scores.mask_fill(mask.clone(), f32::NEG_INFINITY);
        rec.record(&b("hook_attn_scores"), &scores)?;
        let pattern = softmax(scores, 3);
        rec.record(&b("hook_pattern"), &pattern)?;
        let z = pattern.matmul(v.swap_dims(1, 2)).swap_dims(1, 2);
        rec.record(&b("hook_z"), &z)?;

        if cfg.use_attn_result {
            let result = head_outputs(z.reshape([batch * pos, heads, d_head]), w.W_O.clone())
                .reshape([heads, batch, pos, d_model])
                .permute([1, 2, 0, 3]);
            rec.record(&b("hook_result"), &result)?;
            Ok(result.sum_dim(2).reshape([batch, pos, d_model]) + w.b_O.clone().unsqueeze::<3>())
        } else {
            let w_o = w.W_O.clone().reshape([heads * d_head, d_model]);
            Ok(z.reshape([batch, pos, heads * d_head])
                .matmul(w_o.unsqueeze::<3>())
                + w.b_O.clone().unsqueeze::<3>())
        }
    }

    fn mlp(
        &self,
        layer: usize,
        w: &MlpWeights<B>,
        x: Tensor<B, 3>,
        rec: &mut HookRecorder<B>,
    ) -> Result<Tensor<B, 3>> {
        let act = self
            .cfg()
            .act_fn
            .expect("checked: models with MLPs have an activation");
        let b = |s: &str| format!("blocks.{layer}.mlp.{s}");
        let pre = x.matmul(w.W_in.clone().unsqueeze::<3>()) + w.b_in.clone().unsqueeze::<3>();
        rec.record(&b("hook_pre"), &pre)?;
        let post = if act == ActFn::SoluLn {
            let mid = activation::apply(act, pre);
            rec.record(&b("hook_mid"), &mid)?;
            self.norm(w.ln.as_ref(), mid, &b("ln"), rec)?
        } else {
            activation::apply(act, pre)
        };
        rec.record(&b("hook_post"), &post)?;
        Ok(post.matmul(w.W_out.clone().unsqueeze::<3>()) + w.b_out.clone().unsqueeze::<3>())
    }
}

/// `true` above the diagonal: key positions after the query position.
fn causal_mask<B: Backend>(pos: usize, device: &burn_tensor::Device<B>) -> Tensor<B, 4, Bool> {
    Tensor::<B, 2, Bool>::tril_mask([pos, pos], 0, device).unsqueeze::<4>()
}

/// Rejects configurations whose forward pass tlens does not implement.
fn check_supported(cfg: &HookedTransformerConfig) -> Result<()> {
    let unsupported = |what: String| Err(ModelError::Unsupported(what));
    if cfg.positional_embedding_type != "standard" {
        return unsupported(format!(
            "positional_embedding_type {:?} (tlens supports \"standard\")",
            cfg.positional_embedding_type
        ));
    }
    if cfg.attention_dir != "causal" {
        return unsupported(format!(
            "attention_dir {:?} (tlens supports \"causal\")",
            cfg.attention_dir
        ));
    }
    let flags = [
        ("final_rms", cfg.final_rms),
        ("parallel_attn_mlp", cfg.parallel_attn_mlp),
        ("gated_mlp", cfg.gated_mlp),
        ("use_split_qkv_input", cfg.use_split_qkv_input),
        ("use_hook_mlp_in", cfg.use_hook_mlp_in),
        ("use_attn_in", cfg.use_attn_in),
        ("use_hook_tokens", cfg.use_hook_tokens),
        ("post_embedding_ln", cfg.post_embedding_ln),
        ("n_key_value_heads", cfg.n_key_value_heads.is_some()),
    ];
    if let Some((name, _)) = flags.iter().find(|(_, on)| *on) {
        return unsupported(format!("{name} (tlens implements the GPT-2-style block)"));
    }
    if cfg.output_logits_soft_cap > 0.0 {
        return unsupported("output_logits_soft_cap".into());
    }
    Ok(())
}
