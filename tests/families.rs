//! The model families (GPT-NeoX, Llama, Mistral, Qwen 2/3, Phi-3, Gemma 1/2), loaded from the tiny Hugging Face
//! checkpoints in tests/models/hf-*: Hugging Face's own logits, TransformerLens's config and hook list, and clear
//! errors for checkpoints tlens cannot read. Their caches and cache methods are checked against TransformerLens by
//! the `hf-*` plans (tests/parity.rs).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use tlens::parity::PlanOutput;
use tlens::{
    DynTensor, ModelError, NamesFilter, Processing, RunOptions, Slice, TokenBatch, load_hf,
};

type B = burn_ndarray::NdArray<f32>;

const FAMILIES: [&str; 10] = [
    "neox", "gptj", "opt", "llama", "mistral", "qwen2", "qwen3", "phi3", "gemma", "gemma2",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn model_dir(family: &str) -> PathBuf {
    root().join("tests/models").join(format!("hf-{family}"))
}

fn load(family: &str, processing: Processing) -> tlens::LoadedModel<B> {
    load_hf::<B>(&model_dir(family), processing, &Default::default())
        .unwrap_or_else(|e| panic!("{family}: {e}"))
}

fn golden(name: &str) -> PlanOutput {
    PlanOutput::read(&root().join("tests/golden").join(name)).unwrap()
}

/// Hugging Face's logits on the `proc-none` plan's tokens (with those tokens).
fn golden_logits(family: &str) -> PlanOutput {
    golden(&format!("hf-{family}.hf-logits.safetensors"))
}

fn rows(golden: &PlanOutput, name: &str) -> Vec<Vec<u32>> {
    let (shape, toks) = &golden.tensors[name];
    toks.chunks(shape[1])
        .map(|r| r.iter().map(|&t| t as u32).collect())
        .collect()
}

fn values(t: DynTensor<B>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

/// `|a − b| ≤ atol + rtol·|b|` for every element (plan-format.md's float32 tolerance).
fn assert_close(ours: &[f32], theirs: &[f32], what: &str) {
    assert_eq!(ours.len(), theirs.len(), "{what}: lengths");
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        assert!(
            (a - b).abs() <= 1e-5 + 1e-4 * b.abs(),
            "{what}: element {i}: {a} vs {b}"
        );
    }
}

#[test]
fn unprocessed_logits_equal_hugging_face_logits() {
    for family in FAMILIES {
        let golden = golden_logits(family);
        let logits = load(family, Processing::none())
            .model
            .forward(&TokenBatch::new(&rows(&golden, "tokens")).unwrap())
            .unwrap();
        let hf: Vec<f32> = golden.tensors["logits"]
            .1
            .iter()
            .map(|&v| v as f32)
            .collect();
        assert_close(&values(DynTensor::new(logits)), &hf, family);
    }
}

/// The fields of TransformerLens's resolved config (`cfg.to_dict()`, tests/golden/hf-*.tl-config.json) that decide
/// the forward pass, compared with tlens's. Not compared: `n_ctx`, which TransformerLens caps at 2048 for Mistral and
/// Qwen 3 where tlens keeps `max_position_embeddings`, and fields tlens does not model.
#[test]
fn configs_resolve_as_transformerlens_does() {
    const FIELDS: [&str; 27] = [
        "n_layers",
        "d_model",
        "d_head",
        "n_heads",
        "n_key_value_heads",
        "d_mlp",
        "d_vocab",
        "d_vocab_out",
        "act_fn",
        "eps",
        "normalization_type",
        "positional_embedding_type",
        "rotary_dim",
        "rotary_base",
        "rotary_adjacent_pairs",
        "use_NTK_by_parts_rope",
        "parallel_attn_mlp",
        "gated_mlp",
        "final_rms",
        "use_qk_norm",
        "use_local_attn",
        "window_size",
        "attn_types",
        "attn_scale",
        "attn_scores_soft_cap",
        "output_logits_soft_cap",
        "use_normalization_before_and_after",
    ];
    for family in FAMILIES {
        let tl: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(
                root()
                    .join("tests/golden")
                    .join(format!("hf-{family}.tl-config.json")),
            )
            .unwrap(),
        )
        .unwrap();
        let ours: serde_json::Value =
            serde_json::from_str(&load(family, Processing::default()).model.cfg().to_json())
                .unwrap();
        for field in FIELDS {
            let (a, b) = (&ours[field], &tl[field]);
            let same = match (a.as_f64(), b.as_f64()) {
                (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * y.abs(),
                _ => a == b,
            };
            assert!(same, "{family}: {field}: tlens {a}, TransformerLens {b}");
        }
        if tl["use_NTK_by_parts_rope"] == true {
            for field in [
                "NTK_by_parts_factor",
                "NTK_by_parts_low_freq_factor",
                "NTK_by_parts_high_freq_factor",
                "NTK_original_ctx_len",
            ] {
                assert_eq!(
                    ours[field].as_f64(),
                    tl[field].as_f64(),
                    "{family}: {field}"
                );
            }
        }
    }
}

#[test]
fn every_family_fires_transformerlens_hooks() {
    for family in FAMILIES {
        let golden = golden(&format!("hf-{family}.full.safetensors"));
        let theirs: BTreeSet<String> = golden
            .tensors
            .keys()
            .filter_map(|k| k.strip_prefix("cache/"))
            .map(str::to_string)
            .collect();
        let loaded = load(family, Processing::default());
        let names = loaded.model.hook_names();
        let ours: BTreeSet<String> = names.iter().cloned().collect();
        assert_eq!(ours, theirs, "{family}");
        assert_eq!(names.len(), ours.len(), "{family}: a hook listed twice");
        // The forward pass fires exactly the listed hooks, in the listed order.
        let tokens = rows(&golden_logits(family), "tokens");
        let (_, cache) = loaded
            .model
            .run_with_cache(&TokenBatch::new(&tokens).unwrap(), Default::default())
            .unwrap();
        assert_eq!(cache.keys().collect::<Vec<_>>(), names, "{family}");
    }
}

#[test]
fn grouped_query_hooks_have_key_value_heads() {
    let loaded = load("llama", Processing::default());
    let (_, cache) = loaded
        .model
        .run_with_cache(
            &TokenBatch::new(&[vec![0, 5, 9]]).unwrap(),
            Default::default(),
        )
        .unwrap();
    let shape = |k: &str| cache.get(k).unwrap().shape();
    assert_eq!(shape("blocks.0.attn.hook_q"), [1, 3, 4, 8]);
    assert_eq!(shape("blocks.0.attn.hook_k"), [1, 3, 2, 8]);
    assert_eq!(shape("blocks.0.attn.hook_rot_k"), [1, 3, 2, 8]);
    assert_eq!(shape("blocks.0.attn.hook_v"), [1, 3, 2, 8]);
    assert_eq!(shape("blocks.0.attn.hook_z"), [1, 3, 4, 8]);
    assert_eq!(shape("blocks.0.mlp.hook_pre_linear"), [1, 3, 64]);
    assert!(!cache.contains("hook_pos_embed"));
}

/// A copy of a checkpoint folder to break.
fn copy_of(family: &str, tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tlens-families-{}-{family}-{tag}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(model_dir(family)).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
    dir
}

fn load_err(dir: &Path) -> ModelError {
    load_hf::<B>(dir, Processing::default(), &Default::default()).unwrap_err()
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(path, cfg.to_string()).unwrap();
}

#[test]
fn unsupported_model_types_name_the_supported_ones() {
    let dir = copy_of("llama", "model-type");
    edit_config(&dir, |c| c["model_type"] = "mamba".into());
    let msg = load_err(&dir).to_string();
    assert!(
        msg.contains("\"mamba\"") && msg.contains("llama") && msg.contains("gemma2"),
        "{msg}"
    );
}

#[test]
fn unsupported_rope_scaling_is_refused() {
    let dir = copy_of("llama", "rope-scaling");
    edit_config(&dir, |c| {
        c["rope_parameters"] =
            serde_json::json!({"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0});
    });
    let msg = load_err(&dir).to_string();
    assert!(msg.contains("rope_scaling type \"yarn\""), "{msg}");
}

#[test]
fn broken_shards_are_errors_naming_the_file() {
    let dir = copy_of("mistral", "missing-shard");
    std::fs::remove_file(dir.join("model-00002-of-00003.safetensors")).unwrap();
    let err = load_err(&dir);
    assert!(
        matches!(&err, ModelError::Io { path, .. } if path.ends_with("model-00002-of-00003.safetensors")),
        "{err:?}"
    );

    let dir = copy_of("mistral", "wrong-index");
    let index = dir.join("model.safetensors.index.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&index).unwrap()).unwrap();
    let map = json["weight_map"].as_object_mut().unwrap();
    let (name, _) = map
        .iter()
        .find(|(_, f)| *f == "model-00001-of-00003.safetensors")
        .map(|(n, f)| (n.clone(), f.clone()))
        .unwrap();
    map.insert(name.clone(), "model-00003-of-00003.safetensors".into());
    std::fs::write(&index, json.to_string()).unwrap();
    let msg = load_err(&dir).to_string();
    assert!(
        msg.contains(&name) && msg.contains("model.safetensors.index.json"),
        "{msg}"
    );
}

#[test]
fn config_that_contradicts_the_weights_names_the_tensor() {
    let dir = copy_of("qwen2", "kv-heads");
    edit_config(&dir, |c| c["num_key_value_heads"] = 4.into());
    let err = load_err(&dir);
    assert!(
        matches!(&err, ModelError::WeightShape { name, .. } if name == "model.layers.0.self_attn.k_proj.weight"),
        "{err:?}"
    );
}

#[test]
fn pos_slice_cannot_slice_flattened_qk_norm_hooks() {
    let model = load("qwen3", Processing::default()).model;
    let tokens = TokenBatch::new(&[vec![0, 5, 9, 7]]).unwrap();
    let options = |names_filter| RunOptions {
        pos_slice: Slice::Index(-1),
        names_filter,
        ..Default::default()
    };
    let err = model
        .run_with_cache(&tokens, options(NamesFilter::All))
        .unwrap_err()
        .to_string();
    assert!(err.contains("blocks.0.attn.q_norm.hook_scale"), "{err}");
    let keep = NamesFilter::Predicate(std::sync::Arc::new(|n: &str| !n.contains("_norm.")));
    let (_, cache) = model.run_with_cache(&tokens, options(keep)).unwrap();
    assert_eq!(
        cache.get("blocks.0.attn.hook_rot_q").unwrap().shape(),
        [1, 1, 4, 8]
    );
}

#[test]
fn post_norm_opt_is_refused() {
    let dir = copy_of("opt", "post-norm");
    edit_config(&dir, |c| c["do_layer_norm_before"] = false.into());
    let err = load_err(&dir);
    assert!(
        matches!(&err, ModelError::Unsupported(m) if m.contains("do_layer_norm_before")),
        "{err:?}"
    );
}
