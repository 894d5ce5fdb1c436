//! The analyses behind `tlens lens`, `attribute`, `patterns` and `report`, checked against identities that must hold.

use burn_tensor::activation::softmax;
use tlens::analysis::attribution::{DlaArgs, direct_logit_attribution};
use tlens::analysis::heads::{
    HeadScoresArgs, attention_patterns, head_scores, prev_token_scores, repeated_random_tokens,
};
use tlens::analysis::input::parse_token_json;
use tlens::analysis::lens::{LensArgs, logit_lens};
use tlens::backend::NdArray;
use tlens::report::{ReportArgs, build_report};
use tlens::{LoadedModel, Processing, RunOptions, TokenBatch, embedded, load_folder};

fn gpt2_tiny() -> LoadedModel<NdArray> {
    embedded::gpt2_tiny::<NdArray>(&Default::default()).unwrap()
}

fn prompt(loaded: &LoadedModel<NdArray>) -> TokenBatch {
    let t = loaded.tokenizer.as_ref().unwrap();
    TokenBatch::single(
        t.to_tokens(
            "When John and Mary went to the shops, John gave the bag to",
            true,
        )
        .unwrap(),
    )
    .unwrap()
}

fn to_vec(t: burn_tensor::Tensor<NdArray, 1>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

#[test]
fn logit_lens_final_row_is_the_model_prediction() {
    let loaded = gpt2_tiny();
    let tokens = prompt(&loaded);
    let (logits, cache) = loaded
        .model
        .run_with_cache(&tokens, RunOptions::default())
        .unwrap();
    let table = logit_lens(&cache, tokens.row(0), &LensArgs::default()).unwrap();
    let p = tokens.positions();
    assert_eq!(table.labels, ["0_pre", "1_pre", "final_post"]);
    assert_eq!(table.targets.len(), p);
    // Default targets: the next token, then the model's own prediction at the end.
    assert_eq!(&table.targets[..p - 1], &tokens.row(0)[1..]);
    let [_, _, vocab] = logits.dims();
    for pos in [0, p / 2, p - 1] {
        let probs = to_vec(softmax(
            logits.clone().narrow(1, pos, 1).reshape([vocab]),
            0,
        ));
        let best = (0..vocab)
            .max_by(|&a, &b| probs[a].total_cmp(&probs[b]))
            .unwrap();
        let top = &table.top[table.final_row()][pos];
        assert_eq!(top[0].id as usize, best);
        assert!((top[0].prob - probs[best]).abs() < 1e-5);
        let t = table.targets[pos] as usize;
        assert!((table.target_probs[table.final_row()][pos] - probs[t]).abs() < 1e-5);
        // top tokens come most likely first
        assert!(top.windows(2).all(|w| w[0].prob >= w[1].prob));
    }
    assert_eq!(
        table.targets[p - 1],
        table.top[table.final_row()][p - 1][0].id
    );
    assert_eq!(
        table
            .first_correct_row(p - 1)
            .map(|r| r <= table.final_row()),
        Some(true)
    );
}

#[test]
fn logit_lens_with_a_fixed_target_and_mids() {
    let loaded = gpt2_tiny();
    let tokens = prompt(&loaded);
    let (_, cache) = loaded
        .model
        .run_with_cache(&tokens, RunOptions::default())
        .unwrap();
    let args = LensArgs {
        incl_mid: true,
        target: Some(7),
        top_k: 2,
        ..Default::default()
    };
    let table = logit_lens(&cache, tokens.row(0), &args).unwrap();
    assert_eq!(
        table.labels,
        ["0_pre", "0_mid", "1_pre", "1_mid", "final_post"]
    );
    assert!(table.targets.iter().all(|&t| t == 7));
    assert!(table.top.iter().flatten().all(|cell| cell.len() == 2));
    let bad = LensArgs {
        target: Some(100_000),
        ..Default::default()
    };
    assert!(logit_lens(&cache, tokens.row(0), &bad).is_err());
    let bad = LensArgs {
        batch_index: 1,
        ..Default::default()
    };
    assert!(logit_lens(&cache, tokens.row(0), &bad).is_err());
}

#[test]
fn sublayer_attributions_sum_to_the_logit_minus_its_bias() {
    let loaded = gpt2_tiny();
    let tokens = prompt(&loaded);
    let (logits, cache) = loaded
        .model
        .run_with_cache(&tokens, RunOptions::default())
        .unwrap();
    let b_u = to_vec(loaded.model.weights().b_U.clone());
    let t = loaded.tokenizer.as_ref().unwrap();
    let (mary, john) = (
        t.to_single_token(" Mary").unwrap(),
        t.to_single_token(" John").unwrap(),
    );
    for (position, against) in [(-1, None), (-1, Some(john)), (3, Some(john))] {
        let args = DlaArgs {
            position,
            against,
            ..DlaArgs::new(mary)
        };
        let dla = direct_logit_attribution(&cache, &logits, &args).unwrap();
        let bias = b_u[mary as usize] - against.map_or(0.0, |a| b_u[a as usize]);
        let sum: f32 = dla.layers.iter().map(|l| l.value).sum();
        assert!(
            (sum + bias - dla.logit).abs() < 1e-3 * (1.0 + dla.logit.abs()),
            "position {position}: {sum} + {bias} vs {}",
            dla.logit
        );
        assert_eq!(dla.heads.len(), 8);
        assert_eq!(dla.heads[5].label, "L1H1");
        // The heads of a layer plus b_O's share make up that layer's attention output.
        let neurons = dla.neurons.as_ref().unwrap();
        assert_eq!(neurons.len(), 20);
        assert!(
            neurons
                .windows(2)
                .all(|w| w[0].value.abs() >= w[1].value.abs())
        );
    }
    assert!(
        direct_logit_attribution(
            &cache,
            &logits,
            &DlaArgs {
                position: 99,
                ..DlaArgs::new(mary)
            }
        )
        .is_err()
    );
    assert!(direct_logit_attribution(&cache, &logits, &DlaArgs::new(1_000_000)).is_err());
}

#[test]
fn repeated_random_tokens_are_deterministic_and_repeat() {
    let a = repeated_random_tokens(512, Some(0), 10, 3, 7).unwrap();
    let b = repeated_random_tokens(512, Some(0), 10, 3, 7).unwrap();
    let c = repeated_random_tokens(512, Some(0), 10, 3, 8).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
    for row in a.rows() {
        assert_eq!(row[0], 0);
        assert_eq!(row[1..11], row[11..21]);
        assert!(row[1..].iter().all(|&t| t != 0 && t < 512));
    }
    assert!(repeated_random_tokens(512, None, 1, 1, 0).is_err());
}

#[test]
fn head_scores_are_attention_means() {
    let loaded = gpt2_tiny();
    let args = HeadScoresArgs {
        seq_len: Some(6),
        batch: 2,
        seed: 3,
    };
    let scores = head_scores(&loaded.model, &args, Some(0), &mut |_| {}).unwrap();
    assert_eq!(scores.tokens.len(), 13);
    assert_eq!(scores.induction.len(), 2);
    // Recompute one score by hand from the model's patterns.
    let tokens = repeated_random_tokens(512, Some(0), 6, 2, 3).unwrap();
    let (_, cache) = loaded
        .model
        .run_with_cache(&tokens, RunOptions::default())
        .unwrap();
    let mut want = 0.0;
    for b in 0..2 {
        let pats = attention_patterns(&cache, b).unwrap();
        let pat = &pats[1][2];
        for q in 7..13 {
            want += pat[q * 13 + q - 5];
        }
    }
    want /= 12.0;
    assert!((scores.induction[1][2] - want).abs() < 1e-5);
    let prev = prev_token_scores(&cache, 0).unwrap();
    assert_eq!(prev.len(), 2);
    for s in scores
        .induction
        .iter()
        .chain(&scores.prev_token)
        .chain(&scores.duplicate)
        .flatten()
    {
        assert!((0.0..=1.0 + 1e-6).contains(s));
    }
    assert!(scores.headline().contains("L"));
    let too_long = HeadScoresArgs {
        seq_len: Some(100),
        ..Default::default()
    };
    assert!(head_scores(&loaded.model, &too_long, Some(0), &mut |_| {}).is_err());
}

/// A batch longer than a chunk runs in chunks of `SCORE_CHUNK`; the scores are the same as one pass over the whole
/// batch (the same tokens, the same order of summation), and progress is reported after each chunk.
#[test]
fn head_scores_in_chunks_equal_one_pass() {
    use tlens::analysis::heads::SCORE_CHUNK;
    let loaded = gpt2_tiny();
    let batch = 2 * SCORE_CHUNK + 3;
    let args = HeadScoresArgs {
        seq_len: Some(5),
        batch,
        seed: 11,
    };
    let mut reports = Vec::new();
    let scores = head_scores(&loaded.model, &args, Some(0), &mut |done| {
        reports.push(done)
    })
    .unwrap();
    assert_eq!(reports, vec![SCORE_CHUNK, 2 * SCORE_CHUNK, batch]);
    let tokens = repeated_random_tokens(512, Some(0), 5, batch, 11).unwrap();
    assert_eq!(scores.tokens, tokens.row(0));
    let (_, cache) = loaded
        .model
        .run_with_cache(&tokens, RunOptions::default())
        .unwrap();
    let p = 11;
    for l in 0..2 {
        for h in 0..4 {
            let (mut induction, mut prev) = (0f32, 0f32);
            for b in 0..batch {
                let pat = &attention_patterns(&cache, b).unwrap()[l][h];
                induction += (6..p).map(|q| pat[q * p + q - 4]).sum::<f32>();
                prev += (1..p).map(|q| pat[q * p + q - 1]).sum::<f32>();
            }
            let induction = induction / (5 * batch) as f32;
            let prev = prev / (10 * batch) as f32;
            assert!(
                (scores.induction[l][h] - induction).abs() < 1e-6,
                "L{l}H{h}"
            );
            assert!((scores.prev_token[l][h] - prev).abs() < 1e-6, "L{l}H{h}");
        }
    }
}

#[test]
fn embedded_model_has_a_clear_induction_head() {
    let loaded = embedded::model::<NdArray>(&Default::default()).unwrap();
    let bos = loaded.tokenizer.as_ref().and_then(|t| t.bos_token_id());
    let scores = head_scores(&loaded.model, &HeadScoresArgs::default(), bos, &mut |_| {}).unwrap();
    let (l, h, s) = scores.best_induction();
    if embedded::NAME.contains("induction") {
        assert!(
            s >= tlens::analysis::heads::INDUCTION_THRESHOLD,
            "L{l}H{h}: {s}"
        );
        assert!(
            scores
                .headline()
                .starts_with(&format!("L{l}H{h} is an induction head"))
        );
    } else {
        // The tiny random GPT-2 has none.
        assert!(
            scores.headline().starts_with("no clear induction head"),
            "{}",
            scores.headline()
        );
    }
}

#[test]
fn token_json_is_a_list_or_a_batch() {
    assert_eq!(
        parse_token_json("[1, 2, 3]", "t").unwrap().rows(),
        [vec![1, 2, 3]]
    );
    assert_eq!(parse_token_json("[[1], [2]]", "t").unwrap().batch(), 2);
    for bad in [
        "{}",
        "[]",
        "[1, -2]",
        "[[1, 2], [3]]",
        "[1.5]",
        "not json",
        "[[]]",
    ] {
        let e = parse_token_json(bad, "t.json").unwrap_err().to_string();
        assert!(e.starts_with("t.json: "), "{bad}: {e}");
    }
}

#[test]
fn report_is_self_contained_html() {
    let loaded = load_folder::<NdArray>(
        "tests/models/gpt2-tiny".as_ref(),
        Processing::default(),
        &Default::default(),
    )
    .unwrap();
    let tokens = prompt(&loaded);
    let args = ReportArgs {
        model_name: "gpt2-tiny </script><script>alert(1)</script>".into(),
        tokens: tokens.row(0).to_vec(),
        target: None,
        against: Some(5),
        scores: HeadScoresArgs {
            seq_len: Some(8),
            batch: 2,
            seed: 0,
        },
        top_k: 3,
    };
    let mut steps = Vec::new();
    let report = build_report(&loaded, &args, &mut |i| steps.push(i)).unwrap();
    assert_eq!(steps, [0, 1, 2, 3, 4]);
    let html = report.to_html();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(!html.contains("{{"), "a placeholder is left");
    for forbidden in ["src=\"http", "href=\"http", "@import", "fetch("] {
        assert!(!html.contains(forbidden), "{forbidden}");
    }
    // The model name cannot close the data script.
    assert_eq!(html.matches("</script>").count(), 2);
    assert!(html.contains(&format!(
        "data-expected-charts=\"{}\"",
        report.chart_count()
    )));
    assert_eq!(report.chart_count(), 8 + 3 + 1 + 1 + 2 + 1 + 2);
    let json = &html[html.find("id=\"tlens-data\">").unwrap() + 16..];
    let json = &json[..json.find("</script>").unwrap()];
    let value: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(value["model"]["n_heads"], 4);
    assert_eq!(value["dla"]["against"], 5);
    // The patching task's runs differ at one position: patching it before layer 0 restores the clean metric.
    let p = &report.patching;
    let restored = p.resid_pre.values[0][report.patching_changed];
    assert!(
        (restored - p.clean).abs() < 1e-4,
        "{restored} vs {}",
        p.clean
    );
    assert_eq!(p.heads.values.len(), 2);
    assert!(p.heads_by_pos.is_none());
}

#[test]
fn embedded_model_processing_keeps_the_log_probs() {
    let device = Default::default();
    let processed = embedded::model::<NdArray>(&device).unwrap();
    let raw = embedded::induction_with::<NdArray>(Processing::none(), &device).unwrap();
    let t = processed.tokenizer.as_ref().unwrap();
    let tokens = TokenBatch::single(t.to_tokens(embedded::DEFAULT_PROMPT, true).unwrap()).unwrap();
    let a = burn_tensor::activation::log_softmax(processed.model.forward(&tokens).unwrap(), 2);
    let b = burn_tensor::activation::log_softmax(raw.model.forward(&tokens).unwrap(), 2);
    let diff = (a - b).abs().max().into_scalar();
    assert!(diff < 1e-3, "{diff}");
}

#[test]
fn embedded_model_completes_the_repeated_prompt() {
    let loaded = embedded::model::<NdArray>(&Default::default()).unwrap();
    let t = loaded.tokenizer.as_ref().unwrap();
    let ids = t.to_tokens(embedded::DEFAULT_PROMPT, true).unwrap();
    let tokens = TokenBatch::single(ids.clone()).unwrap();
    let (_, cache) = loaded
        .model
        .run_with_cache(&tokens, RunOptions::default())
        .unwrap();
    let table = logit_lens(&cache, &ids, &LensArgs::default()).unwrap();
    // In the second half of the prompt (a repeat of the first), the model predicts most next tokens.
    let half = ids.len() / 2 + 2;
    let last = table.final_row();
    let hits = (half..ids.len() - 1)
        .filter(|&p| table.top[last][p][0].id == ids[p + 1])
        .count();
    assert!(
        hits * 4 >= (ids.len() - 1 - half) * 3,
        "{hits} of {}",
        ids.len() - 1 - half
    );
}
