//! The logit lens: what the model would predict if the residual stream stopped after each layer.
//!
//! Every snapshot of [`accumulated_resid`](crate::ActivationCache::accumulated_resid) goes through `ln_final` with
//! fresh statistics, `W_U` and `b_U` (the cache's [`logit_lens`](crate::ActivationCache::logit_lens), TransformerLens's
//! `accumulated_resid(apply_ln=True) @ W_U + b_U`), then a softmax over the vocabulary. The `final_post` row is the
//! model's own prediction.

use burn_tensor::{Int, Tensor, TensorData, backend::Backend};
use serde::Serialize;
use tlens_cache_core::{ActivationCache, LensOutput, LogitLens};

use super::check_batch_index;
use crate::error::Result;

/// Arguments of [`logit_lens`].
#[derive(Clone, Debug)]
pub struct LensArgs {
    /// Which sequence of the batch. Default 0.
    pub batch_index: usize,
    /// How many top tokens to keep per layer and position. Default 5.
    pub top_k: usize,
    /// Also read the stream between attention and MLP (`{l}_mid`; models with MLPs only). Default `false`.
    pub incl_mid: bool,
    /// The token whose probability to follow: one for every position, or `None` for each position's next token
    /// (and, at the last position, the model's final prediction). Default `None`.
    pub target: Option<u32>,
}

impl Default for LensArgs {
    fn default() -> Self {
        Self {
            batch_index: 0,
            top_k: 5,
            incl_mid: false,
            target: None,
        }
    }
}

/// One token and its probability.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct TokenProb {
    /// The token id.
    pub id: u32,
    /// Its probability.
    pub prob: f32,
}

/// The logit lens of one sequence: per snapshot (row) and position, the top tokens and the target's probability.
#[derive(Clone, Debug, Serialize)]
pub struct LensTable {
    /// The snapshots, in order (`0_pre`, `1_pre`, ..., `final_post`).
    pub labels: Vec<String>,
    /// The target token at each position.
    pub targets: Vec<u32>,
    /// `target_probs[row][pos]`: the target's probability.
    pub target_probs: Vec<Vec<f32>>,
    /// `top[row][pos]`: the `top_k` most likely tokens, most likely first.
    pub top: Vec<Vec<Vec<TokenProb>>>,
}

impl LensTable {
    /// The row of the model's own prediction (`final_post`).
    pub fn final_row(&self) -> usize {
        self.labels.len() - 1
    }

    /// The first row from which the target at `pos` stays the top token through the end, if any.
    pub fn first_correct_row(&self, pos: usize) -> Option<usize> {
        let target = self.targets[pos];
        let ok = |r: usize| self.top[r][pos].first().map(|t| t.id) == Some(target);
        (0..self.labels.len()).rev().take_while(|&r| ok(r)).last()
    }
}

/// The logit lens of sequence `args.batch_index` of `cache`, whose tokens are `tokens` (that row).
///
/// ```
/// use tlens::{analysis::lens, backend::NdArray, embedded, RunOptions, TokenBatch};
/// let loaded = embedded::model::<NdArray>(&Default::default()).unwrap();
/// let tokens = TokenBatch::single(vec![0, 5, 6, 7]).unwrap();
/// let (_, cache) = loaded.model.run_with_cache(&tokens, RunOptions::default()).unwrap();
/// let table = lens::logit_lens(&cache, tokens.row(0), &lens::LensArgs::default()).unwrap();
/// assert_eq!(table.labels.last().unwrap(), "final_post");
/// assert_eq!(table.target_probs[0].len(), 4);
/// ```
pub fn logit_lens<B: Backend>(
    cache: &ActivationCache<B>,
    tokens: &[u32],
    args: &LensArgs,
) -> Result<LensTable> {
    check_batch_index(cache, args.batch_index)?;
    let stack = cache.logit_lens(LogitLens {
        incl_mid: args.incl_mid,
        return_type: LensOutput::Probs,
        ..Default::default()
    })?;
    let probs: Tensor<B, 4> = stack.tensor.into_tensor::<4>()?;
    let [rows, _, pos, vocab] = probs.dims();
    let probs = probs
        .narrow(1, args.batch_index, 1)
        .reshape([rows, pos, vocab]);
    if let Some(t) = args.target.filter(|&t| t as usize >= vocab) {
        return Err(crate::TlensError::Analysis(format!(
            "target token id {t} is outside the vocabulary of {vocab} tokens"
        )));
    }
    let k = args.top_k.clamp(1, vocab);
    let (top_p, top_i) = probs.clone().topk_with_indices(k, 2);
    let top_p = to_f32(top_p.into_data());
    let top_i = to_i64(top_i.into_data());
    let top: Vec<Vec<Vec<TokenProb>>> = (0..rows)
        .map(|r| {
            (0..pos)
                .map(|p| {
                    (0..k)
                        .map(|j| {
                            let at = (r * pos + p) * k + j;
                            TokenProb {
                                id: top_i[at] as u32,
                                prob: top_p[at],
                            }
                        })
                        .collect()
                })
                .collect()
        })
        .collect();
    let targets: Vec<u32> = (0..pos)
        .map(|p| match args.target {
            Some(t) => t,
            None if p + 1 < tokens.len().min(pos) => tokens[p + 1],
            None => top[rows - 1][p][0].id,
        })
        .collect();
    // A next token past the output vocabulary (a model whose d_vocab_out < d_vocab) is one the model can never
    // predict: its probability is 0.
    let device = probs.device();
    let index: Vec<i64> = (0..rows)
        .flat_map(|_| targets.iter().map(|&t| t.min(vocab as u32 - 1) as i64))
        .collect();
    let index = Tensor::<B, 3, Int>::from_data(TensorData::new(index, [rows, pos, 1]), &device);
    let gathered = to_f32(probs.gather(2, index).into_data());
    let target_probs = gathered
        .chunks(pos)
        .map(|row| {
            row.iter()
                .zip(&targets)
                .map(|(&p, &t)| if (t as usize) < vocab { p } else { 0.0 })
                .collect()
        })
        .collect();
    Ok(LensTable {
        labels: stack.labels,
        targets,
        target_probs,
        top,
    })
}

pub(crate) fn to_f32(data: TensorData) -> Vec<f32> {
    data.convert::<f32>()
        .to_vec::<f32>()
        .expect("converted to f32")
}

pub(crate) fn to_i64(data: TensorData) -> Vec<i64> {
    data.convert::<i64>()
        .to_vec::<i64>()
        .expect("converted to i64")
}
