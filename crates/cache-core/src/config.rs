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

fn neg_one() -> i64 {
    -1
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
fn default_pos() -> String {
    "standard".to_string()
}
fn default_attention_dir() -> String {
    "causal".to_string()
}

/// TransformerLens's `HookedTransformerConfig`: field names, meanings and defaults as in TransformerLens, read and
/// written as JSON in those names. Fields tlens does not model are ignored on read.
///
/// ```
/// use tlens_cache_core::HookedTransformerConfig;
/// let cfg = HookedTransformerConfig::from_json(r#"{"n_layers": 2, "d_model": 32, "n_ctx": 16, "d_head": 8, "d_vocab": 50}"#).unwrap();
/// assert_eq!((cfg.n_heads, cfg.d_mlp, cfg.d_vocab_out), (4, Some(128), 50));
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
    /// Number of heads; `-1` means `d_model / d_head`.
    #[serde(default = "neg_one")]
    pub n_heads: i64,
    /// Width of the MLP; absent means `4·d_model`.
    #[serde(default)]
    pub d_mlp: Option<usize>,
    /// Vocabulary size; `-1` means "from the tokenizer".
    #[serde(default = "neg_one")]
    pub d_vocab: i64,
    /// Output vocabulary size; `-1` means `d_vocab`.
    #[serde(default = "neg_one")]
    pub d_vocab_out: i64,
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
    /// The attention divisor; `-1` means `sqrt(d_head)`.
    #[serde(default = "neg_one_f")]
    pub attn_scale: f64,
    /// Also divide the scores of layer `l` by `l + 1` (as some GPT-2 variants do).
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: bool,
    /// Positional embedding kind; tlens supports `"standard"`.
    #[serde(default = "default_pos")]
    pub positional_embedding_type: String,
    /// `"causal"` or `"bidirectional"`; tlens supports `"causal"`.
    #[serde(default = "default_attention_dir")]
    pub attention_dir: String,
    /// Prepend the BOS token when tokenizing, unless told otherwise.
    #[serde(default = "default_true")]
    pub default_prepend_bos: bool,
    /// Name of the architecture the weights came from, if any.
    #[serde(default)]
    pub original_architecture: Option<String>,
    /// Name of the model, if any.
    #[serde(default)]
    pub model_name: Option<String>,
    /// RMS final norm on an LN model (not supported by tlens; must be false).
    #[serde(default)]
    pub final_rms: bool,
    /// GPT-J-style parallel attention and MLP (not supported by tlens; must be false).
    #[serde(default)]
    pub parallel_attn_mlp: bool,
    /// Gated MLP (not supported by tlens; must be false).
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
    /// Grouped-query attention (not supported by tlens; must be absent).
    #[serde(default)]
    pub n_key_value_heads: Option<usize>,
    /// A norm right after the embedding (not supported by tlens; must be false).
    #[serde(default)]
    pub post_embedding_ln: bool,
    /// Soft cap on attention scores; `-1` means none.
    #[serde(default = "neg_one_f")]
    pub attn_scores_soft_cap: f64,
    /// Soft cap on output logits; `-1` means none.
    #[serde(default = "neg_one_f")]
    pub output_logits_soft_cap: f64,
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

    /// Fills the `-1` / absent defaults as TransformerLens's `__post_init__` does, and checks the result.
    pub fn resolved(mut self) -> Result<Self> {
        let bad = |m: String| Err(CacheError::InvalidArgument(format!("config: {m}")));
        if self.n_heads < 0 {
            if self.d_head == 0 || !self.d_model.is_multiple_of(self.d_head) {
                return bad(format!(
                    "d_model {} is not a multiple of d_head {}",
                    self.d_model, self.d_head
                ));
            }
            self.n_heads = (self.d_model / self.d_head) as i64;
        }
        if self.d_mlp.is_none() {
            self.d_mlp = Some(4 * self.d_model);
        }
        if self.d_vocab < 0 {
            return bad(
                "d_vocab must be given (tlens has no tokenizer to take it from here)".into(),
            );
        }
        if self.d_vocab_out < 0 {
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
        Ok(self)
    }

    /// Number of heads (after defaults are filled).
    pub fn heads(&self) -> usize {
        self.n_heads as usize
    }

    /// MLP width (after defaults are filled).
    pub fn mlp_width(&self) -> usize {
        self.d_mlp.unwrap_or(4 * self.d_model)
    }

    /// Input vocabulary size.
    pub fn vocab(&self) -> usize {
        self.d_vocab as usize
    }

    /// Output vocabulary size.
    pub fn vocab_out(&self) -> usize {
        self.d_vocab_out as usize
    }

    /// Whether the blocks have MLPs.
    pub fn has_mlp(&self) -> bool {
        !self.attn_only
    }
}
