//! The kernels the cache takes from the model's backend. tlens's backend extension (`tlens_model::Kernels`, burn's
//! pattern of a trait on the backend) lives in the model crate, next to the backends it is implemented for; cache-core
//! knows no backend, so the model hands the few kernels the cache needs over as plain functions. The default is
//! burn's generic ops, which is what a cache built without a model (loaded from a file, or in tests) uses.

use burn_tensor::{FloatDType, Tensor, backend::Backend};

use crate::dyn_tensor::MAX_RANK;

/// A tensor as the cache stores it: every activation padded to [`MAX_RANK`] axes with leading ones.
pub type Physical<B> = Tensor<B, MAX_RANK>;

/// Converts a tensor to another float precision, rounding to nearest even.
pub type CastFn<B> = fn(Physical<B>, FloatDType) -> Physical<B>;

/// `(x − mean(x)) / scale` over the last axis, or `x / scale` when not centring; `scale` has a last axis of one and
/// broadcasts over the others (TransformerLens's `apply_ln_to_stack`).
pub type NormaliseFn<B> = fn(Physical<B>, Physical<B>, bool) -> Physical<B>;

/// `lhs · rhs` over the last two axes, the leading axes broadcast as in burn's `matmul`.
pub type MatmulFn<B> = fn(Physical<B>, Physical<B>) -> Physical<B>;

/// The backend's kernels for the cache's hot passes, as functions.
#[derive(Debug)]
pub struct CacheKernels<B: Backend> {
    /// Keeps activations in the run's [`cache_dtype`](crate::RunOptions::cache_dtype).
    pub cast: CastFn<B>,
    /// Applies a norm's cached scale to a stack of residual-stream components.
    pub normalise: NormaliseFn<B>,
    /// The matrix products of the head results (each layer's `hook_z` times its `W_O`, 453 MB at GPT-2 small's
    /// 8×128).
    pub matmul: MatmulFn<B>,
    /// Matrix products whose inner axis has length one, `[…, m, 1] · […, 1, n]`: the neuron results, a product of one
    /// term per element. The same bits as a broadcast element-wise product, so a backend takes whichever it runs
    /// faster (burn-ndarray: the element-wise product; burn-flex: its matrix product).
    pub outer: MatmulFn<B>,
}

// By hand: derived, `Clone` and `Copy` would ask the same of the backend type.
impl<B: Backend> Clone for CacheKernels<B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B: Backend> Copy for CacheKernels<B> {}

impl<B: Backend> Default for CacheKernels<B> {
    /// burn's generic ops.
    fn default() -> Self {
        Self {
            cast: |x, dtype| x.cast(dtype),
            normalise: normalise::<B>,
            matmul: |lhs, rhs| lhs.matmul(rhs),
            outer: |lhs, rhs| lhs * rhs,
        }
    }
}

/// [`NormaliseFn`] in burn's generic ops: the mean, the difference and the quotient, each a pass of its own.
pub fn normalise<B: Backend>(x: Physical<B>, scale: Physical<B>, centre: bool) -> Physical<B> {
    let x = if centre {
        x.clone() - x.mean_dim(MAX_RANK - 1)
    } else {
        x
    };
    x / scale
}
