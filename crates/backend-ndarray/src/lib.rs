//! tlens on burn-ndarray: pure Rust on the CPU, always available (the reference backend of the tests).
//!
//! burn-ndarray is built without its `simd` feature (the workspace's `Cargo.toml`). On a CPU with AVX2 but no
//! AVX-512 (an AMD EPYC of family 25 here), its SIMD paths (macerator's) miss NaNs: `is_nan` and `not_equal` of a
//! tensor with itself find none in a tensor of 64 values, so an attention knockout's fully masked rows stayed NaN
//! instead of the zeros TransformerLens gives; and the gradient plans differed from TransformerLens by up to 3.6e-5
//! (7e-5 on Gemma 2), past the f32 tolerance. Without `simd`, all 78 parity plans agree on that CPU.

/// The backend type.
pub type Backend = burn_ndarray::NdArray<f32>;

/// The CPU device.
pub fn device() -> Result<burn_tensor::Device<Backend>, String> {
    Ok(burn_ndarray::NdArrayDevice::Cpu)
}

#[cfg(test)]
mod tests {
    use burn_tensor::Tensor;

    use super::Backend;

    /// NaNs are found in a tensor wide enough for SIMD lanes (burn-ndarray's `simd` paths found none on AVX2).
    #[test]
    fn is_nan_finds_every_nan_in_a_wide_tensor() {
        let values: Vec<f32> = (0..64)
            .map(|i| if i % 3 == 0 { f32::NAN } else { i as f32 })
            .collect();
        let x = Tensor::<Backend, 1>::from_floats(values.as_slice(), &Default::default());
        let found: i64 = x.is_nan().int().sum().into_scalar();
        assert_eq!(found, 22);
    }
}
