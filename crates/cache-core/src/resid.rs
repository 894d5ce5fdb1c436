//! The residual stream as a stack: accumulated snapshots (`accumulated_resid`, the logit lens), per-sublayer
//! contributions (`decompose_resid`), and the biases the model adds along the way (`accumulated_bias`).

use std::str::FromStr;

use burn_tensor::{activation, backend::Backend};

use crate::attribution::TokenIds;
use crate::cache::{ActivationCache, ModelParams};
use crate::dyn_tensor::{DynTensor, MAX_RANK};
use crate::error::{CacheError, Result};
use crate::hook_point::{BlockHook, HookPoint};
use crate::ln::ApplyLnToStack;
use crate::slice::Slice;
use crate::stack::Stack;
use crate::weights::as_f32;

/// Arguments of [`ActivationCache::accumulated_resid`], with TransformerLens's names and defaults.
#[derive(Clone, Debug, Default)]
pub struct AccumulatedResid {
    /// Snapshots up to the input of this layer (`None`/`-1`: everything, ending with `final_post`). Default `None`.
    pub layer: Option<i64>,
    /// Also take `resid_mid` of every layer before `layer`. Default `false`.
    pub incl_mid: bool,
    /// Normalise every snapshot as the input of `layer` (the logit lens with fresh `ln_final` statistics when
    /// `layer` is the unembed). Default `false`.
    pub apply_ln: bool,
    /// Positions to keep (an index removes the position axis). Default all.
    pub pos_slice: Slice,
    /// End with `resid_mid` of `layer` (the MLP's input). Default `false`.
    pub mlp_input: bool,
}

/// Which sublayers [`ActivationCache::decompose_resid`] includes (TransformerLens's `mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DecomposeMode {
    /// Attention and MLP outputs (`"all"`).
    #[default]
    All,
    /// MLP outputs only (`"mlp"`).
    Mlp,
    /// Attention outputs only (`"attn"`).
    Attn,
}

impl FromStr for DecomposeMode {
    type Err = CacheError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "all" => Ok(Self::All),
            "mlp" => Ok(Self::Mlp),
            "attn" => Ok(Self::Attn),
            other => Err(CacheError::InvalidArgument(format!(
                "mode must be \"all\", \"mlp\" or \"attn\", got {other:?}"
            ))),
        }
    }
}

/// Arguments of [`ActivationCache::decompose_resid`], with TransformerLens's names and defaults.
#[derive(Clone, Debug)]
pub struct DecomposeResid {
    /// Decompose the input of this layer (`None`/`-1`: the final stream). Default `None`.
    pub layer: Option<i64>,
    /// Decompose the MLP's input of `layer` (adds `attn_out` of `layer`). Default `false`.
    pub mlp_input: bool,
    /// Which sublayers. Default [`DecomposeMode::All`].
    pub mode: DecomposeMode,
    /// Normalise with the cached scale of `layer`'s norm. Default `false`.
    pub apply_ln: bool,
    /// Positions to keep. Default all.
    pub pos_slice: Slice,
    /// Include `embed` and `pos_embed`. Default `true`.
    pub incl_embeds: bool,
}

impl Default for DecomposeResid {
    fn default() -> Self {
        Self {
            layer: None,
            mlp_input: false,
            mode: DecomposeMode::All,
            apply_ln: false,
            pos_slice: Slice::All,
            incl_embeds: true,
        }
    }
}

/// What [`ActivationCache::logit_lens`] returns per snapshot and position.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LensOutput {
    /// Logits `x·W_U + b_U`.
    #[default]
    Logits,
    /// Log-probabilities over the whole vocabulary.
    LogProbs,
    /// Probabilities over the whole vocabulary.
    Probs,
}

/// Arguments of [`ActivationCache::logit_lens`] (TransformerLens 4's one-call logit lens, reduced to its core).
#[derive(Clone, Debug, Default)]
pub struct LogitLens {
    /// Also read `resid_mid` of every layer. Default `false`.
    pub incl_mid: bool,
    /// Positions to read. Default all.
    pub pos_slice: Slice,
    /// Keep only these token ids on the last axis (in this order); `None` keeps the whole vocabulary.
    pub targets: Option<TokenIds>,
    /// Logits, log-probabilities or probabilities (normalised over the whole vocabulary before selecting targets).
    pub return_type: LensOutput,
}

impl<B: Backend> ActivationCache<B> {
    /// The residual stream at the input of every layer up to `layer`: TransformerLens's `accumulated_resid`.
    ///
    /// Rows: `{l}_pre` for `l < layer` (with `{l}_mid` after each when `incl_mid`), `{layer}_pre` (and `{layer}_mid`
    /// with `mlp_input`), or `final_post` when `layer` is `n_layers`. Shape `[rows, *batch_and_pos, d_model]`.
    /// With `apply_ln`, each row is normalised as the input of `layer`; for the unembed that is `ln_final` with
    /// fresh statistics per row (the logit lens; TransformerLens ≥ 2.18), so the last row times `W_U` plus `b_U`
    /// gives the logits.
    ///
    /// ```
    /// use tlens_cache_core::{testing, AccumulatedResid};
    /// let cache = testing::random_cache::<burn_ndarray::NdArray>(1, 4);
    /// let acc = cache.accumulated_resid(AccumulatedResid { incl_mid: true, ..Default::default() }).unwrap();
    /// assert_eq!(acc.labels, ["0_pre", "0_mid", "1_pre", "1_mid", "final_post"]);
    /// assert_eq!(acc.tensor.shape(), [5, 1, 4, 16]);
    /// ```
    pub fn accumulated_resid(&self, args: AccumulatedResid) -> Result<Stack<B>> {
        const METHOD: &str = "accumulated_resid";
        let layer = self.resolve_layer(args.layer, METHOD)?;
        let n = self.n_layers();
        let mut keys = Vec::new();
        let mut labels = Vec::new();
        for l in 0..=layer {
            if l == n {
                keys.push(HookPoint::Block(n - 1, BlockHook::ResidPost));
                labels.push("final_post".to_string());
                continue;
            }
            keys.push(HookPoint::Block(l, BlockHook::ResidPre));
            labels.push(format!("{l}_pre"));
            if (args.incl_mid && l < layer) || (args.mlp_input && l == layer) {
                keys.push(HookPoint::Block(l, BlockHook::ResidMid));
                labels.push(format!("{l}_mid"));
            }
        }
        let tensor = self.stack_keys(METHOD, &keys, &args.pos_slice)?;
        let tensor = if args.apply_ln {
            self.apply_ln_to_stack(
                tensor,
                ApplyLnToStack {
                    layer: Some(layer as i64),
                    mlp_input: args.mlp_input,
                    pos_slice: args.pos_slice,
                    has_batch_dim: self.has_batch_dim,
                    recompute_ln: layer == n,
                    ..Default::default()
                },
            )?
        } else {
            tensor
        };
        Ok(Stack { tensor, labels })
    }

    /// What each sublayer wrote into the residual stream before `layer`: TransformerLens's `decompose_resid`.
    ///
    /// Rows: `embed`, `pos_embed` (with `incl_embeds`, when cached), then `{l}_attn_out` and `{l}_mlp_out` for
    /// `l < layer` as `mode` selects, and `{layer}_attn_out` with `mlp_input`. They sum to the stream entering
    /// `layer`. An empty selection (`layer` 0 without embeddings) is a stack with zero rows; TransformerLens raises.
    ///
    /// ```
    /// use tlens_cache_core::{testing, DecomposeResid, DecomposeMode};
    /// let cache = testing::random_cache::<burn_ndarray::NdArray>(1, 4);
    /// let dec = cache.decompose_resid(DecomposeResid { layer: Some(1), mode: DecomposeMode::Attn, ..Default::default() }).unwrap();
    /// assert_eq!(dec.labels, ["embed", "pos_embed", "0_attn_out"]);
    /// ```
    pub fn decompose_resid(&self, args: DecomposeResid) -> Result<Stack<B>> {
        const METHOD: &str = "decompose_resid";
        let layer = self.resolve_layer(args.layer, METHOD)?;
        let incl_attn = args.mode != DecomposeMode::Mlp;
        let incl_mlp = args.mode != DecomposeMode::Attn && self.cfg().has_mlp();
        if args.mlp_input && incl_attn && layer == self.n_layers() {
            return Err(CacheError::LayerOutOfRange {
                layer: layer as i64,
                what: format!("{METHOD} with mlp_input needs a layer below n_layers"),
            });
        }
        let mut keys = Vec::new();
        let mut labels = Vec::new();
        if args.incl_embeds {
            for (point, label) in [
                (HookPoint::Embed, "embed"),
                (HookPoint::PosEmbed, "pos_embed"),
            ] {
                if self.entry(point).is_some() {
                    keys.push(point);
                    labels.push(label.to_string());
                }
            }
        }
        for l in 0..layer {
            if incl_attn {
                keys.push(HookPoint::Block(l, BlockHook::AttnOut));
                labels.push(format!("{l}_attn_out"));
            }
            if incl_mlp {
                keys.push(HookPoint::Block(l, BlockHook::MlpOut));
                labels.push(format!("{l}_mlp_out"));
            }
        }
        if args.mlp_input && incl_attn {
            keys.push(HookPoint::Block(layer, BlockHook::AttnOut));
            labels.push(format!("{layer}_attn_out"));
        }
        let tensor = self.stack_keys(METHOD, &keys, &args.pos_slice)?;
        let tensor = if args.apply_ln {
            self.apply_ln_to_stack(
                tensor,
                ApplyLnToStack {
                    layer: Some(layer as i64),
                    mlp_input: args.mlp_input,
                    pos_slice: args.pos_slice,
                    ..Default::default()
                },
            )?
        } else {
            tensor
        };
        Ok(Stack { tensor, labels })
    }

    /// The logit lens in one call (TransformerLens 4's `logit_lens`, reduced to its core): every snapshot of
    /// [`accumulated_resid`](Self::accumulated_resid) through `ln_final` with fresh statistics, `W_U` and `b_U`.
    ///
    /// Returns `[rows, *batch_and_pos, d_vocab_out]`, or `[rows, *batch_and_pos, n_targets]` with `targets`; the
    /// `final_post` row equals the model's logits (or their softmax).
    ///
    /// ```
    /// use tlens_cache_core::{testing, LogitLens, LensOutput, TokenIds};
    /// let cache = testing::random_cache::<burn_ndarray::NdArray>(1, 4);
    /// let lens = cache
    ///     .logit_lens(LogitLens { targets: Some(TokenIds::from(vec![3, 7])), return_type: LensOutput::Probs, ..Default::default() })
    ///     .unwrap();
    /// assert_eq!(lens.tensor.shape(), [3, 1, 4, 2]);
    /// ```
    pub fn logit_lens(&self, args: LogitLens) -> Result<Stack<B>> {
        let acc = self.accumulated_resid(AccumulatedResid {
            incl_mid: args.incl_mid,
            apply_ln: true,
            pos_slice: args.pos_slice,
            ..Default::default()
        })?;
        let w = &self.model.weights;
        let logits = project(acc.tensor, DynTensor::new(as_f32(w.W_U.clone())))?
            .add(DynTensor::new(as_f32(w.b_U.clone())))?;
        let values = match args.return_type {
            LensOutput::Logits => logits,
            LensOutput::LogProbs => logits.map(|t| activation::log_softmax(t, MAX_RANK - 1)),
            LensOutput::Probs => logits.map(|t| activation::softmax(t, MAX_RANK - 1)),
        };
        let values = match &args.targets {
            None => values,
            Some(targets) => {
                let ids = targets.checked_ids(self.cfg().d_vocab_out, "targets")?;
                values.select(-1, &ids)?
            }
        };
        Ok(Stack {
            tensor: values,
            labels: acc.labels,
        })
    }

    /// Stacks the pos-sliced activations under `keys` on a new axis 0; no keys gives a stack with zero rows.
    pub(crate) fn stack_keys(
        &self,
        method: &'static str,
        keys: &[HookPoint],
        pos_slice: &Slice,
    ) -> Result<DynTensor<B>> {
        if keys.is_empty() {
            return self.empty_rows(method, pos_slice, None);
        }
        let parts = keys
            .iter()
            .map(|k| pos_slice.apply(self.need(method, *k)?, -2, "pos_slice"))
            .collect::<Result<Vec<_>>>()?;
        DynTensor::stack(parts)
    }
}

impl<B: Backend> ModelParams<B> {
    /// The sum of the biases written into the residual stream before `layer`: `Σ_{i<layer} b_O[i]` (plus `b_out[i]`
    /// with `include_mlp_biases`), plus `b_O[layer]` with `mlp_input`. Shape `[d_model]`. TransformerLens's
    /// `HookedTransformer.accumulated_bias`.
    ///
    /// An attention-only model has no MLP biases; they count as zero (TransformerLens fails there).
    ///
    /// ```
    /// use tlens_cache_core::testing;
    /// let cache = testing::random_cache::<burn_ndarray::NdArray>(1, 4);
    /// let bias = cache.model().accumulated_bias(2, false, true).unwrap();
    /// assert_eq!(bias.shape(), [16]);
    /// ```
    pub fn accumulated_bias(
        &self,
        layer: usize,
        mlp_input: bool,
        include_mlp_biases: bool,
    ) -> Result<DynTensor<B>> {
        let n = self.cfg.n_layers;
        if layer > n || (mlp_input && layer == n) {
            return Err(CacheError::LayerOutOfRange {
                layer: layer as i64,
                what: format!(
                    "accumulated_bias takes a layer in 0..={n} (below {n} with mlp_input)"
                ),
            });
        }
        let w = &self.weights;
        let mut bias = burn_tensor::Tensor::<B, 1>::zeros([self.cfg.d_model], &w.W_E.device());
        for block in &w.blocks[..layer] {
            bias = bias + as_f32(block.attn.b_O.clone());
            if include_mlp_biases && let Some(mlp) = &block.mlp {
                bias = bias + as_f32(mlp.b_out.clone());
            }
        }
        if mlp_input {
            bias = bias + as_f32(w.blocks[layer].attn.b_O.clone());
        }
        Ok(DynTensor::new(bias))
    }
}

/// `x @ p` for `x` `[..., d]` (any rank ≥ 1) and `p` `[d, k]`: `[..., k]`.
pub(crate) fn project<B: Backend>(x: DynTensor<B>, p: DynTensor<B>) -> Result<DynTensor<B>> {
    if x.rank() == 1 {
        x.unsqueeze(0)?.matmul(p)?.squeeze(0)
    } else {
        x.matmul(p)
    }
}
