//! Token ids from outside: a JSON file of ids (one sequence or a batch), and a token named on the command line.

use std::path::Path;

use tlens_model::{TokenBatch, Tokenizer};

use crate::error::{Result, TlensError};

/// Parses JSON token ids: a list of ids (`[50256, 464, 3797]`, one sequence) or a list of equal-length lists (a
/// batch).
///
/// ```
/// let batch = tlens::analysis::input::parse_token_json("[[1, 2, 3], [4, 5, 6]]", "tokens").unwrap();
/// assert_eq!((batch.batch(), batch.positions()), (2, 3));
/// ```
pub fn parse_token_json(text: &str, source: &str) -> Result<TokenBatch> {
    let bad = |message: String| TlensError::File {
        path: source.to_string(),
        message,
    };
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let id = |v: &serde_json::Value| -> Result<u32> {
        if let Some(n) = v.as_u64() {
            return u32::try_from(n).map_err(|_| {
                bad(format!(
                    "token id {v} is out of range (at most {})",
                    u32::MAX
                ))
            });
        }
        Err(bad(match v.as_f64() {
            Some(x) if x.fract() == 0.0 && x > 0.0 => {
                format!("token id {v} is out of range (at most {})", u32::MAX)
            }
            _ => format!("{v} is not a token id (a non-negative integer)"),
        }))
    };
    let list = value
        .as_array()
        .ok_or_else(|| bad("expected a list of token ids or a list of lists (a batch)".into()))?;
    let rows: Vec<Vec<u32>> = if list.iter().all(|v| v.is_array()) && !list.is_empty() {
        list.iter()
            .map(|row| {
                row.as_array()
                    .expect("checked")
                    .iter()
                    .map(id)
                    .collect::<Result<Vec<u32>>>()
            })
            .collect::<Result<_>>()?
    } else {
        vec![list.iter().map(id).collect::<Result<_>>()?]
    };
    TokenBatch::new(&rows).map_err(|e| bad(e.to_string()))
}

/// Reads a JSON file of token ids ([`parse_token_json`]).
pub fn read_token_file(path: &Path) -> Result<TokenBatch> {
    let text = tlens_model::text_file::read_text(path)?;
    parse_token_json(&text, &path.display().to_string())
}

/// A token named on the command line: `id:N` for an id, otherwise text that must be exactly one token (e.g. `" Mary"`).
pub fn parse_token(spec: &str, tokenizer: Option<&Tokenizer>) -> Result<u32> {
    if let Some(n) = spec.strip_prefix("id:") {
        return n.parse().map_err(|e: std::num::ParseIntError| {
            TlensError::Analysis(match e.kind() {
                std::num::IntErrorKind::PosOverflow => {
                    format!("`{spec}`: token id out of range (at most {})", u32::MAX)
                }
                _ => format!("`{spec}`: expected id:N with N a token id"),
            })
        });
    }
    let tokenizer = tokenizer.ok_or_else(|| {
        TlensError::Analysis(format!(
            "the model has no tokenizer to read the token {spec:?}; name it by id (id:N)"
        ))
    })?;
    Ok(tokenizer.to_single_token(spec)?)
}

/// A printable form of each token: the tokenizer's text, or `#id` without a tokenizer.
pub fn token_strings(ids: &[u32], tokenizer: Option<&Tokenizer>) -> Vec<String> {
    match tokenizer.and_then(|t| t.to_str_tokens(ids).ok()) {
        Some(s) => s,
        None => ids.iter().map(|id| format!("#{id}")).collect(),
    }
}
