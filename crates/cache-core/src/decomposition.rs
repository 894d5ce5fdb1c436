//! `get_full_resid_decomposition`: the stream entering a layer as the sum of every head, neuron (or MLP), embedding
//! and bias.

use burn_tensor::backend::Backend;

use crate::cache::ActivationCache;
use crate::dyn_tensor::DynTensor;
use crate::error::{CacheError, Result};
use crate::heads::StackHeadResults;
use crate::hook_point::HookPoint;
use crate::ln::ApplyLnToStack;
use crate::resid::{DecomposeMode, DecomposeResid, project};
use crate::slice::Slice;
use crate::stack::{Stack, concat_rows};

/// Arguments of [`ActivationCache::get_full_resid_decomposition`], with TransformerLens's names and defaults.
#[derive(Clone, Debug)]
pub struct GetFullResidDecomposition<B: Backend> {
    /// Decompose the input of this layer (`None`/`-1`: the final stream). Default `None`.
    pub layer: Option<i64>,
    /// Decompose the MLP's input of `layer` instead of attention's. Default `false`.
    pub mlp_input: bool,
    /// One row per neuron (`L{l}N{n}`) instead of one per MLP (`{l}_mlp_out`). Default `true`.
    pub expand_neurons: bool,
    /// Normalise every row with the cached scale of `layer`'s norm. Default `false`.
    pub apply_ln: bool,
    /// Positions to keep. Default all.
    pub pos_slice: Slice,
    /// Project every row onto `[d_model]` or `[d_model, k]` (neurons without a `[..., d_mlp, d_model]` tensor).
    pub project_output_onto: Option<DynTensor<B>>,
}

impl<B: Backend> Default for GetFullResidDecomposition<B> {
    fn default() -> Self {
        Self {
            layer: None,
            mlp_input: false,
            expand_neurons: true,
            apply_ln: false,
            pos_slice: Slice::All,
            project_output_onto: None,
        }
    }
}

impl<B: Backend> ActivationCache<B> {
    /// The stream entering `layer` (its attention, or its MLP with `mlp_input`) split into every component, in
    /// TransformerLens's fixed order: heads (`L{l}H{h}`, including `layer`'s own heads with `mlp_input`), then
    /// neurons (`L{l}N{n}`) or MLP outputs (`{l}_mlp_out`) of the layers before `layer`, then `embed`, `pos_embed`
    /// and `bias` (the accumulated biases). Without `apply_ln` the rows sum to that stream.
    ///
    /// Differences from TransformerLens: with `apply_ln`, `mlp_input` and a projection, the neurons use `ln2`'s scale
    /// like every other row (TransformerLens uses `ln1`'s there); an attention-only model with `expand_neurons` works
    /// (TransformerLens raises).
    ///
    /// ```
    /// use tlens_cache_core::{testing, GetFullResidDecomposition};
    /// let cache = testing::random_cache::<burn_ndarray::NdArray>(1, 4);
    /// let full = cache
    ///     .get_full_resid_decomposition(GetFullResidDecomposition { layer: Some(1), expand_neurons: false, ..Default::default() })
    ///     .unwrap();
    /// assert_eq!(full.labels, ["L0H0", "L0H1", "L0H2", "L0H3", "0_mlp_out", "embed", "pos_embed", "bias"]);
    /// ```
    pub fn get_full_resid_decomposition(
        &self,
        args: GetFullResidDecomposition<B>,
    ) -> Result<Stack<B>> {
        const METHOD: &str = "get_full_resid_decomposition";
        let layer = self.resolve_layer(args.layer, METHOD)?;
        if args.mlp_input && layer == self.n_layers() {
            return Err(CacheError::LayerOutOfRange {
                layer: layer as i64,
                what: format!("{METHOD} with mlp_input needs a layer below n_layers"),
            });
        }
        let (p, squeeze) = match args.project_output_onto {
            Some(p) => {
                let (p, s) = self.projection_2d(METHOD, p)?;
                (Some(p), s)
            }
            None => (None, false),
        };
        let pos_slice = args.pos_slice;
        let ln_args = ApplyLnToStack {
            layer: Some(layer as i64),
            mlp_input: args.mlp_input,
            pos_slice: pos_slice.clone(),
            ..Default::default()
        };
        // Norm (if asked) then projection (if asked), for rows still in d_model space.
        let finish = |rows: DynTensor<B>| -> Result<DynTensor<B>> {
            let rows = if args.apply_ln {
                self.apply_ln_to_stack(rows, ln_args.clone())?
            } else {
                rows
            };
            match &p {
                Some(p) => project(rows, p.clone()),
                None => Ok(rows),
            }
        };

        let heads = self.stack_head_results(StackHeadResults {
            layer: Some((layer + usize::from(args.mlp_input)) as i64),
            pos_slice: pos_slice.clone(),
            ..Default::default()
        })?;
        let mut labels = heads.labels;
        let mut blocks = vec![finish(heads.tensor)?];

        if self.cfg().has_mlp() && layer > 0 {
            if args.expand_neurons {
                let rows = self.neuron_rows(
                    METHOD,
                    layer,
                    &pos_slice,
                    &Slice::All,
                    p.as_ref(),
                    args.apply_ln,
                    args.mlp_input,
                )?;
                let rows = if args.apply_ln && p.is_none() {
                    self.apply_ln_to_stack(rows, ln_args.clone())?
                } else {
                    rows
                };
                let d_mlp = self.cfg().d_mlp;
                labels
                    .extend((0..layer).flat_map(|l| (0..d_mlp).map(move |n| format!("L{l}N{n}"))));
                blocks.push(rows);
            } else {
                let mlp = self.decompose_resid(DecomposeResid {
                    layer: Some(layer as i64),
                    mlp_input: args.mlp_input,
                    mode: DecomposeMode::Mlp,
                    pos_slice: pos_slice.clone(),
                    incl_embeds: false,
                    ..Default::default()
                })?;
                labels.extend(mlp.labels);
                blocks.push(finish(mlp.tensor)?);
            }
        }

        for (point, label) in [
            (HookPoint::Embed, "embed"),
            (HookPoint::PosEmbed, "pos_embed"),
        ] {
            if let Some(t) = self.entry(point) {
                let row = pos_slice.apply(t.clone(), -2, "pos_slice")?.unsqueeze(0)?;
                blocks.push(finish(row)?);
                labels.push(label.to_string());
            }
        }

        let mut shape = self.resid_shape(METHOD, &pos_slice)?;
        shape.insert(0, 1);
        let bias = self
            .model
            .accumulated_bias(layer, args.mlp_input, args.expand_neurons)?
            .expand(&shape)?;
        blocks.push(finish(bias)?);
        labels.push("bias".to_string());

        let mut tensor = concat_rows(blocks, || self.empty_rows(METHOD, &pos_slice, None))?;
        if squeeze {
            tensor = tensor.squeeze(-1)?;
        }
        Ok(Stack { tensor, labels })
    }
}
