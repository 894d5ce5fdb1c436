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

pub mod allocator;
pub mod analysis;
pub mod backend;
pub mod bench;
pub mod embedded;
pub mod error;
pub mod harvest;
pub mod memory;
pub mod output;
pub mod parity;
pub mod plan;
pub mod report;

pub use error::{Result, TlensError};
pub use tlens_cache_core::{
    self as cache_core, ActivationCache, BlockHook, CacheError, CacheKey, DynTensor, FnHook, Hook,
    HookPoint, HookedTransformerConfig, NamesFilter, Precision, RunOptions, Slice, get_act_name,
};
pub use tlens_model::{
    self as model, HookedTransformer, Intervention, LoadedModel, ModelError, Op, Processing,
    Selector, TokenBatch, Tokenizer, load_folder, load_hf, load_transformerlens,
    load_transformerlens_bytes,
};

/// The book's chapters as doc tests: `cargo test --doc` compiles and runs every ```` ```rust ```` block of the user's
/// manual (book/src), so its examples cannot go stale.
#[cfg(doctest)]
pub mod book_examples {
    #[doc = include_str!("../book/src/getting-started.md")]
    pub struct GettingStarted;
    #[doc = include_str!("../book/src/hooks.md")]
    pub struct Concepts;
    #[doc = include_str!("../book/src/cache-guide.md")]
    pub struct CacheGuide;
    #[doc = include_str!("../book/src/cli.md")]
    pub struct CommandLine;
    #[doc = include_str!("../book/src/harvest.md")]
    pub struct Harvest;
    #[doc = include_str!("../book/src/backends.md")]
    pub struct Backends;
    #[doc = include_str!("../book/src/models.md")]
    pub struct Models;
    #[doc = include_str!("../book/src/interventions.md")]
    pub struct Interventions;
    #[doc = include_str!("../book/src/migrating.md")]
    pub struct Migrating;
    #[doc = include_str!("../book/src/plans.md")]
    pub struct Plans;
    #[doc = include_str!("../book/src/divergences.md")]
    pub struct Divergences;
}
