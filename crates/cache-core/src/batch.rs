//! Whole-cache utilities: `remove_batch_dim`, `apply_slice_to_batch_dim`, `to`.

use std::collections::HashMap;
use std::sync::Arc;

use burn_tensor::backend::Backend;

use crate::cache::{ActivationCache, ModelParams};
use crate::derived::Kept;
use crate::error::{CacheError, Result};
use crate::slice::Slice;

impl<B: Backend> ActivationCache<B> {
    /// The batch size: the most common leading axis length among the activations (TransformerLens 4's
    /// `_batch_size`); `None` for a cache without a batch axis or without activations.
    pub fn batch_size(&self) -> Option<usize> {
        if !self.has_batch_dim {
            return None;
        }
        let mut counts: HashMap<usize, usize> = HashMap::new();
        for shape in self.entries.values().map(Kept::shape) {
            if let Some(&size) = shape.first() {
                *counts.entry(size).or_default() += 1;
            }
        }
        counts
            .into_iter()
            .max_by_key(|&(size, count)| (count, std::cmp::Reverse(size)))
            .map(|(size, _)| size)
    }

    /// Drops the batch axis of every activation of a one-sequence cache, as TransformerLens's `remove_batch_dim`.
    ///
    /// `batch_size` is the batch the caller expects (TransformerLens 4 infers it; pass `None` to do the same): it must
    /// be 1. A cache with a larger batch is an error and stays unchanged; a cache without a batch axis is left as it
    /// is (TransformerLens logs a warning).
    ///
    /// ```
    /// use tlens_cache_core::testing;
    /// let mut cache = testing::random_cache::<burn_ndarray::NdArray>(1, 4);
    /// cache.remove_batch_dim(None).unwrap();
    /// assert_eq!(cache.get(("resid_pre", 0)).unwrap().shape(), [4, 16]);
    /// assert!(testing::random_cache::<burn_ndarray::NdArray>(2, 4).remove_batch_dim(None).is_err());
    /// ```
    pub fn remove_batch_dim(&mut self, batch_size: Option<usize>) -> Result<&mut Self> {
        if !self.has_batch_dim {
            return Ok(self);
        }
        let actual = self.batch_size().unwrap_or(1);
        let wanted = batch_size.unwrap_or(actual);
        if actual != 1 || wanted != 1 {
            return Err(CacheError::InvalidArgument(format!(
                "cannot remove the batch dimension from a cache with batch size {actual}{}; select one sequence with \
                 apply_slice_to_batch_dim first",
                if wanted != actual {
                    format!(" (expected {wanted})")
                } else {
                    String::new()
                }
            )));
        }
        for t in self.entries.values_mut() {
            if t.shape().first() == Some(&1) {
                *t = t.slice(&Slice::Index(0), 0, "remove_batch_dim")?;
            }
        }
        self.has_batch_dim = false;
        self.options.remove_batch_dim = true;
        Ok(self)
    }

    /// A new cache holding `batch_slice` of every activation's batch axis (an index removes the axis), sharing the
    /// model: TransformerLens's `apply_slice_to_batch_dim`.
    ///
    /// [`Slice::All`] returns a copy of any cache; any other slice of a cache without a batch axis is an error
    /// (TransformerLens rejects every slice there, `None` included).
    ///
    /// ```
    /// use tlens_cache_core::{testing, Slice};
    /// let cache = testing::random_cache::<burn_ndarray::NdArray>(3, 4);
    /// let two = cache.apply_slice_to_batch_dim(Slice::range(1, 3)).unwrap();
    /// assert_eq!(two.get(("resid_pre", 0)).unwrap().shape(), [2, 4, 16]);
    /// let one = cache.apply_slice_to_batch_dim(0).unwrap();
    /// assert!(!one.has_batch_dim());
    /// ```
    pub fn apply_slice_to_batch_dim(&self, batch_slice: impl Into<Slice>) -> Result<Self> {
        let batch_slice = batch_slice.into();
        if batch_slice == Slice::All {
            return Ok(self.clone());
        }
        if !self.has_batch_dim {
            return Err(CacheError::InvalidArgument(format!(
                "cannot apply batch_slice {batch_slice} to a cache without a batch dimension"
            )));
        }
        let entries = self
            .entries
            .iter()
            .map(|(k, t)| Ok((k.clone(), t.slice(&batch_slice, 0, "batch_slice")?)))
            .collect::<Result<_>>()?;
        let has_batch_dim = !batch_slice.removes_axis();
        let mut options = self.options.clone();
        options.remove_batch_dim = !has_batch_dim;
        Ok(Self {
            entries,
            model: self.model.clone(),
            has_batch_dim,
            options,
            kernels: self.kernels,
        })
    }

    /// Moves every activation to `device`, as TransformerLens's `to`. The model's parameters are copied there too
    /// when they live elsewhere (TransformerLens leaves the model behind, so methods that read weights then fail).
    pub fn to(self, device: &burn_tensor::Device<B>) -> Self {
        let model = if self.model.weights.W_E.device() == *device {
            self.model
        } else {
            Arc::new(ModelParams {
                cfg: self.model.cfg.clone(),
                weights: self.model.weights.clone().to_device(device),
            })
        };
        Self {
            entries: self
                .entries
                .into_iter()
                .map(|(k, t)| {
                    let device = device.clone();
                    (k, t.map(move |t| t.to_device(&device)))
                })
                .collect(),
            model,
            has_batch_dim: self.has_batch_dim,
            options: self.options,
            kernels: self.kernels,
        }
    }
}
