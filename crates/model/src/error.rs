//! Typed errors of model loading, tokenizing and running.

use thiserror::Error;
use tlens_cache_core::CacheError;

/// What went wrong while loading, tokenizing or running a model.
#[derive(Debug, Error)]
pub enum ModelError {
    /// A file that could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A weight file that is not valid safetensors (truncated, corrupt, wrong format).
    #[error("{path} is not a valid safetensors file: {message}")]
    Safetensors {
        /// The file.
        path: String,
        /// What the parser found.
        message: String,
    },
    /// A tensor stored in a dtype tlens cannot convert to f32.
    #[error("weight `{name}` has dtype {dtype}; tlens reads F32, F16, BF16 and F64")]
    UnsupportedDtype {
        /// The tensor's name.
        name: String,
        /// Its dtype.
        dtype: String,
    },
    /// A parameter the configuration needs that the weight file lacks.
    #[error("weight `{name}` (shape {expected:?}) is missing from {path}")]
    MissingWeight {
        /// The parameter name.
        name: String,
        /// The shape the config implies.
        expected: Vec<usize>,
        /// The file.
        path: String,
    },
    /// A tensor in the weight file that the configuration has no place for.
    #[error("weight `{name}` in {path} does not belong to a model with this config")]
    UnexpectedWeight {
        /// The tensor name.
        name: String,
        /// The file.
        path: String,
    },
    /// A tensor whose shape disagrees with the configuration.
    #[error("weight `{name}` has shape {found:?} but the config implies {expected:?}")]
    WeightShape {
        /// The parameter name.
        name: String,
        /// The shape the config implies.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A weight holding NaN or ±∞: every output of the model would be NaN, so it is refused at load.
    #[error("weight `{name}` in {path} holds {count} NaN or infinite values")]
    NonFiniteWeight {
        /// The parameter name.
        name: String,
        /// The file.
        path: String,
        /// How many of its values are not finite.
        count: usize,
    },
    /// A configuration that cannot be read or is inconsistent.
    #[error("config {path}: {message}")]
    Config {
        /// The config file (or a description of where it came from).
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A model feature tlens does not implement.
    #[error("unsupported model: {0}")]
    Unsupported(String),
    /// A token id past the vocabulary.
    #[error(
        "token id {token} at batch {batch}, position {position} is not below d_vocab = {d_vocab}"
    )]
    TokenOutOfRange {
        /// The token id.
        token: u32,
        /// Its row.
        batch: usize,
        /// Its position.
        position: usize,
        /// The vocabulary size.
        d_vocab: usize,
    },
    /// A sequence longer than the model's context.
    #[error("sequence of {len} tokens is longer than n_ctx = {n_ctx}")]
    SequenceTooLong {
        /// The sequence length.
        len: usize,
        /// The model's context length.
        n_ctx: usize,
    },
    /// A batch with no rows or no positions.
    #[error("empty input: {0}")]
    EmptyInput(String),
    /// Rows of different lengths.
    #[error(
        "all rows of a batch must have the same length: row 0 has {first}, row {row} has {len}"
    )]
    RaggedBatch {
        /// Length of row 0.
        first: usize,
        /// The first row that differs.
        row: usize,
        /// Its length.
        len: usize,
    },
    /// A tokenizer problem (missing files, a string that is not one token, ...).
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// An error from the cache layer (hook names, slices, shapes).
    #[error(transparent)]
    Cache(#[from] CacheError),
}

/// Result alias for the model crate.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;

impl ModelError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        ModelError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
