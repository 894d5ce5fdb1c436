//! Decoding a plan's encoded argument values (slices, token tensors, projections, references to earlier outputs),
//! and checking that a call names only arguments its method takes.

use burn_tensor::{TensorData, backend::Backend};
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
    let int = |v: &Value| integer(v).map_err(|what| format!("expected {what}, found {v}"));
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

/// A JSON integer as `i64`; the error says whether it was a whole number out of range or no integer at all.
pub fn integer(v: &Value) -> Result<i64, &'static str> {
    v.as_i64().ok_or(match v.as_f64() {
        Some(x) if x.fract() == 0.0 => "an integer in the range of i64 (it is out of range)",
        _ => "an integer",
    })
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
            .map(|v| integer(v).map_err(|what| self.wrong(name, what)))
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
            Value::Number(_) => integer(v)
                .map(|id| Some(TokenIds::scalar(id)))
                .map_err(|what| self.wrong(name, what)),
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn slices_decode_every_encoding() {
        assert_eq!(slice(&json!(null)).unwrap(), Slice::All);
        assert_eq!(slice(&json!(-1)).unwrap(), Slice::Index(-1));
        assert_eq!(slice(&json!([0, 2])).unwrap(), Slice::Indices(vec![0, 2]));
        assert_eq!(
            slice(&json!({"indices": [3]})).unwrap(),
            Slice::Indices(vec![3])
        );
        assert_eq!(
            slice(&json!({"range": [4]})).unwrap(),
            Slice::Range {
                start: None,
                stop: Some(4),
                step: None
            }
        );
        assert_eq!(
            slice(&json!({"range": [1, null, 2]})).unwrap(),
            Slice::Range {
                start: Some(1),
                stop: None,
                step: Some(2)
            }
        );
        assert!(slice(&json!({"range": []})).is_err());
        assert!(slice(&json!("x")).is_err());
        assert!(slice(&json!(1.5)).is_err());
    }

    #[test]
    fn unknown_argument_names_are_errors() {
        let m = map(json!({"layer": 1, "incl_mids": true}));
        let err = Args::new("accumulated_resid", &m, &["layer", "incl_mid"])
            .err()
            .unwrap();
        assert!(err.to_string().contains("incl_mids"), "{err}");
        let m = map(json!({}));
        assert!(Args::new("remove_batch_dim", &m, &[]).is_ok());
    }

    #[test]
    fn values_decode_with_defaults_and_type_checks() {
        let m = map(
            json!({"layer": null, "apply_ln": true, "mode": "mlp", "tokens": {"tensor": [[1, 2], [3, 4]]}, "bad": "yes"}),
        );
        let a = Args::new(
            "m",
            &m,
            &["layer", "apply_ln", "mode", "tokens", "bad", "absent"],
        )
        .unwrap();
        assert_eq!(a.opt_int("layer").unwrap(), None);
        assert!(a.bool("apply_ln", false).unwrap());
        assert!(!a.bool("absent", false).unwrap());
        assert!(a.bool("bad", false).is_err());
        assert_eq!(a.opt_str("mode").unwrap(), Some("mlp"));
        assert!(a.int("absent").is_err());
        let t = a.tokens("tokens", None).unwrap().unwrap();
        assert_eq!((t.ids, t.shape), (vec![1, 2, 3, 4], vec![2, 2]));
        assert!(
            a.tokens("bad", None).is_err(),
            "a string token needs a tokenizer"
        );
    }

    #[test]
    fn tensors_and_references() {
        let m = map(
            json!({"p": {"tensor": [[0.5, 1], [2, 3]]}, "ragged": {"tensor": [[1], [1, 2]]}, "f": {"tensor": [1.5]}, "s": {"ref": "acc"}}),
        );
        let a = Args::new("m", &m, &["p", "ragged", "f", "s"]).unwrap();
        let p = a
            .float_tensor::<burn_ndarray::NdArray>("p", &Default::default())
            .unwrap()
            .unwrap();
        assert_eq!(
            (p.shape(), p.to_vec()),
            (vec![2, 2], vec![0.5, 1.0, 2.0, 3.0])
        );
        assert!(
            a.float_tensor::<burn_ndarray::NdArray>("ragged", &Default::default())
                .is_err()
        );
        assert!(a.tokens("f", None).is_err(), "token ids must be integers");
        assert_eq!(a.reference("s").unwrap(), "acc");
        assert!(a.reference("p").is_err());
    }
}
