//! What `run_with_cache` keeps: the options of a run and the caching hook ([`CacheHook`]).

use std::sync::Arc;

use burn_tensor::backend::Backend;
use indexmap::IndexMap;

use crate::derived::{Derived, Kept};
use crate::dyn_tensor::DynTensor;
use crate::error::{CacheError, Result};
use crate::hook_point::HookPoint;
use crate::hooks::Hook;
use crate::kernels::CacheKernels;
use crate::precision::Precision;
use crate::slice::Slice;

/// Which hooks a run keeps.
#[derive(Clone, Default)]
pub enum NamesFilter {
    /// Every hook.
    #[default]
    All,
    /// Exactly these hook names (each must be a hook the model fires).
    Names(Vec<String>),
    /// The hooks whose name satisfies the predicate.
    Predicate(Arc<dyn Fn(&str) -> bool + Send + Sync>),
}

impl NamesFilter {
    /// Whether a hook is kept.
    pub fn keeps(&self, name: &str) -> bool {
        match self {
            NamesFilter::All => true,
            NamesFilter::Names(names) => names.iter().any(|n| n == name),
            NamesFilter::Predicate(p) => p(name),
        }
    }

    /// A short description, for error messages.
    pub fn describe(&self) -> String {
        match self {
            NamesFilter::All => "all hooks".into(),
            NamesFilter::Names(names) => format!("{names:?}"),
            NamesFilter::Predicate(_) => "a predicate".into(),
        }
    }
}

impl std::fmt::Debug for NamesFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl From<Vec<String>> for NamesFilter {
    fn from(names: Vec<String>) -> Self {
        NamesFilter::Names(names)
    }
}

impl From<&[&str]> for NamesFilter {
    fn from(names: &[&str]) -> Self {
        NamesFilter::Names(names.iter().map(|s| s.to_string()).collect())
    }
}

/// The options of `run_with_cache`, with TransformerLens's names and defaults.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Which hooks to keep.
    pub names_filter: NamesFilter,
    /// Stop before this block (negative counts from `n_layers`); the output is then the residual stream.
    pub stop_at_layer: Option<i64>,
    /// Drop the batch axis of every activation (the batch must have one row).
    pub remove_batch_dim: bool,
    /// Keep only these positions (an index keeps a size-1 axis, as `Slice.unwrap` does).
    pub pos_slice: Slice,
    /// The precision activations are kept in (tlens's addition). `None` keeps each as the model computed it, as
    /// TransformerLens does: f32, or a half-precision model's dtype except the norms' f32 `hook_scale` and
    /// `hook_normalized`. The cache methods read them back as f32.
    pub cache_dtype: Option<Precision>,
}

/// The caching hook of `run_with_cache`: keeps what the [`RunOptions`] ask for, already sliced, and changes nothing.
pub struct CacheHook<B: Backend> {
    options: RunOptions,
    entries: IndexMap<String, Kept<B>>,
    /// The backend's kernels (the conversion to the cache's dtype).
    kernels: CacheKernels<B>,
}

impl<B: Backend> Hook<B> for CacheHook<B> {
    /// The hooks the names filter keeps.
    fn fires_at(&self, point: HookPoint) -> bool {
        match &self.options.names_filter {
            NamesFilter::All => true,
            NamesFilter::Names(names) if names.is_empty() => false,
            filter => filter.keeps(&point.to_string()),
        }
    }

    /// Keeps the activation (sliced, batch axis removed if asked).
    fn apply(
        &mut self,
        point: HookPoint,
        activation: &DynTensor<B>,
    ) -> Result<Option<DynTensor<B>>> {
        self.keep(point.to_string(), point, activation.clone())?;
        Ok(None)
    }

    /// The cache keeps a derived activation as it is: slicing, dropping the batch axis and the cast happen when it
    /// is read.
    fn takes_derived(&self, _point: HookPoint) -> bool {
        true
    }

    fn apply_derived(&mut self, point: HookPoint, activation: &Derived<B>) -> Result<()> {
        self.keep_as(point.to_string(), point, activation.clone().into())
    }
}

impl<B: Backend> CacheHook<B> {
    /// Keeps a tensor shaped like `point`'s activation under `name` (the activation itself, or its gradient as
    /// `<name>_grad`), sliced and without its batch axis as the options ask.
    pub fn keep(&mut self, name: String, point: HookPoint, tensor: DynTensor<B>) -> Result<()> {
        self.keep_as(name, point, tensor.into())
    }

    /// [`keep`](Self::keep) for a tensor or a derived activation.
    fn keep_as(&mut self, name: String, point: HookPoint, kept: Kept<B>) -> Result<()> {
        let mut t = kept;
        let pos_slice = self.options.pos_slice.keeping_axis();
        if pos_slice != Slice::All {
            let axis = point.position_axis().ok_or_else(|| {
                CacheError::InvalidArgument(format!(
                    "pos_slice cannot be applied to `{point}`, whose positions are flattened with the batch and \
                     heads; leave it out of names_filter"
                ))
            })?;
            t = t.slice(&pos_slice, axis, "pos_slice")?;
        }
        if self.options.remove_batch_dim {
            let batch = t.shape().first().copied().unwrap_or(0);
            if batch != 1 {
                return Err(CacheError::InvalidArgument(format!(
                    "remove_batch_dim needs a batch of one sequence, got {batch}"
                )));
            }
            t = t.slice(&Slice::Index(0), 0, "remove_batch_dim")?;
        }
        if let Some(dtype) = self.options.cache_dtype {
            dtype.check_backend::<B>(&Default::default())?;
            let cast = self.kernels.cast;
            t = t.map(move |t| t.cast_with(dtype.float_dtype(), cast));
        }
        self.entries.insert(name, t);
        Ok(())
    }
    /// A caching hook for one run.
    pub fn new(options: RunOptions) -> Self {
        Self {
            options,
            entries: IndexMap::new(),
            kernels: CacheKernels::default(),
        }
    }

    /// The same hook with the backend's own kernels instead of burn's generic ops.
    pub fn with_kernels(self, kernels: CacheKernels<B>) -> Self {
        Self { kernels, ..self }
    }

    /// The options this cache runs with.
    pub fn options(&self) -> &RunOptions {
        &self.options
    }

    /// The kept activations, in firing order.
    pub fn into_entries(self) -> (RunOptions, IndexMap<String, Kept<B>>) {
        (self.options, self.entries)
    }
}
