//! The model's identities and its errors on bad input, on the committed tiny models.
//!
//! Tolerances: identities that are one float addition in the forward pass hold to 1e-6 absolute; sums over heads or a
//! different processing of the same weights to 1e-5 absolute + 1e-4 relative (plan-format.md's f32 tolerance).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn_tensor::{Tensor, TensorData, activation::log_softmax};
use tlens::backend::NdArray;
use tlens::cache_core::save::{NamedTensor, write_safetensors};
use tlens::model::LoadedModel;
use tlens::model::safetensors_file::TensorFile;
use tlens::parity::{PlanOutput, Tolerance, compare};
use tlens::{
    ActivationCache, CacheError, DynTensor, HookedTransformer, ModelError, NamesFilter, Processing,
    RunOptions, TokenBatch, load_hf, load_transformerlens,
};

type B = NdArray;

fn models() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/models")
}

fn gpt2(processing: Processing) -> LoadedModel<B> {
    load_hf::<B>(&models().join("gpt2-tiny"), processing, &Default::default()).unwrap()
}

fn tl(name: &str) -> HookedTransformer<B> {
    let dir = models().join(name);
    load_transformerlens::<B>(
        &dir.join("config.json"),
        &dir.join("weights.safetensors"),
        Processing::none(),
        &Default::default(),
    )
    .unwrap()
}

fn tokens() -> TokenBatch {
    TokenBatch::new(&[
        vec![0, 294, 298, 265, 290, 284, 261, 260],
        vec![0, 294, 291, 265, 293, 284, 261, 260],
    ])
    .unwrap()
}

fn small_tokens() -> TokenBatch {
    TokenBatch::new(&[vec![0, 7, 3, 12, 44, 9], vec![1, 2, 3, 4, 5, 6]]).unwrap()
}

fn values(t: DynTensor<B>) -> Vec<f32> {
    t.to_vec()
}

fn assert_close(a: &[f32], b: &[f32], atol: f32, rtol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= atol + rtol * y.abs(),
            "{what}: element {i}: {x} vs {y}"
        );
    }
}

fn run(model: &HookedTransformer<B>, tokens: &TokenBatch) -> (Tensor<B, 3>, ActivationCache<B>) {
    model.run_with_cache(tokens, RunOptions::default()).unwrap()
}

#[test]
fn residual_stream_identities_hold_per_layer() {
    for (model, toks) in [
        (gpt2(Processing::default()).model, tokens()),
        (tl("tl-solu"), small_tokens()),
        (tl("tl-rms-silu"), small_tokens()),
    ] {
        let (_, cache) = run(&model, &toks);
        for l in 0..model.cfg().n_layers {
            let get = |n: &str| cache.get((n, l)).unwrap();
            let mid = get("resid_pre").add(get("attn_out")).unwrap();
            assert_close(
                &values(mid),
                &values(get("resid_mid")),
                1e-6,
                0.0,
                "resid_pre + attn_out = resid_mid",
            );
            let post = get("resid_mid").add(get("mlp_out")).unwrap();
            assert_close(
                &values(post),
                &values(get("resid_post")),
                1e-6,
                0.0,
                "resid_mid + mlp_out = resid_post",
            );
        }
    }
}

#[test]
fn head_results_sum_to_attn_out() {
    let model = tl("tl-ln-relu");
    assert!(model.cfg().use_attn_result);
    let (_, cache) = run(&model, &small_tokens());
    for l in 0..2 {
        let result = cache.get(("result", l)).unwrap();
        assert_eq!(result.shape(), vec![2, 6, 4, 32]);
        let b_o = DynTensor::new(model.weights().blocks[l].attn.b_O.clone());
        let summed = result.sum_axis(-2).unwrap().add(b_o).unwrap();
        assert_close(
            &values(summed),
            &values(cache.get(("attn_out", l)).unwrap()),
            1e-5,
            1e-4,
            "Σ_h result + b_O = attn_out",
        );
    }
}

#[test]
fn hooks_fire_in_transformerlens_order_with_their_shapes() {
    let model = tl("tl-solu");
    let (_, cache) = run(&model, &small_tokens());
    assert_eq!(
        cache.keys().map(str::to_string).collect::<Vec<_>>(),
        model.hook_names()
    );
    let expected: &[(&str, &[usize])] = &[
        ("hook_embed", &[2, 6, 32]),
        ("blocks.0.ln1.hook_scale", &[2, 6, 1]),
        ("blocks.0.attn.hook_q", &[2, 6, 4, 8]),
        ("blocks.0.attn.hook_pattern", &[2, 4, 6, 6]),
        ("blocks.0.mlp.hook_mid", &[2, 6, 64]),
        ("blocks.0.mlp.ln.hook_normalized", &[2, 6, 64]),
        ("blocks.1.hook_mlp_out", &[2, 6, 32]),
        ("ln_final.hook_scale", &[2, 6, 1]),
        ("unembed.hook_out", &[2, 6, 50]),
    ];
    for (name, shape) in expected {
        assert_eq!(cache.get(*name).unwrap().shape(), shape.to_vec(), "{name}");
    }
    // 2 embeddings, 20 per SoLU block, 4 at the end, as TransformerLens's test_cache_hook_names.
    assert_eq!(cache.len(), 2 + 2 * 20 + 4);
}

#[test]
fn every_model_fires_exactly_its_schema_hooks_in_order() {
    let mut models: Vec<(String, HookedTransformer<B>)> = [
        "tl-ln-relu",
        "tl-lnpre-gelu",
        "tl-rms-silu",
        "tl-rmspre-gelufast",
        "tl-none-gelunew",
        "tl-attnonly",
        "tl-solu",
    ]
    .iter()
    .map(|n| (n.to_string(), tl(n)))
    .collect();
    models.push(("gpt2-tiny".into(), gpt2(Processing::default()).model));
    for (name, model) in models {
        let (_, cache) = run(&model, &small_tokens());
        assert_eq!(
            cache.keys().collect::<Vec<_>>(),
            model.hook_names(),
            "{name}"
        );
    }
}

#[test]
fn unprocessed_logits_equal_hugging_face_logits() {
    let golden = PlanOutput::read(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden/gpt2-tiny.hf-logits.safetensors"),
    )
    .unwrap();
    let (shape, toks) = &golden.tensors["tokens"];
    let rows: Vec<Vec<u32>> = toks
        .chunks(shape[1])
        .map(|r| r.iter().map(|&t| t as u32).collect())
        .collect();
    let logits = gpt2(Processing::none())
        .model
        .forward(&TokenBatch::new(&rows).unwrap())
        .unwrap();
    let ours = values(DynTensor::new(logits));
    let hf: Vec<f32> = golden.tensors["logits"]
        .1
        .iter()
        .map(|&v| v as f32)
        .collect();
    assert_close(&ours, &hf, 1e-5, 1e-4, "unprocessed logits vs Hugging Face");
}

#[test]
fn processing_keeps_log_probs() {
    let toks = tokens();
    let log_probs = |p: Processing| {
        values(DynTensor::new(log_softmax(
            gpt2(p).model.forward(&toks).unwrap(),
            2,
        )))
    };
    let raw = log_probs(Processing::none());
    for p in [
        Processing::default(),
        Processing {
            fold_ln: true,
            ..Processing::none()
        },
        Processing {
            center_writing_weights: true,
            ..Processing::none()
        },
        Processing {
            center_unembed: true,
            ..Processing::none()
        },
        Processing {
            fold_value_biases: true,
            ..Processing::none()
        },
    ] {
        assert_close(
            &log_probs(p),
            &raw,
            1e-5,
            1e-4,
            &format!("log-probs with {p:?}"),
        );
    }
}

#[test]
fn names_filter_keeps_only_what_is_asked_and_rejects_unknown_names() {
    let model = gpt2(Processing::default()).model;
    let names = vec![
        "blocks.1.attn.hook_pattern".to_string(),
        "hook_embed".to_string(),
    ];
    let (_, cache) = model
        .run_with_cache(
            &tokens(),
            RunOptions {
                names_filter: NamesFilter::Names(names),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        cache.keys().collect::<Vec<_>>(),
        vec!["hook_embed", "blocks.1.attn.hook_pattern"]
    );
    let bad = RunOptions {
        names_filter: NamesFilter::Names(vec!["blocks.1.attn.hook_patern".into()]),
        ..Default::default()
    };
    match model.run_with_cache(&tokens(), bad) {
        Err(ModelError::Cache(CacheError::UnknownHook { name, suggestions })) => {
            assert_eq!(name, "blocks.1.attn.hook_patern");
            assert_eq!(
                suggestions.first().map(String::as_str),
                Some("blocks.1.attn.hook_pattern")
            );
        }
        other => panic!("expected an unknown-hook error, got {other:?}"),
    }
}

#[test]
fn cache_lookup_of_an_unknown_key_suggests_close_ones() {
    let (_, cache) = run(&gpt2(Processing::default()).model, &tokens());
    let err = cache.get("blocks.0.hook_resid_pr").unwrap_err();
    assert!(err.to_string().contains("blocks.0.hook_resid_pre"), "{err}");
}

#[test]
fn bad_token_batches_are_errors() {
    let model = gpt2(Processing::default()).model;
    let vocab = model.cfg().d_vocab as u32;
    let n_ctx = model.cfg().n_ctx;
    assert!(
        matches!(model.forward(&TokenBatch::single(vec![0, vocab]).unwrap()), Err(ModelError::TokenOutOfRange { token, position: 1, .. }) if token == vocab)
    );
    assert!(matches!(
        model.forward(&TokenBatch::single(vec![1; n_ctx + 1]).unwrap()),
        Err(ModelError::SequenceTooLong { .. })
    ));
    assert!(matches!(
        TokenBatch::new(&[]),
        Err(ModelError::EmptyInput(_))
    ));
    assert!(matches!(
        TokenBatch::new(&[vec![]]),
        Err(ModelError::EmptyInput(_))
    ));
    assert!(matches!(
        TokenBatch::new(&[vec![1, 2], vec![1]]),
        Err(ModelError::RaggedBatch { row: 1, .. })
    ));
    let batch2 = RunOptions {
        remove_batch_dim: true,
        ..Default::default()
    };
    assert!(matches!(
        model.run_with_cache(&tokens(), batch2),
        Err(ModelError::Cache(CacheError::InvalidArgument(_)))
    ));
}

/// Copies a TL model folder with its state dict changed by `edit`, and loads it.
fn load_edited(
    edit: impl FnOnce(&mut HashMap<String, (Vec<usize>, Vec<f32>)>),
) -> Result<HookedTransformer<B>, ModelError> {
    let src = models().join("tl-ln-relu");
    let file = TensorFile::read(&src.join("weights.safetensors")).unwrap();
    let mut map: HashMap<String, (Vec<usize>, Vec<f32>)> = file
        .into_tensors()
        .into_iter()
        .map(|(k, v)| (k, (v.shape.to_vec(), v.to_vec::<f32>().unwrap())))
        .collect();
    edit(&mut map);
    let dir = tempdir("edited");
    let tensors: Vec<NamedTensor> = map
        .into_iter()
        .map(|(k, (shape, v))| {
            NamedTensor::float(
                k,
                &DynTensor::<B>::from_data(TensorData::new(v, shape), &Default::default()).unwrap(),
            )
        })
        .collect();
    write_safetensors(&dir.join("weights.safetensors"), &tensors, HashMap::new()).unwrap();
    load_transformerlens::<B>(
        &src.join("config.json"),
        &dir.join("weights.safetensors"),
        Processing::none(),
        &Default::default(),
    )
}

fn tempdir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tlens-test-{}-{tag}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn weight_file_problems_name_the_tensor() {
    let missing = load_edited(|m| {
        m.remove("blocks.1.attn.W_K");
    });
    assert!(
        matches!(&missing, Err(ModelError::MissingWeight { name, expected, .. }) if name == "blocks.1.attn.W_K" && expected == &vec![4, 32, 8]),
        "{missing:?}"
    );
    let extra = load_edited(|m| {
        m.insert("blocks.0.attn.W_X".into(), (vec![2], vec![0.0, 1.0]));
    });
    assert!(
        matches!(&extra, Err(ModelError::UnexpectedWeight { name, .. }) if name == "blocks.0.attn.W_X"),
        "{extra:?}"
    );
    let misshaped = load_edited(|m| {
        m.insert("blocks.0.mlp.b_in".into(), (vec![63], vec![0.0; 63]));
    });
    assert!(
        matches!(&misshaped, Err(ModelError::WeightShape { name, expected, found }) if name == "blocks.0.mlp.b_in" && expected == &vec![64] && found == &vec![63]),
        "{misshaped:?}"
    );
    let buffers_ignored = load_edited(|m| {
        m.insert("blocks.0.attn.IGNORE".into(), (vec![1], vec![0.0]));
    });
    assert!(buffers_ignored.is_ok());
}

#[test]
fn truncated_and_corrupt_files_are_errors() {
    let src = models().join("gpt2-tiny");
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    for (tag, content) in [
        ("truncated", bytes[..bytes.len() / 2].to_vec()),
        ("corrupt", b"not a safetensors file at all".to_vec()),
        ("empty", Vec::new()),
    ] {
        let dir = tempdir(tag);
        for f in ["config.json", "tokenizer.json"] {
            std::fs::copy(src.join(f), dir.join(f)).unwrap();
        }
        std::fs::write(dir.join("model.safetensors"), content).unwrap();
        let err = load_hf::<B>(&dir, Processing::default(), &Default::default()).unwrap_err();
        assert!(
            matches!(err, ModelError::Safetensors { .. }),
            "{tag}: {err:?}"
        );
    }
    let err = load_hf::<B>(
        Path::new("/no/such/folder"),
        Processing::default(),
        &Default::default(),
    )
    .unwrap_err();
    assert!(matches!(err, ModelError::Io { .. }), "{err:?}");
}

#[test]
fn config_that_disagrees_with_the_weights_is_an_error() {
    let src = models().join("gpt2-tiny");
    let dir = tempdir("config-mismatch");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    cfg["n_embd"] = serde_json::json!(128);
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    std::fs::copy(src.join("model.safetensors"), dir.join("model.safetensors")).unwrap();
    let err = load_hf::<B>(&dir, Processing::default(), &Default::default()).unwrap_err();
    assert!(
        matches!(&err, ModelError::WeightShape { name, .. } if name == "wte.weight"),
        "{err:?}"
    );
    std::fs::write(dir.join("config.json"), "{\"n_embd\": ").unwrap();
    assert!(matches!(
        load_hf::<B>(&dir, Processing::default(), &Default::default()),
        Err(ModelError::Config { .. })
    ));
}

#[test]
fn f16_and_bf16_weights_load_as_f32() {
    let full = gpt2(Processing::default())
        .model
        .forward(&tokens())
        .unwrap();
    for (dir, tol) in [("gpt2-tiny-f16", 2e-2), ("gpt2-tiny-bf16", 1e-1)] {
        let half = load_hf::<B>(
            &models().join(dir),
            Processing::default(),
            &Default::default(),
        )
        .unwrap()
        .model
        .forward(&tokens())
        .unwrap();
        assert_close(
            &values(DynTensor::new(half)),
            &values(DynTensor::new(full.clone())),
            tol,
            0.0,
            dir,
        );
    }
}

#[test]
fn tokenizer_helpers_behave_as_transformerlens() {
    let loaded = gpt2(Processing::default());
    let tok = loaded.tokenizer.unwrap();
    let ids = tok.to_tokens(" Mary", true).unwrap();
    assert_eq!(ids[0], tok.bos_token_id().unwrap());
    assert_eq!(tok.to_single_token(" Mary").unwrap(), ids[1]);
    assert_eq!(tok.to_str_tokens(&ids[1..]).unwrap(), vec![" Mary"]);
    assert!(tok.to_single_token("When John and Mary").is_err());
    let vocab_tok = tlens::Tokenizer::from_folder(&models().join("gpt2-tiny"))
        .unwrap()
        .unwrap();
    assert_eq!(
        vocab_tok.to_tokens("When John and Mary", true).unwrap(),
        tok.to_tokens("When John and Mary", true).unwrap()
    );
}

#[test]
fn the_comparison_passes_identical_outputs_and_catches_a_perturbation() {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/gpt2-tiny.full.safetensors");
    let golden = PlanOutput::read(&path).unwrap();
    assert!(compare(&golden, &golden, Tolerance::F32, &Default::default()).passed());
    let mut perturbed = PlanOutput::read(&path).unwrap();
    perturbed.tensors.get_mut("logits").unwrap().1[3] += 1e-3;
    let cmp = compare(&perturbed, &golden, Tolerance::F32, &Default::default());
    assert_eq!(cmp.problems.len(), 1, "{:?}", cmp.problems);
    assert!(cmp.problems[0].starts_with("logits: 1 elements"));
}

/// The half-precision tolerance is four units in the last place at the tensor's scale: a logit moved by three bf16
/// ulps of the largest logit passes, by five fails, and the f32 tolerance rejects both.
#[test]
fn the_half_precision_tolerance_counts_ulps_of_the_tensor_scale() {
    use tlens::Precision;
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/gpt2-tiny.full.safetensors");
    let golden = PlanOutput::read(&path).unwrap();
    let scale = golden.tensors["logits"]
        .1
        .iter()
        .fold(0f64, |m, v| m.max(v.abs()));
    let bf16 = Tolerance::for_precision(Precision::Bf16);
    assert_eq!(bf16.of_max, 4.0 * 2f64.powi(-8));
    assert_eq!(Tolerance::for_precision(Precision::F32), Tolerance::F32);
    for (ulps, passes) in [(3.0, true), (5.0, false)] {
        let mut moved = PlanOutput::read(&path).unwrap();
        moved.tensors.get_mut("logits").unwrap().1[0] += ulps * 2f64.powi(-8) * scale;
        let cmp = |tol| compare(&moved, &golden, tol, &Default::default()).passed();
        assert_eq!(cmp(bf16), passes, "{ulps} ulps");
        assert!(!cmp(Tolerance::F32), "{ulps} ulps under the f32 tolerance");
    }
}

/// A model loaded in bf16 or f16 (`Processing::dtype`) keeps its weights and computes in that precision, with the
/// norms' `hook_scale` and `hook_normalized` in f32 (TransformerLens upcasts there); its logits are the f32 model's
/// to the precision's rounding, and the cache methods, interventions and a run from a cached stream all work on it.
/// `cache_dtype: Some(F32)` upcasts every activation. ndarray, which has no half arithmetic, refuses with an error.
#[cfg(feature = "flex")]
#[test]
fn a_half_precision_model_computes_in_its_precision_with_f32_norms() {
    use burn_tensor::{DType, FloatDType};
    use tlens::Precision;
    use tlens::backend::Flex;
    use tlens::cache_core::{AccumulatedResid, HookPoint, LogitAttrs, TokenIds};
    use tlens::model::intervention::{Intervention, Op, Selector};
    let load = |dtype| {
        let processing = Processing {
            dtype,
            ..Processing::default()
        };
        load_hf::<Flex>(&models().join("gpt2-tiny"), processing, &Default::default()).unwrap()
    };
    let full = load(Precision::F32).model;
    let (want, full_cache) = full
        .run_with_cache(&tokens(), RunOptions::default())
        .unwrap();
    let want = want.into_data().to_vec::<f32>().unwrap();
    for (dtype, bits) in [(Precision::Bf16, 8), (Precision::F16, 11)] {
        let model = load(dtype).model;
        let stored = DType::from(dtype.float_dtype());
        assert_eq!(model.weights().dtype(), dtype.float_dtype());
        let (logits, cache) = model
            .run_with_cache(&tokens(), RunOptions::default())
            .unwrap();
        assert_eq!(logits.dtype(), stored);
        for (name, t) in cache.items() {
            let norm = name.ends_with("hook_scale") || name.ends_with("hook_normalized");
            let expected = if norm { DType::F32 } else { stored };
            assert_eq!(t.physical_tensor().dtype(), expected, "{dtype}: {name}");
        }
        let got = logits
            .cast(FloatDType::F32)
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        assert_within_roundings(&want, &got, 16.0, bits, &format!("{dtype} logits"));
        let lens = |c: &ActivationCache<Flex>| {
            let args = AccumulatedResid {
                incl_mid: true,
                apply_ln: true,
                pos_slice: (-1).into(),
                ..Default::default()
            };
            c.accumulated_resid(args).unwrap().tensor
        };
        let args = LogitAttrs {
            pos_slice: (-1).into(),
            ..Default::default()
        };
        let attrs = cache
            .logit_attrs(lens(&cache), TokenIds::from(vec![290, 293]), args)
            .unwrap();
        assert_eq!(attrs.physical_tensor().dtype(), DType::F32);
        let (a, b) = (lens(&full_cache).to_vec(), lens(&cache).to_vec());
        assert_within_roundings(&a, &b, 16.0, bits, &format!("{dtype} accumulated_resid"));
        let upcast = model
            .run_with_cache(
                &tokens(),
                RunOptions {
                    cache_dtype: Some(Precision::F32),
                    ..RunOptions::default()
                },
            )
            .unwrap()
            .1;
        assert!(
            upcast
                .values()
                .all(|t| t.physical_tensor().dtype() == DType::F32)
        );

        // Steering with an f32 vector, and a run resumed from a cached (f32) stream, in the model's precision.
        let point = HookPoint::Block(1, tlens::BlockHook::ResidPre);
        let vector = Tensor::<Flex, 1>::ones([model.cfg().d_model], &Default::default());
        let mut steer =
            Intervention::new(point, Op::Add { vector, coeff: 2.0 }, Selector::default());
        let steered = model.run_with_hooks(&tokens(), &mut [&mut steer]).unwrap();
        assert_eq!(steered.dtype(), stored);
        let resid = cache.get(point.to_string().as_str()).unwrap();
        let resumed = model
            .run_from_layer(&tokens(), 1, resid.into_tensor::<3>().unwrap(), &mut [])
            .unwrap();
        assert_eq!(resumed.dtype(), stored);
    }
    let err = load_hf::<B>(
        &models().join("gpt2-tiny"),
        Processing {
            dtype: Precision::Bf16,
            ..Processing::default()
        },
        &Default::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, ModelError::Cache(CacheError::Unsupported(m)) if m.contains("cannot compute in bf16")),
        "{err}"
    );
}

/// A cache kept in f16 or bf16 (on a backend that stores them) holds the rounded activations, and its methods compute
/// in f32 on them: their results differ from an f32 cache's by the rounding alone. f16 values are exactly
/// `tensor.to(torch.float16)`'s (round to nearest even). bf16 values are within one bf16 step of the f32 value:
/// burn-flex casts through f64 with the `half` crate, whose f64 → bf16 conversion drops the low mantissa bits before
/// rounding and so ties to even values just above a tie (half-rs issue 151); `tlens harvest` rounds on the host from
/// f32 and is exact. The tolerance on the method's result is four roundings of the largest value (f16 keeps 11
/// significant bits, bf16 8): the stream is a sum over a few components.
#[cfg(feature = "flex")]
#[test]
fn a_half_precision_cache_keeps_rounded_activations_and_computes_in_f32() {
    use tlens::Precision;
    use tlens::backend::Flex;
    use tlens::cache_core::AccumulatedResid;
    let loaded = tlens::embedded::gpt2_tiny::<Flex>(&Default::default()).unwrap();
    let run = |cache_dtype| {
        let options = RunOptions {
            cache_dtype,
            ..RunOptions::default()
        };
        loaded.model.run_with_cache(&tokens(), options).unwrap().1
    };
    let lens = |cache: &ActivationCache<Flex>| {
        let args = AccumulatedResid {
            incl_mid: true,
            apply_ln: true,
            ..Default::default()
        };
        cache.accumulated_resid(args).unwrap().tensor.to_vec()
    };
    let full = run(None);
    for (dtype, bits) in [(Precision::F16, 11), (Precision::Bf16, 8)] {
        let half = run(Some(dtype));
        let stored = burn_tensor::DType::from(dtype.float_dtype());
        assert!(
            half.values().all(|t| t.physical_tensor().dtype() == stored),
            "{dtype} storage"
        );
        for name in full.keys() {
            let (want, got) = (values_of(&full, name), values_of(&half, name));
            for (i, (&v, &g)) in want.iter().zip(&got).enumerate() {
                let ok = match dtype {
                    Precision::F16 => g.to_bits() == half::f16::from_f32(v).to_f32().to_bits(),
                    _ => v == g || (v - g).abs() <= v.abs() * 2f32.powi(-7),
                };
                assert!(ok, "{dtype}: {name}[{i}] holds {g} for {v}");
            }
        }
        let (want, got) = (lens(&full), lens(&half));
        assert_within_roundings(
            &want,
            &got,
            4.0,
            bits,
            &format!("{dtype}: accumulated_resid"),
        );
    }
    // burn-ndarray has no f16: a typed error before anything is kept, not a panic.
    let err = gpt2(Processing::default())
        .model
        .run_with_cache(
            &tokens(),
            RunOptions {
                cache_dtype: Some(Precision::F16),
                ..RunOptions::default()
            },
        )
        .unwrap_err();
    assert!(
        matches!(&err, ModelError::Cache(CacheError::Unsupported(m)) if m.contains("cannot store f16")),
        "{err}"
    );
}

#[cfg(feature = "flex")]
/// `got` is `want` up to `roundings` roundings of its largest value to `bits` significant bits.
fn assert_within_roundings(want: &[f32], got: &[f32], roundings: f32, bits: i32, what: &str) {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = want
        .iter()
        .zip(got)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        worst <= roundings * scale * 2f32.powi(-bits),
        "{what} off by {worst} (scale {scale})"
    );
}

#[cfg(feature = "flex")]
fn values_of(cache: &ActivationCache<tlens::backend::Flex>, name: &str) -> Vec<f32> {
    cache.get(name).unwrap().to_vec()
}

/// Fires at every layer's attention scores, pattern and MLP activations and changes nothing; unlike the cache it
/// needs them as tensors, so the forward pass computes them whole.
struct SeesDerivable;

impl<B: burn_tensor::backend::Backend> tlens::Hook<B> for SeesDerivable {
    fn fires_at(&self, point: tlens::HookPoint) -> bool {
        use tlens::BlockHook::{AttnScores, MlpPost, Pattern};
        matches!(
            point,
            tlens::HookPoint::Block(_, AttnScores | Pattern | MlpPost)
        )
    }

    fn apply(
        &mut self,
        _: tlens::HookPoint,
        _: &DynTensor<B>,
    ) -> tlens::cache_core::Result<Option<DynTensor<B>>> {
        Ok(None)
    }
}

/// The cache keeps the attention scores, the pattern and the MLP activations as their recipe when only it wants them,
/// and reading them gives, bit for bit, what a run that computes them whole gives (as every other activation and the
/// logits are). Checked on GPT-2 (a standard MLP) and on grouped-query Llama (a gated one), in one slice of heads
/// and, at 2×600 positions, in 4 MiB slices of two heads, and with a position slice on a one-sequence cache without
/// its batch axis.
fn derived_activations_are_computed_whole<B: tlens::model::Kernels>() {
    let device = Default::default();
    for name in ["gpt2-tiny", "hf-llama"] {
        let loaded = load_hf::<B>(&models().join(name), Processing::default(), &device).unwrap();
        let mut cfg = loaded.model.cfg().clone();
        cfg.n_ctx = 1024;
        let params = tlens::cache_core::testing::random_params_for::<B>(cfg, 7, 0.1, &device);
        let model = HookedTransformer::new(params.cfg, params.weights).unwrap();
        let rows = |batch: u32, pos: u32| {
            let rows: Vec<Vec<u32>> = (0..batch)
                .map(|b| (0..pos).map(|p| (b * 31 + p * 17 + 3) % 50).collect())
                .collect();
            TokenBatch::new(&rows).unwrap()
        };
        let one_sequence = RunOptions {
            remove_batch_dim: true,
            pos_slice: tlens::Slice::Index(-1),
            ..RunOptions::default()
        };
        for (tokens, options) in [
            (rows(3, 9), RunOptions::default()),
            (rows(2, 600), RunOptions::default()),
            (rows(1, 9), one_sequence),
        ] {
            let (logits, derived) = model.run_with_cache(&tokens, options.clone()).unwrap();
            let (whole_logits, whole) = model
                .run_with_hooks_and_cache(&tokens, &mut [&mut SeesDerivable], options.clone())
                .unwrap();
            let what = format!("{name} {}×{}", tokens.batch(), tokens.positions());
            logits
                .into_data()
                .assert_eq(&whole_logits.into_data(), true);
            assert_eq!(
                derived.keys().collect::<Vec<_>>(),
                whole.keys().collect::<Vec<_>>()
            );
            let mut derived_keys = 0;
            for (key, want) in whole.items() {
                let derivable = ["hook_attn_scores", "hook_pattern", "mlp.hook_post"]
                    .iter()
                    .any(|end| key.ends_with(end));
                assert_eq!(derived.is_derived(key), derivable, "{what}: {key}");
                assert!(!whole.is_derived(key), "{what}: {key}");
                derived_keys += usize::from(derivable);
                let got = derived.get(key).unwrap();
                assert_eq!(got.shape(), want.shape(), "{what}: {key}");
                let (got, want) = (got.to_vec(), want.to_vec());
                let same = got
                    .iter()
                    .zip(&want)
                    .all(|(g, w)| g.to_bits() == w.to_bits());
                assert!(same, "{what}: {key} differs from the whole computation");
            }
            assert_eq!(derived_keys, 3 * model.cfg().n_layers, "{what}");
            if !options.remove_batch_dim {
                // The CLI's memory estimate is what the cache holds, either way.
                let estimate = |attention| {
                    let (b, p) = (tokens.batch(), tokens.positions());
                    tlens::memory::cache_bytes(model.cfg(), b, p, &options, attention).unwrap()
                };
                use tlens::memory::Derivable::{Recipes, Whole};
                assert_eq!(derived.stored_bytes() as u64, estimate(Recipes), "{what}");
                assert_eq!(whole.stored_bytes() as u64, estimate(Whole), "{what}");
            }
            assert!(derived.stored_bytes() < whole.stored_bytes(), "{what}");
        }
    }
}

#[test]
fn derived_activations_are_computed_whole_on_ndarray() {
    derived_activations_are_computed_whole::<B>();
}

#[cfg(feature = "flex")]
#[test]
fn derived_activations_are_computed_whole_on_flex() {
    derived_activations_are_computed_whole::<tlens::backend::Flex>();
}
