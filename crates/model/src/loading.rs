//! Loading a model: a Hugging Face GPT-2 folder (from disk or from bytes), a TransformerLens config and state dict
//! (from disk or from bytes), or a folder of either kind ([`load_folder`]).

use std::path::Path;

use burn_tensor::backend::Backend;
use tlens_cache_core::HookedTransformerConfig;

use crate::error::{ModelError, Result};
use crate::gpt2;
use crate::hooked::HookedTransformer;
use crate::processing::{Processing, process};
use crate::safetensors_file::TensorFile;
use crate::state_dict::weights_from_state_dict;
use crate::tokenizer::Tokenizer;

/// A model and, when its folder has one, its tokenizer.
#[derive(Clone, Debug)]
pub struct LoadedModel<B: Backend> {
    /// The model.
    pub model: HookedTransformer<B>,
    /// Its tokenizer, if the folder had one.
    pub tokenizer: Option<Tokenizer>,
}

/// Loads a Hugging Face GPT-2 folder (`config.json`, `model.safetensors` in f32, f16 or bf16, optionally a tokenizer)
/// through TransformerLens's GPT-2 conversion, then applies `processing`.
pub fn load_hf_gpt2<B: Backend>(
    dir: &Path,
    processing: Processing,
    device: &burn_tensor::Device<B>,
) -> Result<LoadedModel<B>> {
    if !dir.is_dir() {
        return Err(ModelError::io(
            dir,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such folder"),
        ));
    }
    let cfg = gpt2::config_from_hf(&dir.join("config.json"))?;
    let model = build_hf(
        cfg,
        TensorFile::read(&dir.join("model.safetensors"))?,
        processing,
        device,
    )?;
    checked(
        model,
        Tokenizer::from_folder(dir)?,
        &dir.display().to_string(),
    )
}

/// [`load_hf_gpt2`] from the contents of a folder's files (for models embedded in a binary).
pub fn load_hf_gpt2_bytes<B: Backend>(
    config_json: &str,
    safetensors: &[u8],
    tokenizer_json: Option<&[u8]>,
    processing: Processing,
    device: &burn_tensor::Device<B>,
) -> Result<LoadedModel<B>> {
    let cfg = gpt2::config_from_hf_json(config_json, "config.json")?;
    let model = build_hf(
        cfg,
        TensorFile::parse(safetensors, "model.safetensors")?,
        processing,
        device,
    )?;
    let tokenizer = tokenizer_json.map(Tokenizer::from_json_bytes).transpose()?;
    checked(model, tokenizer, "embedded model")
}

/// Loads a TransformerLens config (JSON, TransformerLens field names) and state dict (safetensors, TransformerLens
/// parameter names), then applies `processing`.
pub fn load_transformerlens<B: Backend>(
    config: &Path,
    weights: &Path,
    processing: Processing,
    device: &burn_tensor::Device<B>,
) -> Result<HookedTransformer<B>> {
    let text = std::fs::read_to_string(config).map_err(|e| ModelError::io(config, e))?;
    let cfg = tl_config(&text, &config.display().to_string())?;
    build(cfg, TensorFile::read(weights)?, processing, device)
}

/// [`load_transformerlens`] from the contents of the files (for models embedded in a binary), with the tokenizer
/// that goes with it.
pub fn load_transformerlens_bytes<B: Backend>(
    config_json: &str,
    safetensors: &[u8],
    tokenizer_json: Option<&[u8]>,
    processing: Processing,
    device: &burn_tensor::Device<B>,
) -> Result<LoadedModel<B>> {
    let cfg = tl_config(config_json, "config.json")?;
    let model = build(
        cfg,
        TensorFile::parse(safetensors, "weights.safetensors")?,
        processing,
        device,
    )?;
    let tokenizer = tokenizer_json.map(Tokenizer::from_json_bytes).transpose()?;
    checked(model, tokenizer, "embedded model")
}

/// Loads a model folder of either kind, telling them apart by their files:
/// - a Hugging Face GPT-2 folder: `config.json` (Hugging Face fields) and `model.safetensors`;
/// - a TransformerLens folder: `config.json` (TransformerLens fields: `d_model`, `n_layers`, ...) and
///   `weights.safetensors` (a TransformerLens state dict).
///
/// Either may hold a tokenizer (`tokenizer.json`, or `vocab.json` + `merges.txt`).
pub fn load_folder<B: Backend>(
    dir: &Path,
    processing: Processing,
    device: &burn_tensor::Device<B>,
) -> Result<LoadedModel<B>> {
    if !dir.is_dir() {
        return Err(ModelError::io(
            dir,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such folder"),
        ));
    }
    let tl_weights = dir.join("weights.safetensors");
    if tl_weights.exists() && !dir.join("model.safetensors").exists() {
        let config = dir.join("config.json");
        let text = std::fs::read_to_string(&config).map_err(|e| ModelError::io(&config, e))?;
        let cfg = tl_config(&text, &config.display().to_string())?;
        let model = build(cfg, TensorFile::read(&tl_weights)?, processing, device)?;
        return checked(
            model,
            Tokenizer::from_folder(dir)?,
            &dir.display().to_string(),
        );
    }
    load_hf_gpt2(dir, processing, device)
}

fn tl_config(text: &str, path: &str) -> Result<HookedTransformerConfig> {
    HookedTransformerConfig::from_json(text).map_err(|e| ModelError::Config {
        path: path.to_string(),
        message: e.to_string(),
    })
}

fn build_hf<B: Backend>(
    cfg: HookedTransformerConfig,
    hf: TensorFile,
    processing: Processing,
    device: &burn_tensor::Device<B>,
) -> Result<HookedTransformer<B>> {
    let tl = gpt2::convert_weights(&cfg, hf)?;
    build(cfg, tl, processing, device)
}

fn build<B: Backend>(
    cfg: HookedTransformerConfig,
    state: TensorFile,
    processing: Processing,
    device: &burn_tensor::Device<B>,
) -> Result<HookedTransformer<B>> {
    let mut weights = weights_from_state_dict(&cfg, state, device)?;
    let cfg = process(cfg, &mut weights, processing);
    HookedTransformer::new(cfg, weights)
}

/// Pairs a model with its tokenizer, checking that every token id the tokenizer makes is in the model's vocabulary.
fn checked<B: Backend>(
    model: HookedTransformer<B>,
    tokenizer: Option<Tokenizer>,
    source: &str,
) -> Result<LoadedModel<B>> {
    if let Some(t) = &tokenizer
        && t.vocab_size() > model.cfg().vocab()
    {
        return Err(ModelError::Config {
            path: source.to_string(),
            message: format!(
                "the tokenizer has {} tokens but the model's vocabulary only {}",
                t.vocab_size(),
                model.cfg().vocab()
            ),
        });
    }
    Ok(LoadedModel { model, tokenizer })
}
