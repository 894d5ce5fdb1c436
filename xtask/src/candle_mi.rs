//! The candle-mi runner of `cargo xtask bench --vs-candle-mi`.
//!
//! candle-mi 0.2.2 is built from crates.io in its own project (`benches/candle-mi`, its own `[workspace]` and lock file)
//! and target folder (`target/candle-mi`): its dependency tree (candle, tokenizers, tokio, an HTTP client) stays out of
//! the main lock file and never invalidates the main build. It runs random Llama-3.2-1B-shaped weights that
//! `reference/write_llama_weights.py` writes once, as an HF folder, into `target/bench/llama-3.2-1b-hf`.

use std::path::Path;
use std::process::Command;

/// Builds `candle-mi-bench` (release, CPU features only), writes the weights if they are not there yet, and returns
/// the command that runs one case: append `CASE BATCH POS REPS llama-3.2-1b`, as for `bench_tl.py` (no backend name).
/// The command carries `TLENS_BENCH_WEIGHTS`: copy `get_envs()` along with `get_args()` when rebuilding it.
pub fn runner(root: &Path) -> Result<Command, String> {
    let target = root.join("target/candle-mi");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        // `--locked`: the versions of the committed benches/candle-mi/Cargo.lock, so that the column stays comparable.
        .args([
            "build",
            "--quiet",
            "--release",
            "--locked",
            "--manifest-path",
        ])
        .arg(root.join("benches/candle-mi/Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(root)
        .status()
        .map_err(|e| format!("candle-mi: {cargo}: {e}"))?;
    if !status.success() {
        return Err(format!(
            "candle-mi: building benches/candle-mi failed ({status})"
        ));
    }

    let weights = root.join("target/bench/llama-3.2-1b-hf");
    let python = root.join("reference/.venv/bin/python");
    if !python.exists() {
        return Err(
            "bench --vs-candle-mi writes its weights with the reference environment: run `cargo xtask reference` first"
                .into(),
        );
    }
    // Returns at once when the folder already holds these weights.
    let status = Command::new(&python)
        .arg(root.join("reference/write_llama_weights.py"))
        .arg(&weights)
        .status()
        .map_err(|e| format!("candle-mi: {}: {e}", python.display()))?;
    if !status.success() {
        return Err(format!("candle-mi: writing the weights failed ({status})"));
    }

    let mut cmd = Command::new(target.join("release/candle-mi-bench"));
    cmd.env("TLENS_BENCH_WEIGHTS", &weights);
    Ok(cmd)
}
