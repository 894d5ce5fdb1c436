//! Hugging Face GPT-2 folders: the config translated to a [`HookedTransformerConfig`] and the weights converted to a
//! TransformerLens state dict, as TransformerLens's own GPT-2 conversion does (spec §9).
//!
//! GPT-2's `Conv1D` stores weights as `[in, out]`, which is already TransformerLens's orientation: nothing is
//! transposed except the tied unembedding.

use std::collections::BTreeMap;
use std::path::Path;

use burn_tensor::TensorData;
use serde::Deserialize;
use tlens_cache_core::{ActFn, HookedTransformerConfig, NormalizationType};

use crate::error::{ModelError, Result};
use crate::hf::{drop_buffers, finish, reshaped, rows, transpose, values};
use crate::safetensors_file::TensorFile;

/// The fields of a Hugging Face GPT-2 `config.json` that the conversion reads.
#[derive(Deserialize)]
struct HfGpt2Config {
    n_embd: usize,
    n_head: usize,
    n_layer: usize,
    #[serde(default)]
    n_positions: Option<usize>,
    #[serde(default)]
    n_ctx: Option<usize>,
    vocab_size: usize,
    #[serde(default = "default_eps")]
    layer_norm_epsilon: f64,
    #[serde(default = "default_act")]
    activation_function: String,
    #[serde(default)]
    n_inner: Option<usize>,
    #[serde(default)]
    scale_attn_by_inverse_layer_idx: bool,
    #[serde(default)]
    model_type: Option<String>,
    #[serde(default)]
    _name_or_path: Option<String>,
}

fn default_eps() -> f64 {
    1e-5
}
fn default_act() -> String {
    "gelu_new".into()
}

/// Reads a Hugging Face GPT-2 `config.json` as TransformerLens's `convert_hf_model_config` would.
pub fn config_from_hf(path: &Path) -> Result<HookedTransformerConfig> {
    let text = crate::text_file::read_text(path)?;
    config_from_hf_json(&text, &path.display().to_string())
}

/// [`config_from_hf`] on the text of a `config.json` (`source` names it in errors).
pub fn config_from_hf_json(text: &str, source: &str) -> Result<HookedTransformerConfig> {
    let err = |message: String| ModelError::Config {
        path: source.to_string(),
        message,
    };
    let hf: HfGpt2Config = serde_json::from_str(text).map_err(|e| err(e.to_string()))?;
    if let Some(kind) = hf.model_type.as_deref().filter(|k| *k != "gpt2") {
        return Err(err(format!(
            "model_type {kind:?} is not gpt2; tlens converts GPT-2 folders"
        )));
    }
    if hf.n_head == 0 || !hf.n_embd.is_multiple_of(hf.n_head) {
        return Err(err(format!(
            "n_embd {} is not a multiple of n_head {}",
            hf.n_embd, hf.n_head
        )));
    }
    let act_fn = match hf.activation_function.as_str() {
        "gelu_new" => ActFn::GeluNew,
        "gelu" => ActFn::Gelu,
        "gelu_fast" => ActFn::GeluFast,
        "gelu_pytorch_tanh" => ActFn::GeluPytorchTanh,
        "relu" => ActFn::Relu,
        "silu" | "swish" => ActFn::Silu,
        other => {
            return Err(err(format!(
                "activation_function {other:?} is not supported"
            )));
        }
    };
    let n_ctx = hf
        .n_positions
        .or(hf.n_ctx)
        .ok_or_else(|| err("n_positions is missing".into()))?;
    let cfg = HookedTransformerConfig {
        n_layers: hf.n_layer,
        d_model: hf.n_embd,
        n_ctx,
        d_head: hf.n_embd / hf.n_head,
        n_heads: hf.n_head,
        // 0: `resolved` derives 4·d_model (and refuses one too large to count).
        d_mlp: hf.n_inner.unwrap_or(0),
        d_vocab: hf.vocab_size,
        d_vocab_out: hf.vocab_size,
        act_fn: Some(act_fn),
        eps: hf.layer_norm_epsilon,
        normalization_type: Some(NormalizationType::LN),
        scale_attn_by_inverse_layer_idx: hf.scale_attn_by_inverse_layer_idx,
        original_architecture: Some("GPT2LMHeadModel".into()),
        model_name: hf._name_or_path.filter(|n| !n.is_empty()),
        ..HookedTransformerConfig::new(
            hf.n_layer,
            hf.n_embd,
            n_ctx,
            hf.n_embd / hf.n_head,
            hf.vocab_size,
        )?
    };
    cfg.resolved().map_err(|e| err(e.to_string()))
}

/// Converts a Hugging Face GPT-2 state dict into a TransformerLens state dict (same [`TensorFile`], TL names).
pub fn convert_weights(cfg: &HookedTransformerConfig, mut hf: TensorFile) -> Result<TensorFile> {
    // GPT2LMHeadModel prefixes `transformer.`; GPT2Model does not.
    hf.rename(|k| {
        k.strip_prefix("transformer.")
            .map(str::to_string)
            .unwrap_or(k)
    });
    drop_buffers(&mut hf);
    let (d, h, dh, m, v) = (cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp, cfg.d_vocab);
    // A malformed `wpe` (a scalar, say) is refused by the shape check of `take` below.
    let n_positions = hf
        .shape("wpe.weight")
        .and_then(|shape| shape.first().copied())
        .unwrap_or(cfg.n_ctx);
    let mut tl = BTreeMap::new();
    let wte = hf.take("wte.weight", &[v, d])?;
    let lm_head = match hf.contains("lm_head.weight") {
        true => hf.take("lm_head.weight", &[v, d])?,
        false => wte.clone(),
    };
    tl.insert("embed.W_E".into(), wte);
    let wpe = hf.take("wpe.weight", &[n_positions, d])?;
    if n_positions < cfg.n_ctx {
        return Err(ModelError::WeightShape {
            name: "wpe.weight".into(),
            expected: vec![cfg.n_ctx, d],
            found: vec![n_positions, d],
        });
    }
    tl.insert("pos_embed.W_pos".into(), rows(&wpe, 0, cfg.n_ctx));
    for l in 0..cfg.n_layers {
        let p = |s: &str| format!("h.{l}.{s}");
        let t = |s: &str| format!("blocks.{l}.{s}");
        tl.insert(t("ln1.w"), hf.take(&p("ln_1.weight"), &[d])?);
        tl.insert(t("ln1.b"), hf.take(&p("ln_1.bias"), &[d])?);
        let qkv = hf.take(&p("attn.c_attn.weight"), &[d, 3 * d])?;
        let qkv_bias = hf.take(&p("attn.c_attn.bias"), &[3 * d])?;
        for (i, name) in ["Q", "K", "V"].iter().enumerate() {
            tl.insert(
                t(&format!("attn.W_{name}")),
                split_heads(&qkv, i * d, h, dh),
            );
            tl.insert(
                t(&format!("attn.b_{name}")),
                reshaped(
                    rows(&reshaped(qkv_bias.clone(), vec![3 * d, 1]), i * d, d),
                    vec![h, dh],
                ),
            );
        }
        tl.insert(
            t("attn.W_O"),
            reshaped(hf.take(&p("attn.c_proj.weight"), &[d, d])?, vec![h, dh, d]),
        );
        tl.insert(t("attn.b_O"), hf.take(&p("attn.c_proj.bias"), &[d])?);
        tl.insert(t("ln2.w"), hf.take(&p("ln_2.weight"), &[d])?);
        tl.insert(t("ln2.b"), hf.take(&p("ln_2.bias"), &[d])?);
        tl.insert(t("mlp.W_in"), hf.take(&p("mlp.c_fc.weight"), &[d, m])?);
        tl.insert(t("mlp.b_in"), hf.take(&p("mlp.c_fc.bias"), &[m])?);
        tl.insert(t("mlp.W_out"), hf.take(&p("mlp.c_proj.weight"), &[m, d])?);
        tl.insert(t("mlp.b_out"), hf.take(&p("mlp.c_proj.bias"), &[d])?);
    }
    tl.insert("ln_final.w".into(), hf.take("ln_f.weight", &[d])?);
    tl.insert("ln_final.b".into(), hf.take("ln_f.bias", &[d])?);
    tl.insert("unembed.W_U".into(), transpose(&lm_head));
    tl.insert("unembed.b_U".into(), TensorData::new(vec![0f32; v], [v]));
    finish(hf, tl)
}

/// `W[h, m, e] = W_flat[m, offset + h·dh + e]` for a `[D, 3D]` Conv1D weight.
fn split_heads(t: &TensorData, offset: usize, heads: usize, d_head: usize) -> TensorData {
    let (d, cols) = (t.shape[0], t.shape[1]);
    let flat = values(t);
    let mut out = Vec::with_capacity(heads * d * d_head);
    for h in 0..heads {
        for m in 0..d {
            let start = m * cols + offset + h * d_head;
            out.extend_from_slice(&flat[start..start + d_head]);
        }
    }
    TensorData::new(out, [heads, d, d_head])
}
