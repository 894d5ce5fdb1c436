//! tlens on burn-flex: burn's fast pure-Rust CPU backend (int element `i32`, unlike ndarray's `i64`).

/// The backend type (only the default `Flex<f32, i32>` implements `Backend`).
pub type Backend = burn_flex::Flex;

/// The CPU device.
pub fn device() -> Result<burn_tensor::Device<Backend>, String> {
    Ok(burn_flex::FlexDevice)
}
