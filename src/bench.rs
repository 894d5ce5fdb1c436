//! Benchmark cases: a GPT-2-small- or Llama-3.2-1B-shaped model with random weights, timed on one backend.
//!
//! `cargo xtask bench` runs each case in its own `tlens-bench` process, so that the process's peak RSS belongs to the
//! case alone, and `--vs-python` runs the same cases in TransformerLens (`reference/bench_tl.py`).

use std::time::Instant;
use tlens_model::Kernels;

use burn_autodiff::Autodiff;
use burn_tensor::Tensor;
use burn_tensor::backend::Backend;
use serde::Serialize;
use tlens_cache_core::testing::random_params_for;
use tlens_cache_core::{
    AccumulatedResid, ActFn, ActivationCache, DecomposeResid, GetFullResidDecomposition,
    HookedTransformerConfig, LogitAttrs, ModelParams, Precision, RunOptions, Slice,
    StackHeadResults, StackNeuronResults, TokenIds,
};
use tlens_model::patching::{LogitDiff, PATCHES_PER_PASS, PatchSweep};
use tlens_model::{HookedTransformer, TokenBatch};

use crate::backend::BackendTask;
use crate::error::{Result, TlensError};

/// Every case, in the order the benchmark runs them.
pub const CASES: [&str; 9] = [
    "forward",
    "run_with_cache",
    "accumulated_resid",
    "decompose_resid",
    "head_results",
    "full_resid_decomposition",
    "full_resid_decomposition_expand",
    "stack_neuron_results",
    "logit_attrs",
];

/// Cases of the causal half, run only when named (`--cases`): TransformerLens runs one forward pass per patched index,
/// so they are sized for short sequences. `patch_head_out_by_pos` times
/// `get_act_patch_attn_head_out_by_pos` (the clean cache made beforehand); `grad_run` times `run_with_cache` with the
/// backward pass of a logit difference (`incl_bwd`).
pub const CAUSAL_CASES: [&str; 2] = ["patch_head_out_by_pos", "grad_run"];

/// `run_with_cache` with the cache kept in half precision ([`RunOptions::cache_dtype`]), run only when named: on
/// backends that store f16 and bf16 (not ndarray), and with no TransformerLens counterpart.
pub const HALF_CACHE_CASES: [&str; 2] = ["run_with_cache_f16", "run_with_cache_bf16"];

/// Reading every layer's `hook_pattern` from a `run_with_cache` cache, run only when named: the cache keeps the
/// patterns as their recipe (`ActivationCache::is_derived`), so each read computes one again.
pub const READ_CASES: [&str; 1] = ["read_patterns"];

/// A forward pass of the model in half precision (`Processing::dtype`), run only when named: on backends that compute
/// in f16 and bf16 (flex, tch, cuda).
pub const HALF_COMPUTE_CASES: [&str; 2] = ["forward_f16", "forward_bf16"];

/// The model shapes the benchmark runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchModel {
    /// GPT-2 small (`gpt2-small`).
    Gpt2Small,
    /// Llama 3.2 1B (`llama-3.2-1b`).
    Llama32_1B,
}

impl BenchModel {
    /// Every model.
    pub const ALL: [Self; 2] = [Self::Gpt2Small, Self::Llama32_1B];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Gpt2Small => "gpt2-small",
            Self::Llama32_1B => "llama-3.2-1b",
        }
    }

    /// The model of a command-line name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The config, with norms folded as after `from_pretrained`.
    pub fn config(self) -> HookedTransformerConfig {
        match self {
            Self::Gpt2Small => gpt2_small_config(),
            Self::Llama32_1B => llama_3_2_1b_config(),
        }
    }
}

/// GPT-2 small's shape: 12 layers, d_model 768, 12 heads of 64, d_mlp 3072, vocab 50257, n_ctx 1024, gelu_new, and
/// LayerNorm folded (`LNPre`) as after `from_pretrained`.
pub fn gpt2_small_config() -> HookedTransformerConfig {
    let mut cfg = HookedTransformerConfig::new(12, 768, 1024, 64, 50257).expect("a valid config");
    cfg.d_mlp = 3072;
    cfg.act_fn = Some(ActFn::GeluNew);
    cfg.normalization_type = Some(tlens_cache_core::NormalizationType::LNPre);
    cfg
}

/// Llama 3.2 1B's shape, as TransformerLens's `meta-llama/Llama-3.2-1B` entry: 16 layers, d_model 2048, 32 heads of
/// 64 with 8 key/value heads, d_mlp 8192 (SwiGLU), vocab 128256, rotary (base 500000, NTK-by-parts factor 32), RMS
/// folded (`RMSPre`); n_ctx 2048.
pub fn llama_3_2_1b_config() -> HookedTransformerConfig {
    let mut cfg = HookedTransformerConfig::new(16, 2048, 2048, 64, 128256).expect("a valid config");
    cfg.d_mlp = 8192;
    cfg.n_key_value_heads = Some(8);
    cfg.act_fn = Some(ActFn::Silu);
    cfg.gated_mlp = true;
    cfg.final_rms = true;
    cfg.normalization_type = Some(tlens_cache_core::NormalizationType::RMSPre);
    cfg.positional_embedding_type = tlens_cache_core::PositionalEmbeddingType::Rotary;
    cfg.rotary_dim = Some(64);
    cfg.rotary_base = 500000.0;
    cfg.use_ntk_by_parts_rope = true;
    cfg.ntk_by_parts_factor = 32.0;
    cfg.ntk_original_ctx_len = 8192;
    cfg.resolved().expect("a valid config")
}

/// One benchmark case at one shape.
pub struct BenchCase {
    /// The model shape.
    pub model: BenchModel,
    /// One of [`CASES`].
    pub case: String,
    /// Batch size.
    pub batch: usize,
    /// Positions per sequence.
    pub pos: usize,
    /// Timed repetitions (the median is reported).
    pub reps: usize,
}

/// What one case measured.
#[derive(Clone, Debug, Serialize)]
pub struct BenchResult {
    /// The model shape's command-line name.
    pub model: String,
    /// The case.
    pub case: String,
    /// Batch size.
    pub batch: usize,
    /// Positions per sequence.
    pub pos: usize,
    /// Each repetition's wall time, seconds.
    pub seconds: Vec<f64>,
    /// The median of `seconds`.
    pub median_s: f64,
    /// `batch·pos / median_s`.
    pub tokens_per_s: f64,
    /// Bytes held by the activation cache (0 for `forward`).
    pub cache_bytes: usize,
    /// The process's peak resident set size at the end, bytes (`VmHWM`; 0 where /proc is absent).
    pub peak_rss_bytes: u64,
}

impl BackendTask for BenchCase {
    type Output = Result<BenchResult>;

    fn run<B: Kernels>(self, device: burn_tensor::Device<B>) -> Result<BenchResult> {
        let known = [
            &CASES[..],
            &CAUSAL_CASES,
            &HALF_CACHE_CASES,
            &HALF_COMPUTE_CASES,
            &READ_CASES,
        ]
        .concat();
        if !known.contains(&self.case.as_str()) {
            return Err(TlensError::Backend(format!(
                "unknown bench case `{}`; cases: {}",
                self.case,
                known.join(", ")
            )));
        }
        if self.reps == 0 || self.batch == 0 || self.pos == 0 {
            return Err(TlensError::Backend(
                "batch, pos and reps must be at least 1".into(),
            ));
        }
        let (case, dtype) = match self.case.strip_prefix("forward_") {
            Some(dtype) => ("forward", dtype.parse().map_err(TlensError::Backend)?),
            None => (self.case.as_str(), Precision::F32),
        };
        dtype.check_compute::<B>(&device)?;
        let ModelParams { cfg, weights } =
            random_params_for::<B>(self.model.config(), 0x5eed, 0.02, &device);
        let vocab = cfg.d_vocab;
        let model = HookedTransformer::new(cfg, weights.cast(dtype.float_dtype()))?;
        // Token ids from a fixed LCG, below the vocabulary.
        let rows: Vec<Vec<u32>> = (0..self.batch)
            .map(|b| {
                (0..self.pos)
                    .map(|p| ((b * 7919 + p * 104_729 + 13) % vocab) as u32)
                    .collect()
            })
            .collect();
        let tokens = TokenBatch::new(&rows)?;
        let mut seconds = Vec::with_capacity(self.reps);
        let mut cache_bytes = 0;
        match case {
            "forward" => {
                for _ in 0..self.reps {
                    let start = Instant::now();
                    sync(model.forward(&tokens)?);
                    seconds.push(start.elapsed().as_secs_f64());
                }
            }
            "patch_head_out_by_pos" => {
                let (_, clean) = model.run_with_cache(&tokens, RunOptions::default())?;
                // The corrupted batch: each row shifted by one token.
                let shifted: Vec<Vec<u32>> = rows
                    .iter()
                    .map(|r| r.iter().map(|&t| (t + 1) % vocab as u32).collect())
                    .collect();
                let corrupted = TokenBatch::new(&shifted)?;
                let sweep = PatchSweep::from_name("get_act_patch_attn_head_out_by_pos")
                    .expect("a patching function");
                for _ in 0..self.reps {
                    let start = Instant::now();
                    let out = model.activation_patch(
                        sweep,
                        &corrupted,
                        &clean,
                        &BENCH_METRIC,
                        PATCHES_PER_PASS,
                    )?;
                    sync(out.physical_tensor().clone());
                    seconds.push(start.elapsed().as_secs_f64());
                }
            }
            "grad_run" => {
                seconds = grad_runs::<B>(self.model, &tokens, self.reps, &device)?;
            }
            case @ ("run_with_cache" | "run_with_cache_f16" | "run_with_cache_bf16") => {
                let options = RunOptions {
                    cache_dtype: case
                        .strip_prefix("run_with_cache_")
                        .map(str::parse)
                        .transpose()
                        .map_err(TlensError::Backend)?,
                    ..RunOptions::default()
                };
                for _ in 0..self.reps {
                    let start = Instant::now();
                    let (logits, cache) = model.run_with_cache(&tokens, options.clone())?;
                    sync(logits);
                    cache_bytes = cache.stored_bytes();
                    drop(cache);
                    seconds.push(start.elapsed().as_secs_f64());
                }
            }
            method => {
                let (_, cache) = model.run_with_cache(&tokens, RunOptions::default())?;
                cache_bytes = cache.stored_bytes();
                for _ in 0..self.reps {
                    let start = Instant::now();
                    let out = cache_method(&cache, method)?;
                    sync(out.physical_tensor().clone());
                    seconds.push(start.elapsed().as_secs_f64());
                }
            }
        }
        let mut sorted = seconds.clone();
        sorted.sort_by(f64::total_cmp);
        let median_s = sorted[sorted.len() / 2];
        Ok(BenchResult {
            model: self.model.name().to_string(),
            tokens_per_s: (self.batch * self.pos) as f64 / median_s,
            case: self.case,
            batch: self.batch,
            pos: self.pos,
            seconds,
            median_s,
            cache_bytes,
            peak_rss_bytes: peak_rss(),
        })
    }
}

/// The metric of the causal cases: logit(100) − logit(200) at the last position.
const BENCH_METRIC: LogitDiff = LogitDiff {
    correct: 100,
    incorrect: 200,
};

/// `grad_run`: the same model on the autodiff decorator of `B`, a cache of every hook and its gradients.
fn grad_runs<B: Kernels>(
    model: BenchModel,
    tokens: &TokenBatch,
    reps: usize,
    device: &burn_tensor::Device<B>,
) -> Result<Vec<f64>> {
    let params = random_params_for::<Autodiff<B>>(model.config(), 0x5eed, 0.02, device);
    let model = HookedTransformer::new(params.cfg, params.weights)?;
    (0..reps)
        .map(|_| {
            let start = Instant::now();
            let (logits, cache) = model.run_with_cache_and_grads(
                tokens,
                &mut [],
                RunOptions::default(),
                &BENCH_METRIC,
            )?;
            sync(logits);
            drop(cache);
            Ok(start.elapsed().as_secs_f64())
        })
        .collect()
}

/// The cache methods as the benchmark calls them; TransformerLens's side (`reference/bench_tl.py`) makes the same
/// calls. Neuron-level stacks keep only the last position: at every position they would not fit in memory.
fn cache_method<B: Backend>(
    cache: &ActivationCache<B>,
    method: &str,
) -> Result<tlens_cache_core::DynTensor<B>> {
    let last = || Slice::Index(-1);
    Ok(match method {
        "accumulated_resid" => {
            cache
                .accumulated_resid(AccumulatedResid {
                    incl_mid: true,
                    apply_ln: true,
                    ..Default::default()
                })?
                .tensor
        }
        "decompose_resid" => cache.decompose_resid(DecomposeResid::default())?.tensor,
        "read_patterns" => {
            let n_layers = cache.cfg().n_layers;
            for layer in 0..n_layers - 1 {
                sync(
                    cache
                        .get(("pattern", layer as i64))?
                        .physical_tensor()
                        .clone(),
                );
            }
            cache.get(("pattern", n_layers as i64 - 1))?
        }
        "head_results" => {
            let mut cache = cache.clone();
            cache.compute_head_results()?;
            cache
                .stack_head_results(StackHeadResults {
                    apply_ln: true,
                    ..Default::default()
                })?
                .tensor
        }
        "full_resid_decomposition" => {
            cache
                .get_full_resid_decomposition(GetFullResidDecomposition {
                    expand_neurons: false,
                    apply_ln: true,
                    ..Default::default()
                })?
                .tensor
        }
        "full_resid_decomposition_expand" => {
            cache
                .get_full_resid_decomposition(GetFullResidDecomposition {
                    pos_slice: last(),
                    ..Default::default()
                })?
                .tensor
        }
        "stack_neuron_results" => {
            cache
                .stack_neuron_results(
                    None,
                    StackNeuronResults {
                        pos_slice: last(),
                        ..Default::default()
                    },
                )?
                .tensor
        }
        "logit_attrs" => {
            let acc = cache
                .accumulated_resid(AccumulatedResid {
                    incl_mid: true,
                    pos_slice: last(),
                    ..Default::default()
                })?
                .tensor;
            let batch = acc.shape()[1];
            let tokens = TokenIds::new((0..batch as i64).map(|b| 100 + b).collect(), vec![batch])?;
            cache.logit_attrs(
                acc,
                tokens,
                LogitAttrs {
                    pos_slice: last(),
                    ..Default::default()
                },
            )?
        }
        other => unreachable!("checked against CASES: {other}"),
    })
}

/// Waits for `t` by reading one element of it: that finishes its computation on a lazy backend (cuda), without timing
/// a copy of the whole tensor to a host `Vec`, which TransformerLens does not make either (and which burn-ndarray
/// makes slowly: 4.8 s for the 453 MB head stack at 8×128).
fn sync<B: Backend, const D: usize>(t: Tensor<B, D>) {
    let dims = t.dims();
    drop(
        t.slice(std::array::from_fn::<_, D, _>(|i| 0..dims[i].min(1)))
            .into_data(),
    );
}

/// Peak resident set size of this process (`VmHWM` of /proc/self/status), bytes.
fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}
