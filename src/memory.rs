//! Memory limits: how much a command may use (`--max-memory`, by default a share of physical memory), and what a run
//! needs, estimated from the config before it starts, so that a batch too large is refused with one line naming the
//! figure and the flag that lowers it instead of growing until the system kills it.

use std::fmt;

use tlens_cache_core::{
    BlockHook, HookPoint, HookedTransformerConfig, MlpKind, NamesFilter, Precision, RunOptions,
    hook_point::hook_points,
};

use crate::error::{Result, TlensError};

/// The share of physical memory a command may use when `--max-memory` is not given.
pub const DEFAULT_SHARE: f64 = 0.8;

/// How many bytes a command may use, and where that figure came from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MemoryBudget {
    /// The limit, bytes.
    pub bytes: u64,
    /// Whether it was given (`--max-memory`) rather than derived from physical memory.
    pub given: bool,
    /// What the model's weights take (f32), once [`reserve_weights`](Self::reserve_weights) has counted them: every
    /// later estimate must fit beside them.
    pub weights: u64,
}

impl Default for MemoryBudget {
    /// [`DEFAULT_SHARE`] of physical memory (no limit where the system does not say how much it has).
    fn default() -> Self {
        let mut system = sysinfo::System::new();
        system.refresh_memory();
        let total = system.total_memory();
        Self {
            bytes: if total == 0 {
                u64::MAX
            } else {
                (total as f64 * DEFAULT_SHARE) as u64
            },
            given: false,
            weights: 0,
        }
    }
}

impl std::str::FromStr for MemoryBudget {
    type Err = TlensError;

    /// `12G`, `512M`, `64K` (powers of 1024, an optional `B`/`iB`) or a number of bytes.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            TlensError::Analysis(format!(
                "--max-memory `{s}`: expected a size such as 12G, 512M or a number of bytes"
            ))
        };
        let t = s.trim().to_ascii_uppercase();
        let t = t.trim_end_matches("IB").trim_end_matches('B');
        let (digits, shift) = match t.chars().last() {
            Some('K') => (&t[..t.len() - 1], 10),
            Some('M') => (&t[..t.len() - 1], 20),
            Some('G') => (&t[..t.len() - 1], 30),
            Some('T') => (&t[..t.len() - 1], 40),
            _ => (t, 0),
        };
        let value: f64 = digits.trim().parse().map_err(|_| bad())?;
        let bytes = value * (1u64 << shift) as f64;
        if !(bytes.is_finite() && bytes >= 1.0 && bytes < u64::MAX as f64) {
            return Err(bad());
        }
        Ok(Self {
            bytes: bytes as u64,
            given: true,
            weights: 0,
        })
    }
}

impl MemoryBudget {
    /// Counts a model's weights (`bytes`, f32) before it is loaded, refusing a model that does not fit at all.
    pub fn reserve_weights(&mut self, bytes: u64) -> Result<()> {
        self.check(
            Some(bytes),
            "loading the model's weights (as f32)",
            "use a smaller model or a machine with more memory",
        )?;
        self.weights = bytes;
        Ok(())
    }

    /// Refuses work that needs more than the budget leaves beside the weights: `what` says what the figure is for,
    /// `lower` how to need less.
    pub fn check(&self, need: Option<u64>, what: &str, lower: &str) -> Result<()> {
        match need {
            Some(n) if n.saturating_add(self.weights) <= self.bytes => Ok(()),
            _ => Err(TlensError::Memory {
                need: match need {
                    None => "more memory than can be counted".into(),
                    Some(n) if self.weights > 0 => format!(
                        "{} beside the model's {} of weights",
                        Bytes(n),
                        Bytes(self.weights)
                    ),
                    Some(n) => Bytes(n).to_string(),
                },
                what: what.to_string(),
                limit: self.to_string(),
                lower: lower.to_string(),
            }),
        }
    }
}

impl fmt::Display for MemoryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.given {
            write!(f, "{} (--max-memory)", Bytes(self.bytes))
        } else {
            write!(
                f,
                "{} ({:.0}% of physical memory; raise it with --max-memory)",
                Bytes(self.bytes),
                DEFAULT_SHARE * 100.0
            )
        }
    }
}

/// A byte count for people, in the binary units `--max-memory` takes: `1.5 GiB`.
#[derive(Clone, Copy, Debug)]
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0 as f64;
        match self.0 {
            n if n >= 1 << 30 => write!(f, "{:.1} GiB", b / (1u64 << 30) as f64),
            n if n >= 1 << 20 => write!(f, "{:.1} MiB", b / (1u64 << 20) as f64),
            n if n >= 1 << 10 => write!(f, "{:.1} KiB", b / (1u64 << 10) as f64),
            n => write!(f, "{n} B"),
        }
    }
}

/// How a run holds the activations a cache can keep as their recipe (`ActivationCache::is_derived`): the attention
/// scores and patterns, and the MLP activations of a standard or gated MLP whose inputs the cache keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Derivable {
    /// A hook other than the cache fires at them (an intervention, a gradient probe): they are kept as tensors.
    Whole,
    /// Only the cache wants them: it keeps their recipe, which holds nothing of its own.
    Recipes,
}

/// Whether a run that caches what `filter` keeps, with [`Derivable::Recipes`], keeps `point` as its recipe: as the
/// model's attention and MLP decide.
fn kept_as_recipe(cfg: &HookedTransformerConfig, filter: &NamesFilter, point: HookPoint) -> bool {
    let keeps = |layer, hook| filter.keeps(&HookPoint::Block(layer, hook).to_string());
    match point {
        p if p.is_attention() => true,
        HookPoint::Block(l, BlockHook::MlpPost) => match cfg.mlp_kind() {
            Some(MlpKind::Standard(_)) => keeps(l, BlockHook::MlpPre),
            Some(MlpKind::Gated(_)) => {
                keeps(l, BlockHook::MlpPre) && keeps(l, BlockHook::MlpPreLinear)
            }
            _ => false,
        },
        _ => false,
    }
}

/// How many values a cache of `batch × positions` holds: every hook `filter` keeps, less those kept as their
/// recipe. `None` on overflow.
fn cache_values(
    cfg: &HookedTransformerConfig,
    batch: usize,
    positions: usize,
    filter: &NamesFilter,
    derivable: Derivable,
) -> Option<u64> {
    hook_points(cfg)
        .into_iter()
        .filter(|p| filter.keeps(&p.to_string()))
        .filter(|&p| derivable == Derivable::Whole || !kept_as_recipe(cfg, filter, p))
        .try_fold(0u64, |sum, p| {
            sum.checked_add(p.numel(cfg, batch, positions)? as u64)
        })
}

/// The bytes a cache of `batch × positions` holds: every hook the options keep, in their `cache_dtype` (f32 when
/// activations are kept as computed: the most they can take). `None` on overflow.
pub fn cache_bytes(
    cfg: &HookedTransformerConfig,
    batch: usize,
    positions: usize,
    options: &RunOptions,
    derivable: Derivable,
) -> Option<u64> {
    cache_values(cfg, batch, positions, &options.names_filter, derivable)?
        .checked_mul(options.cache_dtype.map_or(4, Precision::size) as u64)
}

/// The bytes (f32) a forward pass of `batch × positions` works in at its peak besides any cache: one layer's
/// activations twice over (inputs and outputs of its largest step live together) and the logits, which every command
/// keeps. `None` on overflow.
pub fn forward_bytes(cfg: &HookedTransformerConfig, batch: usize, positions: usize) -> Option<u64> {
    let layer = hook_points(cfg)
        .into_iter()
        .filter(|p| p.layer() == Some(0))
        .try_fold(0u64, |sum, p| {
            sum.checked_add(4 * p.numel(cfg, batch, positions)? as u64)
        })?;
    let logits = 4 * HookPoint::UnembedOut.numel(cfg, batch, positions)? as u64;
    layer.checked_mul(2)?.checked_add(logits)
}

/// One sequence run with every hook cached and nothing saved: what `lens`, `attribute`, `patterns --head` and the
/// report hold while they analyse it. `None` on overflow.
pub fn one_sequence_bytes(cfg: &HookedTransformerConfig, positions: usize) -> Option<u64> {
    run_bytes(
        cfg,
        1,
        positions,
        &RunOptions::default(),
        false,
        Derivable::Recipes,
    )
}

/// The logit lens of one sequence: a probability for every snapshot (at most two per layer and the final one),
/// position and output token, twice (the probabilities and their sort for the top tokens). `None` on overflow.
pub fn lens_bytes(cfg: &HookedTransformerConfig, positions: usize) -> Option<u64> {
    let snapshots = 2 * cfg.n_layers as u64 + 1;
    let one = 4 * HookPoint::UnembedOut.numel(cfg, 1, positions)? as u64;
    one.checked_mul(2 * snapshots)
}

/// A run that caches what `options` keep: the forward pass's working memory plus the cache. When the cache is then
/// written to disk (`save = true`) its values are copied once more, as f32, the derived ones included.
pub fn run_bytes(
    cfg: &HookedTransformerConfig,
    batch: usize,
    positions: usize,
    options: &RunOptions,
    save: bool,
    derivable: Derivable,
) -> Option<u64> {
    let cache = cache_bytes(cfg, batch, positions, options, derivable)?;
    let saved = match save {
        true => cache_values(
            cfg,
            batch,
            positions,
            &options.names_filter,
            Derivable::Whole,
        )?
        .checked_mul(4)?,
        false => 0,
    };
    forward_bytes(cfg, batch, positions)?
        .checked_add(cache)?
        .checked_add(saved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        for (s, bytes) in [
            ("12G", 12u64 << 30),
            ("512m", 512 << 20),
            ("1.5GiB", 3 << 29),
            ("4096", 4096),
        ] {
            assert_eq!(s.parse::<MemoryBudget>().unwrap().bytes, bytes, "{s}");
        }
        for s in ["", "G", "-1G", "0", "lots", "1e30T"] {
            assert!(s.parse::<MemoryBudget>().is_err(), "{s}");
        }
    }

    #[test]
    fn recipes_are_left_out_of_the_cache_but_not_of_what_is_saved() {
        let cfg = |more: &str| {
            let json = format!(
                r#"{{"n_layers": 2, "d_model": 16, "n_ctx": 64, "d_head": 4, "d_vocab": 50, {more}}}"#
            );
            HookedTransformerConfig::from_json(&json).unwrap()
        };
        let attn_only = cfg(r#""attn_only": true"#);
        let with_mlp = cfg(r#""d_mlp": 32, "act_fn": "gelu""#);
        for (cfg, derived) in [
            (&attn_only, &[BlockHook::AttnScores, BlockHook::Pattern][..]),
            (
                &with_mlp,
                &[
                    BlockHook::AttnScores,
                    BlockHook::Pattern,
                    BlockHook::MlpPost,
                ],
            ),
        ] {
            let options = RunOptions::default();
            let recipes: u64 = hook_points(cfg)
                .into_iter()
                .filter(|p| matches!(p, HookPoint::Block(_, h) if derived.contains(h)))
                .map(|p| 4 * p.numel(cfg, 3, 10).unwrap() as u64)
                .sum();
            assert!(recipes > 0);
            let cache = |d| cache_bytes(cfg, 3, 10, &options, d).unwrap();
            assert_eq!(cache(Derivable::Whole) - cache(Derivable::Recipes), recipes);
            let saved = |d| {
                run_bytes(cfg, 3, 10, &options, true, d).unwrap()
                    - run_bytes(cfg, 3, 10, &options, false, d).unwrap()
            };
            assert_eq!(saved(Derivable::Whole), saved(Derivable::Recipes));
        }
    }

    #[test]
    fn estimates_grow_with_the_batch_and_overflow_to_none() {
        let cfg = HookedTransformerConfig::new(2, 16, 64, 4, 50).unwrap();
        let one = run_bytes(&cfg, 1, 10, &RunOptions::default(), false, Derivable::Whole).unwrap();
        let ten = run_bytes(
            &cfg,
            10,
            10,
            &RunOptions::default(),
            false,
            Derivable::Whole,
        )
        .unwrap();
        assert!(ten >= 9 * one && ten <= 11 * one, "{one} {ten}");
        assert_eq!(
            run_bytes(
                &cfg,
                usize::MAX,
                10,
                &RunOptions::default(),
                false,
                Derivable::Whole
            ),
            None
        );
        let mut budget = MemoryBudget {
            bytes: one,
            given: true,
            weights: 0,
        };
        assert!(budget.check(Some(one), "a run", "").is_ok());
        let err = budget
            .check(Some(ten), "a run of 10 sequences", "pass fewer sequences")
            .unwrap_err();
        assert!(err.to_string().contains("pass fewer sequences"), "{err}");
        budget.reserve_weights(1).unwrap();
        let err = budget.check(Some(one), "a run", "").unwrap_err();
        assert!(
            err.to_string()
                .contains("beside the model's 1 B of weights"),
            "{err}"
        );
        assert!(budget.reserve_weights(one + 1).is_err());
    }
}
