//! TransformerLens's `tests/acceptance/test_activation_cache.py` (spec §10.1), ported case by case with the same
//! relations and tolerances. solu-2l and attn-only-2l are replaced by the committed tiny `tl-solu` and `tl-attnonly`
//! models (processed as `from_pretrained` does), the eight IOI prompts by eight fixed token rows.
//!
//! Not ported: `toggle_autodiff` (burn's inference tensors carry no autograd state to toggle), the string-token case
//! of `logit_attrs_works_for_all_input_shapes` (the tiny TL models have no tokenizer; the plan runner's string
//! decoding is covered by the gpt2-tiny plans), and the memory-watermark cases 41–42 (see
//! `projection_never_builds_the_neuron_by_d_model_tensor` below for what replaces them).

use crate::common::*;
use tlens_cache_core::{
    AccumulatedResid, ActivationCache, ApplyLnToStack, CacheError, CacheKey, DecomposeMode,
    DecomposeResid, DynTensor, GetFullResidDecomposition, GetNeuronResults, LogitAttrs, Slice,
    StackHeadResults, StackNeuronResults, TokenIds, get_act_name,
};

/// TransformerLens compares these cases with `torch.isclose`'s default `atol` (1e-8) against an einsum computed in the
/// same float32 order as the method; the reference here is exact (f64), and logit differences near zero lose a few
/// float32 ulps to cancellation, so the absolute tolerance is one float32 ulp of the summands (1e-7).
const ATOL_DEFAULT: f32 = 1e-7;

fn pos_last() -> Slice {
    Slice::Index(-1)
}

fn acc_mid_last(cache: &ActivationCache<B>) -> DynTensor<B> {
    cache
        .accumulated_resid(AccumulatedResid {
            layer: Some(-1),
            incl_mid: true,
            pos_slice: pos_last(),
            ..Default::default()
        })
        .unwrap()
        .tensor
}

fn ln_final(cache: &ActivationCache<B>, stack: DynTensor<B>, pos_slice: Slice) -> DynTensor<B> {
    cache
        .apply_ln_to_stack(
            stack,
            ApplyLnToStack {
                layer: Some(-1),
                pos_slice,
                ..Default::default()
            },
        )
        .unwrap()
}

/// The unembedding column of a token, read directly from `W_U`.
fn w_u_column(cache: &ActivationCache<B>, token: i64) -> Vec<f32> {
    let w_u = DynTensor::new(cache.model().weights.W_U.clone());
    let [d, v] = [w_u.shape()[0], w_u.shape()[1]];
    let flat = w_u.to_vec();
    (0..d).map(|i| flat[i * v + token as usize]).collect()
}

/// `Σ_d x[..., d] · dir[d]` (accumulated in f64) for each vector of `x` (`[..., D]`), with one direction per vector (`dirs[i]`) or one
/// for all.
fn dot_rows(x: &DynTensor<B>, dirs: &[Vec<f32>]) -> Vec<f32> {
    let d = *x.shape().last().unwrap();
    x.to_vec()
        .chunks(d)
        .enumerate()
        .map(|(i, row)| {
            let dir = &dirs[i % dirs.len()];
            row.iter()
                .zip(dir)
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum::<f64>() as f32
        })
        .collect()
}

fn diff(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x - y).collect()
}

fn tensor(values: Vec<f32>, shape: &[usize]) -> DynTensor<B> {
    DynTensor::from_data(
        burn_tensor::TensorData::new(values, shape.to_vec()),
        &Default::default(),
    )
    .unwrap()
}

#[test]
fn logit_attrs_matches_reference_code() {
    let cache = solu_cache();
    let ans = answers();
    let acc = acc_mid_last(&cache);
    // Reference: einsum("...bd,bd->...", apply_ln_to_stack(acc), W_U[:, correct] - W_U[:, incorrect]) / batch.
    let scaled = ln_final(&cache, acc.clone(), pos_last());
    let dirs: Vec<Vec<f32>> = ans
        .iter()
        .map(|&(c, i)| diff(&w_u_column(&cache, c), &w_u_column(&cache, i)))
        .collect();
    let per = dot_rows(&scaled, &dirs);
    let reference: Vec<f32> = per.chunks(8).map(|c| c.iter().sum::<f32>() / 8.0).collect();
    let tokens = TokenIds::from(ans.iter().map(|a| a.0).collect::<Vec<_>>());
    let incorrect = TokenIds::from(ans.iter().map(|a| a.1).collect::<Vec<_>>());
    let ours = cache
        .logit_attrs(
            acc,
            tokens,
            LogitAttrs {
                incorrect_tokens: Some(incorrect),
                pos_slice: pos_last(),
                ..Default::default()
            },
        )
        .unwrap();
    let mean: Vec<f32> = ours
        .to_vec()
        .chunks(8)
        .map(|c| c.iter().sum::<f32>() / 8.0)
        .collect();
    assert_isclose(
        &tensor(mean, &[reference.len()]),
        &tensor(reference.clone(), &[reference.len()]),
        1.1e-7,
        1e-5,
        "DLA",
    );
}

#[test]
fn accumulated_resid_on_last_layer_variants() {
    let cache = solu_cache();
    let n = cache.cfg().n_layers as i64;
    let get = |layer| {
        cache
            .accumulated_resid(AccumulatedResid {
                layer,
                incl_mid: true,
                pos_slice: pos_last(),
                ..Default::default()
            })
            .unwrap()
    };
    let (a, b, c) = (get(Some(-1)), get(Some(n)), get(None));
    assert_equal(&a.tensor, &b.tensor, "-1 vs n_layers");
    assert_equal(&a.tensor, &c.tensor, "-1 vs None");
    assert_eq!(a.labels, b.labels);
    assert_eq!(a.labels, c.labels);
}

#[test]
fn accumulated_resid_without_mid() {
    let cache = solu_cache();
    let acc = cache
        .accumulated_resid(AccumulatedResid {
            layer: Some(-1),
            pos_slice: pos_last(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(acc.labels.len(), acc.tensor.shape()[0]);
    assert!(
        acc.labels.iter().all(|l| !l.contains("mid")),
        "{:?}",
        acc.labels
    );
}

#[test]
fn logit_attrs_works_for_all_input_shapes() {
    let cache = solu_cache();
    let ans = answers();
    let acc = acc_mid_last(&cache); // [C, 8, D]
    let c = acc.shape()[0];
    let scaled = ln_final(&cache, acc.clone(), pos_last());
    let dir = |(a, b): (i64, i64)| diff(&w_u_column(&cache, a), &w_u_column(&cache, b));
    let all_dirs: Vec<Vec<f32>> = ans.iter().map(|&p| dir(p)).collect();
    let correct: Vec<i64> = ans.iter().map(|a| a.0).collect();
    let wrong: Vec<i64> = ans.iter().map(|a| a.1).collect();

    // Every sequence of the batch.
    let ours = cache
        .logit_attrs(
            acc.clone(),
            TokenIds::from(correct.clone()),
            LogitAttrs {
                incorrect_tokens: Some(TokenIds::from(wrong.clone())),
                pos_slice: pos_last(),
                ..Default::default()
            },
        )
        .unwrap();
    assert_isclose(
        &ours,
        &tensor(dot_rows(&scaled, &all_dirs), &[c, 8]),
        1e-6,
        1e-4,
        "all batch",
    );

    // The last sequence, as batch_slice=-1 and as Slice(-1), with scalar tokens (0-d tensor and int are one type here).
    let last = ans[7];
    let last_rows = scaled.clone().index(1, 7).unwrap();
    let expected = tensor(dot_rows(&last_rows, &[dir(last)]), &[c]);
    for batch_slice in [Slice::Index(-1), Slice::from(-1i64)] {
        let ours = cache
            .logit_attrs(
                acc.clone(),
                last.0,
                LogitAttrs {
                    incorrect_tokens: Some(TokenIds::scalar(last.1)),
                    pos_slice: pos_last(),
                    batch_slice,
                    ..Default::default()
                },
            )
            .unwrap();
        assert_isclose(&ours, &expected, ATOL_DEFAULT, 1e-5, "batch_slice -1");
    }

    // A stack without a batch axis (acc[:, -1, :]), with has_batch_dim=false and batch_slice=-1 for the scale.
    let no_batch = acc.clone().index(1, 7).unwrap();
    let ours = cache
        .logit_attrs(
            no_batch,
            last.0,
            LogitAttrs {
                incorrect_tokens: Some(TokenIds::scalar(last.1)),
                pos_slice: pos_last(),
                batch_slice: Slice::Index(-1),
                has_batch_dim: false,
            },
        )
        .unwrap();
    assert_isclose(
        &ours,
        &expected,
        ATOL_DEFAULT,
        1e-5,
        "stack without batch axis",
    );

    // A list of sequences.
    let picks = [2usize, 5, 7];
    let ours = cache
        .logit_attrs(
            acc.clone(),
            TokenIds::from(picks.iter().map(|&i| correct[i]).collect::<Vec<_>>()),
            LogitAttrs {
                incorrect_tokens: Some(TokenIds::from(
                    picks.iter().map(|&i| wrong[i]).collect::<Vec<_>>(),
                )),
                pos_slice: pos_last(),
                batch_slice: Slice::Indices(vec![2, 5, 7]),
                ..Default::default()
            },
        )
        .unwrap();
    let picked = scaled.clone().select(1, &picks).unwrap();
    let picked_dirs: Vec<Vec<f32>> = picks.iter().map(|&i| all_dirs[i].clone()).collect();
    assert_isclose(
        &ours,
        &tensor(dot_rows(&picked, &picked_dirs), &[c, 3]),
        ATOL_DEFAULT,
        1e-5,
        "list batch",
    );

    // tokens [3] and incorrect_tokens [3, 1] do not have the same shape.
    let err = cache
        .logit_attrs(
            acc.clone(),
            TokenIds::from(vec![1, 2, 3]),
            LogitAttrs {
                incorrect_tokens: Some(TokenIds::new(vec![4, 5, 6], vec![3, 1]).unwrap()),
                pos_slice: pos_last(),
                batch_slice: Slice::Indices(vec![2, 5, 7]),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(matches!(err, CacheError::Shape(_)), "{err}");

    // No incorrect tokens: the logit itself.
    let ours = cache
        .logit_attrs(
            acc,
            TokenIds::from(correct.clone()),
            LogitAttrs {
                pos_slice: pos_last(),
                ..Default::default()
            },
        )
        .unwrap();
    let correct_dirs: Vec<Vec<f32>> = correct.iter().map(|&t| w_u_column(&cache, t)).collect();
    assert_isclose(
        &ours,
        &tensor(dot_rows(&scaled, &correct_dirs), &[c, 8]),
        1e-6,
        1e-4,
        "no incorrect tokens",
    );
}

#[test]
fn accumulated_resid_with_apply_ln() {
    let cache = solu_cache();
    for (layer, pos_slice) in [(Some(-1), Slice::Index(-1)), (None, Slice::from(-1i64))] {
        let plain = cache
            .accumulated_resid(AccumulatedResid {
                layer,
                incl_mid: true,
                pos_slice: pos_slice.clone(),
                ..Default::default()
            })
            .unwrap();
        let normed = cache
            .accumulated_resid(AccumulatedResid {
                layer,
                incl_mid: true,
                apply_ln: true,
                pos_slice: pos_slice.clone(),
                ..Default::default()
            })
            .unwrap();
        let reference = cache
            .apply_ln_to_stack(
                plain.tensor,
                ApplyLnToStack {
                    layer: Some(-1),
                    pos_slice,
                    recompute_ln: true,
                    ..Default::default()
                },
            )
            .unwrap();
        assert_isclose(&normed.tensor, &reference, 1e-7, 1e-5, "apply_ln");
        assert_eq!(
            normed.labels,
            ["0_pre", "0_mid", "1_pre", "1_mid", "final_post"]
        );
    }
}

#[test]
fn apply_ln_recompute_ln_differs_from_cached() {
    let cache = solu_cache();
    let acc = acc_mid_last(&cache);
    let cached = ln_final(&cache, acc.clone(), pos_last());
    let fresh = cache
        .apply_ln_to_stack(
            acc,
            ApplyLnToStack {
                layer: Some(-1),
                pos_slice: pos_last(),
                recompute_ln: true,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(cached.shape(), fresh.shape());
    let (a, b) = (cached.to_vec(), fresh.to_vec());
    assert!(
        a.iter()
            .zip(&b)
            .any(|(x, y)| (x - y).abs() > 1e-7 + 1e-5 * y.abs()),
        "recompute_ln changed nothing"
    );
}

#[test]
fn decompose_resid_with_apply_ln() {
    let cache = solu_cache();
    let normed = cache
        .decompose_resid(DecomposeResid {
            layer: None,
            pos_slice: Slice::from(-1i64),
            apply_ln: true,
            ..Default::default()
        })
        .unwrap();
    let plain = cache
        .decompose_resid(DecomposeResid {
            layer: Some(-1),
            pos_slice: pos_last(),
            ..Default::default()
        })
        .unwrap();
    let reference = ln_final(&cache, plain.tensor, pos_last());
    assert_isclose(
        &normed.tensor,
        &reference,
        1e-7,
        1e-5,
        "decompose_resid apply_ln",
    );
}

#[test]
fn decompose_resid_including_attention() {
    let cache = solu_cache();
    let dec = cache
        .decompose_resid(DecomposeResid {
            layer: Some(1),
            pos_slice: Slice::from(-1i64),
            mlp_input: true,
            incl_embeds: false,
            mode: DecomposeMode::Attn,
            ..Default::default()
        })
        .unwrap();
    let parts: Vec<_> = (0..2)
        .map(|l| cache.get(("attn_out", l)).unwrap().index(1, 9).unwrap())
        .collect();
    let reference = DynTensor::stack(parts).unwrap();
    assert_isclose(&dec.tensor, &reference, 1e-7, 1e-5, "attention outputs");
    assert_eq!(dec.labels, ["0_attn_out", "1_attn_out"]);
}

#[test]
fn stack_head_results_with_apply_ln() {
    let cache = solu_cache();
    let normed = cache
        .stack_head_results(StackHeadResults {
            layer: Some(-1),
            pos_slice: pos_last(),
            apply_ln: true,
            ..Default::default()
        })
        .unwrap();
    let plain = cache
        .stack_head_results(StackHeadResults {
            layer: Some(-1),
            pos_slice: pos_last(),
            ..Default::default()
        })
        .unwrap();
    let reference = cache
        .apply_ln_to_stack(
            plain.tensor,
            ApplyLnToStack {
                layer: None,
                pos_slice: Slice::from(-1i64),
                ..Default::default()
            },
        )
        .unwrap();
    assert_isclose(&normed.tensor, &reference, 1e-7, 1e-5, "heads apply_ln");
}

#[test]
fn stack_head_results_including_remainder() {
    let cache = solu_cache();
    let with = cache
        .stack_head_results(StackHeadResults {
            layer: Some(1),
            pos_slice: pos_last(),
            incl_remainder: true,
            ..Default::default()
        })
        .unwrap();
    let heads = cache
        .stack_head_results(StackHeadResults {
            layer: Some(1),
            pos_slice: pos_last(),
            ..Default::default()
        })
        .unwrap();
    let stream = cache.get(("resid_post", 0)).unwrap().index(1, 9).unwrap();
    let remainder = stream.sub(heads.tensor.sum_axis(0).unwrap()).unwrap();
    assert_isclose(
        &with.tensor.clone().index(0, 4).unwrap(),
        &remainder,
        1e-6,
        1e-5,
        "remainder",
    );
    let mut labels: Vec<String> = (0..4).map(|h| format!("L0H{h}")).collect();
    labels.push("remainder".into());
    assert_eq!(with.labels, labels);

    // Layer 0 with the remainder: everything is remainder. TransformerLens returns resid_post[-1] (the *final*
    // stream) here; tlens returns the stream entering layer 0 (see divergences.rs).
    let l0 = cache
        .stack_head_results(StackHeadResults {
            layer: Some(0),
            pos_slice: pos_last(),
            incl_remainder: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(l0.labels, ["remainder"]);
    let input = cache
        .get(("resid_pre", 0))
        .unwrap()
        .index(1, 9)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    assert_equal(&l0.tensor, &input, "layer 0 remainder");

    // Layer 0 without: an empty stack.
    let none = cache
        .stack_head_results(StackHeadResults {
            layer: Some(0),
            pos_slice: pos_last(),
            ..Default::default()
        })
        .unwrap();
    assert!(none.labels.is_empty());
    assert_eq!(none.tensor.shape(), [0, 8, cache.cfg().d_model]);
}

#[test]
fn stack_neuron_results_with_apply_ln() {
    let cache = solu_cache();
    let normed = cache
        .stack_neuron_results(
            Some(-1),
            StackNeuronResults {
                pos_slice: pos_last(),
                apply_ln: true,
                ..Default::default()
            },
        )
        .unwrap();
    let plain = cache
        .stack_neuron_results(
            Some(-1),
            StackNeuronResults {
                pos_slice: pos_last(),
                ..Default::default()
            },
        )
        .unwrap();
    let reference = cache
        .apply_ln_to_stack(
            plain.tensor,
            ApplyLnToStack {
                layer: None,
                pos_slice: Slice::from(-1i64),
                ..Default::default()
            },
        )
        .unwrap();
    assert_isclose(&normed.tensor, &reference, 1e-7, 1e-5, "neurons apply_ln");
}

#[test]
fn stack_neuron_results_including_remainder() {
    let cache = solu_cache();
    let m = cache.cfg().d_mlp;
    let with = cache
        .stack_neuron_results(
            Some(1),
            StackNeuronResults {
                pos_slice: pos_last(),
                incl_remainder: true,
                ..Default::default()
            },
        )
        .unwrap();
    let neurons = cache
        .stack_neuron_results(
            Some(1),
            StackNeuronResults {
                pos_slice: pos_last(),
                ..Default::default()
            },
        )
        .unwrap();
    let stream = cache.get(("resid_post", 0)).unwrap().index(1, 9).unwrap();
    let remainder = stream.sub(neurons.tensor.sum_axis(0).unwrap()).unwrap();
    assert_isclose(
        &with.tensor.clone().index(0, m).unwrap(),
        &remainder,
        1e-6,
        1e-5,
        "remainder",
    );
    let mut labels: Vec<String> = (0..m).map(|n| format!("L0N{n}")).collect();
    labels.push("remainder".into());
    assert_eq!(with.labels, labels);

    let l0 = cache
        .stack_neuron_results(
            Some(0),
            StackNeuronResults {
                pos_slice: pos_last(),
                incl_remainder: true,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(l0.labels, ["remainder"]);
    let input = cache
        .get(("resid_pre", 0))
        .unwrap()
        .index(1, 9)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    assert_equal(&l0.tensor, &input, "layer 0 remainder");

    let none = cache
        .stack_neuron_results(
            Some(0),
            StackNeuronResults {
                pos_slice: pos_last(),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(none.labels.is_empty());
    assert_eq!(none.tensor.shape(), [0, 8, cache.cfg().d_model]);
}

#[test]
fn stack_neuron_results_using_neuron_slice() {
    let cache = solu_cache();
    let s = cache
        .stack_neuron_results(
            Some(1),
            StackNeuronResults {
                neuron_slice: Slice::Indices(vec![0, 1, 2]),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(s.labels, ["L0N0", "L0N1", "L0N2"]);
    assert_eq!(s.tensor.shape(), [3, 8, 10, cache.cfg().d_model]);
}

#[test]
fn remove_batch_dim() {
    let model = tl_model("tl-solu", tlens_model::Processing::default());
    let one = tlens_model::TokenBatch::single(vec![1, 2, 3, 4]).unwrap();
    let mut cache = run(&model, &one);
    let before: Vec<Vec<usize>> = cache.values().map(|t| t.shape()).collect();
    assert!(before.iter().all(|s| s[0] == 1));
    cache.remove_batch_dim(None).unwrap();
    assert!(!cache.has_batch_dim());
    for (b, a) in before.iter().zip(cache.values()) {
        assert_eq!(&b[1..], a.shape().as_slice());
    }
    let after: Vec<Vec<usize>> = cache.values().map(|t| t.shape()).collect();
    cache.remove_batch_dim(None).unwrap(); // a second call changes nothing
    assert_eq!(after, cache.values().map(|t| t.shape()).collect::<Vec<_>>());
    assert!(!cache.has_batch_dim());
}

#[test]
fn remove_batch_dim_fails_if_batch_gt_1() {
    let mut cache = solu_cache();
    let err = cache.remove_batch_dim(None).unwrap_err();
    assert!(matches!(err, CacheError::InvalidArgument(_)), "{err}");
    assert!(
        cache.has_batch_dim(),
        "a failed remove_batch_dim leaves the cache as it was"
    );
    assert_eq!(cache.get(("resid_pre", 0)).unwrap().shape()[0], 8);
}

#[test]
fn retrieve_activations() {
    let cache = solu_cache();
    let n = cache.cfg().n_layers as i64;
    assert_equal(
        &cache.get(("scale", 1, "ln1")).unwrap(),
        &cache
            .get(get_act_name("scale", Some(1), Some("ln1")))
            .unwrap(),
        "(scale, 1, ln1)",
    );
    assert_equal(
        &cache.get(("scale", -1, "ln1")).unwrap(),
        &cache.get(format!("scale{}ln1", n - 1)).unwrap(),
        "(scale, -1, ln1)",
    );
    assert_equal(
        &cache
            .get(CacheKey::Parts("k".into(), Some(-1), None))
            .unwrap(),
        &cache.get(format!("blocks.{}.attn.hook_k", n - 1)).unwrap(),
        "(k, -1, None)",
    );
    assert_equal(
        &cache.get("embed").unwrap(),
        &cache.get("hook_embed").unwrap(),
        "embed",
    );
    assert_equal(
        &cache
            .get(CacheKey::Parts("embed".into(), None, None))
            .unwrap(),
        &cache.get("hook_embed").unwrap(),
        "(embed, None)",
    );
}

#[test]
fn items_values_and_keys_follow_firing_order() {
    let model = tl_model("tl-solu", tlens_model::Processing::default());
    let cache = run(&model, &prompts());
    let names = model.hook_names();
    assert_eq!(
        cache.keys().collect::<Vec<_>>(),
        names.iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert_eq!(cache.len(), names.len());
    for ((key, value), (v, name)) in cache.items().zip(cache.values().zip(&names)) {
        assert_eq!(key, name);
        assert_equal(&value, &v, key);
        assert_equal(&value, &cache.get(key).unwrap(), key);
    }
}

#[test]
fn apply_slice_to_batch_dim() {
    let cache = solu_cache();
    let sliced = cache.apply_slice_to_batch_dim(Slice::range(2, 4)).unwrap();
    assert!(sliced.has_batch_dim());
    for (key, t) in cache.items() {
        assert_equal(
            &sliced.get(key).unwrap(),
            &t.clone().narrow(0, 2, 2).unwrap(),
            key,
        );
    }
    let one = cache.apply_slice_to_batch_dim(2).unwrap();
    assert!(!one.has_batch_dim());
    for (key, t) in cache.items() {
        assert_equal(&one.get(key).unwrap(), &t.clone().index(0, 2).unwrap(), key);
    }
}

#[test]
fn stack_activation() {
    let cache = solu_cache();
    let stacked = cache
        .stack_activation("scale", Some(-1), Some("ln1"))
        .unwrap();
    for l in 0..2 {
        assert_equal(
            &stacked.clone().index(0, l).unwrap(),
            &cache.get(("scale", l as i64, "ln1")).unwrap(),
            "layer scale",
        );
    }
    let first = cache
        .stack_activation("scale", Some(1), Some("ln1"))
        .unwrap();
    assert_eq!(first.shape()[0], 1);
    assert_equal(
        &first.index(0, 0).unwrap(),
        &cache.get(("scale", 0, "ln1")).unwrap(),
        "layer 0 scale",
    );
}

#[test]
fn get_full_resid_decomposition() {
    let cache = solu_cache();
    let (h, l) = (cache.cfg().n_heads, cache.cfg().n_layers);
    let full = cache
        .get_full_resid_decomposition(GetFullResidDecomposition {
            layer: Some(-1),
            pos_slice: pos_last(),
            apply_ln: true,
            expand_neurons: false,
            ..Default::default()
        })
        .unwrap();
    let heads = cache
        .stack_head_results(StackHeadResults {
            layer: Some(-1),
            pos_slice: Slice::from(-1i64),
            apply_ln: true,
            ..Default::default()
        })
        .unwrap();
    assert_isclose(
        &rows(&full.tensor, 0, h * l),
        &heads.tensor,
        1e-7,
        1e-5,
        "heads",
    );
    assert_eq!(full.labels[..h * l], heads.labels[..]);
    let mlps = cache
        .decompose_resid(DecomposeResid {
            layer: Some(-1),
            mode: DecomposeMode::Mlp,
            pos_slice: pos_last(),
            apply_ln: true,
            incl_embeds: false,
            ..Default::default()
        })
        .unwrap();
    assert_isclose(
        &rows(&full.tensor, h * l, l),
        &mlps.tensor,
        1e-7,
        1e-5,
        "mlp outputs",
    );
    assert_eq!(full.labels[h * l..h * l + l], mlps.labels[..]);
    let mut at = h * l + l;
    for (label, key) in [("embed", "embed"), ("pos_embed", "pos_embed")] {
        let row = cache
            .get(key)
            .unwrap()
            .index(1, 9)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let expected = ln_final(&cache, row, pos_last());
        assert_isclose(&rows(&full.tensor, at, 1), &expected, 1e-7, 1e-5, label);
        assert_eq!(full.labels[at], label);
        at += 1;
    }
    let bias = cache
        .model()
        .accumulated_bias(l, false, false)
        .unwrap()
        .expand(&[1, 8, cache.cfg().d_model])
        .unwrap();
    assert_isclose(
        &rows(&full.tensor, at, 1),
        &ln_final(&cache, bias, pos_last()),
        1e-7,
        1e-5,
        "bias",
    );
    assert_eq!(full.labels[at], "bias");
    assert_eq!(full.labels.len(), at + 1);
}

#[test]
fn get_full_resid_decomposition_with_neurons_expanded() {
    let cache = solu_cache();
    let h = cache.cfg().n_heads;
    let full = cache
        .get_full_resid_decomposition(GetFullResidDecomposition {
            layer: Some(1),
            pos_slice: pos_last(),
            apply_ln: true,
            ..Default::default()
        })
        .unwrap();
    let neurons = cache
        .stack_neuron_results(
            Some(1),
            StackNeuronResults {
                pos_slice: pos_last(),
                ..Default::default()
            },
        )
        .unwrap();
    let expected = cache
        .apply_ln_to_stack(
            neurons.tensor,
            ApplyLnToStack {
                layer: Some(1),
                pos_slice: Slice::from(-1i64),
                ..Default::default()
            },
        )
        .unwrap();
    let m = neurons.labels.len();
    assert_isclose(&rows(&full.tensor, h, m), &expected, 1e-7, 1e-5, "neurons");
    assert_eq!(full.labels[h..h + m], neurons.labels[..]);
}

#[test]
fn get_full_resid_decomposition_without_applying_ln() {
    let cache = solu_cache();
    let h = cache.cfg().n_heads;
    let full = cache
        .get_full_resid_decomposition(GetFullResidDecomposition {
            layer: Some(1),
            pos_slice: pos_last(),
            ..Default::default()
        })
        .unwrap();
    let neurons = cache
        .stack_neuron_results(
            Some(1),
            StackNeuronResults {
                pos_slice: pos_last(),
                ..Default::default()
            },
        )
        .unwrap();
    let m = neurons.labels.len();
    assert_isclose(
        &rows(&full.tensor, h, m),
        &neurons.tensor,
        1e-7,
        1e-5,
        "neurons",
    );
    assert_eq!(full.labels[h..h + m], neurons.labels[..]);
}

#[test]
fn get_full_resid_decomposition_attn_only_model() {
    let cache = attn_only_cache();
    let h = cache.cfg().n_heads;
    let full = cache
        .get_full_resid_decomposition(GetFullResidDecomposition {
            layer: Some(1),
            expand_neurons: false,
            ..Default::default()
        })
        .unwrap();
    let heads = cache
        .stack_head_results(StackHeadResults {
            layer: Some(1),
            ..Default::default()
        })
        .unwrap();
    assert_isclose(
        &rows(&full.tensor, 0, h),
        &heads.tensor,
        1e-7,
        1e-5,
        "heads",
    );
    assert_eq!(
        full.labels,
        ["L0H0", "L0H1", "L0H2", "L0H3", "embed", "pos_embed", "bias"]
    );
}

/// `compute_head_results` keeps each layer's result as a view of its heads-first product, and `stack_head_results`
/// reads it back as a view: the stack, normalised in place by `apply_ln`, must still be memory of its own, whether it
/// has one layer's rows (nothing concatenated) or several.
#[test]
fn stack_head_results_never_writes_into_the_cache() {
    let mut cache = attn_only_cache();
    cache.compute_head_results().unwrap();
    let keys = ["blocks.0.attn.hook_result", "blocks.1.attn.hook_result"];
    let before: Vec<Vec<f32>> = keys
        .iter()
        .map(|k| cache.get(*k).unwrap().to_vec())
        .collect();
    for layer in [1, -1] {
        let stack = cache
            .stack_head_results(StackHeadResults {
                layer: Some(layer),
                apply_ln: true,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(stack.tensor.shape()[0], 4 * if layer == 1 { 1 } else { 2 });
    }
    for (key, values) in keys.iter().zip(&before) {
        assert_eq!(&cache.get(*key).unwrap().to_vec(), values, "{key}");
    }
    let result = cache.get(keys[0]).unwrap();
    let rows = cache
        .stack_head_results(StackHeadResults {
            layer: Some(1),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        rows.tensor.to_vec(),
        result.movedim(-2, 0).unwrap().to_vec()
    );
}

#[test]
fn compute_test_head_results_does_not_compute_results_twice() {
    let cache = attn_only_cache();
    assert!(!cache.contains("blocks.0.attn.hook_result"));
    let mut computed = cache.clone();
    computed.compute_head_results().unwrap();
    assert!(computed.contains("blocks.0.attn.hook_result"));
    // TransformerLens pokes `inf` into the cached result and checks that a second call keeps it. The cache has no
    // item assignment, so build one whose layer-0 result is already `inf` everywhere.
    let poisoned: indexmap::IndexMap<String, DynTensor<B>> = computed
        .items()
        .map(|(k, v)| {
            let v = if k == "blocks.0.attn.hook_result" {
                v.map(|t| t.zeros_like().add_scalar(f32::INFINITY))
            } else {
                v
            };
            (k.to_string(), v)
        })
        .collect();
    let mut poisoned = ActivationCache::new(
        poisoned,
        computed.model().clone(),
        computed.run_options().clone(),
    );
    poisoned.compute_head_results().unwrap();
    assert!(poisoned.get("blocks.0.attn.hook_result").unwrap().to_vec()[0].is_infinite());
}

#[test]
fn get_neuron_results() {
    let cache = solu_cache();
    let result = cache
        .get_neuron_results(
            1,
            GetNeuronResults {
                neuron_slice: Slice::Indices(vec![0, 1]),
                pos_slice: Slice::Index(-1),
                ..Default::default()
            },
        )
        .unwrap();
    let post = cache
        .get(("post", 1))
        .unwrap()
        .index(1, 9)
        .unwrap()
        .narrow(-1, 0, 2)
        .unwrap();
    let w_out = DynTensor::new(
        cache.model().weights.blocks[1]
            .mlp
            .as_ref()
            .unwrap()
            .W_out
            .clone(),
    )
    .narrow(0, 0, 2)
    .unwrap();
    let expected = post.unsqueeze(-1).unwrap().mul(w_out).unwrap();
    assert_isclose(
        &result,
        &expected,
        1e-8,
        1e-5,
        "post[:, -1, :2, None] * W_out[:2]",
    );
}

#[test]
fn get_neuron_results_without_slice() {
    let cache = solu_cache();
    let result = cache
        .get_neuron_results(1, GetNeuronResults::default())
        .unwrap();
    let post = cache.get(("post", 1)).unwrap();
    let w_out = DynTensor::new(
        cache.model().weights.blocks[1]
            .mlp
            .as_ref()
            .unwrap()
            .W_out
            .clone(),
    );
    assert_equal(
        &result,
        &post.unsqueeze(-1).unwrap().mul(w_out).unwrap(),
        "post[..., None] * W_out",
    );
}

#[test]
fn get_neuron_results_project_output_onto_1d_and_2d() {
    let cache = solu_cache();
    let d = cache.cfg().d_model;
    let m = cache.cfg().d_mlp;
    let full = cache
        .get_neuron_results(1, GetNeuronResults::default())
        .unwrap();
    for (p, shape) in [
        (random(&[d], 1), vec![8, 10, m]),
        (random(&[d, 3], 2), vec![8, 10, m, 3]),
    ] {
        let projected = cache
            .get_neuron_results(
                1,
                GetNeuronResults {
                    project_output_onto: Some(p.clone()),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(projected.shape(), shape);
        assert_allclose(&projected, &at(full.clone(), &p), 1e-5, "projection");
    }
}

#[test]
fn stack_neuron_results_project_output_onto_matches_unprojected() {
    let cache = solu_cache();
    let d = cache.cfg().d_model;
    let base = StackNeuronResults {
        pos_slice: pos_last(),
        ..Default::default()
    };
    let full = cache.stack_neuron_results(None, base.clone()).unwrap();
    for p in [random(&[d], 3), random(&[d, 4], 4)] {
        let projected = cache
            .stack_neuron_results(
                None,
                StackNeuronResults {
                    project_output_onto: Some(p.clone()),
                    ..base.clone()
                },
            )
            .unwrap();
        assert_allclose(
            &projected.tensor,
            &at(full.tensor.clone(), &p),
            1e-5,
            "projected neurons",
        );
        assert_eq!(projected.labels, full.labels);
    }
}

#[test]
fn stack_neuron_results_project_output_onto_incl_remainder() {
    let cache = solu_cache();
    let d = cache.cfg().d_model;
    let base = StackNeuronResults {
        pos_slice: pos_last(),
        incl_remainder: true,
        ..Default::default()
    };
    let full = cache.stack_neuron_results(None, base.clone()).unwrap();
    for p in [random(&[d], 5), random(&[d, 2], 6)] {
        let projected = cache
            .stack_neuron_results(
                None,
                StackNeuronResults {
                    project_output_onto: Some(p.clone()),
                    ..base.clone()
                },
            )
            .unwrap();
        assert_allclose(
            &projected.tensor,
            &at(full.tensor.clone(), &p),
            1e-5,
            "projected neurons with remainder",
        );
        assert_eq!(projected.labels.last().unwrap(), "remainder");
    }
}

#[test]
fn get_full_resid_decomposition_project_output_onto_1d_and_2d() {
    let cache = solu_cache();
    let d = cache.cfg().d_model;
    let full = cache
        .get_full_resid_decomposition(GetFullResidDecomposition {
            pos_slice: pos_last(),
            ..Default::default()
        })
        .unwrap();
    for p in [random(&[d], 7), random(&[d, 2], 8)] {
        let projected = cache
            .get_full_resid_decomposition(GetFullResidDecomposition {
                pos_slice: pos_last(),
                project_output_onto: Some(p.clone()),
                ..Default::default()
            })
            .unwrap();
        assert_allclose(
            &projected.tensor,
            &at(full.tensor.clone(), &p),
            1e-4,
            "projected decomposition",
        );
        assert_eq!(projected.labels, full.labels);
    }
}

#[test]
fn stack_neuron_results_apply_ln_with_projection() {
    let cache = solu_cache();
    let d = cache.cfg().d_model;
    for incl_remainder in [false, true] {
        let base = StackNeuronResults {
            pos_slice: pos_last(),
            apply_ln: true,
            incl_remainder,
            ..Default::default()
        };
        let unfused = cache.stack_neuron_results(None, base.clone()).unwrap();
        for p in [random(&[d], 9), random(&[d, 3], 10)] {
            let fused = cache
                .stack_neuron_results(
                    None,
                    StackNeuronResults {
                        project_output_onto: Some(p.clone()),
                        ..base.clone()
                    },
                )
                .unwrap();
            assert_allclose(
                &fused.tensor,
                &at(unfused.tensor.clone(), &p),
                1e-5,
                "fused LN projection",
            );
            assert_eq!(fused.labels, unfused.labels);
        }
    }
}

#[test]
fn get_full_resid_decomposition_apply_ln_with_projection() {
    let cache = solu_cache();
    let d = cache.cfg().d_model;
    let unfused = cache
        .get_full_resid_decomposition(GetFullResidDecomposition {
            apply_ln: true,
            ..Default::default()
        })
        .unwrap();
    for p in [random(&[d], 11), random(&[d, 2], 12)] {
        let fused = cache
            .get_full_resid_decomposition(GetFullResidDecomposition {
                apply_ln: true,
                project_output_onto: Some(p.clone()),
                ..Default::default()
            })
            .unwrap();
        assert_allclose(
            &fused.tensor,
            &at(unfused.tensor.clone(), &p),
            1e-4,
            "fused decomposition",
        );
    }
}

/// Replaces the memory-watermark cases (TransformerLens counts the largest tensor allocated): here the projected
/// neuron stack is checked on a cache whose `[..., d_mlp, d_model]` product would be large, and the result has only
/// `[..., d_mlp]` per layer. The code builds every neuron row as `acts[..., None] * (W_out @ p)`, never `acts * W_out`.
#[test]
fn projection_never_builds_the_neuron_by_d_model_tensor() {
    let cache = solu_cache();
    let d = cache.cfg().d_model;
    let m = cache.cfg().d_mlp;
    let p = random(&[d], 13);
    for apply_ln in [false, true] {
        let s = cache
            .stack_neuron_results(
                None,
                StackNeuronResults {
                    apply_ln,
                    project_output_onto: Some(p.clone()),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(s.tensor.shape(), [2 * m, 8, 10]);
    }
}

#[test]
fn logit_lens_final_row_is_the_model_output() {
    use tlens_cache_core::{LensOutput, LogitLens};
    let model = tl_model("tl-ln-relu", tlens_model::Processing::none()); // unfolded LN: ln_final's weights matter
    let (logits, cache) = model
        .run_with_cache(&prompts(), tlens_cache_core::RunOptions::default())
        .unwrap();
    let logits = DynTensor::new(logits);
    let lens = cache
        .logit_lens(LogitLens {
            incl_mid: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        lens.labels,
        ["0_pre", "0_mid", "1_pre", "1_mid", "final_post"]
    );
    assert_isclose(
        &lens.tensor.clone().index(0, 4).unwrap(),
        &logits,
        1e-5,
        1e-4,
        "final_post logits",
    );

    let targets = TokenIds::from(vec![5, 0, 17]);
    let probs = cache
        .logit_lens(LogitLens {
            targets: Some(targets),
            return_type: LensOutput::Probs,
            pos_slice: pos_last(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(probs.tensor.shape(), [3, 8, 3]);
    let full = logits
        .index(1, 9)
        .unwrap()
        .map(|t| burn_tensor::activation::softmax(t, 5))
        .select(-1, &[5, 0, 17])
        .unwrap();
    assert_isclose(
        &probs.tensor.index(0, 2).unwrap(),
        &full,
        1e-6,
        1e-4,
        "final_post probabilities",
    );
}

#[test]
fn to_keeps_every_activation() {
    let cache = solu_cache();
    let moved = cache.clone().to(&Default::default());
    assert_eq!(
        moved.keys().collect::<Vec<_>>(),
        cache.keys().collect::<Vec<_>>()
    );
    for (key, value) in cache.items() {
        assert_equal(&moved.get(key).unwrap(), &value, key);
    }
}
