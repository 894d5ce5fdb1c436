//! The models built into the `tlens` binary, so that every command works with no download.
//!
//! [`model`] is the default model of every subcommand. For now it is the tiny random GPT-2 the test suite also uses
//! (`tests/models/gpt2-tiny`), with its tokenizer; [`gpt2_tiny`] always returns that one.

use burn_tensor::backend::Backend;
use tlens_model::{load_hf_gpt2_bytes, LoadedModel, Processing};

use crate::error::Result;

const CONFIG: &str = include_str!("../tests/models/gpt2-tiny/config.json");
const WEIGHTS: &[u8] = include_bytes!("../tests/models/gpt2-tiny/model.safetensors");
const TOKENIZER: &[u8] = include_bytes!("../tests/models/gpt2-tiny/tokenizer.json");

/// What the default model is, in a few words (for reports and command output).
pub const NAME: &str = "embedded tiny random GPT-2 (tests/models/gpt2-tiny)";

/// The prompt the subcommands use when given neither `--prompt` nor `--tokens`.
pub const DEFAULT_PROMPT: &str = "When John and Mary went to the shops, John gave the bag to";

/// The default model of every subcommand.
pub fn model<B: Backend>(device: &burn_tensor::Device<B>) -> Result<LoadedModel<B>> {
    gpt2_tiny(device)
}

/// The embedded tiny GPT-2, with TransformerLens's default weight processing.
pub fn gpt2_tiny<B: Backend>(device: &burn_tensor::Device<B>) -> Result<LoadedModel<B>> {
    Ok(load_hf_gpt2_bytes(
        CONFIG,
        WEIGHTS,
        Some(TOKENIZER),
        Processing::default(),
        device,
    )?)
}
