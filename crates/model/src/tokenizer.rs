//! [`Tokenizer`]: TransformerLens's token helpers (`to_tokens`, `to_str_tokens`, `to_single_token`) over the Hugging
//! Face `tokenizers` crate.

use std::path::Path;

use tokenizers::AddedToken;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;

use crate::error::{ModelError, Result};

/// GPT-2's beginning-of-sequence token (also its end-of-text and unknown token).
const GPT2_BOS: &str = "<|endoftext|>";

/// A tokenizer with the beginning-of-sequence token TransformerLens prepends.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos: Option<u32>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Tokenizer(vocab {}, bos {:?})",
            self.vocab_size(),
            self.bos
        )
    }
}

fn tok_err(e: impl std::fmt::Display) -> ModelError {
    ModelError::Tokenizer(e.to_string())
}

impl Tokenizer {
    /// Loads the tokenizer of a Hugging Face folder: `tokenizer.json`, or GPT-2's `vocab.json` + `merges.txt`.
    /// Returns `None` when the folder has neither.
    pub fn from_folder(dir: &Path) -> Result<Option<Self>> {
        let json = dir.join("tokenizer.json");
        let (vocab, merges) = (dir.join("vocab.json"), dir.join("merges.txt"));
        let inner = if json.exists() {
            let text = crate::text_file::read_text(&json)?;
            parse_json(text.as_bytes(), &json.display().to_string())?
        } else if vocab.exists() && merges.exists() {
            let bpe = BPE::from_file(&vocab.to_string_lossy(), &merges.to_string_lossy())
                .build()
                .map_err(|e| tok_err(format!("{}: {e}", vocab.display())))?;
            let mut t = tokenizers::Tokenizer::new(bpe);
            t.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
            t.with_decoder(Some(ByteLevel::default()));
            if t.token_to_id(GPT2_BOS).is_some() {
                t.add_special_tokens(&[AddedToken::from(GPT2_BOS, true)]);
            }
            t
        } else {
            return Ok(None);
        };
        Ok(Some(Self::from_tokenizer(inner, bos_from_config(dir)?)))
    }

    /// Loads a `tokenizer.json` from its bytes (BOS: `<|endoftext|>` if the vocabulary has it).
    pub fn from_json_bytes(bytes: &[u8]) -> Result<Self> {
        Ok(Self::from_tokenizer(
            parse_json(bytes, "tokenizer.json")?,
            None,
        ))
    }

    /// Wraps a `tokenizers` tokenizer; `bos` names the BOS token (default: `<|endoftext|>` if the vocabulary has it).
    pub fn from_tokenizer(inner: tokenizers::Tokenizer, bos: Option<String>) -> Self {
        let bos = bos
            .as_deref()
            .or(Some(GPT2_BOS))
            .and_then(|b| inner.token_to_id(b));
        Self { inner, bos }
    }

    /// The vocabulary size, special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of the BOS token, if the tokenizer has one.
    pub fn bos_token_id(&self) -> Option<u32> {
        self.bos
    }

    /// Token ids of a text; with `prepend_bos`, the BOS id first (TransformerLens's default).
    pub fn to_tokens(&self, text: &str, prepend_bos: bool) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(tok_err)?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if prepend_bos {
            ids.push(
                self.bos
                    .ok_or_else(|| tok_err("this tokenizer has no BOS token to prepend"))?,
            );
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// Each id decoded on its own, as TransformerLens's `to_str_tokens`.
    pub fn to_str_tokens(&self, ids: &[u32]) -> Result<Vec<String>> {
        ids.iter()
            .map(|&id| self.inner.decode(&[id], false).map_err(tok_err))
            .collect()
    }

    /// The id of a string that must be exactly one token (no BOS).
    pub fn to_single_token(&self, text: &str) -> Result<u32> {
        match self.to_tokens(text, false)?.as_slice() {
            [id] => Ok(*id),
            ids => Err(tok_err(format!(
                "{text:?} is not a single token (it is {} tokens)",
                ids.len()
            ))),
        }
    }
}

/// Parses a `tokenizer.json` (`source` names it in errors). The JSON syntax is checked first: `tokenizers` 0.22 panics
/// instead of failing on a syntax error inside the `decoder` entry (a truncated file, say). It also panics on some
/// well-formed but invalid entries (a `Precompiled` normalizer without its charsmap); that panic is caught and
/// reported as an error (its message still reaches stderr through the panic hook).
fn parse_json(bytes: &[u8], source: &str) -> Result<tokenizers::Tokenizer> {
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
        .map_err(|e| tok_err(format!("{source}: {e}")))?;
    std::panic::catch_unwind(|| tokenizers::Tokenizer::from_bytes(bytes))
        .map_err(|_| tok_err(format!("{source}: the tokenizers crate cannot read it")))?
        .map_err(|e| tok_err(format!("{source}: {e}")))
}

/// The `bos_token` of a folder's `tokenizer_config.json`, if it names one.
fn bos_from_config(dir: &Path) -> Result<Option<String>> {
    let path = dir.join("tokenizer_config.json");
    if !path.exists() {
        return Ok(None);
    }
    let text = crate::text_file::read_text(&path)?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| tok_err(format!("{}: {e}", path.display())))?;
    Ok(match &json["bos_token"] {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o
            .get("content")
            .and_then(|c| c.as_str())
            .map(str::to_string),
        _ => None,
    })
}
