//! tlens on burn-cuda (CubeCL, kernels compiled at run time with NVRTC).
//!
//! burn-cuda panics on a machine without a usable GPU (on a device thread, then in the caller); [`device`] checks for
//! the driver and a device first and returns an error instead.

/// The backend type.
pub type Backend = burn_cuda::Cuda<f32, i32>;

/// The first CUDA device, after checking that the driver loads and reports at least one device.
pub fn device() -> Result<burn_tensor::Device<Backend>, String> {
    // SAFETY: only tries to dlopen libcuda; no CUDA call is made.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err("no CUDA driver (libcuda.so) can be loaded on this machine".into());
    }
    cudarc::driver::result::init()
        .map_err(|e| format!("the CUDA driver failed to initialise: {e:?}"))?;
    let count = cudarc::driver::result::device::get_count()
        .map_err(|e| format!("cannot count CUDA devices: {e:?}"))?;
    if count < 1 {
        return Err("the CUDA driver reports no device".into());
    }
    Ok(burn_cuda::CudaDevice::default())
}
