//! [`HookPoint`]: the one typed description of a TransformerLens hook — its name, the axes of its activation, and
//! which models have it. The forward pass reports activations by hook point, the cache's methods look them up by
//! hook point, a model's list of hooks comes from [`hook_points`], and the book's table of hooks is
//! [`markdown_table`].
//!
//! ```
//! use tlens_cache_core::hook_point::{BlockHook, HookPoint, Norm, NormHook};
//! let p: HookPoint = "blocks.3.attn.hook_pattern".parse().unwrap();
//! assert_eq!(p, HookPoint::Block(3, BlockHook::Pattern));
//! assert_eq!(p.position_axis(), Some(-2)); // the query axis
//! let scale = HookPoint::Block(0, BlockHook::Norm(Norm::Ln1, NormHook::Scale));
//! assert_eq!(scale.to_string(), "blocks.0.ln1.hook_scale");
//! ```

use std::fmt;
use std::str::FromStr;

use crate::config::{BlockKind, HookedTransformerConfig, MlpKind};
use crate::hook_names::CacheKey;

/// A norm's two hooks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NormHook {
    /// `hook_scale` `[.., 1]`: `sqrt(mean(x²) + eps)` of the (centred) input.
    Scale,
    /// `hook_normalized`: the input divided by the scale, before the norm's weights.
    Normalized,
}

/// The norms inside a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Norm {
    /// `ln1`, before attention.
    Ln1,
    /// `ln1_post`, after attention (Gemma 2).
    Ln1Post,
    /// `ln2`, before the MLP.
    Ln2,
    /// `ln2_post`, after the MLP (Gemma 2).
    Ln2Post,
    /// `mlp.ln`, SoLU's norm over the MLP width.
    MlpLn,
    /// `attn.q_norm`, over each head's queries (Qwen 3).
    QNorm,
    /// `attn.k_norm`, over each head's keys (Qwen 3).
    KNorm,
}

impl Norm {
    /// The module path inside the block (`ln1`, `attn.q_norm`, ...).
    pub fn module(self) -> &'static str {
        match self {
            Norm::Ln1 => "ln1",
            Norm::Ln1Post => "ln1_post",
            Norm::Ln2 => "ln2",
            Norm::Ln2Post => "ln2_post",
            Norm::MlpLn => "mlp.ln",
            Norm::QNorm => "attn.q_norm",
            Norm::KNorm => "attn.k_norm",
        }
    }
}

/// A hook inside block `l` (`blocks.{l}.…`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BlockHook {
    /// `hook_resid_pre`: the block's input.
    ResidPre,
    /// A norm's hook.
    Norm(Norm, NormHook),
    /// `attn.hook_q`.
    Q,
    /// `attn.hook_k`.
    K,
    /// `attn.hook_v`.
    V,
    /// `attn.hook_rot_q`: queries after rotary embeddings.
    RotQ,
    /// `attn.hook_rot_k`: keys after rotary embeddings.
    RotK,
    /// `attn.hook_attn_scores`: scaled, soft-capped, masked scores.
    AttnScores,
    /// `attn.hook_pattern`: the attention pattern.
    Pattern,
    /// `attn.hook_z`: pattern-weighted values.
    Z,
    /// `attn.hook_result`: each head's output.
    Result,
    /// `hook_attn_out`: attention's write into the residual stream.
    AttnOut,
    /// `hook_resid_mid`: the stream between attention and MLP.
    ResidMid,
    /// `mlp.hook_pre`: the MLP's pre-activation (the gate in a gated MLP).
    MlpPre,
    /// `mlp.hook_pre_linear`: a gated MLP's linear part.
    MlpPreLinear,
    /// `mlp.hook_mid`: SoLU's output before its norm.
    MlpMid,
    /// `mlp.hook_post`: the MLP's activations (the neurons).
    MlpPost,
    /// `hook_mlp_out`: the MLP's write into the residual stream.
    MlpOut,
    /// `hook_resid_post`: the block's output.
    ResidPost,
}

/// One TransformerLens hook point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HookPoint {
    /// `hook_embed`.
    Embed,
    /// `hook_pos_embed`.
    PosEmbed,
    /// A hook of block `layer`.
    Block(usize, BlockHook),
    /// `ln_final.hook_scale` / `ln_final.hook_normalized`.
    LnFinal(NormHook),
    /// `unembed.hook_in`.
    UnembedIn,
    /// `unembed.hook_out`.
    UnembedOut,
}

impl BlockHook {
    /// Every block hook, in TransformerLens's firing order.
    pub const ALL: [BlockHook; 32] = [
        BlockHook::ResidPre,
        BlockHook::Norm(Norm::Ln1, NormHook::Scale),
        BlockHook::Norm(Norm::Ln1, NormHook::Normalized),
        BlockHook::Q,
        BlockHook::K,
        BlockHook::V,
        BlockHook::Norm(Norm::QNorm, NormHook::Scale),
        BlockHook::Norm(Norm::QNorm, NormHook::Normalized),
        BlockHook::Norm(Norm::KNorm, NormHook::Scale),
        BlockHook::Norm(Norm::KNorm, NormHook::Normalized),
        BlockHook::RotQ,
        BlockHook::RotK,
        BlockHook::AttnScores,
        BlockHook::Pattern,
        BlockHook::Z,
        BlockHook::Result,
        BlockHook::Norm(Norm::Ln1Post, NormHook::Scale),
        BlockHook::Norm(Norm::Ln1Post, NormHook::Normalized),
        BlockHook::AttnOut,
        BlockHook::ResidMid,
        BlockHook::Norm(Norm::Ln2, NormHook::Scale),
        BlockHook::Norm(Norm::Ln2, NormHook::Normalized),
        BlockHook::MlpPre,
        BlockHook::MlpPreLinear,
        BlockHook::MlpMid,
        BlockHook::Norm(Norm::MlpLn, NormHook::Scale),
        BlockHook::Norm(Norm::MlpLn, NormHook::Normalized),
        BlockHook::MlpPost,
        BlockHook::Norm(Norm::Ln2Post, NormHook::Scale),
        BlockHook::Norm(Norm::Ln2Post, NormHook::Normalized),
        BlockHook::MlpOut,
        BlockHook::ResidPost,
    ];

    /// Whether the activation is one vector per head, `[batch, pos, head, d]` (q, k, v, z, result, rot_q, rot_k).
    pub fn is_head_vector(self) -> bool {
        matches!(
            self,
            BlockHook::Q
                | BlockHook::K
                | BlockHook::V
                | BlockHook::RotQ
                | BlockHook::RotK
                | BlockHook::Z
                | BlockHook::Result
        )
    }

    /// The name after `blocks.{l}.`.
    pub fn suffix(self) -> String {
        let fixed = match self {
            BlockHook::Norm(norm, NormHook::Scale) => {
                return format!("{}.hook_scale", norm.module());
            }
            BlockHook::Norm(norm, NormHook::Normalized) => {
                return format!("{}.hook_normalized", norm.module());
            }
            BlockHook::ResidPre => "hook_resid_pre",
            BlockHook::Q => "attn.hook_q",
            BlockHook::K => "attn.hook_k",
            BlockHook::V => "attn.hook_v",
            BlockHook::RotQ => "attn.hook_rot_q",
            BlockHook::RotK => "attn.hook_rot_k",
            BlockHook::AttnScores => "attn.hook_attn_scores",
            BlockHook::Pattern => "attn.hook_pattern",
            BlockHook::Z => "attn.hook_z",
            BlockHook::Result => "attn.hook_result",
            BlockHook::AttnOut => "hook_attn_out",
            BlockHook::ResidMid => "hook_resid_mid",
            BlockHook::MlpPre => "mlp.hook_pre",
            BlockHook::MlpPreLinear => "mlp.hook_pre_linear",
            BlockHook::MlpMid => "mlp.hook_mid",
            BlockHook::MlpPost => "mlp.hook_post",
            BlockHook::MlpOut => "hook_mlp_out",
            BlockHook::ResidPost => "hook_resid_post",
        };
        fixed.to_string()
    }

    /// The activation's axes with batch (`B`), positions (`P`, or query and key positions), heads (`H`, or `H_kv`
    /// key/value heads), `dh`, `D` (d_model), `M` (d_mlp); and when a model has the hook.
    fn describe(self) -> (&'static str, &'static str) {
        match self {
            BlockHook::ResidPre | BlockHook::ResidPost => ("[B,P,D]", "always"),
            BlockHook::Norm(Norm::Ln1, h) => norm_shape(h, "with a normalisation"),
            BlockHook::Norm(Norm::Ln2, h) => norm_shape(h, "MLPs and a normalisation"),
            BlockHook::Norm(Norm::Ln1Post | Norm::Ln2Post, h) => {
                norm_shape(h, "`use_normalization_before_and_after` (Gemma 2)")
            }
            BlockHook::Norm(Norm::MlpLn, NormHook::Scale) => ("[B,P,1]", "`act_fn = solu_ln`"),
            BlockHook::Norm(Norm::MlpLn, NormHook::Normalized) => ("[B,P,M]", "`act_fn = solu_ln`"),
            BlockHook::Norm(Norm::QNorm, NormHook::Scale) => {
                ("[B·P·H,1]", "`use_qk_norm` (Qwen 3)")
            }
            BlockHook::Norm(Norm::QNorm, NormHook::Normalized) => {
                ("[B·P·H,dh]", "`use_qk_norm` (Qwen 3)")
            }
            BlockHook::Norm(Norm::KNorm, NormHook::Scale) => {
                ("[B·P·H_kv,1]", "`use_qk_norm` (Qwen 3)")
            }
            BlockHook::Norm(Norm::KNorm, NormHook::Normalized) => {
                ("[B·P·H_kv,dh]", "`use_qk_norm` (Qwen 3)")
            }
            BlockHook::Q | BlockHook::Z => ("[B,P,H,dh]", "always"),
            BlockHook::K | BlockHook::V => (
                "[B,P,H_kv,dh]",
                "always; `H_kv` = `n_key_value_heads` with grouped-query attention, else `H`",
            ),
            BlockHook::RotQ => ("[B,P,H,dh]", "rotary models"),
            BlockHook::RotK => ("[B,P,H_kv,dh]", "rotary models"),
            BlockHook::AttnScores => (
                "[B,H,P,P]",
                "always; −∞ where masked (above the diagonal, outside a local window)",
            ),
            BlockHook::Pattern => ("[B,H,P,P]", "always"),
            BlockHook::Result => ("[B,P,H,D]", "`use_attn_result`"),
            BlockHook::AttnOut => ("[B,P,D]", "always"),
            BlockHook::ResidMid => (
                "[B,P,D]",
                "models with MLPs, except parallel blocks (`parallel_attn_mlp`)",
            ),
            BlockHook::MlpPre => (
                "[B,P,M]",
                "MLPs (in a gated MLP, the gate before its activation)",
            ),
            BlockHook::MlpPreLinear => ("[B,P,M]", "gated MLPs (`x·W_in`)"),
            BlockHook::MlpMid => ("[B,P,M]", "`act_fn = solu_ln`"),
            BlockHook::MlpPost => ("[B,P,M]", "MLPs"),
            BlockHook::MlpOut => ("[B,P,D]", "MLPs"),
        }
    }
}

fn norm_shape(hook: NormHook, when: &'static str) -> (&'static str, &'static str) {
    match hook {
        NormHook::Scale => ("[B,P,1]", when),
        NormHook::Normalized => ("[B,P,D]", when),
    }
}

impl HookPoint {
    /// The hook points outside the blocks, in firing order (a model has those its config asks for).
    pub const OUTSIDE_BLOCKS: [HookPoint; 6] = [
        HookPoint::Embed,
        HookPoint::PosEmbed,
        HookPoint::LnFinal(NormHook::Scale),
        HookPoint::LnFinal(NormHook::Normalized),
        HookPoint::UnembedIn,
        HookPoint::UnembedOut,
    ];

    /// The logical axis, counted from the end, that holds (query) positions: `-3` for per-head vectors
    /// (`[.., P, H, dh]`), `-2` for everything else, and `None` for Qwen 3's q/k norms, whose positions
    /// TransformerLens flattens together with batch and heads. TransformerLens slices `-3` only for `q/k/v/z/result` and `-2` otherwise, which picks the head axis of
    /// `rot_q`/`rot_k`; tlens slices each hook on its real position axis.
    pub fn position_axis(&self) -> Option<isize> {
        match self {
            HookPoint::Block(_, hook) if hook.is_head_vector() => Some(-3),
            HookPoint::Block(_, BlockHook::Norm(Norm::QNorm | Norm::KNorm, _)) => None,
            _ => Some(-2),
        }
    }

    /// Whether this is a layer's attention scores or pattern (`[batch, head, query, key]`), which a cache keeps as
    /// their recipe when no other hook wants them ([`Derived`](crate::Derived)).
    pub fn is_attention(&self) -> bool {
        matches!(
            self,
            HookPoint::Block(_, BlockHook::AttnScores | BlockHook::Pattern)
        )
    }

    /// Whether a cache may keep this activation as its recipe ([`Derived`](crate::Derived)): a layer's attention
    /// scores and pattern, and its MLP's `hook_post` (when the cache holds the MLP's inputs).
    pub fn may_be_derived(&self) -> bool {
        self.is_attention() || matches!(self, HookPoint::Block(_, BlockHook::MlpPost))
    }

    /// The logical axis, counted from the end, that holds heads: `-2` for per-head vectors (`[.., H, d]`), `-3` for
    /// attention scores and patterns (`[.., H, query, key]`), `None` for hooks without a head axis.
    pub fn head_axis(&self) -> Option<isize> {
        match self {
            HookPoint::Block(_, hook) if hook.is_head_vector() => Some(-2),
            HookPoint::Block(_, BlockHook::AttnScores | BlockHook::Pattern) => Some(-3),
            _ => None,
        }
    }

    /// The activation's shape in the book's symbols (`[B,P,D]`, `[B,H,P,P]`, ...; the hooks table prints these).
    pub fn shape(&self) -> &'static str {
        match self {
            HookPoint::Embed | HookPoint::PosEmbed | HookPoint::UnembedIn => "[B,P,D]",
            HookPoint::UnembedOut => "[B,P,V]",
            HookPoint::LnFinal(hook) => norm_shape(*hook, "").0,
            HookPoint::Block(_, hook) => hook.describe().0,
        }
    }

    /// The activation's shape for a batch of `batch` sequences of `positions` tokens, read off
    /// [`shape`](Self::shape) (`[1]` axes included); `None` for a size that overflows `usize`.
    ///
    /// ```
    /// use tlens_cache_core::{BlockHook, HookPoint, HookedTransformerConfig};
    /// let cfg = HookedTransformerConfig::new(2, 16, 32, 4, 50).unwrap();
    /// assert_eq!(HookPoint::Block(0, BlockHook::Pattern).dims(&cfg, 3, 10), Some(vec![3, 4, 10, 10]));
    /// ```
    pub fn dims(
        &self,
        cfg: &HookedTransformerConfig,
        batch: usize,
        positions: usize,
    ) -> Option<Vec<usize>> {
        let size = |axis: &str| match axis {
            "B" => batch,
            "P" => positions,
            "D" => cfg.d_model,
            "H" => cfg.n_heads,
            "H_kv" => cfg.kv_heads(),
            "dh" => cfg.d_head,
            "M" => cfg.d_mlp,
            "V" => cfg.d_vocab_out,
            "1" => 1,
            other => unreachable!("axis `{other}` of {} has no size", self.shape()),
        };
        let shape = self.shape();
        // `B·P·H` (Qwen 3's q/k norms, flattened as TransformerLens does) is one axis, the product of its parts.
        shape[1..shape.len() - 1]
            .split(',')
            .map(|axis| {
                axis.split('·')
                    .try_fold(1usize, |n, part| n.checked_mul(size(part)))
            })
            .collect::<Option<Vec<_>>>()
            .filter(|dims| {
                dims.iter()
                    .try_fold(1usize, |n, &d| n.checked_mul(d))
                    .is_some()
            })
    }

    /// How many values the activation holds for a batch of `batch` sequences of `positions` tokens (the product of
    /// [`dims`](Self::dims)); `None` when the count overflows `usize`. Memory estimates are built from this.
    ///
    /// ```
    /// use tlens_cache_core::{BlockHook, HookPoint, HookedTransformerConfig};
    /// let cfg = HookedTransformerConfig::new(2, 16, 32, 4, 50).unwrap();
    /// assert_eq!(HookPoint::Block(0, BlockHook::Pattern).numel(&cfg, 3, 10), Some(3 * 4 * 10 * 10));
    /// assert_eq!(HookPoint::Block(0, BlockHook::Pattern).numel(&cfg, usize::MAX, 10), None);
    /// ```
    pub fn numel(
        &self,
        cfg: &HookedTransformerConfig,
        batch: usize,
        positions: usize,
    ) -> Option<usize> {
        self.dims(cfg, batch, positions)
            .map(|dims| dims.iter().product())
    }

    /// The block a hook belongs to, if any.
    pub fn layer(&self) -> Option<usize> {
        match self {
            HookPoint::Block(l, _) => Some(*l),
            _ => None,
        }
    }
}

impl fmt::Display for HookPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HookPoint::Embed => f.write_str("hook_embed"),
            HookPoint::PosEmbed => f.write_str("hook_pos_embed"),
            HookPoint::Block(l, hook) => write!(f, "blocks.{l}.{}", hook.suffix()),
            HookPoint::LnFinal(NormHook::Scale) => f.write_str("ln_final.hook_scale"),
            HookPoint::LnFinal(NormHook::Normalized) => f.write_str("ln_final.hook_normalized"),
            HookPoint::UnembedIn => f.write_str("unembed.hook_in"),
            HookPoint::UnembedOut => f.write_str("unembed.hook_out"),
        }
    }
}

/// A hook point is a cache key: `cache.get(HookPoint::Block(0, BlockHook::Pattern))`.
impl From<HookPoint> for CacheKey {
    fn from(point: HookPoint) -> Self {
        CacheKey::Name(point.to_string())
    }
}

/// A name that is not a TransformerLens hook point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotAHookPoint(pub String);

impl fmt::Display for NotAHookPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` is not a hook point", self.0)
    }
}

impl std::error::Error for NotAHookPoint {}

impl FromStr for HookPoint {
    type Err = NotAHookPoint;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let bad = || NotAHookPoint(name.to_string());
        if let Some(p) = HookPoint::OUTSIDE_BLOCKS
            .into_iter()
            .find(|p| p.to_string() == name)
        {
            return Ok(p);
        }
        let rest = name.strip_prefix("blocks.").ok_or_else(bad)?;
        let (layer, suffix) = rest.split_once('.').ok_or_else(bad)?;
        // Digits only, no sign or leading `+`, and no leading zero (`blocks.01` is not TransformerLens's name).
        if layer.is_empty()
            || !layer.bytes().all(|b| b.is_ascii_digit())
            || (layer.len() > 1 && layer.starts_with('0'))
        {
            return Err(bad());
        }
        let layer: usize = layer.parse().map_err(|_| bad())?;
        BlockHook::ALL
            .into_iter()
            .find(|h| h.suffix() == suffix)
            .map(|h| HookPoint::Block(layer, h))
            .ok_or_else(bad)
    }
}

/// Every hook a model with this config fires in a full run, in firing order (TransformerLens's cache key order).
pub fn hook_points(cfg: &HookedTransformerConfig) -> Vec<HookPoint> {
    let mut points = vec![HookPoint::Embed];
    if cfg.has_pos_embed() {
        points.push(HookPoint::PosEmbed);
    }
    for l in 0..cfg.n_layers {
        points.extend(
            BlockHook::ALL
                .into_iter()
                .filter(|h| fires(cfg, *h))
                .map(|h| HookPoint::Block(l, h)),
        );
    }
    if cfg.normalization_type.is_some() {
        points.extend([
            HookPoint::LnFinal(NormHook::Scale),
            HookPoint::LnFinal(NormHook::Normalized),
        ]);
    }
    points.extend([HookPoint::UnembedIn, HookPoint::UnembedOut]);
    points
}

/// Whether a block of a model with this config fires `hook`.
fn fires(cfg: &HookedTransformerConfig, hook: BlockHook) -> bool {
    let mlp = cfg.has_mlp();
    let norm = cfg.normalization_type.is_some();
    let solu = cfg.mlp_kind() == Some(MlpKind::Solu);
    match hook {
        BlockHook::Norm(Norm::Ln1, _) => norm,
        BlockHook::Norm(Norm::Ln2, _) => mlp && norm,
        BlockHook::Norm(Norm::Ln1Post, _) => cfg.use_normalization_before_and_after,
        BlockHook::Norm(Norm::Ln2Post, _) => mlp && cfg.use_normalization_before_and_after,
        BlockHook::Norm(Norm::QNorm | Norm::KNorm, _) => cfg.use_qk_norm,
        BlockHook::Norm(Norm::MlpLn, _) | BlockHook::MlpMid => solu,
        BlockHook::RotQ | BlockHook::RotK => !cfg.has_pos_embed(),
        BlockHook::Result => cfg.use_attn_result,
        BlockHook::ResidMid => cfg.block_kind() == BlockKind::Sequential,
        BlockHook::MlpPre | BlockHook::MlpPost | BlockHook::MlpOut => mlp,
        BlockHook::MlpPreLinear => matches!(cfg.mlp_kind(), Some(MlpKind::Gated(_))),
        BlockHook::ResidPre
        | BlockHook::Q
        | BlockHook::K
        | BlockHook::V
        | BlockHook::AttnScores
        | BlockHook::Pattern
        | BlockHook::Z
        | BlockHook::AttnOut
        | BlockHook::ResidPost => true,
    }
}

/// The book's table of hook points (key, shape, when a model has it), in firing order: norms' two hooks share a
/// row.
pub fn markdown_table() -> String {
    let mut rows = vec![
        "| key | shape | when |".to_string(),
        "|---|---|---|".to_string(),
        "| `hook_embed` | `[B,P,D]` | always |".to_string(),
        "| `hook_pos_embed` | `[B,P,D]` | learned positional embeddings (not rotary models) |"
            .to_string(),
    ];
    for hook in BlockHook::ALL {
        let (shape, when) = hook.describe();
        let name = HookPoint::Block(0, hook)
            .to_string()
            .replacen("blocks.0.", "blocks.l.", 1);
        match hook {
            BlockHook::Norm(norm, NormHook::Scale) => {
                let (normalized, _) = BlockHook::Norm(norm, NormHook::Normalized).describe();
                rows.push(format!(
                    "| `{name}` / `hook_normalized` | `{shape}` / `{normalized}` | {when} |"
                ));
            }
            BlockHook::Norm(_, NormHook::Normalized) => {}
            _ => rows.push(format!("| `{name}` | `{shape}` | {when} |")),
        }
    }
    rows.extend([
        "| `ln_final.hook_scale` / `hook_normalized` | `[B,P,1]` / `[B,P,D]` | with a normalisation |".to_string(),
        "| `unembed.hook_in` / `hook_out` | `[B,P,D]` / `[B,P,V]` | always (TransformerLens ≥ 3.0); `hook_out` is before an output soft cap |".to_string(),
    ]);
    rows.join("\n") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shape_has_a_size() {
        let cfg = HookedTransformerConfig::new(1, 8, 8, 2, 10).unwrap();
        let mut points = HookPoint::OUTSIDE_BLOCKS.to_vec();
        points.extend(BlockHook::ALL.into_iter().map(|h| HookPoint::Block(0, h)));
        for p in points {
            assert!(p.numel(&cfg, 2, 3).is_some_and(|n| n > 0), "{p}");
        }
    }

    #[test]
    fn names_round_trip() {
        let mut points = HookPoint::OUTSIDE_BLOCKS.to_vec();
        points.extend(BlockHook::ALL.into_iter().map(|h| HookPoint::Block(11, h)));
        for p in points {
            assert_eq!(p.to_string().parse::<HookPoint>(), Ok(p), "{p}");
        }
    }

    #[test]
    fn other_names_are_not_hook_points() {
        for name in [
            "",
            "hook_resid_pre5",
            "blocks.-1.hook_resid_pre",
            "blocks.01.hook_resid_pre",
            "blocks.1",
            "blocks.1.hook_nothing",
            "blocks..hook_resid_pre",
            "ln_final.hook_scale.x",
        ] {
            assert!(name.parse::<HookPoint>().is_err(), "{name}");
        }
    }

    #[test]
    fn every_block_hook_is_listed_once() {
        let names: std::collections::BTreeSet<String> =
            BlockHook::ALL.iter().map(|h| h.suffix()).collect();
        assert_eq!(names.len(), BlockHook::ALL.len());
    }
}
