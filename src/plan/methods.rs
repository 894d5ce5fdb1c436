//! Dispatching a plan's calls to [`ActivationCache`] methods by their TransformerLens names.

use std::collections::HashMap;

use burn_tensor::backend::Backend;
use serde_json::{Map, Value};
use tlens_cache_core::hook_names::CacheKey;
use tlens_cache_core::save::NamedTensor;
use tlens_cache_core::{ActivationCache, CacheError, DynTensor};
use tlens_model::Tokenizer;

use crate::error::{Result, TlensError};

/// The tensor a call returned, and its labels when the call returned some.
#[derive(Clone, Debug)]
pub struct CallOutput<B: Backend> {
    /// The returned tensor.
    pub tensor: DynTensor<B>,
    /// The labels, for calls made with `return_labels`.
    pub labels: Option<Vec<String>>,
}

impl<B: Backend> CallOutput<B> {
    pub(crate) fn named(&self, name: String) -> NamedTensor {
        NamedTensor::float(name, &self.tensor)
    }
}

/// The state calls run against: the current cache, the tokenizer, and earlier outputs by id.
pub struct CallContext<B: Backend> {
    pub(crate) cache: ActivationCache<B>,
    pub(crate) tokenizer: Option<Tokenizer>,
    outputs: HashMap<String, CallOutput<B>>,
}

impl<B: Backend> CallContext<B> {
    pub(crate) fn new(cache: ActivationCache<B>, tokenizer: Option<Tokenizer>) -> Self {
        Self {
            cache,
            tokenizer,
            outputs: HashMap::new(),
        }
    }

    pub(crate) fn remember(&mut self, id: &str, out: CallOutput<B>) {
        self.outputs.insert(id.to_string(), out);
    }
}

fn bad(message: impl Into<String>) -> TlensError {
    CacheError::InvalidArgument(message.into()).into()
}

/// Runs one call; `Ok(None)` for calls that return no tensor (those that replace the cache).
pub fn call<B: Backend>(
    ctx: &mut CallContext<B>,
    method: &str,
    args: &Map<String, Value>,
) -> Result<Option<CallOutput<B>>> {
    match method {
        "__getitem__" => {
            let key = args
                .get("key")
                .ok_or_else(|| bad("__getitem__ needs `key`"))?;
            Ok(Some(CallOutput {
                tensor: ctx.cache.get(cache_key(key)?)?,
                labels: None,
            }))
        }
        other => Err(bad(format!("unknown cache method `{other}`"))),
    }
}

/// `K` of `cache[K]`: a string, or a list `[name, layer, layer_type]` with trailing items optional.
fn cache_key(v: &Value) -> Result<CacheKey> {
    match v {
        Value::String(s) => Ok(CacheKey::Name(s.clone())),
        Value::Array(parts) if !parts.is_empty() && parts.len() <= 3 => {
            let name = parts[0]
                .as_str()
                .ok_or_else(|| bad("a key's first item must be a name"))?;
            let layer = parts
                .get(1)
                .filter(|v| !v.is_null())
                .map(|v| {
                    v.as_i64()
                        .ok_or_else(|| bad("a key's layer must be an integer"))
                })
                .transpose()?;
            let ty = parts
                .get(2)
                .filter(|v| !v.is_null())
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| bad("a key's layer type must be a string"))
                })
                .transpose()?;
            Ok(CacheKey::Parts(name.to_string(), layer, ty))
        }
        other => Err(bad(format!("not a cache key: {other}"))),
    }
}
