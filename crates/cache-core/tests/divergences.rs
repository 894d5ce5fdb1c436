//! Where tlens deliberately differs from TransformerLens 3.9: one test per row of the book's divergences page
//! (`book/src/divergences.md`). The plan calls whose goldens record TransformerLens's behaviour are listed in
//! `tests/plans/divergences.json` with the name of the test here that shows tlens's.

use crate::common::*;
use tlens_cache_core::{
    AccumulatedResid, ApplyLnToStack, DecomposeResid, DynTensor, GetFullResidDecomposition,
    GetNeuronResults, LogitAttrs, RunOptions, Slice, StackHeadResults, StackNeuronResults,
    TokenIds,
};
use tlens_model::{Processing, TokenBatch};

/// TransformerLens returns `resid_post[-1]` — the *final* stream — as the remainder of a layer-0 stack; the remainder
/// of the heads (or neurons) before layer 0 is the stream entering layer 0.
#[test]
fn layer0_remainder_is_the_input_to_layer_0() {
    let cache = solu_cache();
    for pos_slice in [Slice::All, Slice::Index(-1)] {
        let input = cache.get(("resid_pre", 0)).unwrap();
        let input = pos_slice
            .apply(input, -2, "pos_slice")
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let heads = cache
            .stack_head_results(StackHeadResults {
                layer: Some(0),
                incl_remainder: true,
                pos_slice: pos_slice.clone(),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(heads.labels, ["remainder"]);
        assert_equal(&heads.tensor, &input, "heads");
        let neurons = cache
            .stack_neuron_results(
                Some(0),
                StackNeuronResults {
                    incl_remainder: true,
                    pos_slice: pos_slice.clone(),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(neurons.labels, ["remainder"]);
        assert_equal(&neurons.tensor, &input, "neurons");
    }
}

/// TransformerLens raises `RuntimeError: stack expects a non-empty TensorList`; an empty selection is a stack with
/// zero rows, shaped like the rows it would have had (as TransformerLens's own `stack_head_results(0)` already is).
#[test]
fn empty_stacks_have_zero_rows() {
    let cache = solu_cache();
    let d = cache.cfg().d_model;
    let dec = cache
        .decompose_resid(DecomposeResid {
            layer: Some(0),
            incl_embeds: false,
            ..Default::default()
        })
        .unwrap();
    assert!(dec.labels.is_empty());
    assert_eq!(dec.tensor.shape(), [0, 8, 10, d]);
    let dec = cache
        .decompose_resid(DecomposeResid {
            layer: Some(0),
            incl_embeds: false,
            pos_slice: Slice::Index(-1),
            apply_ln: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(dec.tensor.shape(), [0, 8, d]);
    let act = cache.stack_activation("resid_pre", Some(0), None).unwrap();
    assert_eq!(act.shape(), [0, 8, 10, d]);
    let act = cache.stack_activation("pattern", Some(0), None).unwrap();
    assert_eq!(act.shape(), [0, 8, 4, 10, 10]);
}

/// TransformerLens asserts `has_batch_dim or mode == "empty"`, a mode that does not exist, so even `None` fails on a
/// batch-less cache. `None` selects everything and returns a copy; a real batch slice is still an error.
#[test]
fn batch_slice_none_on_a_batchless_cache_is_a_copy() {
    let mut cache = run(
        &tl_model("tl-solu", Processing::default()),
        &TokenBatch::single(vec![1, 2, 3]).unwrap(),
    );
    cache.remove_batch_dim(None).unwrap();
    let copy = cache.apply_slice_to_batch_dim(Slice::All).unwrap();
    assert!(!copy.has_batch_dim());
    assert_eq!(
        copy.keys().collect::<Vec<_>>(),
        cache.keys().collect::<Vec<_>>()
    );
    assert!(cache.apply_slice_to_batch_dim(0).is_err());
}

/// TransformerLens's `accumulated_bias` reads `blocks[i].mlp` whenever MLP biases are included, so an attention-only
/// model with the default `expand_neurons=True` raises `AttributeError`. It has no MLP biases: they count as zero.
#[test]
fn attn_only_expand_neurons_works() {
    let cache = attn_only_cache();
    let expanded = cache
        .get_full_resid_decomposition(GetFullResidDecomposition {
            layer: Some(1),
            ..Default::default()
        })
        .unwrap();
    let plain = cache
        .get_full_resid_decomposition(GetFullResidDecomposition {
            layer: Some(1),
            expand_neurons: false,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(expanded.labels, plain.labels);
    assert_equal(&expanded.tensor, &plain.tensor, "no neurons to expand");
    // And the rows still sum to the stream entering layer 1.
    let total = expanded.tensor.sum_axis(0).unwrap();
    assert_isclose(
        &total,
        &cache.get(("resid_pre", 1)).unwrap(),
        1e-5,
        1e-5,
        "sum of components",
    );
}

/// TransformerLens's fused LN + projection path for neurons always divides by `ln1`'s scale, even with `mlp_input`
/// (where every other row uses `ln2`'s). The fused rows equal the unfused LN rows projected.
#[test]
fn fused_ln_projection_uses_ln2_with_mlp_input() {
    let cache = solu_cache();
    let p = random(&[cache.cfg().d_model], 21);
    let args = |project_output_onto| GetFullResidDecomposition {
        layer: Some(1),
        mlp_input: true,
        apply_ln: true,
        pos_slice: Slice::Index(-1),
        project_output_onto,
        ..Default::default()
    };
    let fused = cache
        .get_full_resid_decomposition(args(Some(p.clone())))
        .unwrap();
    let unfused = cache.get_full_resid_decomposition(args(None)).unwrap();
    assert_allclose(
        &fused.tensor,
        &at(unfused.tensor, &p),
        1e-4,
        "fused vs unfused",
    );
}

/// TransformerLens returns the stack untouched for a model without normalisation — without applying `batch_slice`,
/// so the shape of `apply_ln_to_stack` / `logit_attrs` depends on the model. tlens applies the batch slice always.
#[test]
fn no_normalization_still_applies_batch_slice() {
    let cache = run(&tl_model("tl-none-gelunew", Processing::none()), &prompts());
    let acc = cache
        .accumulated_resid(AccumulatedResid {
            incl_mid: true,
            ..Default::default()
        })
        .unwrap();
    let sliced = cache
        .apply_ln_to_stack(
            acc.tensor.clone(),
            ApplyLnToStack {
                batch_slice: Slice::Index(1),
                ..Default::default()
            },
        )
        .unwrap();
    assert_equal(
        &sliced,
        &acc.tensor.clone().index(1, 1).unwrap(),
        "batch 1, otherwise unchanged",
    );
    let last = cache
        .accumulated_resid(AccumulatedResid {
            incl_mid: true,
            pos_slice: Slice::Index(-1),
            ..Default::default()
        })
        .unwrap();
    let dla = cache
        .logit_attrs(
            last.tensor,
            3,
            LogitAttrs {
                pos_slice: Slice::Index(-1),
                batch_slice: Slice::Index(1),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(dla.shape(), [5]);
}

/// TransformerLens's unfused `apply_ln` is a no-op without normalisation, but its fused LN + projection path looks up
/// a cached scale and raises `KeyError`. tlens treats `apply_ln` as a no-op in both.
#[test]
fn no_normalization_apply_ln_with_projection_is_a_no_op() {
    let cache = run(&tl_model("tl-none-gelunew", Processing::none()), &prompts());
    let p = random(&[cache.cfg().d_model], 22);
    let plain = cache
        .stack_neuron_results(
            Some(2),
            StackNeuronResults {
                project_output_onto: Some(p.clone()),
                ..Default::default()
            },
        )
        .unwrap();
    let ln = cache
        .stack_neuron_results(
            Some(2),
            StackNeuronResults {
                apply_ln: true,
                project_output_onto: Some(p.clone()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_equal(&ln.tensor, &plain.tensor, "stack_neuron_results");
    let plain = cache
        .get_full_resid_decomposition(GetFullResidDecomposition {
            project_output_onto: Some(p.clone()),
            ..Default::default()
        })
        .unwrap();
    let ln = cache
        .get_full_resid_decomposition(GetFullResidDecomposition {
            apply_ln: true,
            project_output_onto: Some(p),
            ..Default::default()
        })
        .unwrap();
    assert_equal(&ln.tensor, &plain.tensor, "get_full_resid_decomposition");
}

/// TransformerLens 3.9 iterates a 0-d tensor for the labels of an int `neuron_slice` (`TypeError`) and mis-broadcasts
/// an int `neuron_slice` with a 2-D projection in `get_neuron_results`. An int keeps that one neuron.
#[test]
fn int_neuron_slice_works() {
    let cache = solu_cache();
    let d = cache.cfg().d_model;
    let one = cache
        .stack_neuron_results(
            Some(2),
            StackNeuronResults {
                neuron_slice: Slice::Index(3),
                ..Default::default()
            },
        )
        .unwrap();
    let list = cache
        .stack_neuron_results(
            Some(2),
            StackNeuronResults {
                neuron_slice: Slice::Indices(vec![3]),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(one.labels, ["L0N3", "L1N3"]);
    assert_equal(&one.tensor, &list.tensor, "int vs [n]");

    let p = random(&[d, 3], 23);
    let projected = cache
        .get_neuron_results(
            0,
            GetNeuronResults {
                neuron_slice: Slice::Index(3),
                project_output_onto: Some(p.clone()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(projected.shape(), [8, 10, 3]);
    let full = cache
        .get_neuron_results(
            0,
            GetNeuronResults {
                neuron_slice: Slice::Index(3),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(full.shape(), [8, 10, d]);
    assert_allclose(&projected, &at(full, &p), 1e-5, "int slice, 2-D projection");
}

/// TransformerLens issue #1677: `recompute_ln` on a stack of single vectors (batch-less cache, int position) raised
/// `IndexError`. Every component is normalised with its own statistics, whatever its rank.
#[test]
fn recompute_ln_on_single_vectors() {
    let model = tl_model("tl-ln-relu", Processing::none());
    let (logits, cache) = model
        .run_with_cache(
            &TokenBatch::single(vec![4, 8, 15, 16, 23]).unwrap(),
            RunOptions {
                remove_batch_dim: true,
                ..Default::default()
            },
        )
        .unwrap();
    let acc = cache
        .accumulated_resid(AccumulatedResid {
            pos_slice: Slice::Index(-1),
            apply_ln: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(acc.tensor.shape(), [3, cache.cfg().d_model]);
    // The last row through the unembedding gives the logits (unfolded LN: the affine weights are applied too).
    let w = &cache.model().weights;
    let final_row = acc.tensor.index(0, 2).unwrap().unsqueeze(0).unwrap();
    let ours = final_row
        .matmul(DynTensor::new(w.W_U.clone()))
        .unwrap()
        .add(DynTensor::new(w.b_U.clone()))
        .unwrap();
    let theirs = DynTensor::new(logits)
        .index(0, 0)
        .unwrap()
        .index(0, 4)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    assert_isclose(&ours, &theirs, 1e-5, 1e-4, "final_post logit lens");
}

fn filtered(names: &[&str]) -> tlens_cache_core::ActivationCache<B> {
    let model = tl_model("tl-solu", Processing::default());
    let options = RunOptions {
        names_filter: names.into(),
        ..Default::default()
    };
    model.run_with_cache(&prompts(), options).unwrap().1
}

/// TransformerLens's `stack_head_results` first runs `compute_head_results`, which needs `hook_z` of *every* layer;
/// tlens reads (or computes from `hook_z`) only the layers it stacks, and leaves the cache as it is.
#[test]
fn head_stack_reads_only_the_layers_it_stacks() {
    let cache = filtered(&["blocks.0.hook_resid_pre", "blocks.0.attn.hook_z"]);
    let l1 = cache
        .stack_head_results(StackHeadResults {
            layer: Some(1),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(l1.labels, ["L0H0", "L0H1", "L0H2", "L0H3"]);
    assert!(!cache.contains("blocks.0.attn.hook_result"));
    let l0 = cache
        .stack_head_results(StackHeadResults {
            layer: Some(0),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(l0.tensor.shape(), [0, 8, 10, cache.cfg().d_model]);
    let err = cache
        .stack_head_results(StackHeadResults {
            layer: Some(2),
            ..Default::default()
        })
        .unwrap_err();
    assert!(err.to_string().contains("blocks.1.attn.hook_z"), "{err}");
}

/// TransformerLens shapes an empty layer-0 stack like `hook_embed` and fails when a `names_filter` dropped it; any
/// cached residual-stream activation gives the same shape.
#[test]
fn empty_stack_shape_does_not_need_hook_embed() {
    let cache = filtered(&["blocks.0.hook_resid_pre"]);
    let s = cache
        .stack_neuron_results(
            Some(0),
            StackNeuronResults {
                pos_slice: Slice::Index(-1),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(s.tensor.shape(), [0, 8, cache.cfg().d_model]);
    let none = filtered(&["blocks.0.attn.hook_pattern"]);
    let err = none
        .stack_neuron_results(Some(0), StackNeuronResults::default())
        .unwrap_err();
    assert!(err.to_string().contains("hook_embed"), "{err}");
}

/// TransformerLens 3.9 broadcasts a `[batch]` token tensor against the *last* axis of a `[n, batch, pos]` stack, i.e.
/// against positions (an error unless `batch == pos`, and silently wrong when they are equal). As in TransformerLens
/// 4, one token per sequence is broadcast over the kept positions.
#[test]
fn batch_tokens_broadcast_over_positions() {
    let cache = solu_cache();
    let acc = cache
        .accumulated_resid(AccumulatedResid::default())
        .unwrap()
        .tensor; // [3, 8, 10, D]
    let tokens: Vec<i64> = (0..8).collect();
    let per_sequence = cache
        .logit_attrs(
            acc.clone(),
            TokenIds::from(tokens.clone()),
            LogitAttrs::default(),
        )
        .unwrap();
    assert_eq!(per_sequence.shape(), [3, 8, 10]);
    let grid: Vec<i64> = tokens
        .iter()
        .flat_map(|&t| std::iter::repeat_n(t, 10))
        .collect();
    let per_position = cache
        .logit_attrs(
            acc,
            TokenIds::new(grid, vec![8, 10]).unwrap(),
            LogitAttrs::default(),
        )
        .unwrap();
    assert_equal(
        &per_sequence,
        &per_position,
        "[batch] tokens = [batch, pos] tokens repeated over positions",
    );
}
