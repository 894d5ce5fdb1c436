//! MLP neurons one by one: `get_neuron_results` and `stack_neuron_results`, optionally projected onto directions
//! without ever building a `[..., d_mlp, d_model]` tensor.

use burn_tensor::backend::Backend;

use crate::cache::ActivationCache;
use crate::dyn_tensor::DynTensor;
use crate::error::{CacheError, Result};
use crate::hook_point::{BlockHook, HookPoint};
use crate::ln::{ApplyLnToStack, check_fits};
use crate::resid::project;
use crate::slice::Slice;
use crate::stack::{Stack, concat_rows};
use crate::weights::as_f32;

/// Arguments of [`ActivationCache::get_neuron_results`] besides the layer, with TransformerLens's defaults.
#[derive(Clone, Debug, Default)]
pub struct GetNeuronResults<B: Backend> {
    /// Neurons to keep (an index removes the neuron axis). Default all.
    pub neuron_slice: Slice,
    /// Positions to keep. Default all.
    pub pos_slice: Slice,
    /// Project each neuron's output onto `[d_model]` (one number per neuron) or `[d_model, k]` (k numbers).
    pub project_output_onto: Option<DynTensor<B>>,
}

/// Arguments of [`ActivationCache::stack_neuron_results`] besides the layer, with TransformerLens's defaults.
#[derive(Clone, Debug, Default)]
pub struct StackNeuronResults<B: Backend> {
    /// Positions to keep. Default all.
    pub pos_slice: Slice,
    /// Neurons of each layer to keep; an index keeps that one neuron (as `[n]`). Default all.
    pub neuron_slice: Slice,
    /// Append `"remainder"`: the stream entering `layer` minus the neurons' sum. Default `false`.
    pub incl_remainder: bool,
    /// Normalise with the cached scale of `layer`'s `ln1` (`ln2` with `mlp_input`, `ln_final` for all layers).
    pub apply_ln: bool,
    /// Project onto `[d_model]` or `[d_model, k]`; with `apply_ln` the norm is folded into the projection.
    pub project_output_onto: Option<DynTensor<B>>,
    /// Treat the stack as the MLP input of `layer` (TransformerLens after 3.9): the remainder fills up to
    /// `resid_mid` of `layer` and `apply_ln` uses `ln2`. Default `false`.
    pub mlp_input: bool,
}

impl<B: Backend> ActivationCache<B> {
    /// Each neuron's write into the residual stream at one layer: `post[..., n] · W_out[n]`, TransformerLens's
    /// `get_neuron_results`. `[*batch_and_pos, neurons, d_model]` (no neuron axis for an index `neuron_slice`); with
    /// `project_output_onto` `p`, `W_out @ p` is formed first, giving `[*batch_and_pos, neurons]` for `p` `[d_model]`
    /// or `[*batch_and_pos, neurons, k]` for `[d_model, k]`. `layer` may be negative (counts from the end).
    ///
    /// ```
    /// use tlens_cache_core::{testing, GetNeuronResults, Slice};
    /// let cache = testing::random_cache::<burn_ndarray::NdArray>(1, 4);
    /// let r = cache.get_neuron_results(1, GetNeuronResults { neuron_slice: Slice::range(0, 3), pos_slice: (-1).into(), ..Default::default() }).unwrap();
    /// assert_eq!(r.shape(), [1, 3, 16]);
    /// ```
    pub fn get_neuron_results(
        &self,
        layer: i64,
        args: GetNeuronResults<B>,
    ) -> Result<DynTensor<B>> {
        const METHOD: &str = "get_neuron_results";
        let n = self.n_layers() as i64;
        let l = if layer < 0 { layer + n } else { layer };
        if !(0..n).contains(&l) {
            return Err(CacheError::LayerOutOfRange {
                layer,
                what: format!("{METHOD} takes a layer in -{n}..{n}"),
            });
        }
        let l = l as usize;
        let (acts, w_out) = self.neuron_parts(METHOD, l, &args.neuron_slice, &args.pos_slice)?;
        let Some(p) = args.project_output_onto else {
            return acts.unsqueeze(-1)?.mul(w_out);
        };
        let p1d = p.rank() == 1;
        let (p2, _) = self.projection_2d(METHOD, p)?;
        let wp = project(w_out, p2)?; // [M', k] (or [k] for one neuron)
        if p1d {
            // [..., M'] * [M']
            acts.mul(wp.squeeze(-1)?)
        } else {
            acts.unsqueeze(-1)?.mul(wp)
        }
    }

    /// `post[layer]` (pos- then neuron-sliced) and `W_out[layer]` (neuron-sliced).
    fn neuron_parts(
        &self,
        method: &'static str,
        layer: usize,
        neuron_slice: &Slice,
        pos_slice: &Slice,
    ) -> Result<(DynTensor<B>, DynTensor<B>)> {
        let mlp = self.model.weights.blocks[layer]
            .mlp
            .as_ref()
            .ok_or_else(|| {
                CacheError::Unsupported(format!("{method}: an attention-only model has no neurons"))
            })?;
        let acts = self.need(method, HookPoint::Block(layer, BlockHook::MlpPost))?;
        let acts = pos_slice.apply(acts, -2, "pos_slice")?;
        let acts = neuron_slice.apply(acts, -1, "neuron_slice")?;
        let w_out =
            neuron_slice.apply(DynTensor::new(as_f32(mlp.W_out.clone())), 0, "neuron_slice")?;
        Ok((acts, w_out))
    }

    /// A projection as `[d_model, k]`, and whether it was `[d_model]` (squeeze at the end).
    pub(crate) fn projection_2d(
        &self,
        method: &str,
        p: DynTensor<B>,
    ) -> Result<(DynTensor<B>, bool)> {
        let d_model = self.cfg().d_model;
        let shape = p.shape();
        match shape.as_slice() {
            [d] if *d == d_model => Ok((p.unsqueeze(-1)?, true)),
            [d, _] if *d == d_model => Ok((p, false)),
            _ => Err(CacheError::Shape(format!(
                "{method}: project_output_onto must be [d_model={d_model}] or [d_model, k], got {shape:?}"
            ))),
        }
    }

    /// Every neuron's write into the residual stream before `layer`, one row per neuron (`L{l}N{n}`), as
    /// TransformerLens's `stack_neuron_results`: `[layer·neurons, *batch_and_pos, d_model]` (last axis `k` or none
    /// with a projection). `layer` `None`/`-1` means all layers.
    ///
    /// With `apply_ln` and `project_output_onto` together the cached-scale norm is folded into the projection
    /// (`(a/s)·(W_out@p − c·mean(W_out)·Σp)`), so no `[..., d_mlp, d_model]` tensor is built. An index
    /// `neuron_slice` keeps one neuron per layer (TransformerLens raises); `incl_remainder` at `layer` 0 gives the
    /// stream entering layer 0 (TransformerLens gives the final stream).
    ///
    /// ```
    /// use tlens_cache_core::{testing, Slice, StackNeuronResults};
    /// let cache = testing::random_cache::<burn_ndarray::NdArray>(1, 4);
    /// let s = cache.stack_neuron_results(None, StackNeuronResults { neuron_slice: Slice::Indices(vec![0, 5]), pos_slice: (-1).into(), ..Default::default() }).unwrap();
    /// assert_eq!(s.labels, ["L0N0", "L0N5", "L1N0", "L1N5"]);
    /// assert_eq!(s.tensor.shape(), [4, 1, 16]);
    /// ```
    pub fn stack_neuron_results(
        &self,
        layer: Option<i64>,
        args: StackNeuronResults<B>,
    ) -> Result<Stack<B>> {
        const METHOD: &str = "stack_neuron_results";
        let layer = self.resolve_layer(layer, METHOD)?;
        let StackNeuronResults {
            pos_slice,
            neuron_slice,
            incl_remainder,
            apply_ln,
            project_output_onto,
            mlp_input,
        } = args;
        let neuron_slice = neuron_slice.keeping_axis();
        let (p, squeeze) = match project_output_onto {
            Some(p) => {
                let (p, s) = self.projection_2d(METHOD, p)?;
                (Some(p), s)
            }
            None => (None, false),
        };
        if layer > 0 && !self.cfg().has_mlp() {
            return Err(CacheError::Unsupported(format!(
                "{METHOD}: an attention-only model has no neurons"
            )));
        }
        let d_mlp = self.cfg().d_mlp;
        let ids = neuron_slice.indices(d_mlp, "neuron_slice")?;
        let mut labels: Vec<String> = (0..layer)
            .flat_map(|l| ids.iter().map(move |n| format!("L{l}N{n}")))
            .collect();
        let mut tensor = self.neuron_rows(
            METHOD,
            layer,
            &pos_slice,
            &neuron_slice,
            p.as_ref(),
            apply_ln,
            mlp_input,
        )?;
        let ln_args = ApplyLnToStack {
            layer: Some(layer as i64),
            mlp_input,
            pos_slice: pos_slice.clone(),
            ..Default::default()
        };
        if incl_remainder {
            let mut target = if mlp_input {
                if layer == self.n_layers() {
                    return Err(CacheError::LayerOutOfRange {
                        layer: layer as i64,
                        what: format!("{METHOD} with mlp_input needs a layer below n_layers"),
                    });
                }
                let mid = self.need(METHOD, HookPoint::Block(layer, BlockHook::ResidMid))?;
                pos_slice.apply(mid, -2, "pos_slice")?
            } else {
                self.stream_into(METHOD, layer, &pos_slice)?
            };
            if let Some(p) = &p {
                if apply_ln {
                    target = self
                        .apply_ln_to_stack(target.unsqueeze(0)?, ln_args.clone())?
                        .squeeze(0)?;
                }
                target = project(target, p.clone())?;
            }
            tensor = self.append_remainder(METHOD, tensor, target)?;
            labels.push("remainder".to_string());
        }
        if apply_ln && p.is_none() {
            tensor = self.apply_ln_to_stack(tensor, ln_args)?;
        }
        if squeeze {
            tensor = tensor.squeeze(-1)?;
        }
        Ok(Stack { tensor, labels })
    }

    /// The neuron rows of layers `0..layer`: `[layer·M', *bp, D or k]`. With `apply_ln` and `p`, the norm is folded
    /// into the projection; with `apply_ln` alone it is left to the caller.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn neuron_rows(
        &self,
        method: &'static str,
        layer: usize,
        pos_slice: &Slice,
        neuron_slice: &Slice,
        p: Option<&DynTensor<B>>,
        apply_ln: bool,
        mlp_input: bool,
    ) -> Result<DynTensor<B>> {
        let fused = apply_ln && p.is_some() && self.cfg().normalization_type.is_some();
        let scale = if fused {
            Some(self.cached_scale(method, layer, mlp_input, pos_slice, &Slice::All)?)
        } else {
            None
        };
        // Each row is built neuron-first: moving the small activations' neuron axis to the front costs `[..., M']`,
        // where moving it in the product would copy all of `[..., M', k]`. The product is a matrix product of one
        // term per element, `[M', rows, 1] · [M', 1, k]`, through the backend's kernel for it
        // ([`CacheKernels::outer`](crate::CacheKernels::outer)): burn-flex's broadcast product walks its operands
        // with a strided iterator (60% of `stack_neuron_results` at 8×128), burn-ndarray's batched matrix product
        // makes a product per neuron (1.5× as long as its broadcast product).
        let neuron_first = |acts: DynTensor<B>, per_neuron: DynTensor<B>| -> Result<DynTensor<B>> {
            let shape = acts.shape();
            let (lead, m) = (&shape[..shape.len() - 1], shape[shape.len() - 1]);
            let k = per_neuron.dim(-1)?;
            let mut out = vec![m];
            out.extend_from_slice(lead);
            out.push(k);
            acts.movedim(-1, 0)?
                .reshape(&[m, lead.iter().product(), 1])?
                .matmul_with(per_neuron.reshape(&[m, 1, k])?, self.kernels.outer)?
                .reshape(&out)
        };
        let mut rows = Vec::with_capacity(layer);
        for l in 0..layer {
            let (acts, w_out) = self.neuron_parts(method, l, neuron_slice, pos_slice)?;
            let row = match (p, &scale) {
                (None, _) => neuron_first(acts, w_out)?,
                (Some(p), None) => neuron_first(acts, project(w_out, p.clone())?)?,
                (Some(p), Some((s, key))) => {
                    let mut lin = project(w_out.clone(), p.clone())?; // [M', k]
                    if self.cfg().normalization_type.is_some_and(|n| n.centers()) {
                        let w_mean = w_out.mean_axis_keep(-1)?; // [M', 1]
                        let p_sum = p.clone().sum_axis(0)?; // [k]
                        lin = lin.sub(w_mean.mul(p_sum)?)?;
                    }
                    check_fits(method, &acts, s, key)?;
                    neuron_first(acts.div(s.clone())?, lin)?
                }
            };
            rows.push(row);
        }
        let width = p.map(|p| p.dim(-1)).transpose()?;
        concat_rows(rows, || self.empty_rows(method, pos_slice, width))
    }
}
