//! The questions the `tlens` subcommands ask of a model, as library functions generic over `B: Backend`: the logit
//! lens ([`lens`]), direct logit attribution ([`attribution`]), attention patterns and per-head scores ([`heads`]),
//! activation patching ([`patching`]), and reading token ids from JSON ([`input`]).
//!
//! Each function takes a model or an [`ActivationCache`] and returns plain Rust data
//! (`Vec`s of `f32` and labels, serialisable), which the command line prints and the HTML report draws.
//!
//! ```
//! use tlens::{analysis, backend::NdArray, embedded, RunOptions, TokenBatch};
//! let loaded = embedded::model::<NdArray>(&Default::default()).unwrap();
//! let scores = analysis::heads::head_scores(&loaded.model, &analysis::heads::HeadScoresArgs::default(), None, &mut |_| {}).unwrap();
//! assert_eq!(scores.induction.len(), loaded.model.cfg().n_layers);
//! ```

pub mod attribution;
pub mod heads;
pub mod input;
pub mod lens;
pub mod patching;

use burn_tensor::backend::Backend;
use tlens_cache_core::{ActivationCache, BlockHook, HookPoint};

use crate::error::{Result, TlensError};

/// A named number: one bar of a chart, one row of a table.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Labelled {
    /// What the number belongs to (`"L1H2"`, `"0_attn_out"`, `"L0N5"`, ...).
    pub label: String,
    /// The number.
    pub value: f32,
}

/// Checks that `index` is a row of the cache's batch and returns the batch size.
pub(crate) fn check_batch_index<B: Backend>(
    cache: &ActivationCache<B>,
    index: usize,
) -> Result<usize> {
    if !cache.has_batch_dim() {
        return Err(TlensError::Analysis(
            "the cache has no batch axis; run the model without remove_batch_dim".into(),
        ));
    }
    let batch = cache.get(HookPoint::Block(0, BlockHook::ResidPre))?.shape()[0];
    if index >= batch {
        return Err(TlensError::Analysis(format!(
            "batch index {index} is outside the batch of {batch} sequences"
        )));
    }
    Ok(batch)
}

/// Resolves a position (negative counts from the end) in a sequence of `positions` tokens.
pub fn resolve_position(position: i64, positions: usize) -> Result<usize> {
    let p = if position < 0 {
        positions as i64 + position
    } else {
        position
    };
    if !(0..positions as i64).contains(&p) {
        return Err(TlensError::Analysis(format!(
            "position {position} is outside a sequence of {positions} tokens"
        )));
    }
    Ok(p as usize)
}
