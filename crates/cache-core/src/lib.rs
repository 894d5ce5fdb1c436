//! The cache layer of tlens: TransformerLens's `ActivationCache`, hook names and `Slice`, generic over burn's
//! [`Backend`](burn_tensor::backend::Backend).
//!
//! Nothing here knows a concrete backend; the model crate fills a cache through a [`HookRecorder`], and every method
//! runs on whatever backend the tensors live on.

pub mod cache;
pub mod config;
pub mod dyn_tensor;
pub mod error;
pub mod hook_names;
pub mod recorder;
pub mod slice;
pub mod weights;

pub use cache::{ActivationCache, ModelParams};
pub use config::{ActFn, HookedTransformerConfig, NormalizationType};
pub use dyn_tensor::DynTensor;
pub use error::{CacheError, Result};
pub use hook_names::{get_act_name, CacheKey};
pub use recorder::{HookRecorder, NamesFilter, RunOptions};
pub use slice::Slice;
pub use weights::{AttentionWeights, BlockWeights, MlpWeights, NormWeights, TransformerWeights};
