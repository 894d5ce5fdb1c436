//! Attention patterns and the standard per-head scores of TransformerLens's induction demos.
//!
//! On a batch of sequences `[BOS, r₁ … rₙ, r₁ … rₙ]` (`rᵢ` random tokens from a fixed seed; no BOS when the model has
//! no tokenizer to name one), with `pattern[q, k]` the attention of query position `q` to key position `k`:
//!
//! - **induction score**: the mean, over the queries of the repeated half, of `pattern[q, q − n + 1]` — attention to
//!   the token *after* the earlier occurrence of the current token (the stripe at offset `1 − n`);
//! - **duplicate-token score**: the same mean of `pattern[q, q − n]` — attention to the earlier occurrence itself;
//! - **previous-token score**: the mean, over every query but the first, of `pattern[q, q − 1]`.
//!
//! Every score is averaged over the batch; each lies in `[0, 1]`.

use burn_tensor::backend::Backend;
use serde::Serialize;
use tlens_cache_core::{
    ActivationCache, BlockHook, HookPoint, HookedTransformerConfig, NamesFilter, RunOptions,
};
use tlens_model::Kernels;
use tlens_model::{HookedTransformer, TokenBatch};

use super::check_batch_index;
use super::lens::to_f32;
use crate::error::{Result, TlensError};

/// Arguments of [`head_scores`].
#[derive(Clone, Debug)]
pub struct HeadScoresArgs {
    /// Length `n` of the random sequence (it appears twice); `None`: `min(20, (n_ctx − 1) / 2)` (TransformerLens demos use 20 to 50; 20 fits small models' training contexts).
    pub seq_len: Option<usize>,
    /// How many random sequences. Default 16.
    pub batch: usize,
    /// Seed of the random tokens. Default 0.
    pub seed: u64,
}

impl HeadScoresArgs {
    /// How many positions each sequence has, `[BOS,] r, r`: an error when that is more than the model's `n_ctx`.
    pub fn positions(&self, cfg: &HookedTransformerConfig, bos: Option<u32>) -> Result<usize> {
        let prefix = usize::from(bos.is_some());
        let n = self
            .seq_len
            .unwrap_or_else(|| 20.min(cfg.n_ctx.saturating_sub(prefix) / 2));
        let p = n.checked_mul(2).and_then(|x| x.checked_add(prefix));
        p.filter(|&p| p <= cfg.n_ctx).ok_or_else(|| {
            TlensError::Analysis(format!(
                "a repeated sequence of {n} tokens needs {} positions; the model has {}",
                prefix as u128 + 2 * n as u128,
                cfg.n_ctx
            ))
        })
    }
}

impl Default for HeadScoresArgs {
    fn default() -> Self {
        Self {
            seq_len: None,
            batch: 16,
            seed: 0,
        }
    }
}

/// Per-head scores on repeated random tokens, `[layer][head]`.
#[derive(Clone, Debug, Serialize)]
pub struct HeadScores {
    /// The induction score of each head.
    pub induction: Vec<Vec<f32>>,
    /// The previous-token score of each head.
    pub prev_token: Vec<Vec<f32>>,
    /// The duplicate-token score of each head.
    pub duplicate: Vec<Vec<f32>>,
    /// The random sequence's length `n`.
    pub seq_len: usize,
    /// How many sequences were averaged.
    pub batch: usize,
    /// The seed.
    pub seed: u64,
    /// The BOS token each sequence starts with, if any.
    pub bos: Option<u32>,
    /// The first sequence (`[BOS,] r, r`), for display.
    pub tokens: Vec<u32>,
    /// Attention patterns of the first sequence: `patterns[layer][head]` is `[q][k]` flattened row-major.
    pub patterns: Vec<Vec<Vec<f32>>>,
}

impl HeadScores {
    /// The head with the highest induction score: `(layer, head, score)`.
    pub fn best_induction(&self) -> (usize, usize, f32) {
        best(&self.induction)
    }

    /// The head with the highest previous-token score: `(layer, head, score)`.
    pub fn best_prev_token(&self) -> (usize, usize, f32) {
        best(&self.prev_token)
    }

    /// How the sequences look: `[BOS, r, r]`, or `[r, r]` without a BOS.
    pub fn layout(&self) -> &'static str {
        if self.bos.is_some() {
            "[BOS, r, r]"
        } else {
            "[r, r]"
        }
    }

    /// One line: which head is the clearest induction head, and how clear.
    pub fn headline(&self) -> String {
        let (l, h, s) = self.best_induction();
        if !s.is_finite() {
            return "no induction scores: the attention patterns are NaN (the model's output is not finite)".into();
        }
        if s >= INDUCTION_THRESHOLD {
            let mut others: Vec<(f32, String)> = self
                .induction
                .iter()
                .enumerate()
                .flat_map(|(ol, row)| row.iter().enumerate().map(move |(oh, &v)| (v, ol, oh)))
                .filter(|&(v, ol, oh)| v >= INDUCTION_THRESHOLD && (ol, oh) != (l, h))
                .map(|(v, ol, oh)| (v, format!("L{ol}H{oh} {v:.2}")))
                .collect();
            others.sort_by(|a, b| b.0.total_cmp(&a.0));
            let mut line = format!("L{l}H{h} is an induction head, score {s:.2}");
            if !others.is_empty() {
                let list: Vec<String> = others.into_iter().map(|(_, t)| t).collect();
                line.push_str(&format!(
                    " (also above {INDUCTION_THRESHOLD}: {})",
                    list.join(", ")
                ));
            }
            line
        } else {
            format!(
                "no clear induction head: the highest induction score is {s:.2} (L{l}H{h}; a clear one scores ≥ {INDUCTION_THRESHOLD})"
            )
        }
    }
}

/// The induction score from which a head counts as an induction head in the headline.
pub const INDUCTION_THRESHOLD: f32 = 0.4;

fn best(scores: &[Vec<f32>]) -> (usize, usize, f32) {
    let mut out = (0, 0, f32::NEG_INFINITY);
    for (l, row) in scores.iter().enumerate() {
        for (h, &s) in row.iter().enumerate() {
            if s > out.2 {
                out = (l, h, s);
            }
        }
    }
    out
}

/// `batch` rows of `[bos,] r, r` with `r` `seq_len` tokens drawn uniformly from `0..vocab` (never `bos`), from a
/// fixed seed (SplitMix64): the same tokens on every machine and backend.
///
/// ```
/// let t = tlens::analysis::heads::repeated_random_tokens(100, Some(0), 5, 2, 42).unwrap();
/// assert_eq!((t.batch(), t.positions()), (2, 11));
/// assert_eq!(t.row(0)[1..6], t.row(0)[6..11]);
/// ```
pub fn repeated_random_tokens(
    vocab: usize,
    bos: Option<u32>,
    seq_len: usize,
    batch: usize,
    seed: u64,
) -> Result<TokenBatch> {
    let mut rows = RepeatedRows::new(vocab, bos, seq_len, batch, seed)?;
    rows.next_batch(batch)
}

/// The rows of [`repeated_random_tokens`], drawn as they are needed: a long run takes them a chunk at a time.
struct RepeatedRows {
    vocab: u64,
    bos: Option<u32>,
    seq_len: usize,
    state: u64,
}

impl RepeatedRows {
    fn new(
        vocab: usize,
        bos: Option<u32>,
        seq_len: usize,
        batch: usize,
        seed: u64,
    ) -> Result<Self> {
        if seq_len < 2 || batch == 0 || vocab < 2 {
            return Err(TlensError::Analysis(format!(
                "repeated random tokens need a sequence of at least 2 tokens, a batch of at least 1 and a \
                 vocabulary of at least 2 (got {seq_len}, {batch}, {vocab})"
            )));
        }
        Ok(Self {
            vocab: vocab as u64,
            bos,
            seq_len,
            state: seed,
        })
    }

    /// SplitMix64.
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn next_row(&mut self) -> Vec<u32> {
        let r: Vec<u32> = (0..self.seq_len)
            .map(|_| {
                loop {
                    let t = (self.next_u64() % self.vocab) as u32;
                    if Some(t) != self.bos {
                        break t;
                    }
                }
            })
            .collect();
        self.bos
            .into_iter()
            .chain(r.iter().copied())
            .chain(r.iter().copied())
            .collect()
    }

    fn next_batch(&mut self, rows: usize) -> Result<TokenBatch> {
        let rows: Vec<Vec<u32>> = (0..rows).map(|_| self.next_row()).collect();
        Ok(TokenBatch::new(&rows)?)
    }
}

/// How many sequences [`head_scores`] runs at once: the scores are means, so a long batch runs in chunks and its
/// memory does not grow with `--sequences`.
pub const SCORE_CHUNK: usize = 16;

/// Induction, duplicate-token and previous-token scores of every head on repeated random tokens.
///
/// `bos` is the token to put first (the tokenizer's BOS); `None` starts straight with the random tokens. The batch
/// runs [`SCORE_CHUNK`] sequences at a time; `progress` is told how many sequences are done after each chunk.
pub fn head_scores<B: Kernels>(
    model: &HookedTransformer<B>,
    args: &HeadScoresArgs,
    bos: Option<u32>,
    progress: &mut dyn FnMut(usize),
) -> Result<HeadScores> {
    let cfg = model.cfg();
    let prefix = usize::from(bos.is_some());
    let p = args.positions(cfg, bos)?;
    let n = (p - prefix) / 2;
    // Tokens the model can both read and predict (a model may have fewer outputs than inputs).
    let vocab = cfg.d_vocab.min(cfg.d_vocab_out);
    let mut rows = RepeatedRows::new(vocab, bos, n, args.batch, args.seed)?;
    let names: Vec<String> = (0..cfg.n_layers)
        .map(|l| HookPoint::Block(l, BlockHook::Pattern).to_string())
        .collect();
    let heads = cfg.n_heads;
    // Running sums in the order a single pass would add them (sequence, then query), so chunking changes nothing.
    let zeros = || vec![vec![0f32; heads]; cfg.n_layers];
    let (mut induction, mut duplicate, mut prev_token) = (zeros(), zeros(), zeros());
    let (mut first_tokens, mut patterns) = (Vec::new(), Vec::new());
    let mut done = 0;
    while done < args.batch {
        let tokens = rows.next_batch(SCORE_CHUNK.min(args.batch - done))?;
        let (_, cache) = model.run_with_cache(
            &tokens,
            RunOptions {
                names_filter: NamesFilter::Names(names.clone()),
                ..Default::default()
            },
        )?;
        for l in 0..cfg.n_layers {
            let pattern = to_f32(
                cache
                    .get(HookPoint::Block(l, BlockHook::Pattern))?
                    .into_data(),
            );
            let at =
                |b: usize, h: usize, q: usize, k: usize| pattern[((b * heads + h) * p + q) * p + k];
            for h in 0..heads {
                for b in 0..tokens.batch() {
                    for q in prefix + n..p {
                        induction[l][h] += at(b, h, q, q - (n - 1));
                        duplicate[l][h] += at(b, h, q, q - n);
                    }
                    for q in 1..p {
                        prev_token[l][h] += at(b, h, q, q - 1);
                    }
                }
            }
            if done == 0 {
                patterns.push(
                    (0..heads)
                        .map(|h| pattern[h * p * p..(h + 1) * p * p].to_vec())
                        .collect(),
                );
            }
        }
        if done == 0 {
            first_tokens = tokens.row(0).to_vec();
        }
        done += tokens.batch();
        progress(done);
    }
    let mean = |sums: Vec<Vec<f32>>, queries: usize| -> Vec<Vec<f32>> {
        let count = (queries * args.batch) as f32;
        sums.into_iter()
            .map(|row| row.into_iter().map(|s| s / count).collect())
            .collect()
    };
    Ok(HeadScores {
        induction: mean(induction, p - prefix - n),
        prev_token: mean(prev_token, p - 1),
        duplicate: mean(duplicate, p - prefix - n),
        seq_len: n,
        batch: args.batch,
        seed: args.seed,
        bos,
        tokens: first_tokens,
        patterns,
    })
}

/// Attention patterns of sequence `batch_index`: `[layer][head]`, each `[q][k]` flattened row-major.
pub fn attention_patterns<B: Backend>(
    cache: &ActivationCache<B>,
    batch_index: usize,
) -> Result<Vec<Vec<Vec<f32>>>> {
    check_batch_index(cache, batch_index)?;
    (0..cache.cfg().n_layers)
        .map(|l| {
            let pattern = cache.get(HookPoint::Block(l, BlockHook::Pattern))?;
            let [_, heads, p, _]: [usize; 4] = pattern.shape().try_into().map_err(|_| {
                TlensError::Analysis("attention patterns must be [batch, head, query, key]".into())
            })?;
            let values = to_f32(pattern.narrow(0, batch_index, 1)?.into_data());
            Ok((0..heads)
                .map(|h| values[h * p * p..(h + 1) * p * p].to_vec())
                .collect())
        })
        .collect()
}

/// The previous-token score of every head on one sequence of a cache (`[layer][head]`).
pub fn prev_token_scores<B: Backend>(
    cache: &ActivationCache<B>,
    batch_index: usize,
) -> Result<Vec<Vec<f32>>> {
    let patterns = attention_patterns(cache, batch_index)?;
    Ok(patterns
        .iter()
        .map(|layer| {
            layer
                .iter()
                .map(|pat| {
                    let p = (pat.len() as f64).sqrt() as usize;
                    if p < 2 {
                        return 0.0;
                    }
                    (1..p).map(|q| pat[q * p + q - 1]).sum::<f32>() / (p - 1) as f32
                })
                .collect()
        })
        .collect())
}
