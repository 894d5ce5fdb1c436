//! Dispatching a plan's calls to [`ActivationCache`] methods by their TransformerLens names, with arguments decoded
//! as `plan-format.md` says. Arguments a method does not take are an error, as in Python.

use std::collections::HashMap;

use burn_tensor::backend::Backend;
use serde_json::{Map, Value};
use tlens_cache_core::hook_names::CacheKey;
use tlens_cache_core::save::NamedTensor;
use tlens_cache_core::{
    AccumulatedResid, ActivationCache, ApplyLnToStack, CacheError, DecomposeResid, DynTensor,
    GetFullResidDecomposition, GetNeuronResults, LogitAttrs, Stack, StackHeadResults,
    StackNeuronResults,
};
use tlens_model::Tokenizer;

use super::args::{self, Args};
use crate::error::{Result, TlensError};

/// The tensor a call returned, and its labels when the call returned some.
#[derive(Clone, Debug)]
pub struct CallOutput<B: Backend> {
    /// The returned tensor.
    pub tensor: DynTensor<B>,
    /// The labels, for calls made with `return_labels`.
    pub labels: Option<Vec<String>>,
}

impl<B: Backend> CallOutput<B> {
    pub(crate) fn named(&self, name: String) -> NamedTensor {
        NamedTensor::float(name, &self.tensor)
    }

    fn tensor(tensor: DynTensor<B>) -> Option<Self> {
        Some(Self {
            tensor,
            labels: None,
        })
    }

    /// A stack, with its labels when the call asked for them.
    fn stack(stack: Stack<B>, return_labels: bool) -> Option<Self> {
        Some(Self {
            tensor: stack.tensor,
            labels: return_labels.then_some(stack.labels),
        })
    }
}

/// The state calls run against: the current cache, the tokenizer, and earlier outputs by id.
pub struct CallContext<B: Backend> {
    pub(crate) cache: ActivationCache<B>,
    pub(crate) tokenizer: Option<Tokenizer>,
    outputs: HashMap<String, CallOutput<B>>,
}

impl<B: Backend> CallContext<B> {
    pub(crate) fn new(cache: ActivationCache<B>, tokenizer: Option<Tokenizer>) -> Self {
        Self {
            cache,
            tokenizer,
            outputs: HashMap::new(),
        }
    }

    pub(crate) fn remember(&mut self, id: &str, out: CallOutput<B>) {
        self.outputs.insert(id.to_string(), out);
    }

    /// The tensor of an earlier call's output.
    fn output(&self, id: &str) -> Result<DynTensor<B>> {
        self.outputs
            .get(id)
            .map(|o| o.tensor.clone())
            .ok_or_else(|| bad(format!("no earlier output `{id}` (a call that failed or returned nothing cannot be referenced)")))
    }
}

fn bad(message: impl Into<String>) -> TlensError {
    CacheError::InvalidArgument(message.into()).into()
}

/// Runs one call; `Ok(None)` for calls that return no tensor (those that change or replace the cache).
pub fn call<B: Backend>(
    ctx: &mut CallContext<B>,
    method: &str,
    args: &Map<String, Value>,
) -> Result<Option<CallOutput<B>>> {
    let device = ctx.cache.model().weights.W_E.device();
    let tokenizer = ctx.tokenizer.as_ref();
    match method {
        "__getitem__" => {
            let a = Args::new(method, args, &["key"])?;
            let key = a
                .has("key")
                .then(|| &args["key"])
                .ok_or_else(|| bad("__getitem__ needs `key`"))?;
            Ok(CallOutput::tensor(ctx.cache.get(cache_key(key)?)?))
        }
        "accumulated_resid" => {
            let a = Args::new(
                method,
                args,
                &[
                    "layer",
                    "incl_mid",
                    "apply_ln",
                    "pos_slice",
                    "mlp_input",
                    "return_labels",
                ],
            )?;
            let stack = ctx.cache.accumulated_resid(AccumulatedResid {
                layer: a.opt_int("layer")?,
                incl_mid: a.bool("incl_mid", false)?,
                apply_ln: a.bool("apply_ln", false)?,
                pos_slice: a.slice("pos_slice")?,
                mlp_input: a.bool("mlp_input", false)?,
            })?;
            Ok(CallOutput::stack(stack, a.bool("return_labels", false)?))
        }
        "decompose_resid" => {
            let a = Args::new(
                method,
                args,
                &[
                    "layer",
                    "mlp_input",
                    "mode",
                    "apply_ln",
                    "pos_slice",
                    "incl_embeds",
                    "return_labels",
                ],
            )?;
            let stack = ctx.cache.decompose_resid(DecomposeResid {
                layer: a.opt_int("layer")?,
                mlp_input: a.bool("mlp_input", false)?,
                mode: a.opt_str("mode")?.unwrap_or("all").parse()?,
                apply_ln: a.bool("apply_ln", false)?,
                pos_slice: a.slice("pos_slice")?,
                incl_embeds: a.bool("incl_embeds", true)?,
            })?;
            Ok(CallOutput::stack(stack, a.bool("return_labels", false)?))
        }
        "compute_head_results" => {
            Args::new(method, args, &[])?;
            ctx.cache.compute_head_results()?;
            Ok(None)
        }
        "stack_head_results" => {
            let a = Args::new(
                method,
                args,
                &[
                    "layer",
                    "return_labels",
                    "incl_remainder",
                    "pos_slice",
                    "apply_ln",
                ],
            )?;
            let stack = ctx.cache.stack_head_results(StackHeadResults {
                layer: a.opt_int("layer")?,
                incl_remainder: a.bool("incl_remainder", false)?,
                pos_slice: a.slice("pos_slice")?,
                apply_ln: a.bool("apply_ln", false)?,
            })?;
            Ok(CallOutput::stack(stack, a.bool("return_labels", false)?))
        }
        "stack_activation" => {
            let a = Args::new(method, args, &["activation_name", "layer", "sublayer_type"])?;
            let t = ctx.cache.stack_activation(
                a.str("activation_name")?,
                a.opt_int("layer")?,
                a.opt_str("sublayer_type")?,
            )?;
            Ok(CallOutput::tensor(t))
        }
        "get_neuron_results" => {
            let a = Args::new(
                method,
                args,
                &["layer", "neuron_slice", "pos_slice", "project_output_onto"],
            )?;
            let t = ctx.cache.get_neuron_results(
                a.int("layer")?,
                GetNeuronResults {
                    neuron_slice: a.slice("neuron_slice")?,
                    pos_slice: a.slice("pos_slice")?,
                    project_output_onto: a.float_tensor("project_output_onto", &device)?,
                },
            )?;
            Ok(CallOutput::tensor(t))
        }
        "stack_neuron_results" => {
            let a = Args::new(
                method,
                args,
                &[
                    "layer",
                    "pos_slice",
                    "neuron_slice",
                    "return_labels",
                    "incl_remainder",
                    "apply_ln",
                    "project_output_onto",
                    "mlp_input",
                ],
            )?;
            if !a.has("layer") {
                return Err(bad(
                    "stack_neuron_results needs `layer` (null or -1 for all layers)",
                ));
            }
            let stack = ctx.cache.stack_neuron_results(
                a.opt_int("layer")?,
                StackNeuronResults {
                    pos_slice: a.slice("pos_slice")?,
                    neuron_slice: a.slice("neuron_slice")?,
                    incl_remainder: a.bool("incl_remainder", false)?,
                    apply_ln: a.bool("apply_ln", false)?,
                    project_output_onto: a.float_tensor("project_output_onto", &device)?,
                    mlp_input: a.bool("mlp_input", false)?,
                },
            )?;
            Ok(CallOutput::stack(stack, a.bool("return_labels", false)?))
        }
        "apply_ln_to_stack" => {
            let a = Args::new(
                method,
                args,
                &[
                    "residual_stack",
                    "layer",
                    "mlp_input",
                    "pos_slice",
                    "batch_slice",
                    "has_batch_dim",
                    "recompute_ln",
                ],
            )?;
            let stack = ctx.output(a.reference("residual_stack")?)?;
            let t = ctx.cache.apply_ln_to_stack(
                stack,
                ApplyLnToStack {
                    layer: a.opt_int("layer")?,
                    mlp_input: a.bool("mlp_input", false)?,
                    pos_slice: a.slice("pos_slice")?,
                    batch_slice: a.slice("batch_slice")?,
                    has_batch_dim: a.bool("has_batch_dim", true)?,
                    recompute_ln: a.bool("recompute_ln", false)?,
                },
            )?;
            Ok(CallOutput::tensor(t))
        }
        "logit_attrs" => {
            let a = Args::new(
                method,
                args,
                &[
                    "residual_stack",
                    "tokens",
                    "incorrect_tokens",
                    "pos_slice",
                    "batch_slice",
                    "has_batch_dim",
                ],
            )?;
            let stack = ctx.output(a.reference("residual_stack")?)?;
            let tokens = a
                .tokens("tokens", tokenizer)?
                .ok_or_else(|| bad("logit_attrs needs `tokens`"))?;
            let t = ctx.cache.logit_attrs(
                stack,
                tokens,
                LogitAttrs {
                    incorrect_tokens: a.tokens("incorrect_tokens", tokenizer)?,
                    pos_slice: a.slice("pos_slice")?,
                    batch_slice: a.slice("batch_slice")?,
                    has_batch_dim: a.bool("has_batch_dim", true)?,
                },
            )?;
            Ok(CallOutput::tensor(t))
        }
        "get_full_resid_decomposition" => {
            let a = Args::new(
                method,
                args,
                &[
                    "layer",
                    "mlp_input",
                    "expand_neurons",
                    "apply_ln",
                    "pos_slice",
                    "return_labels",
                    "project_output_onto",
                ],
            )?;
            let stack = ctx
                .cache
                .get_full_resid_decomposition(GetFullResidDecomposition {
                    layer: a.opt_int("layer")?,
                    mlp_input: a.bool("mlp_input", false)?,
                    expand_neurons: a.bool("expand_neurons", true)?,
                    apply_ln: a.bool("apply_ln", false)?,
                    pos_slice: a.slice("pos_slice")?,
                    project_output_onto: a.float_tensor("project_output_onto", &device)?,
                })?;
            Ok(CallOutput::stack(stack, a.bool("return_labels", false)?))
        }
        "apply_slice_to_batch_dim" => {
            let a = Args::new(method, args, &["batch_slice"])?;
            if !a.has("batch_slice") {
                return Err(bad("apply_slice_to_batch_dim needs `batch_slice`"));
            }
            ctx.cache = ctx
                .cache
                .apply_slice_to_batch_dim(a.slice("batch_slice")?)?;
            Ok(None)
        }
        "remove_batch_dim" => {
            let a = Args::new(method, args, &["batch_size"])?;
            let batch_size = a
                .opt_int("batch_size")?
                .map(|b| usize::try_from(b).map_err(|_| bad("batch_size must not be negative")))
                .transpose()?;
            ctx.cache.remove_batch_dim(batch_size)?;
            Ok(None)
        }
        other => Err(bad(format!("unknown cache method `{other}`"))),
    }
}

/// `K` of `cache[K]`: a string, or a list `[name, layer, layer_type]` with trailing items optional.
fn cache_key(v: &Value) -> Result<CacheKey> {
    match v {
        Value::String(s) => Ok(CacheKey::Name(s.clone())),
        Value::Array(parts) if !parts.is_empty() && parts.len() <= 3 => {
            let name = parts[0]
                .as_str()
                .ok_or_else(|| bad("a key's first item must be a name"))?;
            let layer = parts
                .get(1)
                .filter(|v| !v.is_null())
                .map(|v| {
                    args::integer(v).map_err(|what| bad(format!("a key's layer must be {what}")))
                })
                .transpose()?;
            let ty = parts
                .get(2)
                .filter(|v| !v.is_null())
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| bad("a key's layer type must be a string"))
                })
                .transpose()?;
            Ok(CacheKey::Parts(name.to_string(), layer, ty))
        }
        other => Err(bad(format!("not a cache key: {other}"))),
    }
}
