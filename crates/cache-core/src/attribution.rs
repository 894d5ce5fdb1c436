//! Direct logit attribution: `logit_attrs`, and the token ids it takes.

use burn_tensor::{Int, Tensor, TensorData, backend::Backend};

use crate::cache::{ActivationCache, ModelParams};
use crate::dyn_tensor::DynTensor;
use crate::error::{CacheError, Result};
use crate::ln::ApplyLnToStack;
use crate::slice::Slice;
use crate::weights::as_f32;

/// Token ids with a shape: one id (`shape` `[]`), `[batch]`, or `[batch, pos]` — what TransformerLens's `tokens`
/// arguments take as an int or an int tensor. (Strings are turned into ids by the caller's tokenizer.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenIds {
    /// The ids, row-major.
    pub ids: Vec<i64>,
    /// Their shape (`[]` for a single id).
    pub shape: Vec<usize>,
}

impl TokenIds {
    /// Ids with a shape; the number of ids must match it.
    pub fn new(ids: Vec<i64>, shape: Vec<usize>) -> Result<Self> {
        let want: usize = shape.iter().product();
        if want != ids.len() {
            return Err(CacheError::Shape(format!(
                "{} token ids do not fill a shape {shape:?}",
                ids.len()
            )));
        }
        Ok(Self { ids, shape })
    }

    /// One id (a 0-d tensor).
    pub fn scalar(id: i64) -> Self {
        Self {
            ids: vec![id],
            shape: Vec::new(),
        }
    }

    /// The ids as indices into a vocabulary of `vocab` tokens, or an error naming the first bad one.
    pub(crate) fn checked_ids(&self, vocab: usize, what: &str) -> Result<Vec<usize>> {
        self.ids
            .iter()
            .map(|&id| {
                usize::try_from(id)
                    .ok()
                    .filter(|&i| i < vocab)
                    .ok_or_else(|| {
                        CacheError::InvalidArgument(format!(
                            "{what}: token id {id} is outside the vocabulary of {vocab} tokens"
                        ))
                    })
            })
            .collect()
    }
}

impl From<i64> for TokenIds {
    fn from(id: i64) -> Self {
        Self::scalar(id)
    }
}

impl From<Vec<i64>> for TokenIds {
    fn from(ids: Vec<i64>) -> Self {
        let shape = vec![ids.len()];
        Self { ids, shape }
    }
}

/// Arguments of [`ActivationCache::logit_attrs`] besides the stack and the tokens, with TransformerLens's defaults.
#[derive(Clone, Debug)]
pub struct LogitAttrs {
    /// Attribute the logit difference `tokens − incorrect_tokens` (same shape as `tokens`). Default none.
    pub incorrect_tokens: Option<TokenIds>,
    /// The position slice the stack was taken with (applied to the cached `ln_final` scale). Default none.
    pub pos_slice: Slice,
    /// A batch slice applied to the stack and the scale. Default none.
    pub batch_slice: Slice,
    /// Whether the stack has a batch axis after the component axis. Default `true`.
    pub has_batch_dim: bool,
}

impl Default for LogitAttrs {
    fn default() -> Self {
        Self {
            incorrect_tokens: None,
            pos_slice: Slice::All,
            batch_slice: Slice::All,
            has_batch_dim: true,
        }
    }
}

impl<B: Backend> ModelParams<B> {
    /// The unembedding directions of tokens: `W_U[:, t]`, shape `[*tokens.shape, d_model]`, or `[d_model]` for a
    /// single id (also a one-element tensor, as TransformerLens's `tokens_to_residual_directions`).
    pub fn tokens_to_residual_directions(&self, tokens: &TokenIds) -> Result<DynTensor<B>> {
        let ids = tokens.checked_ids(self.cfg.d_vocab_out, "tokens")?;
        let device = self.weights.W_U.device();
        let index = Tensor::<B, 1, Int>::from_data(
            TensorData::new(
                ids.iter().map(|&i| i as i64).collect::<Vec<_>>(),
                [ids.len()],
            ),
            &device,
        );
        let dirs = as_f32(self.weights.W_U.clone().select(1, index)).transpose();
        let d_model = self.cfg.d_model;
        let mut shape = if ids.len() == 1 {
            Vec::new()
        } else {
            tokens.shape.clone()
        };
        shape.push(d_model);
        DynTensor::new(dirs).reshape(&shape)
    }
}

impl<B: Backend> ActivationCache<B> {
    /// Direct logit attribution: how much each component of `residual_stack` contributes to the logit of `tokens`
    /// (or to the logit difference against `incorrect_tokens`), through the cached final norm scale.
    /// TransformerLens's `logit_attrs`.
    ///
    /// `residual_stack` is `[n, *batch_and_pos, d_model]` (after `pos_slice`); the result is `[n, *batch_and_pos]`
    /// (after `batch_slice`). `tokens` is one id (broadcast), `[batch, pos]`, or `[batch]` — one token per sequence,
    /// broadcast over the kept positions when the stack has both a batch and a position axis (TransformerLens 4;
    /// 3.x broadcast it against the position axis instead).
    ///
    /// Errors: `tokens` and `incorrect_tokens` of different shapes, token ids outside the vocabulary, a stack that
    /// does not fit the cache or the tokens.
    ///
    /// ```
    /// use tlens_cache_core::{testing, AccumulatedResid, LogitAttrs, TokenIds};
    /// let cache = testing::random_cache::<burn_ndarray::NdArray>(2, 4);
    /// let acc = cache.accumulated_resid(AccumulatedResid { pos_slice: (-1).into(), ..Default::default() }).unwrap();
    /// let dla = cache
    ///     .logit_attrs(acc.tensor, TokenIds::from(vec![3, 5]), LogitAttrs { incorrect_tokens: Some(TokenIds::from(vec![5, 3])), pos_slice: (-1).into(), ..Default::default() })
    ///     .unwrap();
    /// assert_eq!(dla.shape(), [3, 2]);
    /// ```
    pub fn logit_attrs(
        &self,
        residual_stack: DynTensor<B>,
        tokens: impl Into<TokenIds>,
        args: LogitAttrs,
    ) -> Result<DynTensor<B>> {
        let tokens = tokens.into();
        let mut dirs = self.model.tokens_to_residual_directions(&tokens)?;
        if let Some(incorrect) = &args.incorrect_tokens {
            if incorrect.shape != tokens.shape {
                return Err(CacheError::Shape(format!(
                    "tokens and incorrect_tokens must have the same shape (tokens {:?}, incorrect_tokens {:?})",
                    tokens.shape, incorrect.shape
                )));
            }
            dirs = dirs.sub(self.model.tokens_to_residual_directions(incorrect)?)?;
        }
        let int_batch = args.batch_slice.removes_axis();
        let scaled = self.apply_ln_to_stack(
            residual_stack,
            ApplyLnToStack {
                layer: None,
                pos_slice: args.pos_slice,
                batch_slice: args.batch_slice,
                has_batch_dim: args.has_batch_dim,
                ..Default::default()
            },
        )?;
        let sshape = scaled.shape();
        if args.has_batch_dim
            && !int_batch
            && sshape.len() == 4
            && dirs.rank() == 2
            && dirs.shape()[0] == sshape[1]
        {
            // One token per sequence: broadcast over positions, not against them.
            dirs = dirs.unsqueeze(-2)?;
        }
        let dshape = dirs.shape();
        if DynTensor::<B>::broadcast_shape(&sshape, &dshape).is_err() {
            return Err(CacheError::Shape(format!(
                "logit_attrs: token directions {dshape:?} (tokens {:?}) do not fit the residual stack {sshape:?}",
                tokens.shape
            )));
        }
        // The directions as one row that every component shares, `[n, rest] · [rest]`, where the stack is the
        // larger operand: burn-flex multiplies by a shared contiguous row in SIMD but walks any other broadcast (here
        // the directions, a transposed view of `W_U` repeated over the first axis) one element at a time, 85% of
        // this method at 8×128. The same products, so the same bits, on every backend.
        let product = if dshape.len() < sshape.len()
            && DynTensor::<B>::broadcast_shape(&sshape, &dshape)? == sshape
        {
            let row: usize = sshape[1..].iter().product();
            let dirs = dirs.expand(&sshape[1..])?.reshape(&[row])?;
            scaled
                .reshape(&[sshape[0], row])?
                .mul(dirs)?
                .reshape(&sshape)?
        } else {
            scaled.mul(dirs)?
        };
        product.sum_axis(-1)
    }
}
