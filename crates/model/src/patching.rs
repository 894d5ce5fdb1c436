//! Activation patching, as TransformerLens's `transformer_lens.patching`: for every index (layer, position, head,
//! ...) patch the clean run's activation into the corrupted run at that index and record a metric of the patched
//! logits. Every `get_act_patch_*` function is a [`PatchSweep`]; tlens runs many patched copies of the corrupted batch
//! in one forward pass instead of one pass per index.

use burn_tensor::{ElementConversion, Tensor, backend::Backend};
use tlens_cache_core::{ActivationCache, BlockHook, CacheError, DynTensor, Hook, HookPoint};

use crate::error::Result;
use crate::hooked::HookedTransformer;
use crate::intervention::{Intervention, Op, Selector};
use crate::kernels::Kernels;
use crate::tokens::TokenBatch;

/// Which activation a sweep patches (TransformerLens's `activation_name`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchedActivation {
    /// `resid_pre`.
    ResidPre,
    /// `resid_mid`.
    ResidMid,
    /// `attn_out`.
    AttnOut,
    /// `mlp_out`.
    MlpOut,
    /// A head's output, `z`.
    HeadOut,
    /// A head's query, `q`.
    HeadQ,
    /// A key/value head's key, `k` (`n_key_value_heads` heads under grouped-query attention).
    HeadK,
    /// A key/value head's value, `v`.
    HeadV,
    /// A head's attention pattern.
    HeadPattern,
}

impl PatchedActivation {
    fn hook(self) -> BlockHook {
        match self {
            Self::ResidPre => BlockHook::ResidPre,
            Self::ResidMid => BlockHook::ResidMid,
            Self::AttnOut => BlockHook::AttnOut,
            Self::MlpOut => BlockHook::MlpOut,
            Self::HeadOut => BlockHook::Z,
            Self::HeadQ => BlockHook::Q,
            Self::HeadK => BlockHook::K,
            Self::HeadV => BlockHook::V,
            Self::HeadPattern => BlockHook::Pattern,
        }
    }
}

/// The axes a sweep iterates over after the layer (TransformerLens's `index_axis_names`); the result has the layer
/// axis first, then these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchIndex {
    /// `[layer, pos]`: every position of a `[batch, pos, ...]` activation.
    Pos,
    /// `[layer, pos, head]`: one head at one position.
    PosHead,
    /// `[layer, head]`: one head at every position.
    Head,
    /// `[layer, head, dest_pos]`: one query row of a head's pattern.
    HeadDest,
    /// `[layer, head, dest_pos, src_pos]`: one entry of a head's pattern.
    HeadDestSrc,
}

/// One `get_act_patch_*` function: what is patched, and over which indices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PatchSweep {
    /// The activation.
    pub activation: PatchedActivation,
    /// The indices.
    pub index: PatchIndex,
}

impl PatchSweep {
    /// The sweep of a TransformerLens function name (`get_act_patch_resid_pre`, ...); the `*_every` functions are
    /// [`every`].
    pub fn from_name(name: &str) -> Option<Self> {
        use PatchIndex::*;
        use PatchedActivation::*;
        let (activation, index) = match name {
            "get_act_patch_resid_pre" => (ResidPre, Pos),
            "get_act_patch_resid_mid" => (ResidMid, Pos),
            "get_act_patch_attn_out" => (AttnOut, Pos),
            "get_act_patch_mlp_out" => (MlpOut, Pos),
            "get_act_patch_attn_head_out_by_pos" => (HeadOut, PosHead),
            "get_act_patch_attn_head_q_by_pos" => (HeadQ, PosHead),
            "get_act_patch_attn_head_k_by_pos" => (HeadK, PosHead),
            "get_act_patch_attn_head_v_by_pos" => (HeadV, PosHead),
            "get_act_patch_attn_head_pattern_by_pos" => (HeadPattern, HeadDest),
            "get_act_patch_attn_head_pattern_dest_src_pos" => (HeadPattern, HeadDestSrc),
            "get_act_patch_attn_head_out_all_pos" => (HeadOut, Head),
            "get_act_patch_attn_head_q_all_pos" => (HeadQ, Head),
            "get_act_patch_attn_head_k_all_pos" => (HeadK, Head),
            "get_act_patch_attn_head_v_all_pos" => (HeadV, Head),
            "get_act_patch_attn_head_pattern_all_pos" => (HeadPattern, Head),
            _ => return None,
        };
        Some(Self { activation, index })
    }

    /// Every index of the sweep — its layer and selection — in TransformerLens's (row-major) order, and the
    /// result's shape.
    fn indices(
        &self,
        layers: usize,
        pos: usize,
        heads: usize,
    ) -> (Vec<(usize, Selector)>, Vec<usize>) {
        let select =
            |heads: Option<usize>, positions: Option<usize>, neurons: Option<usize>| Selector {
                heads: heads.map(|h| vec![h]),
                positions: positions.map(|p| vec![p]),
                neurons: neurons.map(|n| vec![n]),
            };
        let (per_layer, shape): (Vec<Selector>, Vec<usize>) = match self.index {
            PatchIndex::Pos => (
                (0..pos).map(|p| select(None, Some(p), None)).collect(),
                vec![pos],
            ),
            PatchIndex::PosHead => (
                (0..pos)
                    .flat_map(|p| (0..heads).map(move |h| select(Some(h), Some(p), None)))
                    .collect(),
                vec![pos, heads],
            ),
            PatchIndex::Head => (
                (0..heads).map(|h| select(Some(h), None, None)).collect(),
                vec![heads],
            ),
            PatchIndex::HeadDest => (
                (0..heads)
                    .flat_map(|h| (0..pos).map(move |d| select(Some(h), Some(d), None)))
                    .collect(),
                vec![heads, pos],
            ),
            PatchIndex::HeadDestSrc => (
                (0..heads)
                    .flat_map(|h| {
                        (0..pos).flat_map(move |d| {
                            (0..pos).map(move |s| select(Some(h), Some(d), Some(s)))
                        })
                    })
                    .collect(),
                vec![heads, pos, pos],
            ),
        };
        let indices = (0..layers)
            .flat_map(|l| per_layer.iter().map(move |s| (l, s.clone())))
            .collect();
        (indices, [vec![layers], shape].concat())
    }
}

/// The functions that patch several activations and stack the results (`get_act_patch_block_every`,
/// `get_act_patch_attn_head_all_pos_every`, `get_act_patch_attn_head_by_pos_every`), by name.
pub fn every(name: &str) -> Option<Vec<PatchSweep>> {
    use PatchIndex::*;
    use PatchedActivation::*;
    let sweep = |activation, index| PatchSweep { activation, index };
    Some(match name {
        "get_act_patch_block_every" => vec![
            sweep(ResidPre, Pos),
            sweep(AttnOut, Pos),
            sweep(MlpOut, Pos),
        ],
        "get_act_patch_attn_head_all_pos_every" => [HeadOut, HeadQ, HeadK, HeadV, HeadPattern]
            .map(|a| sweep(a, Head))
            .to_vec(),
        "get_act_patch_attn_head_by_pos_every" => vec![
            sweep(HeadOut, PosHead),
            sweep(HeadQ, PosHead),
            sweep(HeadK, PosHead),
            sweep(HeadV, PosHead),
            sweep(HeadPattern, HeadDest),
        ],
        _ => return None,
    })
}

/// A metric of a batch's logits `[batch, pos, vocab]`, one scalar (TransformerLens's `patching_metric`, and the
/// output a gradient run back-propagates).
pub trait Metric<B: Backend> {
    /// The metric as a one-element tensor (differentiable on an autodiff backend).
    fn value(&self, logits: Tensor<B, 3>) -> Result<Tensor<B, 1>>;

    /// The metric's value.
    fn eval(&self, logits: Tensor<B, 3>) -> Result<f32> {
        Ok(self.value(logits)?.into_scalar().elem())
    }
}

/// The mean over the batch of `logits[b, -1, correct] − logits[b, -1, incorrect]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogitDiff {
    /// The answer's token.
    pub correct: u32,
    /// The wrong answer's token.
    pub incorrect: u32,
}

impl<B: Backend> Metric<B> for LogitDiff {
    fn value(&self, logits: Tensor<B, 3>) -> Result<Tensor<B, 1>> {
        let [_, pos, vocab] = logits.dims();
        for t in [self.correct, self.incorrect] {
            if t as usize >= vocab {
                return Err(CacheError::InvalidArgument(format!(
                    "logit_diff token {t} is not below the output vocabulary {vocab}"
                ))
                .into());
            }
        }
        let last = logits.narrow(1, pos - 1, 1);
        let logit = |t: u32| last.clone().narrow(2, t as usize, 1);
        Ok((logit(self.correct) - logit(self.incorrect)).mean())
    }
}

/// How many patched copies of the corrupted batch one forward pass runs, by default.
pub const PATCHES_PER_PASS: usize = 32;

impl<B: Kernels> HookedTransformer<B> {
    /// Runs a patching sweep: for every index, the clean cache's activation at that index is patched into a run of
    /// `corrupted` and the metric of the patched logits recorded, as TransformerLens's `get_act_patch_*`. The result
    /// is `[n_layers, ...index axes]`; `patches_per_pass` patched copies of the batch share one forward pass.
    pub fn activation_patch(
        &self,
        sweep: PatchSweep,
        corrupted: &TokenBatch,
        clean: &ActivationCache<B>,
        metric: &dyn Metric<B>,
        patches_per_pass: usize,
    ) -> Result<DynTensor<B>> {
        let cfg = self.cfg();
        let heads = match sweep.activation {
            PatchedActivation::HeadK | PatchedActivation::HeadV => cfg.kv_heads(),
            _ => cfg.n_heads,
        };
        let (indices, shape) = sweep.indices(cfg.n_layers, corrupted.positions(), heads);
        let hook = sweep.activation.hook();
        let clean_acts = (0..cfg.n_layers)
            .map(|l| clean.get(HookPoint::Block(l, hook)))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        // A patch at layer `l` leaves the blocks before `l` as in the corrupted run: start there from its stream.
        let resid_pre_names = (0..cfg.n_layers)
            .map(|l| HookPoint::Block(l, BlockHook::ResidPre).to_string())
            .collect();
        let (_, corrupted_cache) = self.run_with_cache(
            corrupted,
            tlens_cache_core::RunOptions {
                names_filter: tlens_cache_core::NamesFilter::Names(resid_pre_names),
                ..Default::default()
            },
        )?;
        let batch = corrupted.batch();
        let mut values = Vec::with_capacity(indices.len());
        for layer in 0..cfg.n_layers {
            let resid_pre = corrupted_cache
                .get(HookPoint::Block(layer, BlockHook::ResidPre))?
                .into_tensor::<3>()?;
            let in_layer: Vec<&(usize, Selector)> =
                indices.iter().filter(|(l, _)| *l == layer).collect();
            for chunk in in_layer.chunks(patches_per_pass.max(1)) {
                let copies = chunk.len();
                let rows: Vec<Vec<u32>> = (0..copies)
                    .flat_map(|_| (0..batch).map(|b| corrupted.row(b).to_vec()))
                    .collect();
                let mut patch = SweepHook {
                    hook,
                    patches: chunk
                        .iter()
                        .map(|(l, select)| {
                            Intervention::new(
                                HookPoint::Block(*l, hook),
                                Op::Patch(clean_acts[*l].clone()),
                                select.clone(),
                            )
                        })
                        .collect(),
                };
                let logits = self.run_from_layer(
                    &TokenBatch::new(&rows)?,
                    layer,
                    Tensor::cat(vec![resid_pre.clone(); copies], 0),
                    &mut [&mut patch],
                )?;
                for i in 0..copies {
                    values.push(metric.eval(logits.clone().narrow(0, i * batch, batch))?);
                }
            }
        }
        let device = self.device();
        Ok(DynTensor::from_data(
            burn_tensor::TensorData::new(values, shape),
            &device,
        )?)
    }
}

/// Copy `i` of the tiled corrupted batch gets patch `i`.
struct SweepHook<B: Backend> {
    hook: BlockHook,
    patches: Vec<Intervention<B>>,
}

impl<B: Backend> Hook<B> for SweepHook<B> {
    fn fires_at(&self, point: HookPoint) -> bool {
        matches!(point, HookPoint::Block(_, h) if h == self.hook)
            && self.patches.iter().any(|p| p.point == point)
    }

    fn apply(
        &mut self,
        point: HookPoint,
        activation: &DynTensor<B>,
    ) -> tlens_cache_core::Result<Option<DynTensor<B>>> {
        let copies = self.patches.len();
        let shape = activation.shape();
        let batch = shape[0] / copies;
        let mut parts = Vec::with_capacity(copies);
        for (i, patch) in self.patches.iter_mut().enumerate() {
            let copy = activation.clone().narrow(0, i * batch, batch)?;
            parts.push(match patch.point == point {
                true => patch.apply(point, &copy)?.unwrap_or(copy),
                false => copy,
            });
        }
        Ok(Some(DynTensor::cat(parts, 0)?))
    }
}
