//! Decoding a plan's encoded argument values (slices, token tensors, projections, references to earlier outputs),
//! and checking that a call names only arguments its method takes.

use burn_tensor::{backend::Backend, TensorData};
use serde_json::{Map, Value};
use tlens_cache_core::{CacheError, DynTensor, Slice, TokenIds};
use tlens_model::Tokenizer;

use crate::error::{Result, TlensError};

fn bad(message: impl Into<String>) -> TlensError {
    CacheError::InvalidArgument(message.into()).into()
}

/// `null` · an integer · `{"range": [start, stop, step]}` (Python's `slice(*list)`) · `{"indices": [...]}` · a plain
/// list of integers (a Python list, as `Slice([...])` takes it).
pub fn slice(v: &Value) -> Result<Slice, String> {
    let int = |v: &Value| {
        v.as_i64()
            .ok_or_else(|| format!("expected an integer, found {v}"))
    };
    let opt = |v: &Value| {
        if v.is_null() {
            Ok(None)
        } else {
            int(v).map(Some)
        }
    };
    match v {
        Value::Null => Ok(Slice::All),
        Value::Number(_) => int(v).map(Slice::Index),
        Value::Array(list) => list
            .iter()
            .map(int)
            .collect::<Result<Vec<_>, _>>()
            .map(Slice::Indices),
        Value::Object(o) if o.len() == 1 && o.contains_key("range") => {
            let list = o["range"].as_array().ok_or("`range` must be a list")?;
            let parts = list.iter().map(opt).collect::<Result<Vec<_>, _>>()?;
            match parts.as_slice() {
                [stop] => Ok(Slice::Range {
                    start: None,
                    stop: *stop,
                    step: None,
                }),
                [start, stop] => Ok(Slice::Range {
                    start: *start,
                    stop: *stop,
                    step: None,
                }),
                [start, stop, step] => Ok(Slice::Range {
                    start: *start,
                    stop: *stop,
                    step: *step,
                }),
                _ => Err(format!(
                    "`range` takes one to three entries, found {}",
                    parts.len()
                )),
            }
        }
        Value::Object(o) if o.len() == 1 && o.contains_key("indices") => {
            let list = o["indices"].as_array().ok_or("`indices` must be a list")?;
            list.iter()
                .map(int)
                .collect::<Result<Vec<_>, _>>()
                .map(Slice::Indices)
        }
        other => Err(format!("not a slice: {other}")),
    }
}

/// A call's keyword arguments, read by name; every name must be one the method takes.
pub struct Args<'a> {
    method: &'a str,
    map: &'a Map<String, Value>,
}

impl<'a> Args<'a> {
    /// Checks that `map` names only arguments in `known` (TransformerLens raises `TypeError` on any other).
    pub fn new(method: &'a str, map: &'a Map<String, Value>, known: &[&str]) -> Result<Self> {
        if let Some(unknown) = map.keys().find(|k| !known.contains(&k.as_str())) {
            let list = if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            };
            return Err(bad(format!(
                "{method} got an unexpected argument `{unknown}` (it takes: {list})"
            )));
        }
        Ok(Self { method, map })
    }

    /// The value of an argument, if given and not `null`.
    fn value(&self, name: &str) -> Option<&'a Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    fn wrong(&self, name: &str, what: &str) -> TlensError {
        bad(format!(
            "{}: `{name}` must be {what}, found {}",
            self.method, self.map[name]
        ))
    }

    /// A boolean argument (`null` or absent: the default).
    pub fn bool(&self, name: &str, default: bool) -> Result<bool> {
        self.value(name).map_or(Ok(default), |v| {
            v.as_bool().ok_or_else(|| self.wrong(name, "a boolean"))
        })
    }

    /// An optional integer (a layer: `null` or absent means the method's default).
    pub fn opt_int(&self, name: &str) -> Result<Option<i64>> {
        self.value(name)
            .map(|v| v.as_i64().ok_or_else(|| self.wrong(name, "an integer")))
            .transpose()
    }

    /// A required integer.
    pub fn int(&self, name: &str) -> Result<i64> {
        self.opt_int(name)?
            .ok_or_else(|| bad(format!("{} needs `{name}`", self.method)))
    }

    /// An optional string.
    pub fn opt_str(&self, name: &str) -> Result<Option<&'a str>> {
        self.value(name)
            .map(|v| v.as_str().ok_or_else(|| self.wrong(name, "a string")))
            .transpose()
    }

    /// A required string.
    pub fn str(&self, name: &str) -> Result<&'a str> {
        self.opt_str(name)?
            .ok_or_else(|| bad(format!("{} needs `{name}`", self.method)))
    }

    /// A slice argument (absent: no slicing).
    pub fn slice(&self, name: &str) -> Result<Slice> {
        match self.map.get(name) {
            None => Ok(Slice::All),
            Some(v) => slice(v).map_err(|m| bad(format!("{}: `{name}`: {m}", self.method))),
        }
    }

    /// Whether the argument is present (even as `null`).
    pub fn has(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    /// A token argument: an integer id, a string (one token, through the tokenizer), or `{"tensor": ...}` of
    /// integers. `None` when absent or `null`.
    pub fn tokens(&self, name: &str, tokenizer: Option<&Tokenizer>) -> Result<Option<TokenIds>> {
        let Some(v) = self.value(name) else {
            return Ok(None);
        };
        match v {
            Value::Number(n) => n
                .as_i64()
                .map(|id| Some(TokenIds::scalar(id)))
                .ok_or_else(|| self.wrong(name, "an integer token id")),
            Value::String(s) => {
                let tokenizer = tokenizer.ok_or_else(|| {
                    bad(format!(
                        "{}: `{name}` is a string, but the model has no tokenizer",
                        self.method
                    ))
                })?;
                Ok(Some(TokenIds::scalar(i64::from(
                    tokenizer.to_single_token(s)?,
                ))))
            }
            Value::Object(o) if o.len() == 1 && o.contains_key("tensor") => {
                let (values, shape, is_float) = nested(&o["tensor"])
                    .map_err(|m| bad(format!("{}: `{name}`: {m}", self.method)))?;
                if is_float {
                    return Err(self.wrong(name, "a tensor of integer token ids"));
                }
                Ok(Some(TokenIds::new(
                    values.iter().map(|&x| x as i64).collect(),
                    shape,
                )?))
            }
            _ => Err(self.wrong(name, "a token id, a string or {\"tensor\": ...}")),
        }
    }

    /// A float tensor argument (`{"tensor": ...}`, or a bare number as a 0-d tensor). `None` when absent or `null`.
    pub fn float_tensor<B: Backend>(
        &self,
        name: &str,
        device: &burn_tensor::Device<B>,
    ) -> Result<Option<DynTensor<B>>> {
        let Some(v) = self.value(name) else {
            return Ok(None);
        };
        let (values, shape) = match v {
            Value::Number(n) => (
                vec![n.as_f64().ok_or_else(|| self.wrong(name, "a number"))?],
                Vec::new(),
            ),
            Value::Object(o) if o.len() == 1 && o.contains_key("tensor") => {
                let (values, shape, _) = nested(&o["tensor"])
                    .map_err(|m| bad(format!("{}: `{name}`: {m}", self.method)))?;
                (values, shape)
            }
            _ => return Err(self.wrong(name, "{\"tensor\": ...}")),
        };
        let values: Vec<f32> = values.iter().map(|&x| x as f32).collect();
        Ok(Some(DynTensor::from_data(
            TensorData::new(values, shape),
            device,
        )?))
    }

    /// A `{"ref": ID}` argument: the id of an earlier call's output.
    pub fn reference(&self, name: &str) -> Result<&'a str> {
        let v = self
            .value(name)
            .ok_or_else(|| bad(format!("{} needs `{name}`", self.method)))?;
        v.as_object()
            .filter(|o| o.len() == 1)
            .and_then(|o| o.get("ref"))
            .and_then(Value::as_str)
            .ok_or_else(|| self.wrong(name, "{\"ref\": ID}"))
    }
}

/// A nested JSON list of numbers: its values (row-major), shape, and whether any value is not an integer.
fn nested(v: &Value) -> Result<(Vec<f64>, Vec<usize>, bool), String> {
    match v {
        Value::Number(n) => {
            let x = n.as_f64().ok_or("not a number")?;
            Ok((vec![x], Vec::new(), !(n.is_i64() || n.is_u64())))
        }
        Value::Array(items) => {
            let mut values = Vec::new();
            let mut inner: Option<Vec<usize>> = None;
            let mut float = false;
            for item in items {
                let (v, s, f) = nested(item)?;
                if inner.as_ref().is_some_and(|i| *i != s) {
                    return Err("a tensor's rows must all have the same shape".into());
                }
                inner = Some(s);
                values.extend(v);
                float |= f;
            }
            let mut shape = vec![items.len()];
            shape.extend(inner.unwrap_or_default());
            Ok((values, shape, float))
        }
        other => Err(format!("not a number or a list: {other}")),
    }
}
