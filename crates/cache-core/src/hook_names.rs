//! Hook names as users write them: TransformerLens's `get_act_name` shorthand and cache keys (the typed hook points
//! are [`crate::hook_point`]).

use serde::{Deserialize, Serialize};

/// A key into an [`ActivationCache`](crate::ActivationCache), in any form TransformerLens's `cache[...]` accepts.
///
/// ```
/// use tlens_cache_core::hook_names::{get_act_name, CacheKey};
/// assert_eq!(CacheKey::from("k6").resolve(2), "blocks.6.attn.hook_k");
/// assert_eq!(CacheKey::from(("resid_pre", -1)).resolve(2), "blocks.1.hook_resid_pre");
/// assert_eq!(CacheKey::from(("scale", 1, "ln1")).resolve(2), "blocks.1.ln1.hook_scale");
/// assert_eq!(get_act_name("pattern", Some(0), None), "blocks.0.attn.hook_pattern");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CacheKey {
    /// A full hook name or a string shorthand (`"embed"`, `"k6"`, `"scale4ln1"`).
    Name(String),
    /// `(name, layer, layer_type)` as `get_act_name` takes them; a negative layer counts from `n_layers`.
    Parts(String, Option<i64>, Option<String>),
}

impl CacheKey {
    /// The hook name this key stands for, in a model with `n_layers` layers.
    pub fn resolve(&self, n_layers: usize) -> String {
        match self {
            CacheKey::Name(name) => get_act_name(name, None, None),
            CacheKey::Parts(name, layer, layer_type) => {
                let layer = layer.map(|l| if l < 0 { n_layers as i64 + l } else { l });
                get_act_name(name, layer, layer_type.as_deref())
            }
        }
    }
}

impl From<&str> for CacheKey {
    fn from(s: &str) -> Self {
        CacheKey::Name(s.to_string())
    }
}

impl From<String> for CacheKey {
    fn from(s: String) -> Self {
        CacheKey::Name(s)
    }
}

impl From<(&str,)> for CacheKey {
    fn from((name,): (&str,)) -> Self {
        CacheKey::Parts(name.to_string(), None, None)
    }
}

impl From<(&str, i64)> for CacheKey {
    fn from((name, layer): (&str, i64)) -> Self {
        CacheKey::Parts(name.to_string(), Some(layer), None)
    }
}

/// Integer literals (`("k", -1)`) default to `i32`.
impl From<(&str, i32)> for CacheKey {
    fn from((name, layer): (&str, i32)) -> Self {
        CacheKey::Parts(name.to_string(), Some(i64::from(layer)), None)
    }
}

impl From<(&str, i32, &str)> for CacheKey {
    fn from((name, layer, layer_type): (&str, i32, &str)) -> Self {
        CacheKey::Parts(
            name.to_string(),
            Some(i64::from(layer)),
            Some(layer_type.to_string()),
        )
    }
}

impl From<(&str, usize)> for CacheKey {
    fn from((name, layer): (&str, usize)) -> Self {
        CacheKey::Parts(name.to_string(), Some(layer as i64), None)
    }
}

impl From<(&str, i64, &str)> for CacheKey {
    fn from((name, layer, layer_type): (&str, i64, &str)) -> Self {
        CacheKey::Parts(name.to_string(), Some(layer), Some(layer_type.to_string()))
    }
}

impl From<(&str, usize, &str)> for CacheKey {
    fn from((name, layer, layer_type): (&str, usize, &str)) -> Self {
        CacheKey::Parts(
            name.to_string(),
            Some(layer as i64),
            Some(layer_type.to_string()),
        )
    }
}

/// TransformerLens's `get_act_name`: expands a shorthand into a full hook name (spec: deterministic string rewriting).
///
/// `layer` may be negative only through [`CacheKey::resolve`], which normalises it first.
pub fn get_act_name(name: &str, layer: Option<i64>, layer_type: Option<&str>) -> String {
    if layer.is_none() && layer_type.is_none() && (name.contains('.') || name.starts_with("hook_"))
    {
        return name.to_string();
    }
    let (mut name, mut layer, mut layer_type) = (
        name.to_string(),
        layer.map(|l| l.to_string()),
        layer_type.map(str::to_string),
    );
    if let Some((n, l, t)) = split_shorthand(&name) {
        name = n;
        layer = Some(l);
        layer_type = Some(t);
    }
    let name = match name.as_str() {
        "attn" => "pattern",
        "attn_logits" => "attn_scores",
        "key" => "k",
        "query" => "q",
        "value" => "v",
        "mlp_pre" => "pre",
        "mlp_mid" => "mid",
        "mlp_post" => "post",
        other => other,
    }
    .to_string();
    let mut full = layer
        .as_ref()
        .map(|l| format!("blocks.{l}."))
        .unwrap_or_default();
    let layer_type = match name.as_str() {
        "k" | "v" | "q" | "z" | "rot_k" | "rot_q" | "result" | "pattern" | "attn_scores" => {
            Some("attn".to_string())
        }
        "pre" | "post" | "mid" | "pre_linear" => Some("mlp".to_string()),
        _ => layer_type.map(|t| match t.as_str() {
            "a" | "attention" => "attn".to_string(),
            "m" => "mlp".to_string(),
            "b" | "block" | "blocks" => String::new(),
            other => other.to_string(),
        }),
    };
    if let Some(t) = layer_type.filter(|t| !t.is_empty()) {
        full.push_str(&t);
        full.push('.');
    }
    full.push_str("hook_");
    full.push_str(&name);
    if (name == "scale" || name == "normalized") && layer.is_none() {
        full = format!("ln_final.{full}");
    }
    full
}

/// The regex `^([a-z]+)(\d+)([a-z]?.*)` of `get_act_name`, by hand: lowercase letters, digits, then anything up to
/// a newline (Python's `.` does not match one).
fn split_shorthand(name: &str) -> Option<(String, String, String)> {
    let letters = name.bytes().take_while(u8::is_ascii_lowercase).count();
    let digits = name[letters..]
        .bytes()
        .take_while(u8::is_ascii_digit)
        .count();
    (letters > 0 && digits > 0).then(|| {
        (
            name[..letters].to_string(),
            name[letters..letters + digits].to_string(),
            name[letters + digits..]
                .split('\n')
                .next()
                .unwrap_or_default()
                .to_string(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorthands_expand_as_in_transformerlens() {
        let cases: &[(&str, Option<i64>, Option<&str>, &str)] = &[
            ("k", Some(6), Some("a"), "blocks.6.attn.hook_k"),
            ("pre", Some(2), None, "blocks.2.mlp.hook_pre"),
            ("embed", None, None, "hook_embed"),
            ("pos_embed", None, None, "hook_pos_embed"),
            (
                "normalized",
                Some(27),
                Some("ln2"),
                "blocks.27.ln2.hook_normalized",
            ),
            ("k6", None, None, "blocks.6.attn.hook_k"),
            ("scale4ln1", None, None, "blocks.4.ln1.hook_scale"),
            ("pre5", None, None, "blocks.5.mlp.hook_pre"),
            ("attn0", None, None, "blocks.0.attn.hook_pattern"),
            (
                "attn_logits",
                Some(1),
                None,
                "blocks.1.attn.hook_attn_scores",
            ),
            ("resid_pre", Some(5), None, "blocks.5.hook_resid_pre"),
            ("attn_out", Some(1), Some("block"), "blocks.1.hook_attn_out"),
            ("q", Some(2), Some("mlp"), "blocks.2.attn.hook_q"),
            ("rot_q", Some(1), None, "blocks.1.attn.hook_rot_q"),
            ("pre_linear", Some(0), None, "blocks.0.mlp.hook_pre_linear"),
            ("mid", Some(1), None, "blocks.1.mlp.hook_mid"),
            ("scale", None, None, "ln_final.hook_scale"),
            ("normalized", None, None, "ln_final.hook_normalized"),
            ("resid_pre5", None, None, "hook_resid_pre5"),
            ("k6", Some(3), None, "blocks.6.attn.hook_k"),
            (
                "blocks.0.hook_resid_pre",
                None,
                None,
                "blocks.0.hook_resid_pre",
            ),
        ];
        for (name, layer, ty, want) in cases {
            assert_eq!(
                get_act_name(name, *layer, *ty),
                *want,
                "{name} {layer:?} {ty:?}"
            );
        }
    }

    #[test]
    fn negative_layers_count_from_the_model() {
        assert_eq!(CacheKey::from(("k", -1)).resolve(4), "blocks.3.attn.hook_k");
        assert_eq!(
            CacheKey::from(("scale", -1, "ln1")).resolve(2),
            "blocks.1.ln1.hook_scale"
        );
    }
}
