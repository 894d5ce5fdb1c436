//! Built-in interventions: hooks that ablate, scale, steer, patch or knock out the entries of one hook point that a
//! [`Selector`] picks (heads, positions, neurons). For anything else, implement [`Hook`] yourself.

use burn_tensor::{Bool, FloatDType, Tensor, TensorData, backend::Backend};
use tlens_cache_core::dyn_tensor::MAX_RANK;
use tlens_cache_core::{BlockHook, CacheError, DynTensor, Hook, HookPoint, in_dtype};

/// Which entries of an activation an intervention changes; `None` on an axis means all of it, and the selection is
/// every combination of the chosen heads, positions and neurons.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    /// Heads: axis 2 of `[batch, pos, head, d]` vectors (q, k, v, z, result, rot_q, rot_k), axis 1 of
    /// `[batch, head, query, key]` scores and patterns.
    pub heads: Option<Vec<usize>>,
    /// Positions: axis 1 of `[batch, pos, ...]` activations; the query axis of scores and patterns.
    pub positions: Option<Vec<usize>>,
    /// Entries of the last axis (MLP neurons, d_model or d_head components, key positions of a pattern).
    pub neurons: Option<Vec<usize>>,
}

/// What an intervention does to the selected entries.
#[derive(Clone, Debug)]
pub enum Op<B: Backend> {
    /// Set them to zero (ablation).
    Zero,
    /// Multiply them by a factor.
    Scale(f64),
    /// Add `coeff · vector` along the last axis (steering).
    Add {
        /// The direction, as long as the activation's last axis.
        vector: Tensor<B, 1>,
        /// Its coefficient.
        coeff: f64,
    },
    /// Replace them with another run's activation at the same hook point (activation patching); the source must
    /// have the activation's shape.
    Patch(DynTensor<B>),
    /// Replace them with the mean over the batch of the unchanged activation (mean ablation).
    Mean,
    /// Attention knockout: set these `(query, key)` scores to −∞ before the softmax (only at `hook_attn_scores`;
    /// heads select the heads, all by default).
    Knockout(Vec<(usize, usize)>),
}

/// One intervention at one hook point.
#[derive(Clone, Debug)]
pub struct Intervention<B: Backend> {
    /// Where it acts.
    pub point: HookPoint,
    /// What it does.
    pub op: Op<B>,
    /// Which entries it changes.
    pub select: Selector,
}

impl<B: Backend> Intervention<B> {
    /// An intervention on the entries `select` picks.
    pub fn new(point: HookPoint, op: Op<B>, select: Selector) -> Self {
        Self { point, op, select }
    }

    /// The selected entries of an activation of this shape, as a mask in [`DynTensor`]'s padded layout.
    fn mask(
        &self,
        shape: &[usize],
        device: &burn_tensor::Device<B>,
    ) -> Result<Tensor<B, MAX_RANK, Bool>, CacheError> {
        let point = self.point;
        let bad =
            |m: String| CacheError::InvalidArgument(format!("intervention at `{point}`: {m}"));
        let rank = shape.len();
        // The hook schema's axes count from the end; the activation here always has its batch axis.
        let from_end = |axis: Option<isize>| axis.map(|a| (rank as isize + a) as usize);
        let (pos_axis, head_axis) = (from_end(point.position_axis()), from_end(point.head_axis()));
        let mut chosen: Vec<Option<Vec<bool>>> = vec![None; rank];
        let mut choose = |axis: Option<usize>,
                          what: &str,
                          picks: &Option<Vec<usize>>|
         -> Result<(), CacheError> {
            let Some(picks) = picks else { return Ok(()) };
            let axis = axis.ok_or_else(|| bad(format!("this hook has no {what} axis")))?;
            let len = shape[axis];
            let mut keep = vec![false; len];
            for &i in picks {
                *keep.get_mut(i).ok_or_else(|| {
                    bad(format!(
                        "{what} {i} is out of range (the activation has {len})"
                    ))
                })? = true;
            }
            chosen[axis] = Some(keep);
            Ok(())
        };
        choose(pos_axis, "position", &self.select.positions)?;
        choose(head_axis, "head", &self.select.heads)?;
        choose(Some(rank - 1), "neuron", &self.select.neurons)?;
        let edges = match &self.op {
            Op::Knockout(edges) => {
                if !matches!(point, HookPoint::Block(_, BlockHook::AttnScores)) {
                    return Err(bad(
                        "knockout acts on attention scores (`attn.hook_attn_scores`)".into(),
                    ));
                }
                let (q, k) = (shape[2], shape[3]);
                let mut grid = vec![false; q * k];
                for &(i, j) in edges {
                    if i >= q || j >= k {
                        return Err(bad(format!(
                            "edge ({i}, {j}) is outside the {q}×{k} pattern"
                        )));
                    }
                    grid[i * k + j] = true;
                }
                Some(grid)
            }
            _ => None,
        };
        let numel: usize = shape.iter().product();
        let mut index = vec![0usize; rank];
        let mut mask = Vec::with_capacity(numel);
        for _ in 0..numel {
            let on_axes = chosen
                .iter()
                .zip(&index)
                .all(|(keep, &i)| keep.as_ref().is_none_or(|k| k[i]));
            let on_edge = edges
                .as_ref()
                .is_none_or(|grid| grid[index[2] * shape[3] + index[3]]);
            mask.push(on_axes && on_edge);
            for axis in (0..rank).rev() {
                index[axis] += 1;
                if index[axis] < shape[axis] {
                    break;
                }
                index[axis] = 0;
            }
        }
        let mut padded = vec![1; MAX_RANK - rank];
        padded.extend_from_slice(shape);
        Ok(Tensor::from_data(TensorData::new(mask, padded), device))
    }
}

impl<B: Backend> Hook<B> for Intervention<B> {
    fn fires_at(&self, point: HookPoint) -> bool {
        point == self.point
    }

    fn apply(
        &mut self,
        point: HookPoint,
        activation: &DynTensor<B>,
    ) -> tlens_cache_core::Result<Option<DynTensor<B>>> {
        let shape = activation.shape();
        let mask = self.mask(&shape, &activation.device())?;
        let x = activation.physical_tensor().clone();
        // Vectors and clean activations (read back from a cache as f32) take the run's precision, as
        // TransformerLens's `.to(act.dtype)`.
        let dtype = FloatDType::from(x.dtype());
        let changed = match &self.op {
            Op::Zero => x.mask_fill(mask, 0.0),
            Op::Scale(factor) => x.clone().mask_where(mask, x * *factor),
            Op::Add { vector, coeff } => {
                let [len] = vector.dims();
                if len != shape[shape.len() - 1] {
                    return Err(CacheError::Shape(format!(
                        "intervention at `{point}`: a vector of {len} entries does not fit an activation of shape \
                         {shape:?}"
                    )));
                }
                let along = in_dtype(vector.clone(), dtype).reshape([1, 1, 1, 1, 1, len]) * *coeff;
                x.clone().mask_where(mask, x + along)
            }
            Op::Patch(source) => {
                if source.shape() != shape {
                    return Err(CacheError::Shape(format!(
                        "patching `{point}`: the source has shape {:?} but the run's activation {shape:?}",
                        source.shape()
                    )));
                }
                x.mask_where(mask, in_dtype(source.physical_tensor().clone(), dtype))
            }
            Op::Mean => {
                let mean = activation.clone().mean_axis_keep(0)?.expand(&shape)?;
                x.mask_where(mask, mean.physical_tensor().clone())
            }
            Op::Knockout(_) => x.mask_fill(mask, f32::NEG_INFINITY),
        };
        Ok(Some(activation.clone().map(|_| changed)))
    }
}
