//! The `tlens` binary: the main job works, and errors are one plain line with a non-zero exit status.

use std::process::Command;

fn tlens(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tlens"))
        .args(args)
        .output()
        .expect("the binary runs")
}

#[test]
fn run_prints_predictions_and_writes_a_cache() {
    let out = std::env::temp_dir().join(format!("tlens-cli-{}.safetensors", std::process::id()));
    let result = tlens(&["run", "--top", "3", "--out", out.to_str().unwrap()]);
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(stdout.contains("top 3 next-token predictions"), "{stdout}");
    assert!(stdout.contains("cached 40 activations"), "{stdout}");
    let bytes = std::fs::read(&out).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert!(st.names().contains(&"blocks.1.attn.hook_pattern"));
    let _ = std::fs::remove_file(out);
}

#[test]
fn errors_are_one_line_and_exit_non_zero() {
    for args in [
        vec!["run", "--model", "/no/such/model"],
        vec!["run", "--hook", "blocks.0.attn.hook_patern"],
        vec![
            "eval",
            "--plan",
            "/no/such/plan.json",
            "--out",
            "/tmp/x.safetensors",
        ],
        vec!["--backend", "metal", "run"],
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
}
