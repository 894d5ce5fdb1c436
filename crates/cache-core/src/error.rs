//! Typed errors of the cache layer.
//!
//! Every failure a user can cause (a key that does not exist, a layer past the model, a slice past an axis, a stack
//! that does not fit) is one of these variants, so callers can match on it and the CLI can print it in one line.

use thiserror::Error;

/// What went wrong in a cache, hook-name or slice operation.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum CacheError {
    /// A key that is not in the cache. `suggestions` holds the closest existing keys.
    #[error("no activation `{key}` in the cache{}", suggest(.suggestions))]
    UnknownKey {
        /// The resolved hook name that was looked up.
        key: String,
        /// Existing keys that are spelled closest to `key`.
        suggestions: Vec<String>,
    },
    /// A hook name that the model never fires (for example in a `names_filter`).
    #[error("unknown hook name `{name}`{}", suggest(.suggestions))]
    UnknownHook {
        /// The name as given.
        name: String,
        /// Existing hook names that are spelled closest to `name`.
        suggestions: Vec<String>,
    },
    /// An activation that the run did not keep, but that a method needs.
    #[error("`{method}` needs `{key}`, which this cache does not hold; run with a names_filter that keeps it (or with none){}", filtered_hint(.stopped_at))]
    MissingActivation {
        /// The method that needed it.
        method: &'static str,
        /// The missing hook name.
        key: String,
        /// The `stop_at_layer` the cache was made with, when that explains the absence.
        stopped_at: Option<usize>,
    },
    /// A layer index outside `0..=n_layers` (or the range a method accepts).
    #[error("layer {layer} is out of range: {what}")]
    LayerOutOfRange {
        /// The layer as given.
        layer: i64,
        /// What range was allowed.
        what: String,
    },
    /// A slice that reaches past the axis it is applied to.
    #[error("{what} index {index} is out of range for an axis of length {len}")]
    SliceOutOfRange {
        /// Which slice argument (`pos_slice`, `batch_slice`, `neuron_slice`).
        what: String,
        /// The offending index.
        index: i64,
        /// The length of the axis.
        len: usize,
    },
    /// Tensor shapes that do not fit together.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// An argument that is invalid for another reason.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A method that this model's configuration does not support.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A failure while reading or writing a file (a saved cache, a plan's output, a report, a harvest's shard).
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
}

fn suggest(suggestions: &[String]) -> String {
    if suggestions.is_empty() {
        String::new()
    } else {
        format!(
            "; did you mean {}?",
            suggestions
                .iter()
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

fn filtered_hint(stopped_at: &Option<usize>) -> String {
    match stopped_at {
        Some(layer) => format!(" (the run stopped at layer {layer})"),
        None => String::new(),
    }
}

/// Result alias for the cache layer.
pub type Result<T, E = CacheError> = std::result::Result<T, E>;

/// The existing names closest to `wanted`, best first (at most three), for "did you mean" hints.
pub fn closest<'a>(wanted: &str, candidates: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut scored: Vec<(f64, &str)> = candidates
        .into_iter()
        .map(|c| (strsim::normalized_damerau_levenshtein(wanted, c), c))
        .filter(|(score, _)| *score >= 0.6)
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
    scored
        .into_iter()
        .take(3)
        .map(|(_, c)| c.to_string())
        .collect()
}
