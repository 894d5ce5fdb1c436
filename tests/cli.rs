//! The `tlens` binary: every subcommand works on the embedded model and on a model folder, and errors are one plain
//! line with a non-zero exit status.

use std::path::PathBuf;
use std::process::Command;

fn tlens(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tlens"))
        .args(args)
        .output()
        .expect("the binary runs")
}

/// Runs and checks success; returns stdout.
fn ok(args: &[&str]) -> String {
    let out = tlens(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("tlens-cli-{}-{name}", std::process::id()))
}

#[test]
fn run_prints_predictions_and_writes_a_cache() {
    let out = temp("run.safetensors");
    let stdout = ok(&[
        "run",
        "--model",
        "tests/models/gpt2-tiny",
        "--top",
        "3",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(stdout.contains("top 3 next-token predictions"), "{stdout}");
    assert!(stdout.contains("cached 40 activations"), "{stdout}");
    let bytes = std::fs::read(&out).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert!(st.names().contains(&"blocks.1.attn.hook_pattern"));
    let _ = std::fs::remove_file(out);
}

/// `--cache-dtype f16` keeps the cache in half precision during the run (flex, the default backend, stores f16) and
/// writes it as f32: each value is the f32 cache's rounded to f16. ndarray cannot store f16: one error line.
#[test]
fn run_keeps_a_half_precision_cache_on_request() {
    let read = |path: &PathBuf, name: &str| -> Vec<f32> {
        let bytes = std::fs::read(path).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let view = st.tensor(name).unwrap();
        assert_eq!(view.dtype(), safetensors::Dtype::F32);
        view.data()
            .chunks(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    };
    let (full, half) = (temp("f32.safetensors"), temp("f16.safetensors"));
    let args = |out: &PathBuf, dtype: &str| {
        [
            "run",
            "--backend",
            "flex",
            "--model",
            "tests/models/gpt2-tiny",
            "--cache-dtype",
            dtype,
            "--out",
        ]
        .map(String::from)
        .into_iter()
        .chain([out.display().to_string()])
        .collect::<Vec<_>>()
    };
    for (out, dtype) in [(&full, "f32"), (&half, "f16")] {
        let args = args(out, dtype);
        ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    }
    let (want, got) = (
        read(&full, "blocks.1.hook_resid_post"),
        read(&half, "blocks.1.hook_resid_post"),
    );
    assert_eq!(want.len(), got.len());
    for (w, g) in want.iter().zip(&got) {
        assert_eq!(half::f16::from_f32(*w).to_f32(), *g);
    }
    let nd = tlens(&[
        "run",
        "--backend",
        "ndarray",
        "--cache-dtype",
        "f16",
        "--out",
        half.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&nd.stderr);
    assert_eq!(nd.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot store f16"), "{stderr}");
    let bad = tlens(&["run", "--cache-dtype", "f8"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a precision (f32, f16 or bf16)"));
    let _ = (std::fs::remove_file(full), std::fs::remove_file(half));
}

/// `--dtype bf16` runs the model in bf16 (flex, the default backend, computes in it): the cached stream then holds
/// bf16 values, the norms' scale stays f32, and `lens` works on it. ndarray cannot compute in bf16: one error line.
#[test]
fn run_and_lens_compute_in_bf16_on_request() {
    let out = temp("bf16-model.safetensors");
    let model = ["--model", "tests/models/gpt2-tiny", "--dtype", "bf16"];
    ok(&[&["run"][..], &model, &["--out", out.to_str().unwrap()]].concat());
    let bytes = std::fs::read(&out).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let values = |name: &str| -> Vec<f32> {
        st.tensor(name)
            .unwrap()
            .data()
            .chunks(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    };
    let resid = values("blocks.1.hook_resid_post");
    assert!(resid.iter().all(|&v| half::bf16::from_f32(v).to_f32() == v));
    let scale = values("blocks.1.ln1.hook_scale");
    assert!(scale.iter().any(|&v| half::bf16::from_f32(v).to_f32() != v));
    ok(&[&["lens"][..], &model].concat());
    let nd = tlens(&[&["run", "--backend", "ndarray"][..], &model].concat());
    let stderr = String::from_utf8_lossy(&nd.stderr);
    assert_eq!(nd.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cannot compute in bf16"), "{stderr}");
    let _ = std::fs::remove_file(out);
}

#[test]
fn run_on_the_embedded_model_by_default() {
    let out = temp("default.safetensors");
    let stdout = ok(&["run", "--out", out.to_str().unwrap()]);
    assert!(
        stdout.contains(&format!("model: {}", tlens::embedded::NAME)),
        "{stdout}"
    );
    assert!(stdout.contains("next-token predictions"), "{stdout}");
    let _ = std::fs::remove_file(out);
}

#[test]
fn run_reads_token_ids_from_json() {
    let (single, batch, out) = (
        temp("one.json"),
        temp("batch.json"),
        temp("tok.safetensors"),
    );
    std::fs::write(&single, "[0, 10, 11, 12, 13]").unwrap();
    std::fs::write(&batch, "[[0, 10, 11], [0, 20, 21]]").unwrap();
    let model = ["--model", "tests/models/gpt2-tiny"];
    let stdout = ok(&[
        &[
            "run",
            "--tokens",
            single.to_str().unwrap(),
            "--hook",
            "blocks.0.hook_resid_pre",
            "--out",
            out.to_str().unwrap(),
        ][..],
        &model,
    ]
    .concat());
    assert!(stdout.contains("tokens: 5 tokens"), "{stdout}");
    assert!(stdout.contains("cached 1 activations"), "{stdout}");
    let st_bytes = std::fs::read(&out).unwrap();
    let st = safetensors::SafeTensors::deserialize(&st_bytes).unwrap();
    assert_eq!(
        st.tensor("blocks.0.hook_resid_pre").unwrap().shape(),
        [1, 5, 64]
    );
    let stdout = ok(&[
        &[
            "run",
            "--tokens",
            batch.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ][..],
        &model,
    ]
    .concat());
    assert!(stdout.contains("2 sequences of 3 tokens"), "{stdout}");
    let st_bytes = std::fs::read(&out).unwrap();
    let st = safetensors::SafeTensors::deserialize(&st_bytes).unwrap();
    assert_eq!(st.tensor("hook_embed").unwrap().shape(), [2, 3, 64]);
    for f in [single, batch, out] {
        let _ = std::fs::remove_file(f);
    }
}

#[test]
fn transformerlens_folders_without_a_tokenizer_take_token_ids() {
    let tokens = temp("tl.json");
    std::fs::write(&tokens, "[1, 2, 3, 4, 1, 2]").unwrap();
    let tl = [
        "--model",
        "tests/models/tl-attnonly",
        "--tokens",
        tokens.to_str().unwrap(),
    ];
    let stdout = ok(&[&["lens", "--top", "1"][..], &tl].concat());
    assert!(
        stdout.contains("model: tests/models/tl-attnonly"),
        "{stdout}"
    );
    assert!(stdout.contains("position 5 \"#2\""), "{stdout}");
    let stdout = ok(&[&["attribute", "--target", "id:3"][..], &tl].concat());
    assert!(stdout.contains("logit(\"#3\")"), "{stdout}");
    let stdout = ok(&["patterns", "--model", "tests/models/tl-attnonly"]);
    assert!(
        stdout.contains("sequences [r, r] of 8 repeated"),
        "{stdout}"
    );
    let out = tlens(&["lens", "--model", "tests/models/tl-attnonly"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no tokenizer; pass token ids with --tokens FILE"),
        "{stderr}"
    );
    let _ = std::fs::remove_file(tokens);
}

#[test]
fn lens_prints_every_layer_at_every_position() {
    let stdout = ok(&[
        "lens",
        "--model",
        "tests/models/gpt2-tiny",
        "--prompt",
        "John and Mary",
        "--top",
        "2",
    ]);
    assert!(
        stdout.contains("position 0 \"<|endoftext|>\" -> target \"John\""),
        "{stdout}"
    );
    for label in ["0_pre", "1_pre", "final_post"] {
        assert_eq!(
            stdout.matches(&format!("{label}  p(target)")).count(),
            4,
            "{stdout}"
        );
    }
    let stdout = ok(&[
        "lens",
        "--model",
        "tests/models/gpt2-tiny",
        "--prompt",
        "John and Mary",
        "--target",
        " Mary",
        "--incl-mid",
    ]);
    assert!(stdout.contains("target \" Mary\""), "{stdout}");
    assert!(stdout.contains("1_mid  p(target)"), "{stdout}");
}

#[test]
fn attribute_prints_heads_sublayers_and_neurons() {
    let stdout = ok(&[
        "attribute",
        "--model",
        "tests/models/gpt2-tiny",
        "--target",
        " Mary",
        "--against",
        " John",
        "--top",
        "3",
    ]);
    assert!(
        stdout.contains("logit(\" Mary\") - logit(\" John\") = "),
        "{stdout}"
    );
    for section in ["heads:", "sublayers:", "neurons:"] {
        assert!(stdout.contains(section), "{stdout}");
    }
    let stdout = ok(&["attribute", "--position", "2"]);
    assert!(stdout.contains("at position 2"), "{stdout}");
    assert!(stdout.contains("heads:"), "{stdout}");
}

#[test]
fn patterns_scores_every_head() {
    let stdout = ok(&[
        "patterns",
        "--model",
        "tests/models/gpt2-tiny",
        "--seq-len",
        "5",
        "--sequences",
        "2",
        "--head",
        "L1H2",
    ]);
    for line in [
        "induction:",
        "previous token:",
        "duplicate token:",
        "L1H2 on the prompt",
        "strongest previous-token head",
    ] {
        assert!(stdout.contains(line), "{stdout}");
    }
    let stdout = ok(&["patterns"]);
    assert!(stdout.contains("head scores on 16 sequences"), "{stdout}");
}

#[test]
fn report_writes_html_and_prints_the_headline() {
    let out = temp("report.html");
    let stdout = ok(&["report", "--out", out.to_str().unwrap()]);
    let mut lines = stdout.lines();
    assert_eq!(
        lines.next(),
        Some(format!("wrote {}", out.display()).as_str())
    );
    let headline = lines.next().unwrap();
    assert!(headline.contains("induction head"), "{stdout}");
    let html = std::fs::read_to_string(&out).unwrap();
    assert!(html.contains("data-chart=\"lens\""));
    assert!(html.contains(headline), "{headline}");
    let _ = std::fs::remove_file(out);
}

#[test]
fn every_model_family_runs_report_and_lens() {
    for family in [
        "neox", "gptj", "opt", "llama", "mistral", "qwen2", "qwen3", "phi3", "gemma", "gemma2",
    ] {
        let model = format!("tests/models/hf-{family}");
        let out = temp(&format!("report-{family}.html"));
        let stdout = ok(&["report", "--model", &model, "--out", out.to_str().unwrap()]);
        assert!(stdout.starts_with("wrote "), "{family}: {stdout}");
        let html = std::fs::read_to_string(&out).unwrap();
        assert!(html.contains("data-chart=\"lens\""), "{family}");
        let _ = std::fs::remove_file(out);
        let lens = ok(&["lens", "--model", &model, "--top", "2"]);
        assert!(lens.contains("final_post"), "{family}: {lens}");
    }
}

#[test]
fn patch_prints_the_three_sweeps() {
    let stdout = ok(&[
        "patch",
        "--clean",
        "When Mary and John went to the shops, John gave a drink to",
        "--corrupt",
        "When Mary and John went to the shops, Mary gave a drink to",
        "--target",
        " Mary",
        "--against",
        " John",
    ]);
    assert!(
        stdout.contains("clean ") && stdout.contains("corrupted "),
        "{stdout}"
    );
    for sweep in [
        "get_act_patch_resid_pre",
        "get_act_patch_attn_head_out_all_pos",
        "get_act_patch_attn_head_out_by_pos",
    ] {
        assert!(stdout.contains(sweep), "{stdout}");
    }
    // The embedded model: 2 layers of 4 heads.
    assert!(
        stdout.lines().any(|l| l.trim_start().starts_with("L1H3")),
        "{stdout}"
    );
    let uneven = tlens(&[
        "patch",
        "--clean",
        "a b c",
        "--corrupt",
        "a",
        "--target",
        " Mary",
        "--against",
        " John",
    ]);
    assert_eq!(uneven.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&uneven.stderr).contains("same shape"));
}

#[test]
fn run_applies_hook_ops_before_caching() {
    let plain = temp("plain.safetensors");
    let ablated = temp("ablated.safetensors");
    let a = ok(&["run", "--top", "1", "--out", plain.to_str().unwrap()]);
    let b = ok(&[
        "run",
        "--top",
        "1",
        "--hook-op",
        "zero@blocks.0.attn.hook_z:heads=0",
        "--out",
        ablated.to_str().unwrap(),
    ]);
    assert_ne!(
        a, b,
        "ablating the previous-token head changes the prediction"
    );
    let bad = tlens(&["run", "--hook-op", "zero@blocks.9.attn.hook_z"]);
    assert_eq!(bad.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no hook"), "{stderr}");
    for f in [plain, ablated] {
        let _ = std::fs::remove_file(f);
    }
}

#[test]
fn errors_are_one_line_and_exit_non_zero() {
    let missing_tokens = temp("missing.json");
    let bad_tokens = temp("bad.json");
    std::fs::write(&bad_tokens, "[[1, 2], [3]]").unwrap();
    for args in [
        vec!["run", "--model", "/no/such/model"],
        vec!["run", "--hook", "blocks.0.attn.hook_patern"],
        vec!["run", "--tokens", missing_tokens.to_str().unwrap()],
        vec!["run", "--tokens", bad_tokens.to_str().unwrap()],
        vec![
            "run",
            "--model",
            "tests/models/gpt2-tiny",
            "--tokens",
            bad_tokens.to_str().unwrap(),
        ],
        vec![
            "eval",
            "--plan",
            "/no/such/plan.json",
            "--out",
            "/tmp/x.safetensors",
        ],
        vec!["--backend", "metal", "run"],
        vec![
            "lens",
            "--model",
            "tests/models/gpt2-tiny",
            "--target",
            "not one token",
        ],
        vec!["lens", "--target", "id:99999999"],
        vec!["attribute", "--position", "99"],
        vec!["attribute", "--against", "id:x"],
        vec!["patterns", "--head", "L9H9"],
        vec!["patterns", "--head", "head two"],
        vec!["patterns", "--seq-len", "100000"],
        vec!["report", "--out", "/no/such/dir/report.html"],
        vec!["run", "--prompt", "x", "--tokens", "y.json"],
        vec!["lens", "--top", "many"],
        vec!["frobnicate"],
    ] {
        let result = tlens(&args);
        assert!(!result.status.success(), "{args:?} succeeded");
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
    }
    let hint =
        String::from_utf8_lossy(&tlens(&["run", "--hook", "blocks.0.attn.hook_patern"]).stderr)
            .to_string();
    assert!(
        hint.contains("did you mean `blocks.0.attn.hook_pattern`"),
        "{hint}"
    );
    let _ = std::fs::remove_file(bad_tokens);
}
