//! Hooks that change activations, built-in interventions and activation patching: identities that hold whatever the
//! weights (their numbers against TransformerLens are the `*.hooks*` and `*.patching*` plans' goldens).

use std::path::PathBuf;

use tlens::model::patching::{LogitDiff, PatchSweep, every};
use tlens::{
    BlockHook, DynTensor, FnHook, Hook, HookPoint, Intervention, Op, Processing, RunOptions,
    Selector, TokenBatch, load_hf,
};

type B = burn_ndarray::NdArray<f32>;

fn model() -> tlens::HookedTransformer<B> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/models/gpt2-tiny");
    load_hf::<B>(&dir, Processing::default(), &Default::default())
        .unwrap()
        .model
}

fn tokens() -> TokenBatch {
    TokenBatch::new(&[vec![0, 5, 9, 7, 3], vec![0, 8, 2, 6, 4]]).unwrap()
}

fn values(t: DynTensor<B>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn zeroing_attention_output_leaves_the_stream_unchanged() {
    let model = model();
    let mut zero = Intervention::new(
        HookPoint::Block(1, BlockHook::AttnOut),
        Op::Zero,
        Selector::default(),
    );
    let (_, cache) = model
        .run_with_hooks_and_cache(&tokens(), &mut [&mut zero], RunOptions::default())
        .unwrap();
    let pre = values(cache.get("blocks.1.hook_resid_pre").unwrap());
    let mid = values(cache.get("blocks.1.hook_resid_mid").unwrap());
    assert_eq!(pre, mid);
    assert!(
        values(cache.get("blocks.1.hook_attn_out").unwrap())
            .iter()
            .all(|&x| x == 0.0)
    );
}

#[test]
fn selectors_change_only_the_selected_entries() {
    let model = model();
    let point = HookPoint::Block(0, BlockHook::Z);
    let (_, plain) = model
        .run_with_cache(&tokens(), RunOptions::default())
        .unwrap();
    let mut scale = Intervention::new(
        point,
        Op::Scale(0.5),
        Selector {
            heads: Some(vec![1, 3]),
            positions: Some(vec![2]),
            neurons: None,
        },
    );
    let (_, hooked) = model
        .run_with_hooks_and_cache(&tokens(), &mut [&mut scale], RunOptions::default())
        .unwrap();
    let (a, b) = (plain.get(point).unwrap(), hooked.get(point).unwrap());
    let shape = a.shape(); // [batch, pos, head, d_head]
    let (a, b) = (values(a), values(b));
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        let head = (i / shape[3]) % shape[2];
        let pos = (i / (shape[3] * shape[2])) % shape[1];
        let want = if pos == 2 && (head == 1 || head == 3) {
            x * 0.5
        } else {
            *x
        };
        assert_eq!(*y, want, "element {i}");
    }
}

#[test]
fn patching_in_the_same_run_changes_nothing() {
    let model = model();
    let logits = values(DynTensor::new(model.forward(&tokens()).unwrap()));
    let (_, clean) = model
        .run_with_cache(&tokens(), RunOptions::default())
        .unwrap();
    let point = HookPoint::Block(0, BlockHook::MlpPost);
    let mut patch = Intervention::new(
        point,
        Op::Patch(clean.get(point).unwrap()),
        Selector::default(),
    );
    let patched = model.run_with_hooks(&tokens(), &mut [&mut patch]).unwrap();
    assert_eq!(values(DynTensor::new(patched)), logits);
}

#[test]
fn a_closure_hook_equals_the_built_in_intervention() {
    let model = model();
    let point = HookPoint::Block(1, BlockHook::ResidPre);
    let mut closure = FnHook::new(point, |x: &DynTensor<B>| {
        Ok(Some(x.clone().map(|t| t * 2.0)))
    });
    let mut scale = Intervention::new(point, Op::Scale(2.0), Selector::default());
    let a = model
        .run_with_hooks(&tokens(), &mut [&mut closure])
        .unwrap();
    let b = model.run_with_hooks(&tokens(), &mut [&mut scale]).unwrap();
    assert_eq!(values(DynTensor::new(a)), values(DynTensor::new(b)));
}

#[test]
fn a_hook_returning_the_wrong_shape_is_an_error_naming_both_shapes() {
    struct Truncate;
    impl Hook<B> for Truncate {
        fn fires_at(&self, point: HookPoint) -> bool {
            point == HookPoint::Block(0, BlockHook::ResidPre)
        }
        fn apply(
            &mut self,
            _: HookPoint,
            x: &DynTensor<B>,
        ) -> tlens::cache_core::Result<Option<DynTensor<B>>> {
            Ok(Some(x.clone().narrow(-1, 0, 3)?))
        }
    }
    let err = model()
        .run_with_hooks(&tokens(), &mut [&mut Truncate])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("blocks.0.hook_resid_pre")
            && err.contains("[2, 5, 3]")
            && err.contains("[2, 5, 64]"),
        "{err}"
    );
}

#[test]
fn out_of_range_selectors_and_misplaced_knockouts_are_errors() {
    let model = model();
    let mut far = Intervention::new(
        HookPoint::Block(0, BlockHook::Pattern),
        Op::Zero,
        Selector {
            heads: Some(vec![9]),
            ..Default::default()
        },
    );
    let err = model
        .run_with_hooks(&tokens(), &mut [&mut far])
        .unwrap_err()
        .to_string();
    assert!(err.contains("head 9 is out of range"), "{err}");
    let mut knockout = Intervention::new(
        HookPoint::Block(0, BlockHook::Pattern),
        Op::Knockout(vec![(1, 0)]),
        Selector::default(),
    );
    let err = model
        .run_with_hooks(&tokens(), &mut [&mut knockout])
        .unwrap_err()
        .to_string();
    assert!(err.contains("attn.hook_attn_scores"), "{err}");
}

#[test]
fn patching_a_run_into_itself_gives_the_clean_metric_everywhere() {
    let model = model();
    let metric = LogitDiff {
        correct: 5,
        incorrect: 9,
    };
    let logits = model.forward(&tokens()).unwrap();
    let clean_metric = tlens::model::patching::Metric::<B>::eval(&metric, logits).unwrap();
    let (_, clean) = model
        .run_with_cache(&tokens(), RunOptions::default())
        .unwrap();
    for sweep in every("get_act_patch_attn_head_by_pos_every").unwrap() {
        let out = model
            .activation_patch(sweep, &tokens(), &clean, &metric, 7)
            .unwrap();
        assert!(
            values(out).iter().all(|v| (v - clean_metric).abs() < 1e-5),
            "{sweep:?}"
        );
    }
}

#[test]
fn batched_sweeps_equal_one_patch_per_pass() {
    let model = model();
    let clean_tokens = tokens();
    let corrupted = TokenBatch::new(&[vec![0, 9, 5, 7, 3], vec![0, 2, 8, 6, 4]]).unwrap();
    let metric = LogitDiff {
        correct: 5,
        incorrect: 9,
    };
    let (_, clean) = model
        .run_with_cache(&clean_tokens, RunOptions::default())
        .unwrap();
    let sweep = PatchSweep::from_name("get_act_patch_resid_pre").unwrap();
    let one = model
        .activation_patch(sweep, &corrupted, &clean, &metric, 1)
        .unwrap();
    let many = model
        .activation_patch(sweep, &corrupted, &clean, &metric, 32)
        .unwrap();
    assert_eq!(one.shape(), [2, 5]);
    assert!(max_diff(&values(one), &values(many)) < 1e-5);
}

#[test]
fn attribution_patching_is_exact_where_the_metric_is_linear() {
    // Without a final norm, the logits are linear in the last layer's MLP output: attribution patching there equals
    // activation patching's change of the metric.
    type A = burn_autodiff::Autodiff<B>;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/models/tl-none-gelunew");
    let model = tlens::load_transformerlens::<A>(
        &dir.join("config.json"),
        &dir.join("weights.safetensors"),
        Processing::none(),
        &Default::default(),
    )
    .unwrap();
    let clean = TokenBatch::new(&[vec![1, 5, 9, 7, 3], vec![2, 8, 2, 6, 4]]).unwrap();
    let corrupted = TokenBatch::new(&[vec![1, 9, 5, 7, 3], vec![2, 2, 8, 6, 4]]).unwrap();
    let metric = LogitDiff {
        correct: 5,
        incorrect: 9,
    };
    let attribution = model
        .attribution_patch(BlockHook::MlpOut, &clean, &corrupted, &metric)
        .unwrap();
    let (_, clean_cache) = model.run_with_cache(&clean, RunOptions::default()).unwrap();
    let sweep = PatchSweep::from_name("get_act_patch_mlp_out").unwrap();
    let patched = model
        .activation_patch(sweep, &corrupted, &clean_cache, &metric, 32)
        .unwrap();
    let base =
        tlens::model::patching::Metric::<A>::eval(&metric, model.forward(&corrupted).unwrap())
            .unwrap();
    let last = model.cfg().n_layers - 1;
    let attribution = values_a(attribution.index(0, last).unwrap());
    let effect: Vec<f32> = values_a(patched.index(0, last).unwrap())
        .iter()
        .map(|v| v - base)
        .collect();
    assert!(
        max_diff(&attribution, &effect) < 1e-4,
        "{attribution:?} vs {effect:?}"
    );
    assert!(
        effect.iter().any(|v| v.abs() > 1e-3),
        "the patch changes something"
    );
}

fn values_a(t: DynTensor<burn_autodiff::Autodiff<B>>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}
