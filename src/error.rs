//! [`TlensError`]: every error the facade, the plan runner and the CLI can report.

use thiserror::Error;
use tlens_cache_core::CacheError;
use tlens_model::ModelError;

/// An error from any layer of tlens.
#[derive(Debug, Error)]
pub enum TlensError {
    /// Loading, tokenizing or running the model.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A cache method, hook name or slice.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// A plan file that cannot be read or is malformed.
    #[error("plan {path}: {message}")]
    Plan {
        /// The plan file.
        path: String,
        /// What is wrong with it.
        message: String,
    },
    /// An analysis asked for something the model or cache cannot give (a position past the end, ...).
    #[error("{0}")]
    Analysis(String),
    /// A backend that is not compiled in or cannot start.
    #[error("backend: {0}")]
    Backend(String),
    /// Work that would need more memory than the command may use; refused before it starts.
    #[error("{what} needs about {need}, more than the {limit} allowed; {lower}")]
    Memory {
        /// The estimate.
        need: String,
        /// What the estimate is for.
        what: String,
        /// The budget.
        limit: String,
        /// How to need less.
        lower: String,
    },
    /// A harvest's data, output folder or arguments.
    #[error(transparent)]
    Harvest(#[from] crate::harvest::HarvestError),
    /// Reading or writing a file.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
}

/// Result alias for the facade.
pub type Result<T, E = TlensError> = std::result::Result<T, E>;
