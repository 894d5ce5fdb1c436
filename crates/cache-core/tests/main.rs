//! tlens-cache-core's integration tests, one module per file, in one test binary (`cargo test -p tlens-cache-core
//! --test cache`; add `errors::` and so on to run one file's tests).

mod activation_cache;
mod common;
mod divergences;
mod errors;
mod properties;
