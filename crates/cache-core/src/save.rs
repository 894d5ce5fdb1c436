//! Saving and loading an [`ActivationCache`] as safetensors, with TransformerLens hook names as keys, so that Python's
//! `safetensors.torch.load_file` returns the same dict TransformerLens's `cache.cache_dict` holds.
//!
//! Metadata: `format = "tlens-activation-cache"`, `has_batch_dim` (`"true"`/`"false"`) and `config` (the model's
//! `HookedTransformerConfig` as JSON). Loading needs the model's parameters again (the file holds activations only).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use burn_tensor::backend::Backend;
use indexmap::IndexMap;
use safetensors::{Dtype, SafeTensors};

use crate::atomic_file::write_atomically;
use crate::cache::{ActivationCache, ModelParams};
use crate::dyn_tensor::DynTensor;
use crate::error::{CacheError, Result};
use crate::recorder::RunOptions;

/// The value of the `format` metadata key of a saved cache.
pub const CACHE_FORMAT: &str = "tlens-activation-cache";

/// A named tensor ready to be written: f32 or i64 values with their shape.
pub struct NamedTensor {
    /// The tensor's name in the file.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Little-endian bytes.
    pub bytes: Vec<u8>,
    /// `F32` or `I64`.
    pub dtype: Dtype,
}

impl NamedTensor {
    /// A float tensor (stored as f32).
    pub fn float<B: Backend>(name: impl Into<String>, t: &DynTensor<B>) -> Self {
        let bytes = t.to_vec().iter().flat_map(|v| v.to_le_bytes()).collect();
        Self {
            name: name.into(),
            shape: t.shape(),
            bytes,
            dtype: Dtype::F32,
        }
    }

    /// An integer tensor (stored as i64).
    pub fn int(name: impl Into<String>, shape: Vec<usize>, values: &[i64]) -> Self {
        Self {
            name: name.into(),
            shape,
            bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            dtype: Dtype::I64,
        }
    }
}

/// Writes named tensors and metadata to a safetensors file, atomically ([`write_atomically`]): a failure leaves any
/// earlier file at `path` as it was. Two tensors of one name are an error.
pub fn write_safetensors(
    path: &Path,
    tensors: &[NamedTensor],
    metadata: HashMap<String, String>,
) -> Result<()> {
    let file_err = |e: &dyn std::fmt::Display| CacheError::File {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let mut seen = std::collections::HashSet::new();
    if let Some(t) = tensors.iter().find(|t| !seen.insert(t.name.as_str())) {
        return Err(file_err(&format!("two tensors are named `{}`", t.name)));
    }
    let views = tensors
        .iter()
        .map(|t| {
            safetensors::tensor::TensorView::new(t.dtype, t.shape.clone(), &t.bytes)
                .map(|v| (t.name.clone(), v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| file_err(&e))?;
    write_atomically(path, |tmp| {
        safetensors::serialize_to_file(views, Some(metadata), tmp).map_err(std::io::Error::other)
    })
}

impl<B: Backend> ActivationCache<B> {
    /// Writes every activation under its hook name, in firing order, with the batch flag and config as metadata.
    pub fn save(&self, path: &Path) -> Result<()> {
        let tensors: Vec<NamedTensor> = self
            .items()
            .map(|(k, v)| NamedTensor::float(k, &v))
            .collect();
        let metadata = HashMap::from([
            ("format".to_string(), CACHE_FORMAT.to_string()),
            ("has_batch_dim".to_string(), self.has_batch_dim.to_string()),
            ("config".to_string(), self.model.cfg.to_json()),
            (
                "keys".to_string(),
                serde_json::to_string(&self.keys().collect::<Vec<_>>()).expect("strings serialise"),
            ),
        ]);
        write_safetensors(path, &tensors, metadata)
    }

    /// Reads a cache written by [`save`](Self::save), attaching the model it came from (whose config must match).
    pub fn load(path: &Path, model: Arc<ModelParams<B>>) -> Result<Self> {
        let file_err = |message: String| CacheError::File {
            path: path.display().to_string(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|e| file_err(e.to_string()))?;
        let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| file_err(e.to_string()))?;
        let meta = meta.metadata().clone().unwrap_or_default();
        if meta.get("format").map(String::as_str) != Some(CACHE_FORMAT) {
            return Err(file_err(
                "not an activation cache written by tlens (metadata `format` is missing)".into(),
            ));
        }
        let cfg = meta
            .get("config")
            .map(|c| crate::HookedTransformerConfig::from_json(c))
            .transpose()?;
        if cfg.as_ref() != Some(&model.cfg) {
            return Err(file_err(
                "the cache was made by a model with a different config".into(),
            ));
        }
        let has_batch_dim = meta.get("has_batch_dim").map(String::as_str) != Some("false");
        let order: Vec<String> = meta
            .get("keys")
            .and_then(|k| serde_json::from_str(k).ok())
            .unwrap_or_default();
        let st = SafeTensors::deserialize(&bytes).map_err(|e| file_err(e.to_string()))?;
        let device = model.weights.W_E.device();
        let mut entries = IndexMap::new();
        let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
        names.sort_by_key(|n| order.iter().position(|o| o == n).unwrap_or(usize::MAX));
        for name in names {
            let view = st.tensor(&name).map_err(|e| file_err(e.to_string()))?;
            if view.dtype() != Dtype::F32 {
                return Err(file_err(format!(
                    "`{name}` is {:?}, expected F32",
                    view.dtype()
                )));
            }
            let values: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            let data = burn_tensor::TensorData::new(values, view.shape().to_vec());
            entries.insert(name, DynTensor::from_data(data, &device)?);
        }
        let options = RunOptions {
            remove_batch_dim: !has_batch_dim,
            ..RunOptions::default()
        };
        Ok(ActivationCache::new(entries, model, options))
    }
}
