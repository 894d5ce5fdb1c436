//! The standard activation-patching sweeps of `tlens patch` (residual stream by layer × position, heads over all
//! positions, heads by position), and the `--hook-op` interventions of `tlens run`.

use burn_tensor::backend::Backend;
use serde::Serialize;
use tlens_cache_core::{HookPoint, RunOptions};
use tlens_model::Kernels;
use tlens_model::patching::{LogitDiff, Metric, PATCHES_PER_PASS, PatchSweep};
use tlens_model::{HookedTransformer, Intervention, Op, Selector, TokenBatch};

use crate::error::{Result, TlensError};

/// One sweep's results: a grid of metric values with its row and column labels.
#[derive(Clone, Debug, Serialize)]
pub struct Grid {
    /// What the rows are (layers).
    pub rows: Vec<String>,
    /// What the columns are (positions or heads).
    pub columns: Vec<String>,
    /// `values[row][column]`: the metric after the patch.
    pub values: Vec<Vec<f32>>,
}

/// What `tlens patch` computes.
#[derive(Clone, Debug, Serialize)]
pub struct PatchReport {
    /// The metric on the clean run.
    pub clean: f32,
    /// The metric on the corrupted run.
    pub corrupted: f32,
    /// `get_act_patch_resid_pre`: `[layer, position]`.
    pub resid_pre: Grid,
    /// `get_act_patch_attn_head_out_all_pos`: `[layer, head]`.
    pub heads: Grid,
    /// `get_act_patch_attn_head_out_by_pos`: `[layer·head, position]`, when asked for (one forward pass per layer,
    /// position and head: the slowest of the three).
    pub heads_by_pos: Option<Grid>,
}

/// Runs the standard sweeps of a clean and a corrupted prompt of the same length, with the metric
/// `logit(target) − logit(against)` at the last position.
pub fn standard_sweeps<B: Kernels>(
    model: &HookedTransformer<B>,
    clean: &TokenBatch,
    corrupted: &TokenBatch,
    metric: LogitDiff,
    position_labels: &[String],
    by_pos: bool,
) -> Result<PatchReport> {
    if clean.positions() != corrupted.positions() || clean.batch() != corrupted.batch() {
        return Err(TlensError::Analysis(format!(
            "the clean and corrupted inputs must have the same shape: {}×{} and {}×{} tokens",
            clean.batch(),
            clean.positions(),
            corrupted.batch(),
            corrupted.positions()
        )));
    }
    let cfg = model.cfg();
    let (_, clean_cache) = model.run_with_cache(clean, RunOptions::default())?;
    let sweep = |name: &str| -> Result<Vec<f32>> {
        let sweep = PatchSweep::from_name(name).expect("a TransformerLens patching function");
        let out =
            model.activation_patch(sweep, corrupted, &clean_cache, &metric, PATCHES_PER_PASS)?;
        Ok(out.to_vec())
    };
    let layers: Vec<String> = (0..cfg.n_layers).map(|l| format!("L{l}")).collect();
    let heads: Vec<String> = (0..cfg.n_heads).map(|h| format!("H{h}")).collect();
    let grid = |rows: Vec<String>, columns: Vec<String>, values: Vec<f32>| Grid {
        values: values.chunks(columns.len()).map(<[f32]>::to_vec).collect(),
        rows,
        columns,
    };
    let heads_by_pos = if by_pos {
        let values = sweep("get_act_patch_attn_head_out_by_pos")?; // [layer, pos, head]
        let pos = clean.positions();
        let mut rows = Vec::new();
        let mut by_head = Vec::new();
        for l in 0..cfg.n_layers {
            for h in 0..cfg.n_heads {
                rows.push(format!("L{l}H{h}"));
                by_head.extend((0..pos).map(|p| values[(l * pos + p) * cfg.n_heads + h]));
            }
        }
        Some(grid(rows, position_labels.to_vec(), by_head))
    } else {
        None
    };
    Ok(PatchReport {
        clean: metric.eval(model.forward(clean)?)?,
        corrupted: metric.eval(model.forward(corrupted)?)?,
        resid_pre: grid(
            layers.clone(),
            position_labels.to_vec(),
            sweep("get_act_patch_resid_pre")?,
        ),
        heads: grid(layers, heads, sweep("get_act_patch_attn_head_out_all_pos")?),
        heads_by_pos,
    })
}

/// Parses a `--hook-op` spec, `OP@HOOK[:key=value]...`, into an intervention: OP is `zero`, `scale` (`factor=F`) or
/// `mean`; keys `heads`, `positions`, `neurons` take comma-separated indices. E.g.
/// `zero@blocks.1.attn.hook_z:heads=3` ablates head L1H3.
pub fn parse_hook_op<B: Backend>(
    spec: &str,
    model: &HookedTransformer<B>,
) -> Result<Intervention<B>> {
    let bad = |m: String| TlensError::Analysis(format!("--hook-op {spec:?}: {m}"));
    let (op, rest) = spec
        .split_once('@')
        .ok_or_else(|| bad("expected OP@HOOK[:key=value]...".into()))?;
    let mut parts = rest.split(':');
    let hook = parts.next().unwrap_or_default();
    if !model.hook_names().iter().any(|n| n == hook) {
        return Err(bad(format!("the model has no hook `{hook}`")));
    }
    let point: HookPoint = hook.parse().map_err(|e| bad(format!("{e}")))?;
    let mut select = Selector::default();
    let mut factor = None;
    for part in parts {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| bad(format!("`{part}` is not key=value")))?;
        let indices = || -> Result<Option<Vec<usize>>> {
            value
                .split(',')
                .map(|i| {
                    i.trim()
                        .parse()
                        .map_err(|_| bad(format!("`{i}` is not an index")))
                })
                .collect::<Result<Vec<_>>>()
                .map(Some)
        };
        match key {
            "heads" => select.heads = indices()?,
            "positions" => select.positions = indices()?,
            "neurons" => select.neurons = indices()?,
            "factor" => {
                factor = Some(
                    value
                        .parse()
                        .map_err(|_| bad(format!("`{value}` is not a number")))?,
                )
            }
            other => {
                return Err(bad(format!(
                    "unknown key `{other}` (heads, positions, neurons, factor)"
                )));
            }
        }
    }
    let op = match (op, factor) {
        ("zero", None) => Op::Zero,
        ("mean", None) => Op::Mean,
        ("scale", Some(f)) => Op::Scale(f),
        ("scale", None) => return Err(bad("scale needs factor=F".into())),
        ("zero" | "mean", Some(_)) => return Err(bad("factor applies to scale only".into())),
        (other, _) => return Err(bad(format!("unknown op `{other}` (zero, scale, mean)"))),
    };
    Ok(Intervention::new(point, op, select))
}
