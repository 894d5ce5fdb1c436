//! [`ActivationCache`]: the activations of one run under their hook names, and the model they came from.

use std::sync::Arc;

use burn_tensor::backend::Backend;
use indexmap::IndexMap;

use crate::config::HookedTransformerConfig;
use crate::derived::Kept;
use crate::dyn_tensor::DynTensor;
use crate::error::{CacheError, Result, closest};
use crate::hook_names::CacheKey;
use crate::hook_point::{BlockHook, HookPoint};
use crate::kernels::CacheKernels;
use crate::recorder::RunOptions;
use crate::slice::Slice;
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
    pub(crate) entries: IndexMap<String, Kept<B>>,
    pub(crate) model: Arc<ModelParams<B>>,
    pub(crate) has_batch_dim: bool,
    pub(crate) options: RunOptions,
    pub(crate) kernels: CacheKernels<B>,
}

impl<B: Backend> ActivationCache<B> {
    /// Wraps the activations of a run (tensors, or [`Kept`] entries of which some may be derived).
    pub fn new<K: Into<Kept<B>>>(
        entries: IndexMap<String, K>,
        model: Arc<ModelParams<B>>,
        options: RunOptions,
    ) -> Self {
        let has_batch_dim = !options.remove_batch_dim;
        Self {
            entries: entries.into_iter().map(|(k, v)| (k, v.into())).collect(),
            model,
            has_batch_dim,
            options,
            kernels: CacheKernels::default(),
        }
    }

    /// The same cache, running its hot passes (the norm's scale on a stack, the head and neuron results' products)
    /// with the backend's own kernels.
    pub fn with_kernels(self, kernels: CacheKernels<B>) -> Self {
        Self { kernels, ..self }
    }

    /// The activation under a key (`"blocks.0.attn.hook_pattern"`, `"pattern0"`, `("resid_pre", 1)`, ...).
    ///
    /// An unknown key is an error that names the closest existing keys.
    pub fn get(&self, key: impl Into<CacheKey>) -> Result<DynTensor<B>> {
        let key = key.into();
        if let CacheKey::Name(name) = &key
            && let Some(t) = self.entries.get(name)
        {
            return Ok(upcast(t));
        }
        let n_layers = self.model.cfg.n_layers;
        if let CacheKey::Parts(_, Some(layer), _) = &key
            && !(-(n_layers as i64)..n_layers as i64).contains(layer)
        {
            return Err(CacheError::LayerOutOfRange {
                layer: *layer,
                what: format!(
                    "the model has {n_layers} layers (-{n_layers}..={})",
                    n_layers - 1
                ),
            });
        }
        let name = key.resolve(n_layers);
        self.entries
            .get(&name)
            .map(upcast)
            .ok_or_else(|| CacheError::UnknownKey {
                suggestions: closest(&name, self.entries.keys().map(String::as_str)),
                key: name,
            })
    }

    /// The activation a method needs, with an error that says how to keep it when the run dropped it.
    pub(crate) fn need(&self, method: &'static str, point: HookPoint) -> Result<DynTensor<B>> {
        self.entry(point).ok_or_else(|| self.missing(method, point))
    }

    /// The cached activation of a hook point (as f32), if the run kept it.
    pub(crate) fn entry(&self, point: HookPoint) -> Option<DynTensor<B>> {
        self.entries.get(&point.to_string()).map(upcast)
    }

    /// The error for an activation a method needs but the cache does not hold.
    pub(crate) fn missing(&self, method: &'static str, point: HookPoint) -> CacheError {
        CacheError::MissingActivation {
            method,
            key: point.to_string(),
            stopped_at: self.stopped_at(),
        }
    }

    /// The model's number of layers.
    pub(crate) fn n_layers(&self) -> usize {
        self.model.cfg.n_layers
    }

    /// TransformerLens's layer argument: `None` and `-1` mean `n_layers`; otherwise it must lie in `0..=n_layers`.
    ///
    /// TransformerLens normalises only `-1`; other negative layers fail there with a `KeyError` on a hook name such as
    /// `blocks.-2.ln1.hook_scale`, and here with [`CacheError::LayerOutOfRange`].
    pub(crate) fn resolve_layer(&self, layer: Option<i64>, method: &'static str) -> Result<usize> {
        let n = self.n_layers() as i64;
        match layer {
            None | Some(-1) => Ok(self.n_layers()),
            Some(l) if (0..=n).contains(&l) => Ok(l as usize),
            Some(l) => Err(CacheError::LayerOutOfRange {
                layer: l,
                what: format!("{method} takes a layer in 0..={n}, or -1 / None for {n}"),
            }),
        }
    }

    /// The device the model's parameters live on (where tensors made from weights are created).
    pub(crate) fn device(&self) -> burn_tensor::Device<B> {
        self.model.weights.W_E.device()
    }

    /// The shape `[*batch, *pos, d_model]` of one residual-stream vector per (batch, position) after `pos_slice`:
    /// the shape of an empty stack's rows.
    ///
    /// TransformerLens takes it from `hook_embed` only (and fails when a `names_filter` dropped it); any cached
    /// residual-stream activation will do here.
    pub(crate) fn resid_shape(
        &self,
        method: &'static str,
        pos_slice: &Slice,
    ) -> Result<Vec<usize>> {
        let found = self.entries.iter().find(|(k, _)| {
            matches!(
                k.parse::<HookPoint>(),
                Ok(HookPoint::Embed
                    | HookPoint::PosEmbed
                    | HookPoint::Block(
                        _,
                        BlockHook::ResidPre
                            | BlockHook::ResidMid
                            | BlockHook::ResidPost
                            | BlockHook::AttnOut
                            | BlockHook::MlpOut
                    ))
            )
        });
        match found {
            Some((_, t)) => Ok(t.slice(pos_slice, -2, "pos_slice")?.shape()),
            None => Err(self.missing(method, HookPoint::Embed)),
        }
    }

    /// A stack with zero rows `[0, *batch_and_pos, width]` (`width` defaults to `d_model`).
    pub(crate) fn empty_rows(
        &self,
        method: &'static str,
        pos_slice: &Slice,
        width: Option<usize>,
    ) -> Result<DynTensor<B>> {
        let mut shape = self.resid_shape(method, pos_slice)?;
        shape.insert(0, 0);
        if let Some(w) = width {
            *shape.last_mut().expect("a d_model axis") = w;
        }
        Ok(DynTensor::zeros(&shape, &self.device()))
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

    /// The activations, in firing order, as stored: in the run's
    /// [`cache_dtype`](crate::RunOptions::cache_dtype) (`get` and the methods read them as f32). A derived activation
    /// ([`is_derived`](Self::is_derived)) is computed as the iterator reaches it.
    pub fn values(&self) -> impl Iterator<Item = DynTensor<B>> {
        self.entries.values().map(Kept::tensor)
    }

    /// `(hook name, activation)` pairs, in firing order, as stored (see [`values`](Self::values)).
    pub fn items(&self) -> impl Iterator<Item = (&str, DynTensor<B>)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.tensor()))
    }

    /// How the cache holds each activation, in firing order, without computing the derived ones.
    pub fn kept(&self) -> impl Iterator<Item = (&str, &Kept<B>)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Whether the cache keeps this hook's activation as the computation that makes it (the attention scores and
    /// pattern of a run where no hook needed them whole; see [`Derived`](crate::Derived)): it is computed again, to
    /// the same values, on every read.
    pub fn is_derived(&self, name: &str) -> bool {
        matches!(self.entries.get(name), Some(Kept::Derived(_)))
    }

    /// The bytes of tensor memory the cache holds (derived activations hold none of their own).
    pub fn stored_bytes(&self) -> usize {
        self.entries.values().map(Kept::stored_bytes).sum()
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

/// A stored activation as f32, whatever [`RunOptions::cache_dtype`](crate::RunOptions) kept it in: every method
/// computes in f32.
fn upcast<B: Backend>(t: &Kept<B>) -> DynTensor<B> {
    t.tensor().cast(burn_tensor::FloatDType::F32)
}
