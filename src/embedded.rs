//! The model built into the `tlens` binary, so that the first command works with no download.
//!
//! For now this is the tiny random GPT-2 the test suite also uses (`tests/models/gpt2-tiny`), with its tokenizer.

use burn_tensor::backend::Backend;
use tlens_model::{load_hf_gpt2_bytes, LoadedModel, Processing};

use crate::error::Result;

const CONFIG: &str = include_str!("../tests/models/gpt2-tiny/config.json");
const WEIGHTS: &[u8] = include_bytes!("../tests/models/gpt2-tiny/model.safetensors");
const TOKENIZER: &[u8] = include_bytes!("../tests/models/gpt2-tiny/tokenizer.json");

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
