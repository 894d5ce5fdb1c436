//! [`Precision`]: the float precision a model computes in (TransformerLens's `dtype`) and a run keeps its cached
//! activations in (`cache_dtype`).
//!
//! A cache kept in f16 or bf16 takes half the memory, which is what bounds how long a sequence or how large a batch
//! can be cached. Every cache method reads activations (and the model's weights) back as f32 and computes in f32, as
//! TransformerLens's methods would on the upcast tensors: with an f32 model, the results differ from an f32 cache only
//! by the rounding of the stored activations (f16: a relative 2⁻¹¹, bf16: 2⁻⁸).
//!
//! A model loaded in f16 or bf16 keeps its weights and computes in that precision, upcasting to f32 where
//! TransformerLens does (its norms); see `tlens_model::Processing::dtype`.

use burn_tensor::backend::{Backend, DTypeUsage};
use burn_tensor::{DType, FloatDType};
use serde::{Deserialize, Serialize};

use crate::error::{CacheError, Result};

/// A float precision: of a model's weights and computation, or of stored activations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 32-bit floats.
    #[default]
    F32,
    /// IEEE half precision (rounded to nearest even, as `tensor.to(torch.float16)`).
    F16,
    /// bfloat16 (rounded to nearest even, as `tensor.to(torch.bfloat16)`).
    Bf16,
}

impl Precision {
    /// Every precision, by name.
    pub const ALL: [Precision; 3] = [Precision::F32, Precision::F16, Precision::Bf16];

    /// Bytes per value.
    pub fn size(self) -> usize {
        match self {
            Precision::F32 => 4,
            Precision::F16 | Precision::Bf16 => 2,
        }
    }

    /// The name (`f32`, `f16`, `bf16`).
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Bf16 => "bf16",
        }
    }

    /// burn's float dtype.
    pub fn float_dtype(self) -> FloatDType {
        match self {
            Precision::F32 => FloatDType::F32,
            Precision::F16 => FloatDType::F16,
            Precision::Bf16 => FloatDType::BF16,
        }
    }

    /// An error when backend `B` cannot store tensors of this precision (burn-ndarray has no f16 or bf16).
    pub fn check_backend<B: Backend>(self, device: &B::Device) -> Result<()> {
        self.check_usage::<B>(device, DTypeUsage::Storage, "store", "cache in f32")
    }

    /// An error when backend `B` cannot compute in this precision (a model loaded with this `dtype`).
    pub fn check_compute<B: Backend>(self, device: &B::Device) -> Result<()> {
        self.check_usage::<B>(device, DTypeUsage::Arithmetic, "compute in", "load in f32")
    }

    fn check_usage<B: Backend>(
        self,
        device: &B::Device,
        usage: DTypeUsage,
        verb: &str,
        instead: &str,
    ) -> Result<()> {
        let dtype = DType::from(self.float_dtype());
        if B::dtype_usage(device, dtype).contains(usage) {
            Ok(())
        } else {
            Err(CacheError::Unsupported(format!(
                "the {} backend cannot {verb} {self}; {instead} or use a backend that can (flex, tch, cuda)",
                B::name(device)
            )))
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not a precision (f32, f16 or bf16)"))
    }
}
