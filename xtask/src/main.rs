//! Project tasks: `cargo xtask <task>`.
//!
//! - `reference`: set up the pinned TransformerLens environment (reference/.venv) and regenerate the tiny models, plans
//!   and golden files (needs PyPI; several GB of torch wheels the first time).
//! - `parity [--features LIST]`: build `tlens` with those backend features (default: ndarray), run every committed plan
//!   on every compiled-in backend, compare each with its TransformerLens golden and with the first backend, print a
//!   table, write it to `target/parity.md`, and exit non-zero on any disagreement.

use std::path::{Path, PathBuf};
use std::process::{exit, Command};

use tlens::parity::{committed_plans, compare, divergent_calls, PlanOutput, Tolerance};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("reference") => reference(),
        Some("parity") => parity(&args[1..]),
        _ => {
            Err("usage: cargo xtask <reference | parity [--features ndarray,flex,...]>".to_string())
        }
    };
    if let Err(e) = result {
        eprintln!("xtask: {e}");
        exit(1);
    }
}

fn sh(cmd: &mut Command) -> Result<(), String> {
    let status = cmd.status().map_err(|e| format!("{cmd:?}: {e}"))?;
    status
        .success()
        .then_some(())
        .ok_or_else(|| format!("{cmd:?} failed ({status})"))
}

fn reference() -> Result<(), String> {
    let dir = root().join("reference");
    sh(Command::new("bash")
        .arg(dir.join("setup.sh"))
        .current_dir(root()))?;
    sh(Command::new("bash")
        .arg(dir.join("regenerate.sh"))
        .current_dir(root()))
}

fn parity(args: &[String]) -> Result<(), String> {
    let features = match args {
        [] => "ndarray".to_string(),
        [flag, list] if flag == "--features" => list.clone(),
        _ => return Err("usage: cargo xtask parity [--features ndarray,flex,tch,cuda]".into()),
    };
    let backends: Vec<&str> = features
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    sh(Command::new(&cargo)
        .args([
            "build",
            "--quiet",
            "--bin",
            "tlens",
            "--no-default-features",
            "--features",
            &features,
        ])
        .current_dir(root()))?;
    let exe = root().join("target/debug/tlens");
    let plans_dir = root().join("tests/plans");
    let plans = committed_plans(&plans_dir).map_err(|e| e.to_string())?;
    let out_dir = root().join("target/parity");
    std::fs::create_dir_all(&out_dir).map_err(|e| e.to_string())?;

    let mut table = vec![
        format!("| plan | {} |", backends.join(" | ")),
        format!("|---|{}", "---|".repeat(backends.len())),
    ];
    let mut failures = Vec::new();
    for plan in &plans {
        let stem = plan
            .file_stem()
            .expect("a file")
            .to_string_lossy()
            .to_string();
        let skip = divergent_calls(&plans_dir, &stem).map_err(|e| e.to_string())?;
        let golden = PlanOutput::read(
            &root()
                .join("tests/golden")
                .join(format!("{stem}.safetensors")),
        )
        .map_err(|e| e.to_string())?;
        let mut cells = Vec::new();
        let mut first: Option<PlanOutput> = None;
        for backend in &backends {
            let out = out_dir.join(format!("{stem}.{backend}.safetensors"));
            let ran = Command::new(&exe)
                .args(["--backend", backend, "eval", "--plan"])
                .arg(plan)
                .arg("--out")
                .arg(&out)
                .output()
                .map_err(|e| e.to_string())?;
            if !ran.status.success() {
                failures.push(format!(
                    "{stem} on {backend}: {}",
                    String::from_utf8_lossy(&ran.stderr).trim()
                ));
                cells.push("error".to_string());
                continue;
            }
            let ours = PlanOutput::read(&out).map_err(|e| e.to_string())?;
            let vs_golden = compare(&ours, &golden, Tolerance::F32, &skip);
            let mut problems = vs_golden.problems.clone();
            if let Some(base) = &first {
                problems.extend(
                    compare(&ours, base, Tolerance::F32, &Default::default())
                        .problems
                        .into_iter()
                        .map(|p| format!("vs {}: {p}", backends[0])),
                );
            }
            let verdict = if problems.is_empty() { "pass" } else { "FAIL" };
            cells.push(format!(
                "{verdict} {:.1e} / {:.1e}",
                vs_golden.worst_abs(),
                vs_golden.worst_rel()
            ));
            failures.extend(
                problems
                    .into_iter()
                    .map(|p| format!("{stem} on {backend}: {p}")),
            );
            first.get_or_insert(ours);
        }
        table.push(format!("| {stem} | {} |", cells.join(" | ")));
    }
    let report = format!(
        "Each cell: verdict, then the worst absolute / relative error against the TransformerLens golden \
         (tolerance |a − b| ≤ 1e-5 + 1e-4·|b|; deliberate divergences of tests/plans/divergences.json skipped).\n\n{}\n",
        table.join("\n")
    );
    println!("{report}");
    std::fs::write(root().join("target/parity.md"), &report).map_err(|e| e.to_string())?;
    if failures.is_empty() {
        println!(
            "parity: {} plans agree on {}",
            plans.len(),
            backends.join(", ")
        );
        Ok(())
    } else {
        Err(format!(
            "{} disagreements:\n{}",
            failures.len(),
            failures.join("\n")
        ))
    }
}
