//! Shared helpers for the cache tests: the committed tiny models, fixed token batches, and torch-style comparisons.
#![allow(dead_code)] // each test file uses a different subset

use std::path::PathBuf;

use tlens_cache_core::{ActivationCache, DynTensor, RunOptions};
use tlens_model::{
    HookedTransformer, LoadedModel, Processing, TokenBatch, load_hf, load_transformerlens,
};

pub type B = burn_ndarray::NdArray<f32>;

pub fn models() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/models")
}

/// A TransformerLens-format test model (`tests/models/tl-*`), processed as `from_pretrained` does.
pub fn tl_model(name: &str, processing: Processing) -> HookedTransformer<B> {
    let dir = models().join(name);
    load_transformerlens::<B>(
        &dir.join("config.json"),
        &dir.join("weights.safetensors"),
        processing,
        &Default::default(),
    )
    .unwrap()
}

/// The tiny Hugging Face GPT-2 (with its tokenizer), processed as `from_pretrained` does.
pub fn gpt2() -> LoadedModel<B> {
    load_hf::<B>(
        &models().join("gpt2-tiny"),
        Processing::default(),
        &Default::default(),
    )
    .unwrap()
}

/// Eight sequences of ten tokens (vocabulary 50), standing in for TransformerLens's eight IOI prompts.
pub fn prompts() -> TokenBatch {
    let rows: Vec<Vec<u32>> = (0..8u32)
        .map(|b| (0..10u32).map(|p| (b * 7 + p * 13 + 1) % 50).collect())
        .collect();
    TokenBatch::new(&rows).unwrap()
}

/// `(correct, incorrect)` answer tokens per prompt.
pub fn answers() -> Vec<(i64, i64)> {
    (0..8).map(|b| (3 + b, 20 + 2 * b)).collect()
}

pub fn run(model: &HookedTransformer<B>, tokens: &TokenBatch) -> ActivationCache<B> {
    model
        .run_with_cache(tokens, RunOptions::default())
        .unwrap()
        .1
}

/// The solu-2l stand-in of TransformerLens's acceptance tests (`solu_ln`, LN folded to LNPre) on the eight prompts.
pub fn solu_cache() -> ActivationCache<B> {
    run(&tl_model("tl-solu", Processing::default()), &prompts())
}

/// The attn-only-2l stand-in.
pub fn attn_only_cache() -> ActivationCache<B> {
    run(&tl_model("tl-attnonly", Processing::default()), &prompts())
}

/// Deterministic values in `[-1, 1)` of the given shape.
pub fn random(shape: &[usize], seed: u64) -> DynTensor<B> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 23) as f32) - 1.0
        })
        .collect();
    DynTensor::from_data(
        burn_tensor::TensorData::new(values, shape.to_vec()),
        &Default::default(),
    )
    .unwrap()
}

/// `torch.isclose(a, b, atol=atol, rtol=rtol).all()` with equal shapes, reporting the worst element.
pub fn assert_isclose(a: &DynTensor<B>, b: &DynTensor<B>, atol: f32, rtol: f32, what: &str) {
    assert_eq!(a.shape(), b.shape(), "{what}: shapes differ");
    let (x, y) = (a.to_vec(), b.to_vec());
    for (i, (p, q)) in x.iter().zip(&y).enumerate() {
        assert!(
            (p - q).abs() <= atol + rtol * q.abs(),
            "{what}: element {i}: {p} vs {q} (atol {atol}, rtol {rtol})"
        );
    }
}

/// `torch.allclose` with torch's default `rtol` (1e-5).
pub fn assert_allclose(a: &DynTensor<B>, b: &DynTensor<B>, atol: f32, what: &str) {
    assert_isclose(a, b, atol, 1e-5, what);
}

/// `torch.equal`.
pub fn assert_equal(a: &DynTensor<B>, b: &DynTensor<B>, what: &str) {
    assert_eq!(a.shape(), b.shape(), "{what}: shapes differ");
    assert_eq!(a.to_vec(), b.to_vec(), "{what}: values differ");
}

/// `x @ p` for `p` `[d]` (the last axis disappears) or `[d, k]`.
pub fn at(x: DynTensor<B>, p: &DynTensor<B>) -> DynTensor<B> {
    let one_d = p.rank() == 1;
    let p2 = if one_d {
        p.clone().unsqueeze(-1).unwrap()
    } else {
        p.clone()
    };
    let lifted = x.rank() == 1;
    let x = if lifted { x.unsqueeze(0).unwrap() } else { x };
    let mut out = x.matmul(p2).unwrap();
    if lifted {
        out = out.squeeze(0).unwrap();
    }
    if one_d {
        out = out.squeeze(-1).unwrap();
    }
    out
}

/// Rows `start..start+len` of axis 0.
pub fn rows(t: &DynTensor<B>, start: usize, len: usize) -> DynTensor<B> {
    t.clone().narrow(0, start, len).unwrap()
}
