//! The cache layer of tlens: TransformerLens's `ActivationCache`, hook names and `Slice`, generic over burn's
//! [`Backend`](burn_tensor::backend::Backend).
//!
//! Nothing here knows a concrete backend; the model crate fills a cache through a [`HookRecorder`], and every method
//! runs on whatever backend the tensors live on.

pub mod attribution;
pub mod batch;
pub mod cache;
pub mod config;
pub mod decomposition;
pub mod dyn_tensor;
pub mod error;
pub mod heads;
pub mod hook_names;
pub mod ln;
pub mod neurons;
pub mod recorder;
pub mod resid;
pub mod save;
pub mod slice;
pub mod stack;
pub mod testing;
pub mod weights;

pub use attribution::{LogitAttrs, TokenIds};
pub use cache::{ActivationCache, ModelParams};
pub use config::{ActFn, HookedTransformerConfig, NormalizationType};
pub use decomposition::GetFullResidDecomposition;
pub use dyn_tensor::DynTensor;
pub use error::{CacheError, Result};
pub use heads::StackHeadResults;
pub use hook_names::{get_act_name, CacheKey};
pub use ln::ApplyLnToStack;
pub use neurons::{GetNeuronResults, StackNeuronResults};
pub use recorder::{HookRecorder, NamesFilter, RunOptions};
pub use resid::{AccumulatedResid, DecomposeMode, DecomposeResid, LensOutput, LogitLens};
pub use slice::Slice;
pub use stack::Stack;
pub use weights::{AttentionWeights, BlockWeights, MlpWeights, NormWeights, TransformerWeights};
