//! Reading safetensors files (one file, or a sharded Hugging Face checkpoint) into f32 tensors, whatever their
//! stored float dtype.
//!
//! Files are memory-mapped and each tensor is decoded to f32 only when it is taken, so loading holds the converted
//! f32 weights plus the one tensor being decoded or converted — never the whole file in memory next to its f32 copy
//! (for a bf16 checkpoint that was 1.5× the f32 weights). The map reads the file as it is on disk: a file changed
//! while a model loads gives undefined contents (as with every memory-mapped loader).

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

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

/// The bytes of a safetensors file: memory-mapped, or owned (files given as bytes).
enum Bytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// A tensor still in its file, or already decoded (converted weights).
enum Stored {
    InFile {
        bytes: Arc<Bytes>,
        dtype: Dtype,
        shape: Vec<usize>,
        range: Range<usize>,
    },
    Decoded(TensorData),
}

impl Stored {
    fn shape(&self) -> &[usize] {
        match self {
            Stored::InFile { shape, .. } => shape,
            Stored::Decoded(data) => &data.shape,
        }
    }

    fn decode(self) -> TensorData {
        let (bytes, dtype, shape, range) = match self {
            Stored::Decoded(data) => return data,
            Stored::InFile {
                bytes,
                dtype,
                shape,
                range,
            } => (bytes, dtype, shape, range),
        };
        let data = &bytes[range];
        let values: Vec<f32> = match dtype {
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
            other => unreachable!("dtype {other:?} is refused when the file is opened"),
        };
        TensorData::new(values, shape)
    }
}

/// The tensors of a safetensors file (or of a sharded checkpoint), by name, decoded to f32 when taken.
pub struct TensorFile {
    /// Where they came from, for error messages.
    pub path: String,
    tensors: BTreeMap<String, Stored>,
}

impl TensorFile {
    /// Opens a file (memory-mapped); f16, bf16 and f64 tensors are converted to f32 when taken.
    pub fn read(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
        let len = file.metadata().map_err(|e| ModelError::io(path, e))?.len();
        let bytes = if len == 0 {
            // An empty file (or a device such as /dev/zero, whose length reads 0) has no header to map.
            Bytes::Owned(Vec::new())
        } else {
            // Safety: the map is only read, and a file changed under a running load is documented above as
            // undefined contents, as for every memory-mapped loader (burn-store, candle, safetensors' own docs).
            Bytes::Mapped(
                unsafe { memmap2::Mmap::map(&file) }.map_err(|e| ModelError::io(path, e))?,
            )
        };
        Self::open(Arc::new(bytes), &path.display().to_string())
    }

    /// Parses the bytes of a safetensors file (`path` names it in errors).
    pub fn parse(bytes: &[u8], path: &str) -> Result<Self> {
        Self::open(Arc::new(Bytes::Owned(bytes.to_vec())), path)
    }

    /// Reads the header and checks every dtype; no tensor is decoded yet.
    fn open(bytes: Arc<Bytes>, path: &str) -> Result<Self> {
        let (header_len, metadata) =
            SafeTensors::read_metadata(&bytes).map_err(|e| ModelError::Safetensors {
                path: path.to_string(),
                message: e.to_string(),
            })?;
        let start = 8 + header_len;
        let mut tensors = BTreeMap::new();
        for (name, info) in metadata.tensors() {
            if !matches!(
                info.dtype,
                Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64
            ) {
                return Err(ModelError::UnsupportedDtype {
                    name,
                    dtype: format!("{:?}", info.dtype),
                });
            }
            let (from, to) = info.data_offsets;
            tensors.insert(
                name,
                Stored::InFile {
                    bytes: bytes.clone(),
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    range: start + from..start + to,
                },
            );
        }
        Ok(Self {
            path: path.to_string(),
            tensors,
        })
    }

    /// Tensors already in memory (a converted state dict), under `path` for error messages.
    pub fn from_tensors(path: String, tensors: BTreeMap<String, TensorData>) -> Self {
        Self {
            path,
            tensors: tensors
                .into_iter()
                .map(|(k, v)| (k, Stored::Decoded(v)))
                .collect(),
        }
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
        let index_err = |message: String| ModelError::Config {
            path: index_path.display().to_string(),
            message,
        };
        let text = crate::text_file::read_text(&index_path)?;
        let index: ShardIndex =
            serde_json::from_str(&text).map_err(|e| index_err(e.to_string()))?;
        let mut shards: Vec<&String> = index.weight_map.values().collect();
        shards.sort();
        shards.dedup();
        let mut tensors = BTreeMap::new();
        for shard in shards {
            let file = Self::read(&dir.join(shard))?;
            for (name, stored) in file.tensors {
                if index.weight_map.get(&name) != Some(shard) {
                    return Err(index_err(format!(
                        "tensor `{name}` is in {shard}, which the index does not name for it"
                    )));
                }
                tensors.insert(name, stored);
            }
        }
        if let Some(name) = index.weight_map.keys().find(|n| !tensors.contains_key(*n)) {
            return Err(index_err(format!(
                "tensor `{name}` is listed in {} but is not in that shard",
                index.weight_map[name]
            )));
        }
        Ok(Self {
            path: index_path.display().to_string(),
            tensors,
        })
    }

    /// Whether the file has a tensor of this name.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// A tensor's shape, without decoding it.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.tensors.get(name).map(Stored::shape)
    }

    /// The tensors' names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// Drops the tensors whose name `keep` refuses (buffers a checkpoint carries that are not parameters).
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.tensors.retain(|name, _| keep(name));
    }

    /// Renames every tensor (a prefix some checkpoints add, say).
    pub fn rename(&mut self, rename: impl Fn(String) -> String) {
        let tensors = std::mem::take(&mut self.tensors);
        self.tensors = tensors.into_iter().map(|(k, v)| (rename(k), v)).collect();
    }

    /// What the tensors take once decoded to f32, from their shapes alone (nothing is read).
    pub fn f32_bytes(&self) -> u64 {
        self.tensors
            .values()
            .map(|t| 4 * t.shape().iter().map(|&d| d as u64).product::<u64>())
            .sum()
    }

    /// Removes and returns a tensor decoded to f32, checking its shape first.
    pub fn take(&mut self, name: &str, expected: &[usize]) -> Result<TensorData> {
        let shape = self.shape(name).ok_or_else(|| ModelError::MissingWeight {
            name: name.to_string(),
            expected: expected.to_vec(),
            path: self.path.clone(),
        })?;
        if shape != expected {
            return Err(ModelError::WeightShape {
                name: name.to_string(),
                expected: expected.to_vec(),
                found: shape.to_vec(),
            });
        }
        Ok(self.tensors.remove(name).expect("just found").decode())
    }

    /// Every tensor, decoded to f32.
    pub fn into_tensors(self) -> BTreeMap<String, TensorData> {
        self.tensors
            .into_iter()
            .map(|(k, v)| (k, v.decode()))
            .collect()
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
