//! tlens on burn-tch: libtorch through the `tch` crate.
//!
//! Building needs libtorch 2.9.0 (`LIBTORCH`); `cargo xtask libtorch` assembles one from PyPI wheels.

/// The backend type.
pub type Backend = burn_tch::LibTorch<f32>;

/// The CPU device, or CUDA device `i` when `TLENS_TCH_DEVICE=cuda:i` is set.
pub fn device() -> Result<burn_tensor::Device<Backend>, String> {
    match std::env::var("TLENS_TCH_DEVICE").ok().as_deref() {
        None | Some("") | Some("cpu") => Ok(burn_tch::LibTorchDevice::Cpu),
        Some(spec) => match spec.strip_prefix("cuda:").and_then(|i| i.parse().ok()) {
            Some(i) => Ok(burn_tch::LibTorchDevice::Cuda(i)),
            None => Err(format!("TLENS_TCH_DEVICE={spec:?}: expected cpu or cuda:N")),
        },
    }
}
