//! [`HookedTransformerConfig`]: TransformerLens's model configuration, with its field names and defaults.

use serde::{Deserialize, Serialize};

use crate::error::{CacheError, Result};

/// The normalisation a model applies before attention, before the MLP and at the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NormalizationType {
    /// LayerNorm with weight and bias.
    LN,
    /// LayerNorm without weight and bias (what `fold_ln` leaves of `LN`).
    LNPre,
    /// RMSNorm with a weight.
    RMS,
    /// RMSNorm without a weight.
    RMSPre,
}

impl NormalizationType {
    /// Whether the norm subtracts the mean (LayerNorm) or not (RMSNorm).
    pub fn centers(self) -> bool {
        matches!(self, Self::LN | Self::LNPre)
    }

    /// Whether the norm has learned parameters (a weight, and for LN a bias).
    pub fn has_weights(self) -> bool {
        matches!(self, Self::LN | Self::RMS)
    }

    /// The weight-free form that `fold_ln` turns this norm into.
    pub fn folded(self) -> Self {
        if self.centers() {
            Self::LNPre
        } else {
            Self::RMSPre
        }
    }
}

/// The MLP's activation function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActFn {
    /// `max(x, 0)`.
    Relu,
    /// Exact (erf) GELU.
    Gelu,
    /// GPT-2's tanh approximation of GELU.
    GeluNew,
    /// The same tanh approximation written as in `gelu_fast`.
    GeluFast,
    /// PyTorch's `gelu(approximate="tanh")`; the same function as `gelu_new`.
    GeluPytorchTanh,
    /// `x·sigmoid(x)`.
    Silu,
    /// `x·softmax(x)` followed by a LayerNorm over the MLP (`mlp.ln`).
    SoluLn,
}

/// TransformerLens's "derive it" values (`-1`, `null`, absent) read as `0`, which [`HookedTransformerConfig::resolved`]
/// replaces by the derived value; a resolved config never holds one.
fn derived<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<usize, D::Error> {
    let v: Option<i64> = Option::deserialize(d)?;
    Ok(v.filter(|&n| n >= 0).map_or(0, |n| n as usize))
}

/// A soft cap: TransformerLens's `-1` (any value that is not positive) or `null` is no cap.
fn soft_cap_de<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<f64>, D::Error> {
    let v: Option<f64> = Option::deserialize(d)?;
    Ok(v.filter(|&c| c > 0.0))
}

/// A soft cap as TransformerLens writes it: `-1` for none.
fn soft_cap_ser<S: serde::Serializer>(
    cap: &Option<f64>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_f64(cap.unwrap_or(-1.0))
}
fn default_eps() -> f64 {
    1e-5
}
fn default_true() -> bool {
    true
}
fn default_act_fn() -> Option<ActFn> {
    Some(ActFn::Relu)
}
fn default_norm() -> Option<NormalizationType> {
    Some(NormalizationType::LN)
}
fn default_rotary_base() -> f64 {
    10000.0
}
fn default_ntk_factor() -> f64 {
    8.0
}
fn default_ntk_low() -> f64 {
    1.0
}
fn default_ntk_high() -> f64 {
    4.0
}
fn default_ntk_ctx() -> usize {
    8192
}

/// How positions enter the model (TransformerLens's `positional_embedding_type`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PositionalEmbeddingType {
    /// A learned `W_pos` added to the token embedding (`hook_pos_embed`).
    #[default]
    Standard,
    /// Rotary embeddings applied to queries and keys (`attn.hook_rot_q` / `attn.hook_rot_k`), no `W_pos`.
    Rotary,
}

/// Which keys a query may attend to (TransformerLens's `attention_dir`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttentionDir {
    /// Keys at or before the query (language models).
    #[default]
    Causal,
    /// Every key (encoders; not supported by the forward pass).
    Bidirectional,
}

/// The MLP's form, resolved from `act_fn` and `gated_mlp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MlpKind {
    /// `post = act(x·W_in + b_in)`.
    Standard(ActFn),
    /// `post = act(x·W_gate) * (x·W_in) + b_in` (SwiGLU, GeGLU; TransformerLens's `GatedMLP`).
    Gated(ActFn),
    /// `post = LN(x·softmax(x))` over the MLP width, with `x = x·W_in + b_in` (`act_fn = solu_ln`).
    Solu,
}

/// How a block combines attention and MLP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockKind {
    /// Attention only (`attn_only`).
    AttnOnly,
    /// The MLP reads the stream after attention (`hook_resid_mid`).
    Sequential,
    /// Attention and MLP both read the block's input (`parallel_attn_mlp`: GPT-J, GPT-NeoX).
    Parallel,
}

/// Whether a layer's attention sees every earlier key or only the last `window_size` (TransformerLens's
/// `attn_types`, as Gemma 2 alternates them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttnType {
    /// Every key up to the query.
    Global,
    /// The `window_size` keys up to and including the query.
    Local,
}

/// TransformerLens's `HookedTransformerConfig`, resolved: field names, meanings and defaults as in TransformerLens,
/// read and written as JSON in those names (fields tlens does not model are ignored on read), but typed — the
/// `-1` / `None` "derive it" values TransformerLens keeps (`n_heads`, `d_mlp`, `d_vocab_out`, `attn_scale`) are
/// filled when the config is read, options are enums, and soft caps are `Option`s.
///
/// ```
/// use tlens_cache_core::HookedTransformerConfig;
/// let cfg = HookedTransformerConfig::from_json(r#"{"n_layers": 2, "d_model": 32, "n_ctx": 16, "d_head": 8, "d_vocab": 50}"#).unwrap();
/// assert_eq!((cfg.n_heads, cfg.d_mlp, cfg.d_vocab_out), (4, 128, 50));
/// assert_eq!((cfg.attn_scale, cfg.attn_scores_soft_cap), (8f64.sqrt(), None));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HookedTransformerConfig {
    /// Number of transformer blocks.
    pub n_layers: usize,
    /// Width of the residual stream.
    pub d_model: usize,
    /// Longest sequence the model accepts.
    pub n_ctx: usize,
    /// Width of one attention head.
    pub d_head: usize,
    /// Number of heads (TransformerLens's `-1`: `d_model / d_head`).
    #[serde(default, deserialize_with = "derived")]
    pub n_heads: usize,
    /// Width of the MLP (absent in TransformerLens: `4·d_model`).
    #[serde(default, deserialize_with = "derived")]
    pub d_mlp: usize,
    /// Vocabulary size (must be given: tlens has no tokenizer to take it from when reading a config).
    #[serde(default, deserialize_with = "derived")]
    pub d_vocab: usize,
    /// Output vocabulary size (TransformerLens's `-1`: `d_vocab`).
    #[serde(default, deserialize_with = "derived")]
    pub d_vocab_out: usize,
    /// The MLP activation.
    #[serde(default = "default_act_fn")]
    pub act_fn: Option<ActFn>,
    /// Epsilon of every norm.
    #[serde(default = "default_eps")]
    pub eps: f64,
    /// The norm type; `null` means no normalisation.
    #[serde(default = "default_norm")]
    pub normalization_type: Option<NormalizationType>,
    /// Attention-only blocks (no MLP, no `resid_mid`).
    #[serde(default)]
    pub attn_only: bool,
    /// Cache the per-head outputs (`attn.hook_result`) during the forward pass.
    #[serde(default)]
    pub use_attn_result: bool,
    /// Divide attention scores by `attn_scale`.
    #[serde(default = "default_true")]
    pub use_attn_scale: bool,
    /// The attention divisor (TransformerLens's `-1`: `sqrt(d_head)`).
    #[serde(default = "neg_one_f")]
    pub attn_scale: f64,
    /// Also divide the scores of layer `l` by `l + 1` (as some GPT-2 variants do).
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: bool,
    /// How positions enter the model.
    #[serde(default)]
    pub positional_embedding_type: PositionalEmbeddingType,
    /// Causal or bidirectional attention; tlens runs causal models.
    #[serde(default)]
    pub attention_dir: AttentionDir,
    /// How many of each head's dimensions rotary embeddings turn; absent means all of `d_head`.
    #[serde(default)]
    pub rotary_dim: Option<usize>,
    /// The rotary base (`rope_theta`).
    #[serde(default = "default_rotary_base")]
    pub rotary_base: f64,
    /// Rotate adjacent pairs `(0, 1), (2, 3), ...` (GPT-J) instead of the two halves (GPT-NeoX, Llama).
    #[serde(default)]
    pub rotary_adjacent_pairs: bool,
    /// Llama 3.1's "NTK by parts" frequency scaling (`rope_scaling` of type `llama3`).
    #[serde(default, rename = "use_NTK_by_parts_rope")]
    pub use_ntk_by_parts_rope: bool,
    /// NTK-by-parts: the overall `factor`.
    #[serde(default = "default_ntk_factor", rename = "NTK_by_parts_factor")]
    pub ntk_by_parts_factor: f64,
    /// NTK-by-parts: `low_freq_factor`.
    #[serde(default = "default_ntk_low", rename = "NTK_by_parts_low_freq_factor")]
    pub ntk_by_parts_low_freq_factor: f64,
    /// NTK-by-parts: `high_freq_factor`.
    #[serde(default = "default_ntk_high", rename = "NTK_by_parts_high_freq_factor")]
    pub ntk_by_parts_high_freq_factor: f64,
    /// NTK-by-parts: `original_max_position_embeddings`.
    #[serde(default = "default_ntk_ctx", rename = "NTK_original_ctx_len")]
    pub ntk_original_ctx_len: usize,
    /// Norms after attention and after the MLP too (`ln1_post`, `ln2_post`: Gemma 2).
    #[serde(default)]
    pub use_normalization_before_and_after: bool,
    /// The window of local attention layers.
    #[serde(default)]
    pub window_size: Option<usize>,
    /// Whether some layers attend locally (`attn_types`).
    #[serde(default)]
    pub use_local_attn: bool,
    /// Each layer's attention type, when `use_local_attn`.
    #[serde(default)]
    pub attn_types: Option<Vec<AttnType>>,
    /// An RMS norm over each head's queries and keys before rotary (`attn.q_ln`, `attn.k_ln`: Qwen 3).
    #[serde(default)]
    pub use_qk_norm: bool,
    /// Prepend the BOS token when tokenizing, unless told otherwise.
    #[serde(default = "default_true")]
    pub default_prepend_bos: bool,
    /// Name of the architecture the weights came from, if any.
    #[serde(default)]
    pub original_architecture: Option<String>,
    /// Name of the model, if any.
    #[serde(default)]
    pub model_name: Option<String>,
    /// The final norm is RMS although the blocks' may be LN (Llama-style models set it with RMS blocks too).
    #[serde(default)]
    pub final_rms: bool,
    /// Attention and MLP both read the block's input and write to its output (GPT-J, GPT-NeoX/Pythia): no
    /// `hook_resid_mid`.
    #[serde(default)]
    pub parallel_attn_mlp: bool,
    /// A gated MLP: `post = act(x·W_gate) * (x·W_in)` (`hook_pre` is the gate, `hook_pre_linear` the linear part).
    #[serde(default)]
    pub gated_mlp: bool,
    /// Separate q/k/v input hooks (not supported by tlens; must be false).
    #[serde(default)]
    pub use_split_qkv_input: bool,
    /// `hook_mlp_in` (not supported by tlens; must be false).
    #[serde(default)]
    pub use_hook_mlp_in: bool,
    /// `hook_attn_in` (not supported by tlens; must be false).
    #[serde(default)]
    pub use_attn_in: bool,
    /// `hook_tokens` (not supported by tlens; must be false).
    #[serde(default)]
    pub use_hook_tokens: bool,
    /// Grouped-query attention: the number of key/value heads (each serves `n_heads / n_key_value_heads` query
    /// heads); absent means one per query head.
    #[serde(default)]
    pub n_key_value_heads: Option<usize>,
    /// A norm right after the embedding (not supported by tlens; must be false).
    #[serde(default)]
    pub post_embedding_ln: bool,
    /// Soft cap on attention scores, `cap·tanh(scores / cap)` (TransformerLens's `-1`: none).
    #[serde(
        default,
        deserialize_with = "soft_cap_de",
        serialize_with = "soft_cap_ser"
    )]
    pub attn_scores_soft_cap: Option<f64>,
    /// Soft cap on output logits (TransformerLens's `-1`: none).
    #[serde(
        default,
        deserialize_with = "soft_cap_de",
        serialize_with = "soft_cap_ser"
    )]
    pub output_logits_soft_cap: Option<f64>,
}

fn neg_one_f() -> f64 {
    -1.0
}

impl HookedTransformerConfig {
    /// A config with the required fields and TransformerLens's defaults for everything else.
    pub fn new(
        n_layers: usize,
        d_model: usize,
        n_ctx: usize,
        d_head: usize,
        d_vocab: usize,
    ) -> Result<Self> {
        let json = serde_json::json!({"n_layers": n_layers, "d_model": d_model, "n_ctx": n_ctx, "d_head": d_head, "d_vocab": d_vocab});
        Self::from_json(&json.to_string())
    }

    /// Reads a config from TransformerLens-named JSON and fills in the derived defaults.
    pub fn from_json(json: &str) -> Result<Self> {
        let cfg: Self = serde_json::from_str(json)
            .map_err(|e| CacheError::InvalidArgument(format!("config: {e}")))?;
        cfg.resolved()
    }

    /// Writes the config as TransformerLens-named JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a config always serialises")
    }

    /// Fills the values TransformerLens derives (its `__post_init__`), and checks the result.
    pub fn resolved(mut self) -> Result<Self> {
        let bad = |m: String| Err(CacheError::InvalidArgument(format!("config: {m}")));
        if self.n_heads == 0 {
            if self.d_head == 0 || !self.d_model.is_multiple_of(self.d_head) {
                return bad(format!(
                    "d_model {} is not a multiple of d_head {}",
                    self.d_model, self.d_head
                ));
            }
            self.n_heads = self.d_model / self.d_head;
        }
        if self.d_mlp == 0 {
            self.d_mlp = match self.d_model.checked_mul(4) {
                Some(m) => m,
                None => return bad(format!("d_model {} is too large", self.d_model)),
            };
        }
        if self.d_vocab == 0 {
            return bad(
                "d_vocab must be given (tlens has no tokenizer to take it from here)".into(),
            );
        }
        if self.d_vocab_out == 0 {
            self.d_vocab_out = self.d_vocab;
        }
        if self.attn_scale < 0.0 {
            self.attn_scale = (self.d_head as f64).sqrt();
        }
        if self.n_layers == 0
            || self.d_model == 0
            || self.n_ctx == 0
            || self.d_head == 0
            || self.n_heads == 0
        {
            return bad("n_layers, d_model, n_ctx, d_head and n_heads must be positive".into());
        }
        if !self.attn_only && self.act_fn.is_none() {
            return bad("act_fn is required for a model with MLPs".into());
        }
        let kv = self.kv_heads();
        if kv == 0 || !self.n_heads.is_multiple_of(kv) {
            return bad(format!(
                "n_heads {} is not a multiple of n_key_value_heads {kv}",
                self.n_heads
            ));
        }
        let rotary = self.rotary_dims();
        if self.positional_embedding_type == PositionalEmbeddingType::Rotary
            && (rotary == 0 || rotary > self.d_head || !rotary.is_multiple_of(2))
        {
            return bad(format!(
                "rotary_dim {rotary} must be even and in 2..={}",
                self.d_head
            ));
        }
        if let Some(types) = &self.attn_types
            && types.len() != self.n_layers
        {
            return bad(format!(
                "attn_types has {} entries for {} layers",
                types.len(),
                self.n_layers
            ));
        }
        // Values that would make every output NaN or ±∞: a zero epsilon divides a constant row by zero, a zero scale
        // divides every score by zero.
        let positive = [
            ("layer_norm_epsilon (eps)", Some(self.eps)),
            ("attn_scale", Some(self.attn_scale)),
            ("rotary_base", Some(self.rotary_base)),
            ("attn_scores_soft_cap", self.attn_scores_soft_cap),
            ("output_logits_soft_cap", self.output_logits_soft_cap),
        ];
        if let Some((name, Some(v))) = positive
            .into_iter()
            .find(|(_, v)| v.is_some_and(|v| !(v.is_finite() && v > 0.0)))
        {
            return bad(format!("{name} must be a positive finite number, not {v}"));
        }
        if self.use_local_attn && self.window_size.is_none_or(|w| w == 0) {
            return bad("use_local_attn needs a positive window_size".into());
        }
        Ok(self)
    }

    /// Number of key/value heads: `n_key_value_heads`, or `n_heads` without grouped-query attention.
    pub fn kv_heads(&self) -> usize {
        self.n_key_value_heads.unwrap_or(self.n_heads)
    }

    /// How many dimensions of each head rotary embeddings turn (`rotary_dim`, default `d_head`).
    pub fn rotary_dims(&self) -> usize {
        self.rotary_dim.unwrap_or(self.d_head)
    }

    /// Whether the model adds a learned positional embedding (`W_pos`, `hook_pos_embed`).
    pub fn has_pos_embed(&self) -> bool {
        self.positional_embedding_type == PositionalEmbeddingType::Standard
    }

    /// The key window of `layer`'s attention: `Some(window_size)` for a local layer, `None` for a global one.
    pub fn attn_window(&self, layer: usize) -> Option<usize> {
        let local = self.use_local_attn
            && self
                .attn_types
                .as_ref()
                .is_some_and(|t| t.get(layer) == Some(&AttnType::Local));
        local.then_some(self.window_size).flatten()
    }

    /// Whether the blocks have MLPs.
    pub fn has_mlp(&self) -> bool {
        !self.attn_only
    }

    /// How the blocks combine attention and MLP.
    pub fn block_kind(&self) -> BlockKind {
        match (self.attn_only, self.parallel_attn_mlp) {
            (true, _) => BlockKind::AttnOnly,
            (false, false) => BlockKind::Sequential,
            (false, true) => BlockKind::Parallel,
        }
    }

    /// The MLP's form; `None` for attention-only models (a resolved config with MLPs always has an `act_fn`).
    pub fn mlp_kind(&self) -> Option<MlpKind> {
        let act = self.act_fn.filter(|_| self.has_mlp())?;
        Some(match (act, self.gated_mlp) {
            (ActFn::SoluLn, _) => MlpKind::Solu,
            (act, true) => MlpKind::Gated(act),
            (act, false) => MlpKind::Standard(act),
        })
    }
}
