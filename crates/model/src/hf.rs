//! Hugging Face checkpoints of the Llama-style families (`llama`, `mistral`, `qwen2`, `qwen3`, `phi3`, `gemma`,
//! `gemma2`), of `gpt_neox` (Pythia), `gptj` and `opt`: `config.json` resolved into a [`HookedTransformerConfig`] as
//! TransformerLens 3.9's `convert_hf_model_config` does, and the weights converted into a TransformerLens state dict as
//! its `convert_llama_weights`, `convert_mistral_weights`, `convert_qwen2_weights`, `convert_qwen3_weights`,
//! `convert_phi3_weights`, `convert_gemma_weights`, `convert_neox_weights`, `convert_gptj_weights` and
//! `convert_opt_weights` do (`transformer_lens/pretrained/weight_conversions/`).
//!
//! GPT-2 folders go through [`crate::gpt2`].

use std::collections::BTreeMap;

use burn_tensor::TensorData;
use serde::Deserialize;
use serde_json::Value;
use tlens_cache_core::{
    ActFn, AttnType, HookedTransformerConfig, NormalizationType, PositionalEmbeddingType,
};

use crate::error::{ModelError, Result};
use crate::safetensors_file::TensorFile;

/// The `model_type`s tlens loads, for error messages.
pub const SUPPORTED_MODEL_TYPES: [&str; 11] = [
    "gpt2", "gpt_neox", "gptj", "opt", "llama", "mistral", "qwen2", "qwen3", "phi3", "gemma",
    "gemma2",
];

/// The most layers a config may declare (far more than a checkpoint can hold).
const MAX_LAYERS: usize = 1 << 20;

/// A model family: how its config reads and how its weights convert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// GPT-2 (`gpt2`).
    Gpt2,
    /// GPT-NeoX and Pythia (`gpt_neox`): LayerNorm, partial NeoX rotary, parallel blocks, fused `query_key_value`.
    GptNeox,
    /// GPT-J (`gptj`): LayerNorm shared by attention and MLP, partial rotary on adjacent pairs, parallel blocks.
    GptJ,
    /// OPT (`opt`): LayerNorm, learned positions (offset by 2), ReLU.
    Opt,
    /// Llama 2 and 3 (`llama`): RMS, rotary (Llama 3.1 `rope_scaling`), grouped-query attention, SwiGLU.
    Llama,
    /// Mistral (`mistral`): Llama's block, with a sliding window on every layer when the config sets one.
    Mistral,
    /// Qwen 2 and 2.5 (`qwen2`): Llama's block with query/key/value biases.
    Qwen2,
    /// Qwen 3 (`qwen3`): Llama's block with an RMS norm over each head's queries and keys.
    Qwen3,
    /// Phi-3 (`phi3`): Llama's block with fused `qkv_proj` and `gate_up_proj`.
    Phi3,
    /// Gemma (`gemma`): `(1 + w)` RMS norms, √d_model embedding scale, GeGLU.
    Gemma,
    /// Gemma 2 (`gemma2`): Gemma with norms after each sublayer, soft caps and alternating local layers.
    Gemma2,
}

impl Family {
    /// The family of a `config.json`'s `model_type`; an error names the supported ones.
    pub fn from_model_type(model_type: &str) -> std::result::Result<Self, String> {
        Ok(match model_type {
            "gpt2" => Self::Gpt2,
            "gpt_neox" => Self::GptNeox,
            "gptj" => Self::GptJ,
            "opt" => Self::Opt,
            "llama" => Self::Llama,
            "mistral" => Self::Mistral,
            "qwen2" => Self::Qwen2,
            "qwen3" => Self::Qwen3,
            "phi3" => Self::Phi3,
            "gemma" => Self::Gemma,
            "gemma2" => Self::Gemma2,
            other => {
                return Err(format!(
                    "model_type {other:?} is not supported; tlens loads {}",
                    SUPPORTED_MODEL_TYPES.join(", ")
                ));
            }
        })
    }

    /// TransformerLens's `original_architecture` for the family.
    fn architecture(self) -> &'static str {
        match self {
            Self::Gpt2 => "GPT2LMHeadModel",
            Self::GptNeox => "GPTNeoXForCausalLM",
            Self::GptJ => "GPTJForCausalLM",
            Self::Opt => "OPTForCausalLM",
            Self::Llama => "LlamaForCausalLM",
            Self::Mistral => "MistralForCausalLM",
            Self::Qwen2 => "Qwen2ForCausalLM",
            Self::Qwen3 => "Qwen3ForCausalLM",
            Self::Phi3 => "Phi3ForCausalLM",
            Self::Gemma => "GemmaForCausalLM",
            Self::Gemma2 => "Gemma2ForCausalLM",
        }
    }

    fn is_gemma(self) -> bool {
        matches!(self, Self::Gemma | Self::Gemma2)
    }

    /// LayerNorm families (the others use RMS norms and gated MLPs).
    fn layer_norm(self) -> bool {
        matches!(self, Self::Gpt2 | Self::GptNeox | Self::GptJ | Self::Opt)
    }
}

/// The `model_type` of a `config.json` text (absent: GPT-2, as the oldest GPT-2 configs have none).
pub fn model_type(text: &str, source: &str) -> Result<Family> {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(default)]
        model_type: Option<String>,
    }
    let probe: Probe = serde_json::from_str(text).map_err(|e| config_err(source, e.to_string()))?;
    Family::from_model_type(probe.model_type.as_deref().unwrap_or("gpt2"))
        .map_err(|m| config_err(source, m))
}

fn config_err(source: &str, message: String) -> ModelError {
    ModelError::Config {
        path: source.to_string(),
        message,
    }
}

/// The fields of the families' `config.json` that the conversion reads (a superset; each family reads its own;
/// GPT-J's and OPT's names are aliases).
#[derive(Deserialize)]
struct HfConfig {
    #[serde(alias = "n_embd")]
    hidden_size: usize,
    #[serde(alias = "n_head")]
    num_attention_heads: usize,
    #[serde(default)]
    num_key_value_heads: Option<usize>,
    /// The MLP width (`ffn_dim` in OPT, `n_inner` in GPT-J, where `null` means `4·n_embd`).
    #[serde(default, alias = "ffn_dim", alias = "n_inner")]
    intermediate_size: Option<usize>,
    #[serde(alias = "n_layer")]
    num_hidden_layers: usize,
    #[serde(alias = "n_positions")]
    max_position_embeddings: usize,
    vocab_size: usize,
    #[serde(default)]
    head_dim: Option<usize>,
    #[serde(default)]
    rms_norm_eps: Option<f64>,
    #[serde(default, alias = "layer_norm_epsilon")]
    layer_norm_eps: Option<f64>,
    #[serde(default, alias = "activation_function")]
    hidden_act: Option<String>,
    #[serde(default)]
    hidden_activation: Option<String>,
    #[serde(default)]
    rope_theta: Option<f64>,
    #[serde(default)]
    rotary_emb_base: Option<f64>,
    #[serde(default)]
    rope_scaling: Option<Value>,
    #[serde(default)]
    rope_parameters: Option<Value>,
    #[serde(default)]
    sliding_window: Option<usize>,
    #[serde(default)]
    layer_types: Option<Vec<String>>,
    #[serde(default)]
    use_parallel_residual: Option<bool>,
    #[serde(default)]
    rotary_pct: Option<f64>,
    #[serde(default)]
    partial_rotary_factor: Option<f64>,
    #[serde(default)]
    query_pre_attn_scalar: Option<f64>,
    #[serde(default)]
    attn_logit_softcapping: Option<f64>,
    #[serde(default)]
    final_logit_softcapping: Option<f64>,
    #[serde(default)]
    rotary_dim: Option<usize>,
    #[serde(default)]
    do_layer_norm_before: Option<bool>,
    #[serde(default)]
    word_embed_proj_dim: Option<usize>,
    #[serde(default)]
    _name_or_path: Option<String>,
}

impl HfConfig {
    /// `rope_theta`, top level (transformers 4) or inside `rope_parameters` (transformers 5).
    fn rope_theta(&self) -> Option<f64> {
        self.rope_theta.or_else(|| {
            self.rope_parameters
                .as_ref()
                .and_then(|p| p.get("rope_theta"))
                .and_then(Value::as_f64)
        })
    }

    /// `partial_rotary_factor`, top level or inside `rope_parameters` (transformers 5).
    fn partial_rotary_factor(&self) -> Option<f64> {
        self.partial_rotary_factor.or_else(|| {
            self.rope_parameters
                .as_ref()
                .and_then(|p| p.get("partial_rotary_factor"))
                .and_then(Value::as_f64)
        })
    }

    /// The rope scaling entry (`rope_scaling`, or `rope_parameters` when it names a type other than `default`).
    fn rope_scaling(&self) -> Option<&Value> {
        self.rope_scaling
            .as_ref()
            .filter(|v| !v.is_null())
            .or(self.rope_parameters.as_ref())
    }
}

/// Reads a family's `config.json` into TransformerLens's config, as `convert_hf_model_config` would (Gemma's, which
/// TransformerLens only knows by official model name, as its `gemma-2b` / `gemma-2-2b` entries with the file's sizes).
pub fn config_from_json(
    family: Family,
    text: &str,
    source: &str,
) -> Result<HookedTransformerConfig> {
    if family == Family::Gpt2 {
        return crate::gpt2::config_from_hf_json(text, source);
    }
    let err = |m: String| config_err(source, m);
    let hf: HfConfig = serde_json::from_str(text).map_err(|e| err(e.to_string()))?;
    let heads = hf.num_attention_heads;
    if heads == 0 || !hf.hidden_size.is_multiple_of(heads) && hf.head_dim.is_none() {
        return Err(err(format!(
            "hidden_size {} is not a multiple of num_attention_heads {heads}",
            hf.hidden_size
        )));
    }
    // The layer count sizes the per-layer attention types below before any weight is read. Each layer has its own
    // tensors, and a safetensors header (at most 100 MB) cannot name a million layers' worth of them.
    if hf.num_hidden_layers > MAX_LAYERS {
        return Err(err(format!(
            "num_hidden_layers {} is more than {MAX_LAYERS}",
            hf.num_hidden_layers
        )));
    }
    let even_split = hf.hidden_size / heads;
    // TransformerLens reads `head_dim` for Mistral, Qwen 3 and Gemma, and `hidden_size / heads` for the others.
    let d_head = match family {
        Family::Mistral | Family::Qwen3 | Family::Gemma | Family::Gemma2 => {
            hf.head_dim.filter(|&d| d > 0).unwrap_or(even_split)
        }
        _ => even_split,
    };
    let kv = hf.num_key_value_heads.unwrap_or(heads);
    // Llama, Qwen 3 and Phi-3 use plain attention when every head has its own key/value head.
    let n_key_value_heads = match family {
        Family::GptNeox | Family::GptJ | Family::Opt => None,
        Family::Llama | Family::Qwen3 | Family::Phi3 if kv == heads => None,
        _ => Some(kv),
    };
    // Hugging Face runs Gemma with `hidden_activation`, and the tanh GELU when it is unset, whatever the legacy
    // `hidden_act` says. TransformerLens's Gemma 1 entries use the exact GELU instead (logits off by ~1e-3);
    // tlens follows Hugging Face (see the book's divergences page).
    let act_name = match family {
        Family::Gemma | Family::Gemma2 => Some(
            hf.hidden_activation
                .as_deref()
                .unwrap_or("gelu_pytorch_tanh"),
        ),
        _ => hf.hidden_act.as_deref(),
    };
    let act_fn = match act_name.unwrap_or("silu") {
        "silu" | "swish" => ActFn::Silu,
        "gelu" => ActFn::Gelu,
        "gelu_new" => ActFn::GeluNew,
        "gelu_fast" => ActFn::GeluFast,
        "gelu_pytorch_tanh" => ActFn::GeluPytorchTanh,
        "relu" => ActFn::Relu,
        other => return Err(err(format!("activation {other:?} is not supported"))),
    };
    let eps = match family {
        Family::GptNeox | Family::GptJ => hf.layer_norm_eps.unwrap_or(1e-5),
        Family::Opt => 1e-5,
        _ => hf.rms_norm_eps.unwrap_or(1e-6),
    };
    let d_mlp = match hf.intermediate_size {
        Some(m) => m,
        None => hf
            .hidden_size
            .checked_mul(4)
            .ok_or_else(|| err(format!("hidden_size {} is too large", hf.hidden_size)))?,
    };
    let mut cfg = HookedTransformerConfig {
        n_heads: heads,
        d_mlp,
        act_fn: Some(act_fn),
        eps,
        normalization_type: Some(if family.layer_norm() {
            NormalizationType::LN
        } else {
            NormalizationType::RMS
        }),
        positional_embedding_type: PositionalEmbeddingType::Rotary,
        rotary_dim: Some(d_head),
        rotary_base: hf.rope_theta().unwrap_or(10000.0),
        n_key_value_heads,
        // Only a LayerNorm model's final norm is affected; TransformerLens sets the flag for these families.
        final_rms: matches!(
            family,
            Family::Llama | Family::Qwen2 | Family::Qwen3 | Family::Gemma | Family::Gemma2
        ),
        gated_mlp: !family.layer_norm(),
        original_architecture: Some(family.architecture().into()),
        model_name: hf._name_or_path.clone().filter(|n| !n.is_empty()),
        ..HookedTransformerConfig::new(
            hf.num_hidden_layers,
            hf.hidden_size,
            hf.max_position_embeddings,
            d_head,
            hf.vocab_size,
        )
        .map_err(|e| err(e.to_string()))?
    };
    match family {
        Family::GptNeox => {
            let pct = hf
                .rotary_pct
                .or_else(|| hf.partial_rotary_factor())
                .unwrap_or(1.0);
            cfg.rotary_dim = Some((pct * d_head as f64).round() as usize);
            cfg.rotary_base = hf.rotary_emb_base.or(hf.rope_theta()).unwrap_or(10000.0);
            cfg.parallel_attn_mlp = hf.use_parallel_residual.unwrap_or(true);
            cfg.default_prepend_bos = false;
        }
        Family::GptJ => {
            cfg.rotary_dim = Some(hf.rotary_dim.unwrap_or(d_head));
            cfg.rotary_adjacent_pairs = true;
            cfg.parallel_attn_mlp = true;
        }
        Family::Opt => {
            if hf.do_layer_norm_before == Some(false) {
                return Err(ModelError::Unsupported(
                    "OPT with do_layer_norm_before = false (post-norm blocks, as OPT-350m)".into(),
                ));
            }
            if let Some(dim) = hf.word_embed_proj_dim.filter(|&d| d != hf.hidden_size) {
                return Err(ModelError::Unsupported(format!(
                    "OPT with word_embed_proj_dim {dim} != hidden_size {} (embedding projections)",
                    hf.hidden_size
                )));
            }
            cfg.positional_embedding_type = PositionalEmbeddingType::Standard;
            cfg.rotary_dim = None;
        }
        Family::Llama => apply_llama3_rope_scaling(&mut cfg, &hf, source)?,
        Family::Qwen2 | Family::Qwen3 => {
            // TransformerLens truncates Qwen's rope_theta to an integer.
            cfg.rotary_base = cfg.rotary_base.trunc();
            cfg.default_prepend_bos = false;
            cfg.use_qk_norm = family == Family::Qwen3;
        }
        Family::Mistral | Family::Phi3 => {
            if let Some(window) = hf.sliding_window.filter(|&w| w > 0) {
                cfg.window_size = Some(window);
                cfg.use_local_attn = true;
                cfg.attn_types = Some(vec![AttnType::Local; cfg.n_layers]);
            }
        }
        Family::Gemma2 => {
            cfg.use_normalization_before_and_after = true;
            cfg.attn_scores_soft_cap = hf.attn_logit_softcapping.filter(|&c| c > 0.0);
            cfg.output_logits_soft_cap = hf.final_logit_softcapping.filter(|&c| c > 0.0);
            if let Some(scalar) = hf.query_pre_attn_scalar {
                cfg.attn_scale = scalar.sqrt();
            }
            if let Some(window) = hf.sliding_window.filter(|&w| w > 0) {
                // Hugging Face's Gemma 2 makes the even layers sliding (or says so in `layer_types`).
                let local = |l: usize| match &hf.layer_types {
                    Some(types) => types.get(l).is_some_and(|t| t == "sliding_attention"),
                    None => l.is_multiple_of(2),
                };
                cfg.window_size = Some(window);
                cfg.use_local_attn = true;
                cfg.attn_types = Some(
                    (0..cfg.n_layers)
                        .map(|l| {
                            if local(l) {
                                AttnType::Local
                            } else {
                                AttnType::Global
                            }
                        })
                        .collect(),
                );
            }
        }
        Family::Gemma | Family::Gpt2 => {}
    }
    if family == Family::Phi3
        && let Some(p) = hf.partial_rotary_factor().filter(|&p| p != 1.0)
    {
        return Err(ModelError::Unsupported(format!(
            "Phi-3 with partial_rotary_factor {p} (TransformerLens turns every dimension)"
        )));
    }
    if !shapes_fit(&cfg) {
        return Err(err(format!(
            "sizes too large: {} heads ({} key/value) of {}, d_model {}, d_mlp {}, n_ctx {}",
            cfg.n_heads,
            cfg.kv_heads(),
            cfg.d_head,
            cfg.d_model,
            cfg.d_mlp,
            cfg.n_ctx
        )));
    }
    cfg.resolved().map_err(|e| err(e.to_string()))
}

/// Whether the weight shapes the conversions compute from the config fit in `usize`: the `(heads + 2·kv)·d_head`
/// rows of a fused qkv, `2·d_mlp` (Phi-3's fused gate/up), `3·d_model` (NeoX's qkv) and `n_ctx + 2` (OPT's positions).
fn shapes_fit(cfg: &HookedTransformerConfig) -> bool {
    let fits = || {
        let kv = cfg.kv_heads().checked_mul(2)?;
        cfg.n_heads.checked_add(kv)?.checked_mul(cfg.d_head)?;
        cfg.d_mlp.checked_mul(2)?;
        cfg.d_model.checked_mul(3)?;
        cfg.n_ctx.checked_add(2)
    };
    fits().is_some()
}

/// Llama 3.1's `rope_scaling` (`rope_type: "llama3"`) as TransformerLens's `_apply_llama3_rope_scaling`; other
/// scaling types are refused rather than silently ignored.
fn apply_llama3_rope_scaling(
    cfg: &mut HookedTransformerConfig,
    hf: &HfConfig,
    source: &str,
) -> Result<()> {
    let Some(scaling) = hf.rope_scaling() else {
        return Ok(());
    };
    let kind = scaling
        .get("rope_type")
        .or_else(|| scaling.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_ascii_lowercase();
    match kind.as_str() {
        "default" => Ok(()),
        "llama3" => {
            let num = |k: &str, d: f64| scaling.get(k).and_then(Value::as_f64).unwrap_or(d);
            cfg.use_ntk_by_parts_rope = true;
            cfg.ntk_original_ctx_len = num(
                "original_max_position_embeddings",
                hf.max_position_embeddings as f64,
            ) as usize;
            cfg.ntk_by_parts_low_freq_factor = num("low_freq_factor", 1.0);
            cfg.ntk_by_parts_high_freq_factor = num("high_freq_factor", 4.0);
            cfg.ntk_by_parts_factor = num("factor", 1.0);
            Ok(())
        }
        other => Err(config_err(
            source,
            format!("rope_scaling type {other:?} is not supported (tlens reads \"llama3\")"),
        )),
    }
}

/// Converts a family's Hugging Face state dict into a TransformerLens state dict.
pub fn convert_weights(
    family: Family,
    cfg: &HookedTransformerConfig,
    hf: TensorFile,
) -> Result<TensorFile> {
    match family {
        Family::Gpt2 => crate::gpt2::convert_weights(cfg, hf),
        Family::GptNeox => convert_neox(cfg, hf),
        Family::GptJ => convert_gptj(cfg, hf),
        Family::Opt => convert_opt(cfg, hf),
        _ => convert_llama_like(family, cfg, hf),
    }
}

/// The shapes a conversion needs.
struct Dims {
    d: usize,
    h: usize,
    kv: usize,
    dh: usize,
    m: usize,
    v: usize,
}

impl Dims {
    fn of(cfg: &HookedTransformerConfig) -> Self {
        Self {
            d: cfg.d_model,
            h: cfg.n_heads,
            kv: cfg.kv_heads(),
            dh: cfg.d_head,
            m: cfg.d_mlp,
            v: cfg.d_vocab,
        }
    }
}

/// Drops the buffers older checkpoints carry that are not parameters: rotary frequencies (`rotary_emb.inv_freq`)
/// and GPT-2's and GPT-NeoX's causal masks (`attn.bias`, `attention.masked_bias`, ...).
pub(crate) fn drop_buffers(hf: &mut TensorFile) {
    const BUFFERS: [&str; 5] = [
        ".inv_freq",
        ".attn.bias",
        ".attn.masked_bias",
        ".attention.bias",
        ".attention.masked_bias",
    ];
    hf.retain(|k| !BUFFERS.iter().any(|b| k.ends_with(b)));
}

/// Llama, Mistral, Qwen 2/3, Phi-3 and Gemma 1/2.
fn convert_llama_like(
    family: Family,
    cfg: &HookedTransformerConfig,
    mut hf: TensorFile,
) -> Result<TensorFile> {
    drop_buffers(&mut hf);
    let Dims { d, h, kv, dh, m, v } = Dims::of(cfg);
    let gqa = if cfg.n_key_value_heads.is_some() {
        "_"
    } else {
        ""
    };
    // Gemma's RMS norms multiply by `1 + w`; TransformerLens stores `1 + w` (in f32).
    let norm = |hf: &mut TensorFile, name: &str| -> Result<TensorData> {
        let w = hf.take(name, &[d])?;
        Ok(if family.is_gemma() {
            map(&w, |x| x + 1.0)
        } else {
            w
        })
    };
    let mut tl = BTreeMap::new();
    let embed = hf.take("model.embed_tokens.weight", &[v, d])?;
    let unembed = match hf.contains("lm_head.weight") {
        true => hf.take("lm_head.weight", &[v, d])?,
        false => embed.clone(),
    };
    let embed = if family.is_gemma() {
        // Gemma scales the embedding by √d_model (in the weights' dtype, f32 here).
        let scale = (d as f64).sqrt() as f32;
        map(&embed, |x| x * scale)
    } else {
        embed
    };
    tl.insert("embed.W_E".to_string(), embed);
    for l in 0..cfg.n_layers {
        let p = |s: &str| format!("model.layers.{l}.{s}");
        let t = |s: &str| format!("blocks.{l}.{s}");
        tl.insert(t("ln1.w"), norm(&mut hf, &p("input_layernorm.weight"))?);
        let (w_q, w_k, w_v) = if family == Family::Phi3 {
            let qkv = hf.take(&p("self_attn.qkv_proj.weight"), &[(h + 2 * kv) * dh, d])?;
            (
                rows(&qkv, 0, h * dh),
                rows(&qkv, h * dh, kv * dh),
                rows(&qkv, (h + kv) * dh, kv * dh),
            )
        } else {
            (
                hf.take(&p("self_attn.q_proj.weight"), &[h * dh, d])?,
                hf.take(&p("self_attn.k_proj.weight"), &[kv * dh, d])?,
                hf.take(&p("self_attn.v_proj.weight"), &[kv * dh, d])?,
            )
        };
        tl.insert(t("attn.W_Q"), heads_in(&w_q, h));
        tl.insert(t(&format!("attn.{gqa}W_K")), heads_in(&w_k, kv));
        tl.insert(t(&format!("attn.{gqa}W_V")), heads_in(&w_v, kv));
        let mut bias = |name: &str, heads: usize| -> Result<TensorData> {
            let key = p(&format!("self_attn.{name}_proj.bias"));
            Ok(match hf.contains(&key) {
                true => reshaped(hf.take(&key, &[heads * dh])?, vec![heads, dh]),
                false => zeros(vec![heads, dh]),
            })
        };
        tl.insert(t("attn.b_Q"), bias("q", h)?);
        tl.insert(t(&format!("attn.{gqa}b_K")), bias("k", kv)?);
        tl.insert(t(&format!("attn.{gqa}b_V")), bias("v", kv)?);
        if cfg.use_qk_norm {
            for which in ["q", "k"] {
                let w = hf.take(&p(&format!("self_attn.{which}_norm.weight")), &[dh])?;
                tl.insert(t(&format!("attn.{which}_norm.w")), w);
            }
        }
        let w_o = hf.take(&p("self_attn.o_proj.weight"), &[d, h * dh])?;
        tl.insert(t("attn.W_O"), reshaped(transpose(&w_o), vec![h, dh, d]));
        tl.insert(t("attn.b_O"), zeros(vec![d]));
        if family == Family::Gemma2 {
            tl.insert(
                t("ln1_post.w"),
                norm(&mut hf, &p("post_attention_layernorm.weight"))?,
            );
            tl.insert(
                t("ln2.w"),
                norm(&mut hf, &p("pre_feedforward_layernorm.weight"))?,
            );
            tl.insert(
                t("ln2_post.w"),
                norm(&mut hf, &p("post_feedforward_layernorm.weight"))?,
            );
        } else {
            tl.insert(
                t("ln2.w"),
                norm(&mut hf, &p("post_attention_layernorm.weight"))?,
            );
        }
        let (w_gate, w_in) = if family == Family::Phi3 {
            let gate_up = transpose(&hf.take(&p("mlp.gate_up_proj.weight"), &[2 * m, d])?);
            (columns(&gate_up, 0, m), columns(&gate_up, m, m))
        } else {
            (
                transpose(&hf.take(&p("mlp.gate_proj.weight"), &[m, d])?),
                transpose(&hf.take(&p("mlp.up_proj.weight"), &[m, d])?),
            )
        };
        tl.insert(t("mlp.W_gate"), w_gate);
        tl.insert(t("mlp.W_in"), w_in);
        tl.insert(t("mlp.b_in"), zeros(vec![m]));
        tl.insert(
            t("mlp.W_out"),
            transpose(&hf.take(&p("mlp.down_proj.weight"), &[d, m])?),
        );
        tl.insert(t("mlp.b_out"), zeros(vec![d]));
    }
    tl.insert(
        "ln_final.w".to_string(),
        norm(&mut hf, "model.norm.weight")?,
    );
    tl.insert("unembed.W_U".to_string(), transpose(&unembed));
    tl.insert("unembed.b_U".to_string(), zeros(vec![v]));
    finish(hf, tl)
}

/// GPT-NeoX / Pythia: `query_key_value` interleaves the heads (`(head, qkv, d_head)` rows).
fn convert_neox(cfg: &HookedTransformerConfig, mut hf: TensorFile) -> Result<TensorFile> {
    drop_buffers(&mut hf);
    let Dims { d, h, dh, m, v, .. } = Dims::of(cfg);
    let mut tl = BTreeMap::new();
    tl.insert(
        "embed.W_E".to_string(),
        hf.take("gpt_neox.embed_in.weight", &[v, d])?,
    );
    for l in 0..cfg.n_layers {
        let p = |s: &str| format!("gpt_neox.layers.{l}.{s}");
        let t = |s: &str| format!("blocks.{l}.{s}");
        for (ours, theirs) in [
            ("ln1", "input_layernorm"),
            ("ln2", "post_attention_layernorm"),
        ] {
            layer_norm(&mut hf, &mut tl, &p(theirs), t(ours), d)?;
        }
        let qkv = hf.take(&p("attention.query_key_value.weight"), &[3 * d, d])?;
        let qkv_bias = hf.take(&p("attention.query_key_value.bias"), &[3 * d])?;
        let (w, b) = (values(&qkv), values(&qkv_bias));
        for (i, name) in ["Q", "K", "V"].iter().enumerate() {
            // Row `head·3·dh + i·dh + e` of the fused weight is dimension `e` of head `head`'s q, k or v.
            let head_rows: Vec<f32> = (0..h)
                .flat_map(|head| {
                    let start = (head * 3 + i) * dh * d;
                    w[start..start + dh * d].iter().copied()
                })
                .collect();
            tl.insert(
                t(&format!("attn.W_{name}")),
                heads_in(&TensorData::new(head_rows, [h * dh, d]), h),
            );
            let head_bias: Vec<f32> = (0..h)
                .flat_map(|head| {
                    let start = (head * 3 + i) * dh;
                    b[start..start + dh].iter().copied()
                })
                .collect();
            tl.insert(
                t(&format!("attn.b_{name}")),
                TensorData::new(head_bias, [h, dh]),
            );
        }
        let w_o = hf.take(&p("attention.dense.weight"), &[d, d])?;
        tl.insert(t("attn.W_O"), reshaped(transpose(&w_o), vec![h, dh, d]));
        tl.insert(t("attn.b_O"), hf.take(&p("attention.dense.bias"), &[d])?);
        linear_mlp(
            &mut hf,
            &mut tl,
            l,
            &p("mlp.dense_h_to_4h"),
            &p("mlp.dense_4h_to_h"),
            (d, m),
        )?;
    }
    layer_norm(
        &mut hf,
        &mut tl,
        "gpt_neox.final_layer_norm",
        "ln_final".into(),
        d,
    )?;
    let unembed = hf.take("embed_out.weight", &[v, d])?;
    tl.insert("unembed.W_U".to_string(), transpose(&unembed));
    tl.insert("unembed.b_U".to_string(), zeros(vec![v]));
    finish(hf, tl)
}

/// GPT-J: one LayerNorm (`ln_1`) feeds both attention and MLP, so it is both `ln1` and `ln2`; the unembedding has a
/// bias.
fn convert_gptj(cfg: &HookedTransformerConfig, mut hf: TensorFile) -> Result<TensorFile> {
    drop_buffers(&mut hf);
    let Dims { d, h, dh, m, v, .. } = Dims::of(cfg);
    let mut tl = BTreeMap::new();
    tl.insert(
        "embed.W_E".to_string(),
        hf.take("transformer.wte.weight", &[v, d])?,
    );
    for l in 0..cfg.n_layers {
        let p = |s: &str| format!("transformer.h.{l}.{s}");
        let t = |s: &str| format!("blocks.{l}.{s}");
        let (w, b) = (
            hf.take(&p("ln_1.weight"), &[d])?,
            hf.take(&p("ln_1.bias"), &[d])?,
        );
        tl.insert(t("ln2.w"), w.clone());
        tl.insert(t("ln2.b"), b.clone());
        tl.insert(t("ln1.w"), w);
        tl.insert(t("ln1.b"), b);
        for (name, proj) in [("Q", "q_proj"), ("K", "k_proj"), ("V", "v_proj")] {
            let weight = hf.take(&p(&format!("attn.{proj}.weight")), &[h * dh, d])?;
            tl.insert(t(&format!("attn.W_{name}")), heads_in(&weight, h));
            tl.insert(t(&format!("attn.b_{name}")), zeros(vec![h, dh]));
        }
        let w_o = hf.take(&p("attn.out_proj.weight"), &[d, h * dh])?;
        tl.insert(t("attn.W_O"), reshaped(transpose(&w_o), vec![h, dh, d]));
        tl.insert(t("attn.b_O"), zeros(vec![d]));
        linear_mlp(
            &mut hf,
            &mut tl,
            l,
            &p("mlp.fc_in"),
            &p("mlp.fc_out"),
            (d, m),
        )?;
    }
    layer_norm(&mut hf, &mut tl, "transformer.ln_f", "ln_final".into(), d)?;
    tl.insert(
        "unembed.W_U".to_string(),
        transpose(&hf.take("lm_head.weight", &[v, d])?),
    );
    tl.insert("unembed.b_U".to_string(), hf.take("lm_head.bias", &[v])?);
    finish(hf, tl)
}

/// OPT: learned positions stored with an offset of 2 rows; every projection has a bias.
fn convert_opt(cfg: &HookedTransformerConfig, mut hf: TensorFile) -> Result<TensorFile> {
    drop_buffers(&mut hf);
    let Dims { d, h, dh, m, v, .. } = Dims::of(cfg);
    let mut tl = BTreeMap::new();
    let embed = hf.take("model.decoder.embed_tokens.weight", &[v, d])?;
    let unembed = match hf.contains("lm_head.weight") {
        true => hf.take("lm_head.weight", &[v, d])?,
        false => embed.clone(),
    };
    tl.insert("embed.W_E".to_string(), embed);
    let positions = hf.take("model.decoder.embed_positions.weight", &[cfg.n_ctx + 2, d])?;
    tl.insert(
        "pos_embed.W_pos".to_string(),
        rows(&positions, 2, cfg.n_ctx),
    );
    for l in 0..cfg.n_layers {
        let p = |s: &str| format!("model.decoder.layers.{l}.{s}");
        let t = |s: &str| format!("blocks.{l}.{s}");
        for (ours, theirs) in [("ln1", "self_attn_layer_norm"), ("ln2", "final_layer_norm")] {
            layer_norm(&mut hf, &mut tl, &p(theirs), t(ours), d)?;
        }
        for (name, proj) in [("Q", "q_proj"), ("K", "k_proj"), ("V", "v_proj")] {
            let weight = hf.take(&p(&format!("self_attn.{proj}.weight")), &[h * dh, d])?;
            tl.insert(t(&format!("attn.W_{name}")), heads_in(&weight, h));
            let bias = hf.take(&p(&format!("self_attn.{proj}.bias")), &[h * dh])?;
            tl.insert(t(&format!("attn.b_{name}")), reshaped(bias, vec![h, dh]));
        }
        let w_o = hf.take(&p("self_attn.out_proj.weight"), &[d, h * dh])?;
        tl.insert(t("attn.W_O"), reshaped(transpose(&w_o), vec![h, dh, d]));
        tl.insert(t("attn.b_O"), hf.take(&p("self_attn.out_proj.bias"), &[d])?);
        linear_mlp(&mut hf, &mut tl, l, &p("fc1"), &p("fc2"), (d, m))?;
    }
    layer_norm(
        &mut hf,
        &mut tl,
        "model.decoder.final_layer_norm",
        "ln_final".into(),
        d,
    )?;
    tl.insert("unembed.W_U".to_string(), transpose(&unembed));
    tl.insert("unembed.b_U".to_string(), zeros(vec![v]));
    finish(hf, tl)
}

/// An MLP of two `nn.Linear`s with biases (`fc_in`: `[m, d]`, `fc_out`: `[d, m]`) as block `l`'s `W_in`, `b_in`,
/// `W_out`, `b_out`.
fn linear_mlp(
    hf: &mut TensorFile,
    tl: &mut BTreeMap<String, TensorData>,
    l: usize,
    fc_in: &str,
    fc_out: &str,
    (d, m): (usize, usize),
) -> Result<()> {
    let t = |s: &str| format!("blocks.{l}.mlp.{s}");
    tl.insert(
        t("W_in"),
        transpose(&hf.take(&format!("{fc_in}.weight"), &[m, d])?),
    );
    tl.insert(t("b_in"), hf.take(&format!("{fc_in}.bias"), &[m])?);
    tl.insert(
        t("W_out"),
        transpose(&hf.take(&format!("{fc_out}.weight"), &[d, m])?),
    );
    tl.insert(t("b_out"), hf.take(&format!("{fc_out}.bias"), &[d])?);
    Ok(())
}

/// A LayerNorm's `{theirs}.weight` and `{theirs}.bias` as TransformerLens's `{ours}.w` and `{ours}.b`.
fn layer_norm(
    hf: &mut TensorFile,
    tl: &mut BTreeMap<String, TensorData>,
    theirs: &str,
    ours: String,
    d: usize,
) -> Result<()> {
    tl.insert(
        format!("{ours}.w"),
        hf.take(&format!("{theirs}.weight"), &[d])?,
    );
    tl.insert(
        format!("{ours}.b"),
        hf.take(&format!("{theirs}.bias"), &[d])?,
    );
    Ok(())
}

/// Fails on a Hugging Face tensor nothing converted, else returns the TransformerLens state dict.
pub(crate) fn finish(hf: TensorFile, tl: BTreeMap<String, TensorData>) -> Result<TensorFile> {
    let path = hf.path.clone();
    hf.finish()?;
    Ok(TensorFile::from_tensors(path, tl))
}

pub(crate) fn values(t: &TensorData) -> Vec<f32> {
    t.to_vec::<f32>().expect("weights are read as f32")
}

pub(crate) fn reshaped(t: TensorData, shape: Vec<usize>) -> TensorData {
    TensorData::new(values(&t), shape)
}

fn zeros(shape: Vec<usize>) -> TensorData {
    let n = shape.iter().product();
    TensorData::new(vec![0f32; n], shape)
}

fn map(t: &TensorData, f: impl Fn(f32) -> f32) -> TensorData {
    TensorData::new(
        values(t).into_iter().map(f).collect::<Vec<_>>(),
        t.shape.clone(),
    )
}

/// Rows `start..start+len` of a 2-D tensor.
pub(crate) fn rows(t: &TensorData, start: usize, len: usize) -> TensorData {
    let cols = t.shape[1];
    TensorData::new(
        values(t)[start * cols..(start + len) * cols].to_vec(),
        [len, cols],
    )
}

/// Columns `start..start+len` of a 2-D tensor.
fn columns(t: &TensorData, start: usize, len: usize) -> TensorData {
    let cols = t.shape[1];
    let flat = values(t);
    let out = flat
        .chunks_exact(cols)
        .flat_map(|row| row[start..start + len].iter().copied())
        .collect::<Vec<_>>();
    TensorData::new(out, [t.shape[0], len])
}

pub(crate) fn transpose(t: &TensorData) -> TensorData {
    let (r, c) = (t.shape[0], t.shape[1]);
    let flat = values(t);
    let out = (0..c)
        .flat_map(|j| (0..r).map(move |i| (i, j)))
        .map(|(i, j)| flat[i * c + j])
        .collect::<Vec<_>>();
    TensorData::new(out, [c, r])
}

/// A `nn.Linear` weight `[heads·dh, d]` as TransformerLens's `[heads, d, dh]` (`"(n h) m -> n m h"`).
fn heads_in(t: &TensorData, heads: usize) -> TensorData {
    let (rows, d) = (t.shape[0], t.shape[1]);
    let dh = rows / heads;
    let flat = values(t);
    let mut out = Vec::with_capacity(rows * d);
    for head in 0..heads {
        for m in 0..d {
            out.extend((0..dh).map(|e| flat[(head * dh + e) * d + m]));
        }
    }
    TensorData::new(out, [heads, d, dh])
}
