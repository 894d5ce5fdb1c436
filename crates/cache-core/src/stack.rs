//! [`Stack`]: what the stacking methods return — a tensor with a component axis in front, and a label per component.

use burn_tensor::backend::Backend;

use crate::dyn_tensor::DynTensor;
use crate::error::{CacheError, Result};

/// A stack of residual-stream components: `tensor` is `[n_components, *batch_and_pos, last]` and `labels[i]` names
/// row `i` (`"L0H3"`, `"L1N5"`, `"0_pre"`, `"1_mid"`, `"final_post"`, `"0_attn_out"`, `"embed"`, `"bias"`,
/// `"remainder"`, ...), exactly as TransformerLens labels them.
///
/// The labels are always computed; TransformerLens returns them only with `return_labels=True`.
#[derive(Clone, Debug)]
pub struct Stack<B: Backend> {
    /// The components, stacked on axis 0.
    pub tensor: DynTensor<B>,
    /// One label per component.
    pub labels: Vec<String>,
}

impl<B: Backend> Stack<B> {
    /// The number of components.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the stack has no component.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The row labelled `label`, without the component axis.
    pub fn row(&self, label: &str) -> Result<DynTensor<B>> {
        let i = self.labels.iter().position(|l| l == label).ok_or_else(|| {
            CacheError::InvalidArgument(format!("no component labelled `{label}` in this stack"))
        })?;
        self.tensor.clone().index(0, i)
    }
}

/// Concatenates stacks (each `[n_i, ...]`) on the component axis, skipping empty ones; `empty()` is returned when
/// every part is empty.
pub(crate) fn concat_rows<B: Backend>(
    parts: Vec<DynTensor<B>>,
    empty: impl FnOnce() -> Result<DynTensor<B>>,
) -> Result<DynTensor<B>> {
    let mut parts: Vec<DynTensor<B>> = parts.into_iter().filter(|p| p.numel() > 0).collect();
    match parts.len() {
        0 => empty(),
        1 => Ok(parts.pop().expect("one part")),
        _ => DynTensor::cat(parts, 0),
    }
}
