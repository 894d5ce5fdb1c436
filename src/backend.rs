//! Choosing a backend at run time among those compiled in.
//!
//! Each backend lives in its own thin crate (`tlens-backend-*`: the burn backend type and its device), pulled in by
//! the facade's feature of the same name. Generic code is written once as a [`BackendTask`]; [`run_on`]
//! monomorphises it for the backend a user names.

use std::fmt;
use std::str::FromStr;

use tlens_model::Kernels;

use crate::error::{Result, TlensError};

/// The backends tlens knows, whether or not this build includes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendName {
    /// burn-ndarray on the CPU (feature `ndarray`, in the default build).
    Ndarray,
    /// burn-flex, burn's fast pure-Rust CPU backend (feature `flex`, in the default build and the default backend).
    Flex,
    /// libtorch through burn-tch (feature `tch`; CPU, or CUDA with `TLENS_TCH_DEVICE=cuda:N`).
    Tch,
    /// burn-cuda on an NVIDIA GPU (feature `cuda`).
    Cuda,
}

impl BackendName {
    /// Every backend tlens knows, in the order tables list them.
    pub const ALL: [BackendName; 4] = [
        BackendName::Ndarray,
        BackendName::Flex,
        BackendName::Tch,
        BackendName::Cuda,
    ];

    /// Whether this build includes the backend.
    pub fn is_compiled(self) -> bool {
        match self {
            BackendName::Ndarray => cfg!(feature = "ndarray"),
            BackendName::Flex => cfg!(feature = "flex"),
            BackendName::Tch => cfg!(feature = "tch"),
            BackendName::Cuda => cfg!(feature = "cuda"),
        }
    }

    /// Every backend compiled into this build.
    pub fn compiled() -> Vec<BackendName> {
        Self::ALL.into_iter().filter(|b| b.is_compiled()).collect()
    }

    /// The order in which a plain run picks its backend among those compiled in: flex first, because it is the
    /// fastest backend that builds from crates.io alone (measured: a GPT-2-small forward at 8×128 takes 2.2 s on flex,
    /// 2.6 s on ndarray, the Llama-3.2-1B shape 8.7 s against 15.6 s; the book's Performance chapter has the table), then ndarray, then the backends that need a
    /// system library or a GPU.
    pub const PREFERENCE: [BackendName; 4] = [
        BackendName::Flex,
        BackendName::Ndarray,
        BackendName::Tch,
        BackendName::Cuda,
    ];

    /// The backend a plain run uses: the first of [`PREFERENCE`](Self::PREFERENCE) compiled in.
    pub fn default_compiled() -> Result<BackendName> {
        Self::PREFERENCE
            .into_iter()
            .find(|b| b.is_compiled())
            .ok_or_else(|| {
                TlensError::Backend(
                "this build has no backend; enable one of the features ndarray, flex, tch, cuda"
                    .into(),
            )
            })
    }

    /// The name users type (and the cargo feature that includes it).
    pub fn as_str(self) -> &'static str {
        match self {
            BackendName::Ndarray => "ndarray",
            BackendName::Flex => "flex",
            BackendName::Tch => "tch",
            BackendName::Cuda => "cuda",
        }
    }
}

impl fmt::Display for BackendName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BackendName {
    type Err = TlensError;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|b| b.as_str() == s)
            .ok_or_else(|| {
                let known = Self::ALL.map(BackendName::as_str).join(", ");
                TlensError::Backend(format!("unknown backend `{s}`; tlens knows {known}"))
            })
    }
}

/// Work that runs on any backend.
pub trait BackendTask {
    /// What the work returns.
    type Output;
    /// Runs the work on backend `B` and device `device`.
    fn run<B: Kernels>(self, device: burn_tensor::Device<B>) -> Self::Output;
}

/// Runs a task on the named backend, or says which feature would include it (or why its device is unusable).
#[allow(unused_variables)]
pub fn run_on<T: BackendTask>(name: BackendName, task: T) -> Result<T::Output> {
    let unusable = |e: String| TlensError::Backend(format!("{name}: {e}"));
    match name {
        #[cfg(feature = "ndarray")]
        BackendName::Ndarray => Ok(task.run::<tlens_backend_ndarray::Backend>(
            tlens_backend_ndarray::device().map_err(unusable)?,
        )),
        #[cfg(feature = "flex")]
        BackendName::Flex => Ok(task
            .run::<tlens_backend_flex::Backend>(tlens_backend_flex::device().map_err(unusable)?)),
        #[cfg(feature = "tch")]
        BackendName::Tch => {
            Ok(task
                .run::<tlens_backend_tch::Backend>(tlens_backend_tch::device().map_err(unusable)?))
        }
        #[cfg(feature = "cuda")]
        BackendName::Cuda => Ok(task
            .run::<tlens_backend_cuda::Backend>(tlens_backend_cuda::device().map_err(unusable)?)),
        #[allow(unreachable_patterns)]
        other => Err(TlensError::Backend(format!(
            "backend `{other}` is not compiled in; rebuild with `--features {other}`"
        ))),
    }
}

/// The ndarray backend type (f32), for examples and tests.
#[cfg(feature = "ndarray")]
pub type NdArray = tlens_backend_ndarray::Backend;

/// The flex backend type (f32), for examples and tests.
#[cfg(feature = "flex")]
pub type Flex = tlens_backend_flex::Backend;
