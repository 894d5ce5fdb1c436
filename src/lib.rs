//! # tlens
//!
//! TransformerLens-grade mechanistic interpretability on [burn](https://burn.dev): run a transformer, cache every
//! activation under its TransformerLens hook name, and ask the [`ActivationCache`] the questions interpretability work
//! asks, on the backend of your choice.
//!
//! ```
//! use tlens::{backend::NdArray, embedded, RunOptions, TokenBatch};
//! let loaded = embedded::gpt2_tiny::<NdArray>(&Default::default()).unwrap();
//! let tokenizer = loaded.tokenizer.as_ref().unwrap();
//! let tokens = TokenBatch::single(tokenizer.to_tokens("When Mary and John went", true).unwrap()).unwrap();
//! let (logits, cache) = loaded.model.run_with_cache(&tokens, RunOptions::default()).unwrap();
//! assert_eq!(logits.dims()[1], tokens.positions());
//! assert_eq!(cache.get("pattern0").unwrap().shape()[2], tokens.positions());
//! ```

pub mod backend;
pub mod embedded;
pub mod error;
pub mod parity;
pub mod plan;

pub use error::{Result, TlensError};
pub use tlens_cache_core::{
    self as cache_core, get_act_name, ActivationCache, CacheError, CacheKey, DynTensor,
    HookedTransformerConfig, NamesFilter, RunOptions, Slice,
};
pub use tlens_model::{
    self as model, load_hf_gpt2, load_transformerlens, HookedTransformer, ModelError, Processing,
    TokenBatch, Tokenizer,
};
