//! Choosing a backend at run time among those compiled in.
//!
//! Generic code is written once as a [`BackendTask`]; [`run_on`] monomorphises it for the backend a user names.

use std::fmt;
use std::str::FromStr;

use burn_tensor::backend::Backend;

use crate::error::{Result, TlensError};

/// The backends tlens knows, whether or not this build includes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendName {
    /// burn-ndarray on the CPU (feature `ndarray`, the default).
    Ndarray,
}

impl BackendName {
    /// Every backend compiled into this build.
    pub fn compiled() -> Vec<BackendName> {
        vec![
            #[cfg(feature = "ndarray")]
            BackendName::Ndarray,
        ]
    }

    /// The backend a plain run uses: the first compiled in.
    pub fn default_compiled() -> Result<BackendName> {
        Self::compiled().first().copied().ok_or_else(|| {
            TlensError::Backend("this build has no backend; enable the `ndarray` feature".into())
        })
    }
}

impl fmt::Display for BackendName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendName::Ndarray => "ndarray",
        })
    }
}

impl FromStr for BackendName {
    type Err = TlensError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "ndarray" => Ok(BackendName::Ndarray),
            other => Err(TlensError::Backend(format!(
                "unknown backend `{other}`; this build has {}",
                list(&Self::compiled())
            ))),
        }
    }
}

fn list(names: &[BackendName]) -> String {
    names
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Work that runs on any backend.
pub trait BackendTask {
    /// What the work returns.
    type Output;
    /// Runs the work on backend `B` and device `device`.
    fn run<B: Backend>(self, device: burn_tensor::Device<B>) -> Self::Output;
}

/// Runs a task on the named backend, or says which feature would include it.
#[cfg_attr(not(feature = "ndarray"), allow(unused_variables))]
pub fn run_on<T: BackendTask>(name: BackendName, task: T) -> Result<T::Output> {
    match name {
        #[cfg(feature = "ndarray")]
        BackendName::Ndarray => {
            Ok(task.run::<burn_ndarray::NdArray<f32>>(burn_ndarray::NdArrayDevice::Cpu))
        }
        #[allow(unreachable_patterns)]
        other => Err(TlensError::Backend(format!(
            "backend `{other}` is not compiled in; rebuild with `--features {other}`"
        ))),
    }
}

/// The ndarray backend type (f32), for examples and tests.
#[cfg(feature = "ndarray")]
pub type NdArray = burn_ndarray::NdArray<f32>;
