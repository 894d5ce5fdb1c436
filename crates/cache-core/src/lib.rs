//! The cache layer of tlens: TransformerLens's `ActivationCache`, hook names and `Slice`, generic over burn's
//! [`Backend`](burn_tensor::backend::Backend).
//!
//! Nothing here knows a concrete backend; the model crate fills a cache through a [`CacheHook`], and every method
//! runs on whatever backend the tensors live on.
//!
//! # The `ActivationCache` API, by TransformerLens name
//!
//! Every method keeps TransformerLens's name; keyword arguments become a struct with TransformerLens's defaults
//! (`..Default::default()`), and methods that can return labels return a [`Stack`] (tensor and labels).
//!
//! | TransformerLens | tlens |
//! |---|---|
//! | `cache[key]`, `keys`, `values`, `items`, `len` | [`ActivationCache::get`] (any [`CacheKey`]), `keys`, `values`, `items`, `len` |
//! | `accumulated_resid(...)` | [`ActivationCache::accumulated_resid`] with [`AccumulatedResid`] |
//! | `logit_lens(...)` (TransformerLens 4) | [`ActivationCache::logit_lens`] with [`LogitLens`] |
//! | `decompose_resid(...)` | [`ActivationCache::decompose_resid`] with [`DecomposeResid`] |
//! | `apply_ln_to_stack(stack, ...)` | [`ActivationCache::apply_ln_to_stack`] with [`ApplyLnToStack`] |
//! | `logit_attrs(stack, tokens, ...)` | [`ActivationCache::logit_attrs`] with [`TokenIds`] and [`LogitAttrs`] |
//! | `compute_head_results()` | [`ActivationCache::compute_head_results`] |
//! | `stack_head_results(...)` | [`ActivationCache::stack_head_results`] with [`StackHeadResults`] |
//! | `stack_activation(name, layer, sublayer_type)` | [`ActivationCache::stack_activation`] |
//! | `get_neuron_results(layer, ...)` | [`ActivationCache::get_neuron_results`] with [`GetNeuronResults`] |
//! | `stack_neuron_results(layer, ...)` | [`ActivationCache::stack_neuron_results`] with [`StackNeuronResults`] |
//! | `get_full_resid_decomposition(...)` | [`ActivationCache::get_full_resid_decomposition`] with [`GetFullResidDecomposition`] |
//! | `model.accumulated_bias(...)` | [`ModelParams::accumulated_bias`] |
//! | `model.tokens_to_residual_directions(tokens)` | [`ModelParams::tokens_to_residual_directions`] |
//! | `remove_batch_dim()`, `apply_slice_to_batch_dim(s)`, `to(device)` | [`ActivationCache::remove_batch_dim`], [`ActivationCache::apply_slice_to_batch_dim`], [`ActivationCache::to`] |
//!
//! Failures are [`CacheError`]s, never panics. Where TransformerLens 3.9 has a bug, tlens fixes it; the book's
//! "Divergences from TransformerLens" page lists each case and the test that shows it.
//!
//! ```
//! use tlens_cache_core::{testing, AccumulatedResid, LogitAttrs, Slice};
//! let cache = testing::random_cache::<burn_ndarray::NdArray>(2, 5);
//! let acc = cache
//!     .accumulated_resid(AccumulatedResid { incl_mid: true, pos_slice: Slice::Index(-1), ..Default::default() })
//!     .unwrap();
//! let dla = cache.logit_attrs(acc.tensor, 7, LogitAttrs { pos_slice: Slice::Index(-1), ..Default::default() }).unwrap();
//! assert_eq!((acc.labels.len(), dla.shape()), (5, vec![5, 2]));
//! ```

pub mod atomic_file;
pub mod attribution;
pub mod batch;
pub mod cache;
pub mod config;
pub mod decomposition;
pub mod derived;
pub mod dyn_tensor;
pub mod error;
pub mod heads;
pub mod hook_names;
pub mod hook_point;
pub mod hooks;
pub mod kernels;
pub mod ln;
pub mod neurons;
pub mod precision;
pub mod recorder;
pub mod resid;
pub mod save;
pub mod slice;
pub mod stack;
pub mod testing;
pub mod weights;

pub use attribution::{LogitAttrs, TokenIds};
pub use cache::{ActivationCache, ModelParams};
pub use config::{
    ActFn, AttentionDir, AttnType, BlockKind, HookedTransformerConfig, MlpKind, NormalizationType,
    PositionalEmbeddingType,
};
pub use decomposition::GetFullResidDecomposition;
pub use derived::{Derived, Kept};
pub use dyn_tensor::DynTensor;
pub use error::{CacheError, Result};
pub use heads::{StackHeadResults, head_outputs};
pub use hook_names::{CacheKey, get_act_name};
pub use hook_point::{BlockHook, HookPoint, Norm, NormHook, hook_points};
pub use hooks::{FnHook, Hook, Hooks};
pub use kernels::CacheKernels;
pub use ln::ApplyLnToStack;
pub use neurons::{GetNeuronResults, StackNeuronResults};
pub use precision::Precision;
pub use recorder::{CacheHook, NamesFilter, RunOptions};
pub use resid::{AccumulatedResid, DecomposeMode, DecomposeResid, LensOutput, LogitLens};
pub use slice::Slice;
pub use stack::Stack;
pub use weights::{
    AttentionWeights, BlockWeights, MlpWeights, NormWeights, ParamMap, TransformerWeights,
    in_dtype, via_f32,
};
