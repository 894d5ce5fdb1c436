//! Plans: one JSON description of a run (model, tokens, run options, cache method calls) that tlens and the
//! TransformerLens reference both execute, and the safetensors file each writes (`shared/spec/plan-format.md`).

mod args;
mod interventions;
mod methods;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tlens_model::Kernels;

use burn_autodiff::Autodiff;
use burn_tensor::Tensor;
use burn_tensor::backend::Backend;
use serde::Deserialize;
use tlens_cache_core::save::{NamedTensor, write_safetensors};
use tlens_cache_core::{ActivationCache, DynTensor, Hook, NamesFilter, Precision, RunOptions};
use tlens_model::safetensors_file::TensorFile;
use tlens_model::{
    HookedTransformer, Processing, TokenBatch, Tokenizer, load_hf, load_transformerlens,
};

use crate::backend::BackendTask;
use crate::error::{Result, TlensError};
use crate::memory::{self, Derivable, MemoryBudget};
use crate::output::check_output;

pub use methods::CallOutput;

/// A parsed plan file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Free text saying what the plan is for (ignored).
    #[serde(default)]
    pub comment: Option<String>,
    /// Which model to load.
    pub model: ModelSpec,
    /// Weight processing flags; absent flags take the model kind's default.
    #[serde(default)]
    pub processing: Option<ProcessingSpec>,
    /// The precision the model is loaded and run in (`from_pretrained(dtype=...)`): `f32` (default), `f16` or `bf16`.
    /// The cache keeps each activation as computed, as TransformerLens's does; the output file holds f32 as always.
    #[serde(default)]
    pub dtype: Precision,
    /// The batch of token ids.
    pub tokens: Vec<Vec<u32>>,
    /// `run_with_cache` options.
    #[serde(default)]
    pub run: RunSpec,
    /// Cache method calls, in order.
    #[serde(default)]
    pub calls: Vec<Call>,
}

/// `{"hf": DIR}` or `{"tl": {"config": FILE, "weights": FILE}}`.
#[derive(Clone, Debug, Deserialize)]
#[serde(try_from = "ModelFields")]
pub enum ModelSpec {
    /// A Hugging Face GPT-2 folder.
    Hf(PathBuf),
    /// A TransformerLens config and state dict.
    Tl {
        /// The config JSON.
        config: PathBuf,
        /// The state dict (safetensors).
        weights: PathBuf,
    },
}

/// A plan's `model` as written: exactly one of the two keys, which [`ModelSpec`] checks with a message that says so
/// (serde's own for an enum is "expected value at line 1 column 20").
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelFields {
    hf: Option<PathBuf>,
    tl: Option<TlFiles>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TlFiles {
    config: PathBuf,
    weights: PathBuf,
}

impl TryFrom<ModelFields> for ModelSpec {
    type Error = &'static str;

    fn try_from(fields: ModelFields) -> std::result::Result<Self, Self::Error> {
        match (fields.hf, fields.tl) {
            (Some(dir), None) => Ok(ModelSpec::Hf(dir)),
            (None, Some(tl)) => Ok(ModelSpec::Tl {
                config: tl.config,
                weights: tl.weights,
            }),
            _ => Err("`model` takes exactly one of `hf` (a folder) and `tl` ({config, weights})"),
        }
    }
}

/// The four `from_pretrained` flags, each optional.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessingSpec {
    fold_ln: Option<bool>,
    center_writing_weights: Option<bool>,
    center_unembed: Option<bool>,
    fold_value_biases: Option<bool>,
}

/// `run_with_cache` options as a plan spells them.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    #[serde(default)]
    remove_batch_dim: bool,
    #[serde(default)]
    names_filter: Option<Vec<String>>,
    #[serde(default)]
    stop_at_layer: Option<i64>,
    #[serde(default)]
    pos_slice: serde_json::Value,
    /// Forward hooks active during the run, in order, before the caching hook.
    #[serde(default)]
    hooks: Vec<interventions::HookSpec>,
    /// Back-propagate this metric and cache `<hook>_grad` entries.
    #[serde(default)]
    incl_bwd: Option<interventions::MetricSpec>,
}

/// One cache method call.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Call {
    /// Unique id; names the output tensor `call/<id>`.
    pub id: String,
    /// The `ActivationCache` method, spelled as in TransformerLens.
    pub method: String,
    /// Keyword arguments, encoded as plan-format.md says.
    #[serde(default)]
    pub args: serde_json::Map<String, serde_json::Value>,
}

impl Plan {
    /// Reads a plan file.
    pub fn read(path: &Path) -> Result<(Plan, String)> {
        let bad = |message: String| TlensError::Plan {
            path: path.display().to_string(),
            message,
        };
        let text = tlens_model::text_file::read_text(path).map_err(|e| bad(e.to_string()))?;
        let plan: Plan = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let mut ids = std::collections::HashSet::new();
        if let Some(call) = plan.calls.iter().find(|c| !ids.insert(c.id.as_str())) {
            return Err(bad(format!(
                "two calls have the id `{}`; each call's id names its output",
                call.id
            )));
        }
        Ok((plan, text))
    }

    /// What the plan's model weights take as f32, read from the safetensors headers (`base`: the plan's folder).
    pub fn weight_bytes(&self, base: &Path) -> Result<u64> {
        Ok(match &self.model {
            ModelSpec::Hf(dir) => tlens_model::loading::weight_bytes(&base.join(dir))?,
            ModelSpec::Tl { weights, .. } => TensorFile::read(&base.join(weights))?.f32_bytes(),
        })
    }

    /// The files the plan reads (its model), relative to the plan's folder `base`.
    pub fn inputs(&self, base: &Path) -> Vec<PathBuf> {
        match &self.model {
            ModelSpec::Hf(dir) => vec![base.join(dir)],
            ModelSpec::Tl { config, weights } => vec![base.join(config), base.join(weights)],
        }
    }

    fn processing(&self) -> Processing {
        let default = match self.model {
            ModelSpec::Hf(_) => Processing::default(),
            ModelSpec::Tl { .. } => Processing::none(),
        };
        let p = self.processing.unwrap_or_default();
        Processing {
            fold_ln: p.fold_ln.unwrap_or(default.fold_ln),
            center_writing_weights: p
                .center_writing_weights
                .unwrap_or(default.center_writing_weights),
            center_unembed: p.center_unembed.unwrap_or(default.center_unembed),
            fold_value_biases: p.fold_value_biases.unwrap_or(default.fold_value_biases),
            dtype: self.dtype,
        }
    }

    fn run_options(&self, path: &Path) -> Result<RunOptions> {
        Ok(RunOptions {
            names_filter: self
                .run
                .names_filter
                .clone()
                .map_or(NamesFilter::All, NamesFilter::Names),
            stop_at_layer: self.run.stop_at_layer,
            remove_batch_dim: self.run.remove_batch_dim,
            pos_slice: args::slice(&self.run.pos_slice).map_err(|message| TlensError::Plan {
                path: path.display().to_string(),
                message: format!("run.pos_slice: {message}"),
            })?,
            // Plans are run by TransformerLens too, which keeps each activation as computed.
            ..RunOptions::default()
        })
    }
}

/// Loads the model a plan names (paths relative to the plan's folder).
pub fn load_model<B: Backend>(
    spec: &ModelSpec,
    base: &Path,
    processing: Processing,
    device: &burn_tensor::Device<B>,
) -> Result<(HookedTransformer<B>, Option<Tokenizer>)> {
    Ok(match spec {
        ModelSpec::Hf(dir) => {
            let loaded = load_hf(&base.join(dir), processing, device)?;
            (loaded.model, loaded.tokenizer)
        }
        ModelSpec::Tl { config, weights } => (
            load_transformerlens(&base.join(config), &base.join(weights), processing, device)?,
            None,
        ),
    })
}

/// Executes a plan on one backend and writes its output file: `tlens eval --plan PLAN --out OUT`.
pub struct EvalPlan {
    /// The plan file.
    pub plan: PathBuf,
    /// Where to write the output.
    pub out: PathBuf,
    /// The memory the run may use: a plan whose run and cache need more is refused before it starts.
    pub budget: MemoryBudget,
}

impl BackendTask for EvalPlan {
    type Output = Result<EvalSummary>;

    fn run<B: Kernels>(self, device: burn_tensor::Device<B>) -> Result<EvalSummary> {
        let (plan, text) = Plan::read(&self.plan)?;
        let base = self.plan.parent().unwrap_or(Path::new("."));
        let mut inputs = plan.inputs(base);
        inputs.push(self.plan.clone());
        check_output(
            &self.out,
            &inputs.iter().map(PathBuf::as_path).collect::<Vec<_>>(),
        )?;
        let mut budget = self.budget;
        budget.reserve_weights(plan.weight_bytes(base)?)?;
        let this = EvalPlan { budget, ..self };
        match plan.run.incl_bwd {
            // Gradients need the autodiff decorator of whatever backend runs the plan.
            Some(metric) => this.evaluate::<Autodiff<B>>(plan, text, device, |m, t, h, o| {
                m.run_with_cache_and_grads(t, h, o, &metric.metric())
            }),
            None => this.evaluate::<B>(plan, text, device, |m, t, h, o| {
                m.run_with_hooks_and_cache(t, h, o)
            }),
        }
    }
}

impl EvalPlan {
    /// Runs the plan with `run` (a run with or without gradients), then its calls, and writes the output file.
    fn evaluate<B: Kernels>(
        self,
        plan: Plan,
        text: String,
        device: burn_tensor::Device<B>,
        run: impl FnOnce(
            &HookedTransformer<B>,
            &TokenBatch,
            &mut [&mut dyn Hook<B>],
            RunOptions,
        ) -> tlens_model::Result<(Tensor<B, 3>, ActivationCache<B>)>,
    ) -> Result<EvalSummary> {
        let base = self.plan.parent().unwrap_or(Path::new("."));
        let (model, tokenizer) = load_model::<B>(&plan.model, base, plan.processing(), &device)?;
        let tokens = TokenBatch::new(&plan.tokens)?;
        let options = plan.run_options(&self.plan)?;
        // The cache keeps recipes unless a hook of the plan, or the gradients' probes, want the tensors.
        let recipes =
            plan.run.incl_bwd.is_none() && !plan.run.hooks.iter().any(|h| h.at_derivable());
        let derivable = match recipes {
            true => Derivable::Recipes,
            false => Derivable::Whole,
        };
        self.budget.check(
            memory::run_bytes(
                model.cfg(),
                tokens.batch(),
                tokens.positions(),
                &options,
                true,
                derivable,
            ),
            &format!(
                "the plan's run of {} sequences of {} tokens",
                tokens.batch(),
                tokens.positions()
            ),
            "cache fewer hooks (run.names_filter) or pass fewer or shorter sequences",
        )?;
        let mut hooks = plan
            .run
            .hooks
            .iter()
            .map(|h| h.build(&model))
            .collect::<Result<Vec<_>>>()?;
        let mut hook_refs: Vec<&mut dyn Hook<B>> =
            hooks.iter_mut().map(|h| h as &mut dyn Hook<B>).collect();
        let (output, cache) = run(&model, &tokens, &mut hook_refs, options)?;

        let mut tensors = vec![NamedTensor::float("logits", &DynTensor::new(output))];
        tensors.extend(
            cache
                .items()
                .map(|(k, v)| NamedTensor::float(format!("cache/{k}"), &v)),
        );
        let mut metadata = HashMap::from([("plan".to_string(), text)]);
        let mut ctx = methods::CallContext::new(cache, tokenizer);
        let mut failed = 0;
        for call in &plan.calls {
            let result = match call.method.strip_prefix("patching.") {
                Some(function) => interventions::patching_call(
                    &model, &ctx.cache, function, &call.args,
                )
                .map(|tensor| {
                    Some(CallOutput {
                        tensor,
                        labels: None,
                    })
                }),
                None => methods::call(&mut ctx, &call.method, &call.args),
            };
            match result {
                Ok(Some(out)) => {
                    if let Some(labels) = &out.labels {
                        metadata.insert(
                            format!("labels/{}", call.id),
                            serde_json::to_string(labels).expect("strings serialise"),
                        );
                    }
                    tensors.push(out.named(format!("call/{}", call.id)));
                    ctx.remember(&call.id, out);
                }
                Ok(None) => {}
                Err(e) => {
                    failed += 1;
                    metadata.insert(
                        format!("error/{}", call.id),
                        e.to_string().replace('\n', " "),
                    );
                }
            }
        }
        write_safetensors(&self.out, &tensors, metadata)?;
        Ok(EvalSummary {
            tensors: tensors.len(),
            calls: plan.calls.len(),
            failed_calls: failed,
        })
    }
}

/// What an evaluated plan produced.
#[derive(Clone, Copy, Debug)]
pub struct EvalSummary {
    /// Tensors written.
    pub tensors: usize,
    /// Calls in the plan.
    pub calls: usize,
    /// Calls that recorded an error.
    pub failed_calls: usize,
}
