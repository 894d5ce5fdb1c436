//! [`ActivationCache`]: the activations of one run under their hook names, and the model they came from.

use std::sync::Arc;

use burn_tensor::backend::Backend;
use indexmap::IndexMap;

use crate::config::HookedTransformerConfig;
use crate::dyn_tensor::DynTensor;
use crate::error::{closest, CacheError, Result};
use crate::hook_names::CacheKey;
use crate::recorder::RunOptions;
use crate::weights::TransformerWeights;

/// The configuration and parameters a cache's methods read (shared with the model, never copied).
#[derive(Clone, Debug)]
pub struct ModelParams<B: Backend> {
    /// The model's configuration (after weight processing: `fold_ln` turns `LN` into `LNPre`).
    pub cfg: HookedTransformerConfig,
    /// The model's parameters.
    pub weights: TransformerWeights<B>,
}

/// The activations of a run, keyed by TransformerLens hook name in firing order, with the model behind them.
///
/// Made by the model's `run_with_cache`. Index it with any key TransformerLens accepts ([`CacheKey`]).
#[derive(Clone, Debug)]
pub struct ActivationCache<B: Backend> {
    pub(crate) entries: IndexMap<String, DynTensor<B>>,
    pub(crate) model: Arc<ModelParams<B>>,
    pub(crate) has_batch_dim: bool,
    pub(crate) options: RunOptions,
}

impl<B: Backend> ActivationCache<B> {
    /// Wraps the activations of a run.
    pub fn new(
        entries: IndexMap<String, DynTensor<B>>,
        model: Arc<ModelParams<B>>,
        options: RunOptions,
    ) -> Self {
        let has_batch_dim = !options.remove_batch_dim;
        Self {
            entries,
            model,
            has_batch_dim,
            options,
        }
    }

    /// The activation under a key (`"blocks.0.attn.hook_pattern"`, `"pattern0"`, `("resid_pre", 1)`, ...).
    ///
    /// An unknown key is an error that names the closest existing keys.
    pub fn get(&self, key: impl Into<CacheKey>) -> Result<DynTensor<B>> {
        let key = key.into();
        if let CacheKey::Name(name) = &key {
            if let Some(t) = self.entries.get(name) {
                return Ok(t.clone());
            }
        }
        let name = key.resolve(self.model.cfg.n_layers);
        self.entries
            .get(&name)
            .cloned()
            .ok_or_else(|| CacheError::UnknownKey {
                suggestions: closest(&name, self.entries.keys().map(String::as_str)),
                key: name,
            })
    }

    /// The activation a method needs, with an error that says how to keep it when the run dropped it.
    pub(crate) fn need(&self, method: &'static str, name: &str) -> Result<DynTensor<B>> {
        self.entries
            .get(name)
            .cloned()
            .ok_or_else(|| CacheError::MissingActivation {
                method,
                key: name.to_string(),
                stopped_at: self.stopped_at(),
            })
    }

    /// The layer the run stopped before, if it stopped early.
    pub fn stopped_at(&self) -> Option<usize> {
        let n = self.model.cfg.n_layers as i64;
        self.options.stop_at_layer.map(|l| {
            if l < 0 {
                (n + l).max(0) as usize
            } else {
                l.min(n) as usize
            }
        })
    }

    /// Whether every activation has a leading batch axis.
    pub fn has_batch_dim(&self) -> bool {
        self.has_batch_dim
    }

    /// The options of the run that made this cache.
    pub fn run_options(&self) -> &RunOptions {
        &self.options
    }

    /// The model's configuration.
    pub fn cfg(&self) -> &HookedTransformerConfig {
        &self.model.cfg
    }

    /// The model's configuration and parameters.
    pub fn model(&self) -> &Arc<ModelParams<B>> {
        &self.model
    }

    /// The hook names, in firing order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// The activations, in firing order.
    pub fn values(&self) -> impl Iterator<Item = &DynTensor<B>> {
        self.entries.values()
    }

    /// `(hook name, activation)` pairs, in firing order.
    pub fn items(&self) -> impl Iterator<Item = (&str, &DynTensor<B>)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The number of activations.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the cache holds this exact hook name.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }
}

impl<B: Backend> std::fmt::Display for ActivationCache<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ActivationCache with keys {:?}",
            self.entries.keys().collect::<Vec<_>>()
        )
    }
}
