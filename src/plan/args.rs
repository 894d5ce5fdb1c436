//! Decoding a plan's encoded argument values (slices, token tensors, references to earlier outputs).

use serde_json::Value;
use tlens_cache_core::Slice;

/// `null` · an integer · `{"range": [start, stop, step]}` (Python's `slice(*list)`) · `{"indices": [...]}`.
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
