//! A plan's interventions and patching calls (`plan-format.md`, "Interventions and gradients"): `run.hooks` become
//! [`Intervention`]s, metrics a [`LogitDiff`], and `patching.<function>` calls run the model's patching sweeps.

use burn_tensor::{Tensor, TensorData, backend::Backend};
use serde::Deserialize;
use serde_json::{Map, Value};
use tlens_cache_core::{ActivationCache, DynTensor, HookPoint, NamesFilter, RunOptions};
use tlens_model::Kernels;
use tlens_model::patching::{LogitDiff, PATCHES_PER_PASS, PatchSweep, every};
use tlens_model::{HookedTransformer, Intervention, Op, Selector, TokenBatch};

use super::args::Args;
use crate::error::{Result, TlensError};

/// One entry of `run.hooks`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookSpec {
    hook: String,
    op: String,
    #[serde(default)]
    heads: Option<Vec<usize>>,
    #[serde(default)]
    positions: Option<Vec<usize>>,
    #[serde(default)]
    neurons: Option<Vec<usize>>,
    #[serde(default)]
    factor: Option<f64>,
    #[serde(default)]
    vector: Option<TensorSpec>,
    #[serde(default)]
    coeff: Option<f64>,
    #[serde(default)]
    tokens: Option<TokensSpec>,
    #[serde(default)]
    edges: Option<Vec<(usize, usize)>>,
}

/// A batch of token ids: a list of rows, or `{"tensor": [[...], ...]}`.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
enum TokensSpec {
    Rows(Vec<Vec<u32>>),
    Tensor { tensor: Vec<Vec<u32>> },
}

/// `{"tensor": [...]}` (a flat list of numbers).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TensorSpec {
    tensor: Vec<f64>,
}

/// A metric: `{"logit_diff": [CORRECT, INCORRECT]}`.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricSpec {
    logit_diff: (u32, u32),
}

impl MetricSpec {
    /// The metric.
    pub fn metric(self) -> LogitDiff {
        LogitDiff {
            correct: self.logit_diff.0,
            incorrect: self.logit_diff.1,
        }
    }
}

fn bad(hook: &str, message: impl std::fmt::Display) -> TlensError {
    TlensError::Backend(format!("run.hooks `{hook}`: {message}"))
}

impl HookSpec {
    /// Whether the entry is at an activation a cache could otherwise keep as its recipe.
    pub fn at_derivable(&self) -> bool {
        self.hook
            .parse::<HookPoint>()
            .is_ok_and(|p| p.may_be_derived())
    }

    /// The intervention this entry asks for; a `patch` runs the model on its clean tokens first.
    pub fn build<B: Kernels>(&self, model: &HookedTransformer<B>) -> Result<Intervention<B>> {
        let point: HookPoint = self.hook.parse().map_err(|e| bad(&self.hook, e))?;
        if !model.hook_names().contains(&self.hook) {
            return Err(bad(&self.hook, "the model has no such hook"));
        }
        let need = |v: Option<f64>, name: &str| {
            v.ok_or_else(|| bad(&self.hook, format!("`{}` needs `{name}`", self.op)))
        };
        let op = match self.op.as_str() {
            "zero" => Op::Zero,
            "scale" => Op::Scale(need(self.factor, "factor")?),
            "add" => {
                let vector = self
                    .vector
                    .as_ref()
                    .ok_or_else(|| bad(&self.hook, "`add` needs `vector`"))?;
                let values: Vec<f32> = vector.tensor.iter().map(|&x| x as f32).collect();
                let len = values.len();
                Op::Add {
                    vector: Tensor::from_data(TensorData::new(values, [len]), &model.device()),
                    coeff: self.coeff.unwrap_or(1.0),
                }
            }
            "patch" => {
                let rows = match self.tokens.as_ref() {
                    Some(TokensSpec::Rows(rows) | TokensSpec::Tensor { tensor: rows }) => rows,
                    None => return Err(bad(&self.hook, "`patch` needs `tokens`")),
                };
                let options = RunOptions {
                    names_filter: NamesFilter::Names(vec![self.hook.clone()]),
                    ..Default::default()
                };
                let (_, clean) = model.run_with_cache(&TokenBatch::new(rows)?, options)?;
                Op::Patch(clean.get(point)?)
            }
            "mean" => Op::Mean,
            "knockout" => Op::Knockout(
                self.edges
                    .clone()
                    .ok_or_else(|| bad(&self.hook, "`knockout` needs `edges`"))?,
            ),
            other => {
                return Err(bad(
                    &self.hook,
                    format!("unknown op `{other}` (zero, scale, add, patch, mean, knockout)"),
                ));
            }
        };
        Ok(Intervention::new(
            point,
            op,
            Selector {
                heads: self.heads.clone(),
                positions: self.positions.clone(),
                neurons: self.neurons.clone(),
            },
        ))
    }
}

/// A `patching.<function>` call: the sweep (or the stack of sweeps of a `*_every` function) on the plan's model,
/// with the run's cache as the clean cache.
pub fn patching_call<B: Kernels>(
    model: &HookedTransformer<B>,
    clean: &ActivationCache<B>,
    function: &str,
    args: &Map<String, Value>,
) -> Result<DynTensor<B>> {
    let method = format!("patching.{function}");
    let a = Args::new(&method, args, &["corrupted_tokens", "metric"])?;
    let corrupted = a
        .tokens("corrupted_tokens", None)?
        .ok_or_else(|| TlensError::Backend(format!("{method} needs `corrupted_tokens`")))?;
    let shape = corrupted.shape.clone();
    let [batch, pos] = shape[..] else {
        return Err(TlensError::Backend(format!(
            "{method}: corrupted_tokens must be [batch, pos], got {shape:?}"
        )));
    };
    let ids = corrupted
        .ids
        .iter()
        .map(|&t| u32::try_from(t))
        .collect::<std::result::Result<Vec<u32>, _>>()
        .map_err(|_| {
            TlensError::Backend(format!("{method}: corrupted_tokens holds a negative id"))
        })?;
    let rows: Vec<Vec<u32>> = ids.chunks(pos.max(1)).map(<[u32]>::to_vec).collect();
    debug_assert_eq!(rows.len(), batch);
    let corrupted = TokenBatch::new(&rows)?;
    let metric: MetricSpec = serde_json::from_value(
        args.get("metric")
            .cloned()
            .ok_or_else(|| TlensError::Backend(format!("{method} needs `metric`")))?,
    )
    .map_err(|e| TlensError::Backend(format!("{method}: metric: {e}")))?;
    let metric = metric.metric();
    let sweeps = match (PatchSweep::from_name(function), every(function)) {
        (Some(sweep), _) => vec![sweep],
        (None, Some(sweeps)) => sweeps,
        (None, None) => {
            return Err(TlensError::Backend(format!(
                "unknown patching function `{function}`"
            )));
        }
    };
    let mut results = sweeps
        .into_iter()
        .map(|sweep| model.activation_patch(sweep, &corrupted, clean, &metric, PATCHES_PER_PASS))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    if results.len() == 1 {
        return Ok(results.remove(0));
    }
    stack_every(function, results)
}

/// Stacks the sweeps of a `*_every` function as TransformerLens does: k/v results padded with zeros to the query heads
/// (grouped-query attention), and the by-position pattern sweep `[layer, head, pos]` moved to `[layer, pos, head]`.
fn stack_every<B: Backend>(function: &str, mut results: Vec<DynTensor<B>>) -> Result<DynTensor<B>> {
    let heads = results[0].shape().last().copied().unwrap_or(0);
    // The head sweeps run out, q, k, v, pattern: k and v (2 and 3) may have fewer heads.
    let kv = if function == "get_act_patch_block_every" {
        0..0
    } else {
        2..4
    };
    for r in &mut results[kv] {
        let last = r.shape().last().copied().unwrap_or(0);
        if last < heads {
            let mut pad_shape = r.shape();
            *pad_shape.last_mut().expect("a head axis") = heads - last;
            let zeros = DynTensor::zeros(&pad_shape, &r.device());
            *r = DynTensor::cat(vec![r.clone(), zeros], -1)?;
        }
    }
    if function == "get_act_patch_attn_head_by_pos_every" {
        let pattern = results.pop().expect("five sweeps");
        results.push(pattern.movedim(1, 2)?);
    }
    Ok(DynTensor::stack(results)?)
}
