//! The Hugging Face `datasets` folder a harvest writes: Arrow IPC stream files, `dataset_info.json` and `state.json`,
//! laid out as `Dataset.save_to_disk` lays them out, so that `datasets.load_from_disk` opens it.
//!
//! Each row is one window: `token_ids` (`List(Value("int32"), length=context)`) and one column per hook, a nested
//! fixed-length list of the hook's activation for that window (`[context, d_model]`, `[n_heads, context, context]`,
//! ...). f32 and f16 are Arrow's float32 and halffloat; Arrow has no bfloat16, so a bf16 column is `uint16` holding
//! the bfloat16 bit patterns (`torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)` reads them back).

use std::path::Path;
use std::sync::Arc;

use arrow_array::{
    ArrayRef, FixedSizeListArray, Float16Array, Float32Array, Int32Array, RecordBatch, UInt16Array,
};
use arrow_schema::{DataType, Field, Schema};
use half::{bf16, f16};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::HarvestError;
use crate::cache_core::Precision;
use crate::cache_core::atomic_file::write_atomically;

/// `datasets`' list of the data files, in order.
pub const STATE_FILE: &str = "state.json";
/// The dataset's features.
pub const INFO_FILE: &str = "dataset_info.json";

/// The Arrow type a column of `dtype` values is stored as.
fn arrow_type(dtype: Precision) -> DataType {
    match dtype {
        Precision::F32 => DataType::Float32,
        Precision::F16 => DataType::Float16,
        Precision::Bf16 => DataType::UInt16,
    }
}

/// The `datasets` `Value` dtype of a column of `dtype` values.
fn value_name(dtype: Precision) -> &'static str {
    match dtype {
        Precision::F32 => "float32",
        Precision::F16 => "float16",
        Precision::Bf16 => "uint16",
    }
}

/// f32 values in `dtype`, as an Arrow array (rounded to nearest even, as torch's `.to(dtype)`).
fn array(dtype: Precision, values: Vec<f32>) -> ArrayRef {
    match dtype {
        Precision::F32 => Arc::new(Float32Array::from(values)),
        Precision::F16 => Arc::new(Float16Array::from_iter_values(
            values.into_iter().map(f16::from_f32),
        )),
        Precision::Bf16 => Arc::new(UInt16Array::from_iter_values(
            values.into_iter().map(|v| bf16::from_f32(v).to_bits()),
        )),
    }
}

/// One hook's column: its name and the shape of one window's activation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    /// The TransformerLens hook name.
    pub name: String,
    /// The activation's shape for one window (the batch axis removed).
    pub shape: Vec<usize>,
}

/// The columns of a harvest's rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// Tokens per window.
    pub context: usize,
    /// The hooks, in the order of `--hook`.
    pub hooks: Vec<Column>,
    /// How activations are stored.
    pub dtype: Precision,
}

/// A `datasets` `List(feature, length=n)`.
fn list_feature(feature: serde_json::Value, length: usize) -> serde_json::Value {
    json!({"feature": feature, "length": length, "_type": "List"})
}

fn value_feature(dtype: &str) -> serde_json::Value {
    json!({"dtype": dtype, "_type": "Value"})
}

fn fixed_list(item: DataType, length: usize) -> DataType {
    DataType::FixedSizeList(Arc::new(Field::new("item", item, true)), length as i32)
}

/// `values` (flat, row-major) as `rows` nested fixed-size lists of `shape`.
fn nested(values: ArrayRef, item: &DataType, shape: &[usize]) -> Result<ArrayRef, HarvestError> {
    let mut array = values;
    let mut item = item.clone();
    for &size in shape.iter().rev() {
        let field = Arc::new(Field::new("item", item.clone(), true));
        array = Arc::new(
            FixedSizeListArray::try_new(field, size as i32, array, None)
                .map_err(|e| HarvestError::Arrow(e.to_string()))?,
        );
        item = fixed_list(item, size);
    }
    Ok(array)
}

impl Layout {
    /// The `datasets` features of the rows (`dataset_info.json`'s `features`).
    pub fn features(&self) -> serde_json::Value {
        let mut features = serde_json::Map::new();
        features.insert(
            "token_ids".into(),
            list_feature(value_feature("int32"), self.context),
        );
        for hook in &self.hooks {
            let feature = hook
                .shape
                .iter()
                .rev()
                .fold(value_feature(value_name(self.dtype)), |f, &n| {
                    list_feature(f, n)
                });
            features.insert(hook.name.clone(), feature);
        }
        serde_json::Value::Object(features)
    }

    /// The Arrow schema, with the features in its `huggingface` metadata as `save_to_disk` writes them.
    pub fn schema(&self) -> Schema {
        let column = |name: &str, item: DataType, shape: &[usize]| {
            let ty = shape.iter().rev().fold(item, |t, &n| fixed_list(t, n));
            Field::new(name, ty, true)
        };
        let mut fields = vec![column("token_ids", DataType::Int32, &[self.context])];
        fields.extend(
            self.hooks
                .iter()
                .map(|h| column(&h.name, arrow_type(self.dtype), &h.shape)),
        );
        let metadata = json!({"info": {"features": self.features()}}).to_string();
        Schema::new(fields).with_metadata([("huggingface", metadata)])
    }

    /// One record batch: `tokens` (rows × context, row-major) and each hook's activations (rows × its shape, f32).
    pub fn batch(
        &self,
        schema: &Arc<Schema>,
        tokens: &[u32],
        hooks: Vec<Vec<f32>>,
    ) -> Result<RecordBatch, HarvestError> {
        let ids = Int32Array::from_iter_values(tokens.iter().map(|&t| t as i32));
        let mut columns = vec![nested(Arc::new(ids), &DataType::Int32, &[self.context])?];
        for (hook, values) in self.hooks.iter().zip(hooks) {
            columns.push(nested(
                array(self.dtype, values),
                &arrow_type(self.dtype),
                &hook.shape,
            )?);
        }
        RecordBatch::try_new(schema.clone(), columns)
            .map_err(|e| HarvestError::Arrow(e.to_string()))
    }

    /// Bytes of one window's activations and tokens as stored.
    pub fn window_bytes(&self) -> u64 {
        let values: usize = self
            .hooks
            .iter()
            .map(|h| h.shape.iter().product::<usize>())
            .sum();
        (values * self.dtype.size() + self.context * 4) as u64
    }

    /// Writes `dataset_info.json` and `state.json` for the data `files` in `dir`, in order; `fingerprint` names this
    /// content (`datasets` uses it to cache transforms).
    pub fn write_index(
        &self,
        dir: &Path,
        files: &[String],
        fingerprint: &str,
    ) -> Result<(), HarvestError> {
        let info = json!({
            "citation": "",
            "description": "",
            "features": self.features(),
            "homepage": "",
            "license": "",
        });
        let state = json!({
            "_data_files": files.iter().map(|f| json!({"filename": f})).collect::<Vec<_>>(),
            "_fingerprint": fingerprint,
            "_format_columns": null,
            "_format_kwargs": {},
            "_format_type": null,
            "_output_all_columns": false,
            "_split": null,
        });
        write_json(&dir.join(INFO_FILE), &info)?;
        write_json(&dir.join(STATE_FILE), &state)
    }
}

/// Writes pretty JSON (two-space indent, a final newline) atomically.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<(), HarvestError> {
    let mut text =
        serde_json::to_string_pretty(value).map_err(|e| HarvestError::Arrow(e.to_string()))?;
    text.push('\n');
    write_atomically(path, |tmp| std::fs::write(tmp, &text))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_rounds_to_nearest_even_as_torch() {
        // 1 + 2^-11 lies halfway between two f16 values: it rounds to the even one, 1.0.
        let halfway = 1.0 + 2f32.powi(-11);
        let half = array(Precision::F16, vec![halfway, 65520.0]);
        let half = half.as_any().downcast_ref::<Float16Array>().unwrap();
        assert_eq!(half.value(0), f16::ONE);
        assert!(half.value(1).is_infinite(), "past f16's range");
        let bits = array(Precision::Bf16, vec![1.0 + 2f32.powi(-8), -2.5]);
        let bits = bits.as_any().downcast_ref::<UInt16Array>().unwrap();
        assert_eq!(bf16::from_bits(bits.value(0)), bf16::ONE);
        assert_eq!(bf16::from_bits(bits.value(1)).to_f32(), -2.5);
    }

    #[test]
    fn a_batch_nests_each_hook_to_its_shape() {
        let layout = Layout {
            context: 2,
            hooks: vec![Column {
                name: "blocks.0.attn.hook_pattern".into(),
                shape: vec![3, 2, 2],
            }],
            dtype: Precision::F32,
        };
        let schema = Arc::new(layout.schema());
        let batch = layout
            .batch(
                &schema,
                &[1, 2, 3, 4],
                vec![(0..24).map(|v| v as f32).collect()],
            )
            .unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(
            batch.schema().field(1).data_type(),
            &fixed_list(fixed_list(fixed_list(DataType::Float32, 2), 2), 3)
        );
        assert_eq!(layout.window_bytes(), 12 * 4 + 2 * 4);
        assert!(
            layout
                .batch(&schema, &[1, 2, 3], vec![vec![0.0; 24]])
                .is_err()
        );
    }
}
