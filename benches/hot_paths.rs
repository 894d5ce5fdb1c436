//! criterion benches of the hot paths on ndarray, on a small GPT-2-shaped model (4 layers, d_model 256, 4 heads of
//! 64, d_mlp 1024, vocab 5000; random weights; batch 4 × 64 positions). `cargo bench -p tlens-bench` runs them; the
//! full-size comparison with TransformerLens is `cargo xtask bench`.

use criterion::{Criterion, criterion_group, criterion_main};
use tlens::backend::NdArray;
use tlens::cache_core::testing::random_params_for;
use tlens::cache_core::{ActFn, NormalizationType, StackHeadResults, StackNeuronResults};
use tlens::{HookedTransformer, HookedTransformerConfig, RunOptions, Slice, TokenBatch};

fn model() -> HookedTransformer<NdArray> {
    let mut cfg = HookedTransformerConfig::new(4, 256, 128, 64, 5000).unwrap();
    cfg.d_mlp = 1024;
    cfg.act_fn = Some(ActFn::GeluNew);
    cfg.normalization_type = Some(NormalizationType::LNPre);
    let params = random_params_for::<NdArray>(cfg, 1, 0.05, &Default::default());
    HookedTransformer::new(params.cfg, params.weights).unwrap()
}

fn tokens() -> TokenBatch {
    TokenBatch::new(
        &(0..4)
            .map(|b| (0..64).map(|p| (b * 31 + p * 17) % 5000).collect())
            .collect::<Vec<Vec<u32>>>(),
    )
    .unwrap()
}

fn hot_paths(c: &mut Criterion) {
    let model = model();
    let tokens = tokens();
    c.bench_function("forward 4x64", |b| {
        b.iter(|| model.forward(&tokens).unwrap().into_data())
    });
    c.bench_function("run_with_cache 4x64", |b| {
        b.iter(|| {
            model
                .run_with_cache(&tokens, RunOptions::default())
                .unwrap()
        })
    });
    let (_, cache) = model
        .run_with_cache(&tokens, RunOptions::default())
        .unwrap();
    c.bench_function("stack_head_results apply_ln 4x64", |b| {
        b.iter(|| {
            cache
                .stack_head_results(StackHeadResults {
                    apply_ln: true,
                    ..Default::default()
                })
                .unwrap()
                .tensor
                .into_data()
        })
    });
    c.bench_function("stack_neuron_results pos -1 4x64", |b| {
        b.iter(|| {
            cache
                .stack_neuron_results(
                    None,
                    StackNeuronResults {
                        pos_slice: Slice::Index(-1),
                        ..Default::default()
                    },
                )
                .unwrap()
                .tensor
                .into_data()
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = hot_paths
}
criterion_main!(benches);
