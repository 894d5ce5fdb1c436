//! Reading safetensors files into f32 tensors, whatever their stored float dtype.

use std::collections::BTreeMap;
use std::path::Path;

use burn_tensor::TensorData;
use safetensors::{Dtype, SafeTensors};

use crate::error::{ModelError, Result};

const SINGLE: &str = "model.safetensors";
const INDEX: &str = "model.safetensors.index.json";

/// `model.safetensors.index.json`: which shard holds each tensor.
#[derive(serde::Deserialize)]
struct ShardIndex {
    weight_map: BTreeMap<String, String>,
}

/// The tensors of a safetensors file (or of a sharded checkpoint), converted to f32, by name.
pub struct TensorFile {
    /// Where they came from, for error messages.
    pub path: String,
    /// The tensors.
    pub tensors: BTreeMap<String, TensorData>,
}

impl TensorFile {
    /// Reads every tensor of a file; f16, bf16 and f64 are converted to f32.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
        Self::parse(&bytes, &path.display().to_string())
    }

    /// Whether a folder holds a Hugging Face checkpoint: `model.safetensors` or `model.safetensors.index.json`.
    pub fn is_checkpoint(dir: &Path) -> bool {
        dir.join(SINGLE).exists() || dir.join(INDEX).exists()
    }

    /// Reads a Hugging Face checkpoint folder: `model.safetensors`, or every shard that
    /// `model.safetensors.index.json` lists (each tensor must be in the shard the index names).
    pub fn read_checkpoint(dir: &Path) -> Result<Self> {
        let index_path = dir.join(INDEX);
        if dir.join(SINGLE).exists() || !index_path.exists() {
            return Self::read(&dir.join(SINGLE));
        }
        let text =
            std::fs::read_to_string(&index_path).map_err(|e| ModelError::io(&index_path, e))?;
        let index: ShardIndex = serde_json::from_str(&text).map_err(|e| ModelError::Config {
            path: index_path.display().to_string(),
            message: e.to_string(),
        })?;
        let mut shards: Vec<&String> = index.weight_map.values().collect();
        shards.sort();
        shards.dedup();
        let mut tensors = BTreeMap::new();
        for shard in shards {
            let file = Self::read(&dir.join(shard))?;
            for (name, data) in file.tensors {
                if index.weight_map.get(&name) != Some(shard) {
                    return Err(ModelError::Config {
                        path: index_path.display().to_string(),
                        message: format!(
                            "tensor `{name}` is in {shard}, which the index does not name for it"
                        ),
                    });
                }
                tensors.insert(name, data);
            }
        }
        if let Some(name) = index.weight_map.keys().find(|n| !tensors.contains_key(*n)) {
            return Err(ModelError::Config {
                path: index_path.display().to_string(),
                message: format!(
                    "tensor `{name}` is listed in {} but is not in that shard",
                    index.weight_map[name]
                ),
            });
        }
        Ok(Self {
            path: index_path.display().to_string(),
            tensors,
        })
    }

    /// Parses the bytes of a safetensors file (`path` names it in errors).
    pub fn parse(bytes: &[u8], path: &str) -> Result<Self> {
        let st = SafeTensors::deserialize(bytes).map_err(|e| ModelError::Safetensors {
            path: path.to_string(),
            message: e.to_string(),
        })?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let data = view.data();
            let values: Vec<f32> = match view.dtype() {
                Dtype::F32 => data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                    .collect(),
                Dtype::F16 => data
                    .chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
                Dtype::BF16 => data
                    .chunks_exact(2)
                    .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
                Dtype::F64 => data
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                    .collect(),
                other => {
                    return Err(ModelError::UnsupportedDtype {
                        name,
                        dtype: format!("{other:?}"),
                    });
                }
            };
            tensors.insert(name, TensorData::new(values, view.shape().to_vec()));
        }
        Ok(Self {
            path: path.to_string(),
            tensors,
        })
    }

    /// Removes and returns a tensor, checking its shape.
    pub fn take(&mut self, name: &str, expected: &[usize]) -> Result<TensorData> {
        let data = self
            .tensors
            .remove(name)
            .ok_or_else(|| ModelError::MissingWeight {
                name: name.to_string(),
                expected: expected.to_vec(),
                path: self.path.clone(),
            })?;
        if data.shape.as_slice() != expected {
            return Err(ModelError::WeightShape {
                name: name.to_string(),
                expected: expected.to_vec(),
                found: data.shape.to_vec(),
            });
        }
        Ok(data)
    }

    /// Fails on the first tensor that nothing took.
    pub fn finish(self) -> Result<()> {
        match self.tensors.into_keys().next() {
            Some(name) => Err(ModelError::UnexpectedWeight {
                name,
                path: self.path,
            }),
            None => Ok(()),
        }
    }
}
