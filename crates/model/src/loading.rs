//! Loading a model: a Hugging Face checkpoint folder (from disk or from bytes), a TransformerLens config and state dict
//! (from disk or from bytes), or a folder of either kind ([`load_folder`]).

use std::path::Path;

use burn_tensor::FloatDType;
use burn_tensor::backend::Backend;
use tlens_cache_core::HookedTransformerConfig;

use crate::error::{ModelError, Result};
use crate::hf::{self, Family};
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

/// Loads a Hugging Face checkpoint folder of any supported family (`config.json`'s `model_type`: `gpt2`,
/// `gpt_neox`, `gptj`, `opt`, `llama`, `mistral`, `qwen2`, `qwen3`, `phi3`, `gemma`, `gemma2`), as TransformerLens's
/// `from_pretrained` would: the config and weights converted by TransformerLens's rules for the family, then
/// `processing`. The weights are `model.safetensors` or the shards that `model.safetensors.index.json` lists, in f32,
/// f16 or bf16; the tokenizer (`tokenizer.json`, or GPT-2's `vocab.json` + `merges.txt`) is optional.
pub fn load_hf<B: Backend>(
    dir: &Path,
    processing: Processing,
    device: &burn_tensor::Device<B>,
) -> Result<LoadedModel<B>> {
    check_folder(dir)?;
    let config = dir.join("config.json");
    let text = crate::text_file::read_text(&config)?;
    let source = config.display().to_string();
    let family = hf::model_type(&text, &source)?;
    let cfg = hf::config_from_json(family, &text, &source)?;
    let model = build_hf(
        family,
        cfg,
        TensorFile::read_checkpoint(dir)?,
        processing,
        device,
    )?;
    checked(
        model,
        Tokenizer::from_folder(dir)?,
        &dir.display().to_string(),
    )
}

/// [`load_hf`] from the contents of a folder's files (one `model.safetensors`; for models embedded in a binary).
pub fn load_hf_bytes<B: Backend>(
    config_json: &str,
    safetensors: &[u8],
    tokenizer_json: Option<&[u8]>,
    processing: Processing,
    device: &burn_tensor::Device<B>,
) -> Result<LoadedModel<B>> {
    let family = hf::model_type(config_json, "config.json")?;
    let cfg = hf::config_from_json(family, config_json, "config.json")?;
    let model = build_hf(
        family,
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
    let text = crate::text_file::read_text(config)?;
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
/// - a Hugging Face folder ([`load_hf`]): `config.json` (Hugging Face fields) and `model.safetensors` or its shards;
/// - a TransformerLens folder: `config.json` (TransformerLens fields: `d_model`, `n_layers`, ...) and
///   `weights.safetensors` (a TransformerLens state dict).
///
/// Either may hold a tokenizer (`tokenizer.json`, or `vocab.json` + `merges.txt`).
pub fn load_folder<B: Backend>(
    dir: &Path,
    processing: Processing,
    device: &burn_tensor::Device<B>,
) -> Result<LoadedModel<B>> {
    match transformerlens_config(dir)? {
        Some((config, text)) => {
            let cfg = tl_config(&text, &config.display().to_string())?;
            let weights = TensorFile::read(&dir.join(TL_WEIGHTS))?;
            let model = build(cfg, weights, processing, device)?;
            checked(
                model,
                Tokenizer::from_folder(dir)?,
                &dir.display().to_string(),
            )
        }
        None => load_hf(dir, processing, device),
    }
}

/// A TransformerLens folder's state dict.
const TL_WEIGHTS: &str = "weights.safetensors";

/// The config of a TransformerLens folder (its path and text); `None` for a Hugging Face folder.
fn transformerlens_config(dir: &Path) -> Result<Option<(std::path::PathBuf, String)>> {
    check_folder(dir)?;
    let config = dir.join("config.json");
    let text = crate::text_file::read_text(&config)?;
    Ok(
        (!TensorFile::is_checkpoint(dir) && is_transformerlens_config(&text))
            .then_some((config, text)),
    )
}

/// The bytes a folder's weights take once loaded as f32, summed from the safetensors headers without reading the
/// tensors: what a command checks against its memory budget before it loads a model.
///
/// ```
/// let bytes = tlens_model::loading::weight_bytes("../../tests/models/tl-attnonly".as_ref()).unwrap();
/// assert!(bytes > 0 && bytes < 100_000);
/// ```
pub fn weight_bytes(dir: &Path) -> Result<u64> {
    let file = match transformerlens_config(dir)? {
        Some(_) => TensorFile::read(&dir.join(TL_WEIGHTS))?,
        None => TensorFile::read_checkpoint(dir)?,
    };
    Ok(file.f32_bytes())
}

/// A folder, or a clear word on what the path is instead.
fn check_folder(dir: &Path) -> Result<()> {
    let problem = match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => "a file, not a model folder (name the folder that holds config.json)",
        Err(_) => "no such folder",
    };
    Err(ModelError::io(
        dir,
        std::io::Error::new(std::io::ErrorKind::NotFound, problem),
    ))
}

/// Whether a `config.json` is TransformerLens's (it names `d_model`; Hugging Face configs say `hidden_size`, `n_embd`
/// or `d_model` only together with a `model_type`).
fn is_transformerlens_config(text: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(text)
        .is_ok_and(|v| v.get("d_model").is_some() && v.get("model_type").is_none())
}

fn tl_config(text: &str, path: &str) -> Result<HookedTransformerConfig> {
    HookedTransformerConfig::from_json(text).map_err(|e| ModelError::Config {
        path: path.to_string(),
        message: e.to_string(),
    })
}

fn build_hf<B: Backend>(
    family: Family,
    cfg: HookedTransformerConfig,
    hf: TensorFile,
    processing: Processing,
    device: &burn_tensor::Device<B>,
) -> Result<HookedTransformer<B>> {
    let tl = hf::convert_weights(family, &cfg, hf)?;
    build(cfg, tl, processing, device)
}

fn build<B: Backend>(
    cfg: HookedTransformerConfig,
    state: TensorFile,
    processing: Processing,
    device: &burn_tensor::Device<B>,
) -> Result<HookedTransformer<B>> {
    let dtype = processing.dtype;
    dtype.check_compute::<B>(device)?;
    let stored = weights_from_state_dict(&cfg, state, device)?;
    // TransformerLens's `from_pretrained(dtype=...)`: the state dict in `dtype`, processed in f32 and cast back (each
    // cast a no-op for an f32 model).
    let mut weights = stored.cast(dtype.float_dtype()).cast(FloatDType::F32);
    let cfg = process(cfg, &mut weights, processing);
    HookedTransformer::new(cfg, weights.cast(dtype.float_dtype()))
}

/// Pairs a model with its tokenizer, checking that every token id the tokenizer makes is in the model's vocabulary.
fn checked<B: Backend>(
    model: HookedTransformer<B>,
    tokenizer: Option<Tokenizer>,
    source: &str,
) -> Result<LoadedModel<B>> {
    if let Some(t) = &tokenizer
        && t.vocab_size() > model.cfg().d_vocab
    {
        return Err(ModelError::Config {
            path: source.to_string(),
            message: format!(
                "the tokenizer has {} tokens but the model's vocabulary only {}",
                t.vocab_size(),
                model.cfg().d_vocab
            ),
        });
    }
    Ok(LoadedModel { model, tokenizer })
}
