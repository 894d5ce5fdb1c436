//! Direct logit attribution: how much each head, neuron and sublayer writes directly into the logit of a target token
//! (or into the logit difference against a counterfactual token), through the final norm's cached scale.
//!
//! Heads come from [`stack_head_results`](crate::ActivationCache::stack_head_results), sublayers from
//! [`decompose_resid`](crate::ActivationCache::decompose_resid), both scored by
//! [`logit_attrs`](crate::ActivationCache::logit_attrs); neurons from
//! [`stack_neuron_results`](crate::ActivationCache::stack_neuron_results) projected onto the unembedding direction
//! with `apply_ln` (the same number as `logit_attrs` of the unprojected stack, without a `[neurons, d_model]` tensor).

use burn_tensor::backend::Backend;
use serde::Serialize;
use tlens_cache_core::{
    ActivationCache, DecomposeResid, DynTensor, LogitAttrs, Slice, StackHeadResults,
    StackNeuronResults, TokenIds,
};

use super::{Labelled, check_batch_index, resolve_position};
use crate::error::Result;

/// Arguments of [`direct_logit_attribution`].
#[derive(Clone, Debug)]
pub struct DlaArgs {
    /// Which sequence of the batch. Default 0.
    pub batch_index: usize,
    /// Which position (negative counts from the end). Default −1, the last.
    pub position: i64,
    /// The token whose logit to explain.
    pub target: u32,
    /// A counterfactual token: explain `logit(target) − logit(against)`. Default none.
    pub against: Option<u32>,
    /// How many neurons to keep (largest |attribution| first). Default 20.
    pub top_neurons: usize,
}

impl DlaArgs {
    /// Attribution of `target` at the last position of sequence 0.
    pub fn new(target: u32) -> Self {
        Self {
            batch_index: 0,
            position: -1,
            target,
            against: None,
            top_neurons: 20,
        }
    }
}

/// The direct logit attribution of one position.
#[derive(Clone, Debug, Serialize)]
pub struct Dla {
    /// The explained token.
    pub target: u32,
    /// The counterfactual token, if any.
    pub against: Option<u32>,
    /// The position (resolved, non-negative).
    pub position: usize,
    /// The model's logit of `target` (minus that of `against`) at the position.
    pub logit: f32,
    /// Every head, `L{l}H{h}`, layer-major.
    pub heads: Vec<Labelled>,
    /// Every sublayer: `embed`, `pos_embed`, `{l}_attn_out`, `{l}_mlp_out`.
    pub layers: Vec<Labelled>,
    /// The neurons with the largest |attribution| (`L{l}N{n}`), largest first; `None` for attention-only models.
    pub neurons: Option<Vec<Labelled>>,
}

/// Direct logit attribution of heads, sublayers and neurons at one position; `logits` are the run's logits
/// `[batch, pos, d_vocab_out]`.
///
/// ```
/// use tlens::{analysis::attribution, backend::NdArray, embedded, RunOptions, TokenBatch};
/// let loaded = embedded::model::<NdArray>(&Default::default()).unwrap();
/// let tokens = TokenBatch::single(vec![0, 5, 6, 7]).unwrap();
/// let (logits, cache) = loaded.model.run_with_cache(&tokens, RunOptions::default()).unwrap();
/// let dla = attribution::direct_logit_attribution(&cache, &logits, &attribution::DlaArgs::new(3)).unwrap();
/// assert_eq!(dla.heads.len(), loaded.model.cfg().n_layers * loaded.model.cfg().n_heads);
/// ```
pub fn direct_logit_attribution<B: Backend>(
    cache: &ActivationCache<B>,
    logits: &burn_tensor::Tensor<B, 3>,
    args: &DlaArgs,
) -> Result<Dla> {
    check_batch_index(cache, args.batch_index)?;
    let [_, positions, _] = logits.dims();
    let position = resolve_position(args.position, positions)?;
    let pos_slice = Slice::Index(position as i64);
    let attrs = |stack: DynTensor<B>| -> Result<Vec<f32>> {
        let out = cache.logit_attrs(
            stack,
            TokenIds::scalar(args.target as i64),
            LogitAttrs {
                incorrect_tokens: args.against.map(|a| TokenIds::scalar(a as i64)),
                pos_slice: pos_slice.clone(),
                ..Default::default()
            },
        )?;
        column(out, args.batch_index)
    };
    let labelled = |labels: Vec<String>, values: Vec<f32>| -> Vec<Labelled> {
        labels
            .into_iter()
            .zip(values)
            .map(|(label, value)| Labelled { label, value })
            .collect()
    };

    let heads = cache.stack_head_results(StackHeadResults {
        pos_slice: pos_slice.clone(),
        ..Default::default()
    })?;
    let heads = labelled(heads.labels, attrs(heads.tensor)?);
    let layers = cache.decompose_resid(DecomposeResid {
        pos_slice: pos_slice.clone(),
        ..Default::default()
    })?;
    let layers = labelled(layers.labels, attrs(layers.tensor)?);

    let neurons = if cache.cfg().has_mlp() {
        let model = cache.model();
        let mut dir = model.tokens_to_residual_directions(&TokenIds::scalar(args.target as i64))?;
        if let Some(a) = args.against {
            dir = dir.sub(model.tokens_to_residual_directions(&TokenIds::scalar(a as i64))?)?;
        }
        let stack = cache.stack_neuron_results(
            None,
            StackNeuronResults {
                pos_slice: pos_slice.clone(),
                apply_ln: true,
                project_output_onto: Some(dir),
                ..Default::default()
            },
        )?;
        let mut all = labelled(stack.labels, column(stack.tensor, args.batch_index)?);
        all.sort_by(|a, b| b.value.abs().total_cmp(&a.value.abs()));
        all.truncate(args.top_neurons);
        Some(all)
    } else {
        None
    };

    let row = logits
        .clone()
        .narrow(0, args.batch_index, 1)
        .narrow(1, position, 1);
    let values = super::lens::to_f32(row.into_data());
    let logit = values[args.target as usize] - args.against.map_or(0.0, |a| values[a as usize]);
    Ok(Dla {
        target: args.target,
        against: args.against,
        position,
        logit,
        heads,
        layers,
        neurons,
    })
}

/// Column `b` of a `[n, batch]` tensor.
fn column<B: Backend>(t: DynTensor<B>, b: usize) -> Result<Vec<f32>> {
    let shape = t.shape();
    let batch = shape[1];
    Ok(t.to_vec().chunks(batch).map(|row| row[b]).collect())
}
