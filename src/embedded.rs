//! The models built into the `tlens` binary, so that every command works with no download.
//!
//! - [`model`] — the default model of every subcommand: a 2-layer attention-only TransformerLens model trained on
//!   repeated random tokens (`tests/models/induction`, made by `reference/train_induction.py`), so it has a real
//!   induction circuit — a previous-token head in layer 0 and induction heads in layer 1. Its tokenizer is the tiny
//!   GPT-2's byte-level BPE (512 tokens, `<|endoftext|>` = id 0 is BOS).
//! - [`gpt2_tiny`] — the tiny random GPT-2 of the test suite (`tests/models/gpt2-tiny`, with MLPs), also reachable as
//!   `--model tests/models/gpt2-tiny`.
//!
//! Both are loaded with TransformerLens's default weight processing (`fold_ln`, centring, `fold_value_biases`), as
//! `from_pretrained` does: the logits change only by a constant per position, and direct logit attribution through
//! the cached final-norm scale is exact. [`induction_with`] loads the induction model's state dict with other
//! processing (`Processing::none()`: the parameters exactly as trained).

use burn_tensor::backend::Backend;
use tlens_model::{LoadedModel, Processing, load_hf_bytes, load_transformerlens_bytes};

use crate::error::Result;

const GPT2_CONFIG: &str = include_str!("../tests/models/gpt2-tiny/config.json");
const GPT2_WEIGHTS: &[u8] = include_bytes!("../tests/models/gpt2-tiny/model.safetensors");
const GPT2_TOKENIZER: &[u8] = include_bytes!("../tests/models/gpt2-tiny/tokenizer.json");

const INDUCTION_CONFIG: &str = include_str!("../tests/models/induction/config.json");
const INDUCTION_WEIGHTS: &[u8] = include_bytes!("../tests/models/induction/weights.safetensors");
const INDUCTION_TOKENIZER: &[u8] = include_bytes!("../tests/models/induction/tokenizer.json");

/// What the embedded model's weights take in memory: they are stored as f32, so their file's size.
pub const WEIGHT_BYTES: u64 = INDUCTION_WEIGHTS.len() as u64;

/// What the default model is, in a few words (for reports and command output).
pub const NAME: &str = "embedded 2-layer attention-only induction model (tests/models/induction)";

/// The prompt the subcommands use when given neither `--prompt` nor `--tokens`: a phrase said twice, so the second
/// time round an induction head can predict each next token from the first.
pub const DEFAULT_PROMPT: &str = "When Mary and John went to the shops, John gave a drink to Mary. When Mary and John went to the shops, John gave a drink to";

/// The default model of every subcommand: the induction model, with TransformerLens's default processing.
pub fn model<B: Backend>(device: &burn_tensor::Device<B>) -> Result<LoadedModel<B>> {
    induction_with(Processing::default(), device)
}

/// The embedded induction model (a TransformerLens state dict) with the given weight processing.
pub fn induction_with<B: Backend>(
    processing: Processing,
    device: &burn_tensor::Device<B>,
) -> Result<LoadedModel<B>> {
    Ok(load_transformerlens_bytes(
        INDUCTION_CONFIG,
        INDUCTION_WEIGHTS,
        Some(INDUCTION_TOKENIZER),
        processing,
        device,
    )?)
}

/// The embedded tiny GPT-2, with TransformerLens's default weight processing.
pub fn gpt2_tiny<B: Backend>(device: &burn_tensor::Device<B>) -> Result<LoadedModel<B>> {
    Ok(load_hf_bytes(
        GPT2_CONFIG,
        GPT2_WEIGHTS,
        Some(GPT2_TOKENIZER),
        Processing::default(),
        device,
    )?)
}
