//! tlens on burn-ndarray: pure Rust on the CPU, always available (the default backend).

/// The backend type.
pub type Backend = burn_ndarray::NdArray<f32>;

/// The CPU device.
pub fn device() -> Result<burn_tensor::Device<Backend>, String> {
    Ok(burn_ndarray::NdArrayDevice::Cpu)
}
