//! The facade's integration tests, one module per file, in one test binary (`cargo test --test integration`; add
//! `cli::` and so on to run one file's tests).

mod analysis;
mod book;
mod cli;
mod families;
mod fuzz_loaders;
mod harvest;
mod interventions;
mod model;
mod parity;
mod robustness;
