//! [`CacheDtype`]: the precision a run keeps its cached activations in.
//!
//! A model computes in f32; a cache kept in f16 or bf16 takes half the memory, which is what bounds how long a sequence
//! or how large a batch can be cached. Every cache method reads activations back as f32 and computes in f32, as
//! TransformerLens's methods would on the upcast tensors: the results differ from an f32 cache only by the rounding of
//! the stored activations (f16: a relative 2⁻¹¹, bf16: 2⁻⁸).

use burn_tensor::backend::{Backend, DTypeUsage};
use burn_tensor::{DType, FloatDType};
use serde::{Deserialize, Serialize};

use crate::error::{CacheError, Result};

/// The precision of stored activations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheDtype {
    /// 32-bit floats, as computed.
    #[default]
    F32,
    /// IEEE half precision (rounded to nearest even, as `tensor.to(torch.float16)`).
    F16,
    /// bfloat16 (rounded to nearest even, as `tensor.to(torch.bfloat16)`).
    Bf16,
}

impl CacheDtype {
    /// Every precision, by name.
    pub const ALL: [CacheDtype; 3] = [CacheDtype::F32, CacheDtype::F16, CacheDtype::Bf16];

    /// Bytes per value.
    pub fn size(self) -> usize {
        match self {
            CacheDtype::F32 => 4,
            CacheDtype::F16 | CacheDtype::Bf16 => 2,
        }
    }

    /// The name (`f32`, `f16`, `bf16`).
    pub fn as_str(self) -> &'static str {
        match self {
            CacheDtype::F32 => "f32",
            CacheDtype::F16 => "f16",
            CacheDtype::Bf16 => "bf16",
        }
    }

    /// burn's float dtype.
    pub fn float_dtype(self) -> FloatDType {
        match self {
            CacheDtype::F32 => FloatDType::F32,
            CacheDtype::F16 => FloatDType::F16,
            CacheDtype::Bf16 => FloatDType::BF16,
        }
    }

    /// An error when backend `B` cannot store tensors of this precision (burn-ndarray has no f16 or bf16).
    pub fn check_backend<B: Backend>(self, device: &B::Device) -> Result<()> {
        let dtype = DType::from(self.float_dtype());
        if B::dtype_usage(device, dtype).contains(DTypeUsage::Storage) {
            Ok(())
        } else {
            Err(CacheError::Unsupported(format!(
                "the {} backend cannot store {self} tensors; cache in f32 or use a backend that can (flex, tch, cuda)",
                B::name(device)
            )))
        }
    }
}

impl std::fmt::Display for CacheDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for CacheDtype {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not a precision (f32, f16 or bf16)"))
    }
}
