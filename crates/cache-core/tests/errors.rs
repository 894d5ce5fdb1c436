//! Every failure a caller can cause is a typed `CacheError`, checked before burn sees a shape (burn panics).

use crate::common::*;
use tlens_cache_core::{
    AccumulatedResid, ApplyLnToStack, CacheError, DecomposeResid, GetFullResidDecomposition,
    GetNeuronResults, LogitAttrs, RunOptions, Slice, StackHeadResults, StackNeuronResults,
    TokenIds,
};
use tlens_model::Processing;

#[test]
fn unknown_keys_suggest_close_ones() {
    let cache = solu_cache();
    match cache.get("blocks.0.hook_resid_pr").unwrap_err() {
        CacheError::UnknownKey { key, suggestions } => {
            assert_eq!(key, "blocks.0.hook_resid_pr");
            assert_eq!(suggestions[0], "blocks.0.hook_resid_pre");
        }
        other => panic!("{other}"),
    }
}

#[test]
fn layers_out_of_range_are_errors() {
    let cache = solu_cache();
    let out = |r: Result<_, CacheError>| matches!(r, Err(CacheError::LayerOutOfRange { .. }));
    assert!(out(cache
        .accumulated_resid(AccumulatedResid {
            layer: Some(3),
            ..Default::default()
        })
        .map(|_| ())));
    assert!(out(cache
        .accumulated_resid(AccumulatedResid {
            layer: Some(-2),
            ..Default::default()
        })
        .map(|_| ())));
    assert!(out(cache
        .decompose_resid(DecomposeResid {
            layer: Some(5),
            ..Default::default()
        })
        .map(|_| ())));
    assert!(out(cache
        .decompose_resid(DecomposeResid {
            mlp_input: true,
            ..Default::default()
        })
        .map(|_| ())));
    assert!(out(cache
        .stack_head_results(StackHeadResults {
            layer: Some(7),
            ..Default::default()
        })
        .map(|_| ())));
    assert!(out(cache
        .stack_neuron_results(Some(3), StackNeuronResults::default())
        .map(|_| ())));
    assert!(out(cache
        .get_neuron_results(2, GetNeuronResults::default())
        .map(|_| ())));
    assert!(out(cache
        .get_neuron_results(-3, GetNeuronResults::default())
        .map(|_| ())));
    assert!(out(cache
        .stack_activation("resid_pre", Some(9), None)
        .map(|_| ())));
    assert!(out(cache
        .model()
        .accumulated_bias(2, true, true)
        .map(|_| ())));
    assert!(out(cache
        .get_full_resid_decomposition(GetFullResidDecomposition {
            mlp_input: true,
            ..Default::default()
        })
        .map(|_| ())));
    let acc = cache
        .accumulated_resid(AccumulatedResid::default())
        .unwrap()
        .tensor;
    assert!(out(cache
        .apply_ln_to_stack(
            acc,
            ApplyLnToStack {
                layer: Some(-2),
                ..Default::default()
            }
        )
        .map(|_| ())));
    // get_neuron_results takes Python-style negative layers.
    assert!(
        cache
            .get_neuron_results(-1, GetNeuronResults::default())
            .is_ok()
    );
}

#[test]
fn slices_out_of_range_are_errors() {
    let cache = solu_cache();
    let err = cache
        .accumulated_resid(AccumulatedResid {
            pos_slice: Slice::Index(10),
            ..Default::default()
        })
        .unwrap_err();
    assert!(
        matches!(
            err,
            CacheError::SliceOutOfRange {
                index: 10,
                len: 10,
                ..
            }
        ),
        "{err}"
    );
    let err = cache
        .stack_neuron_results(
            Some(1),
            StackNeuronResults {
                neuron_slice: Slice::Indices(vec![0, 64]),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(
        matches!(err, CacheError::SliceOutOfRange { index: 64, .. }),
        "{err}"
    );
    assert!(cache.apply_slice_to_batch_dim(Slice::Index(-9)).is_err());
}

#[test]
fn token_problems_are_errors() {
    let cache = solu_cache();
    let acc = cache
        .accumulated_resid(AccumulatedResid {
            pos_slice: Slice::Index(-1),
            ..Default::default()
        })
        .unwrap()
        .tensor;
    let la = |tokens: TokenIds, incorrect: Option<TokenIds>| {
        cache.logit_attrs(
            acc.clone(),
            tokens,
            LogitAttrs {
                incorrect_tokens: incorrect,
                pos_slice: Slice::Index(-1),
                ..Default::default()
            },
        )
    };
    assert!(matches!(
        la(TokenIds::scalar(3), Some(TokenIds::from(vec![4]))),
        Err(CacheError::Shape(_))
    ));
    assert!(matches!(
        la(TokenIds::scalar(50), None),
        Err(CacheError::InvalidArgument(_))
    ));
    assert!(matches!(
        la(TokenIds::scalar(-1), None),
        Err(CacheError::InvalidArgument(_))
    ));
    // Eight tokens fit the batch; three do not fit anything.
    assert!(la(TokenIds::from(vec![1; 8]), None).is_ok());
    assert!(matches!(
        la(TokenIds::from(vec![1, 2, 3]), None),
        Err(CacheError::Shape(_))
    ));
    assert!(TokenIds::new(vec![1, 2, 3], vec![2, 2]).is_err());
}

#[test]
fn stacks_that_do_not_fit_the_cache_are_errors() {
    let cache = solu_cache();
    let d = cache.cfg().d_model;
    // Wrong d_model.
    let wrong_d = random(&[3, 8, 10, d + 1], 1);
    assert!(matches!(
        cache.apply_ln_to_stack(wrong_d, ApplyLnToStack::default()),
        Err(CacheError::Shape(_))
    ));
    // Full positions, but the scale was pos-sliced.
    let full = random(&[3, 8, 10, d], 2);
    let err = cache
        .apply_ln_to_stack(
            full.clone(),
            ApplyLnToStack {
                pos_slice: Slice::Index(-1),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("ln_final.hook_scale"), "{err}");
    // A batch slice on a stack without a batch axis.
    let flat = random(&[3, d], 3);
    assert!(matches!(
        cache.apply_ln_to_stack(
            flat,
            ApplyLnToStack {
                batch_slice: Slice::Index(0),
                ..Default::default()
            }
        ),
        Err(CacheError::Shape(_))
    ));
    // A projection of the wrong width.
    let p = random(&[d + 2], 4);
    let err = cache
        .get_neuron_results(
            0,
            GetNeuronResults {
                project_output_onto: Some(p.clone()),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(matches!(err, CacheError::Shape(_)), "{err}");
    assert!(
        cache
            .stack_neuron_results(
                None,
                StackNeuronResults {
                    project_output_onto: Some(p),
                    apply_ln: true,
                    ..Default::default()
                }
            )
            .is_err()
    );
}

#[test]
fn missing_activations_name_the_hook() {
    let model = tl_model("tl-solu", Processing::default());
    let options = RunOptions {
        names_filter: (&["blocks.0.hook_resid_pre"][..]).into(),
        ..Default::default()
    };
    let cache = model.run_with_cache(&prompts(), options).unwrap().1;
    let err = cache
        .accumulated_resid(AccumulatedResid::default())
        .unwrap_err();
    match &err {
        CacheError::MissingActivation { key, method, .. } => {
            assert_eq!(key, "blocks.1.hook_resid_pre");
            assert_eq!(*method, "accumulated_resid");
        }
        other => panic!("{other}"),
    }
    let mut cache = cache;
    assert!(matches!(
        cache.compute_head_results(),
        Err(CacheError::MissingActivation { .. })
    ));

    let stopped = model
        .run_with_cache(
            &prompts(),
            RunOptions {
                stop_at_layer: Some(1),
                ..Default::default()
            },
        )
        .unwrap()
        .1;
    let err = stopped
        .decompose_resid(DecomposeResid::default())
        .unwrap_err();
    assert!(err.to_string().contains("stopped at layer 1"), "{err}");
}

#[test]
fn attention_only_models_have_no_neurons() {
    let cache = attn_only_cache();
    assert!(matches!(
        cache.get_neuron_results(0, GetNeuronResults::default()),
        Err(CacheError::Unsupported(_))
    ));
    assert!(matches!(
        cache.stack_neuron_results(Some(1), StackNeuronResults::default()),
        Err(CacheError::Unsupported(_))
    ));
    // The accumulated snapshots need resid_mid, which attention-only blocks do not have.
    let err = cache
        .accumulated_resid(AccumulatedResid {
            incl_mid: true,
            ..Default::default()
        })
        .unwrap_err();
    assert!(matches!(err, CacheError::MissingActivation { .. }), "{err}");
}
