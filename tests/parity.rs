//! Every committed plan, run by tlens on ndarray, matches its TransformerLens golden (tests/golden/), within
//! plan-format.md's float32 tolerance: `|ours − golden| ≤ 1e-5 + 1e-4·|golden|` element-wise. A plan that loads the
//! model in f16 or bf16 runs on flex (ndarray has no half-precision arithmetic) and is held to four units in the last
//! place of that precision at each tensor's scale (`Tolerance::for_precision`).
//!
//! Calls listed in tests/plans/divergences.json are ones where tlens deliberately differs from TransformerLens (a
//! TransformerLens bug that tlens fixes, see the book's divergences page); they are skipped here and each has its own
//! test.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use tlens::Precision;
use tlens::backend::{BackendName, run_on};
use tlens::parity::{PlanOutput, Tolerance, committed_plans, compare, divergent_calls};
use tlens::plan::{EvalPlan, Plan};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn check_plan(plan: &Path, skip: &BTreeSet<String>) -> Result<String, String> {
    let stem = plan.file_stem().unwrap().to_string_lossy().to_string();
    let golden = root()
        .join("tests/golden")
        .join(format!("{stem}.safetensors"));
    let out = std::env::temp_dir().join(format!(
        "tlens-parity-{}-{stem}.safetensors",
        std::process::id()
    ));
    let (parsed, _) = Plan::read(plan).map_err(|e| e.to_string())?;
    let backend = match parsed.dtype {
        Precision::F32 => BackendName::Ndarray,
        Precision::F16 | Precision::Bf16 => BackendName::Flex,
    };
    run_on(
        backend,
        EvalPlan {
            plan: plan.to_path_buf(),
            out: out.clone(),
            budget: Default::default(),
        },
    )
    .unwrap()
    .map_err(|e| format!("{stem}: {e}"))?;
    let ours = PlanOutput::read(&out).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&out);
    let reference = PlanOutput::read(&golden).map_err(|e| format!("{stem}: golden: {e}"))?;
    let cmp = compare(
        &ours,
        &reference,
        Tolerance::for_precision(parsed.dtype),
        skip,
    );
    let line = format!(
        "{stem} ({backend:?}, {}): {} tensors, worst abs {:.2e}, worst rel {:.2e}",
        parsed.dtype,
        cmp.tensors.len(),
        cmp.worst_abs(),
        cmp.worst_rel()
    );
    if cmp.passed() {
        Ok(line)
    } else {
        Err(format!("{line}\n    {}", cmp.problems.join("\n    ")))
    }
}

#[test]
fn every_plan_matches_its_transformerlens_golden() {
    let plans = committed_plans(&root().join("tests/plans")).unwrap();
    assert!(!plans.is_empty(), "no plans found");
    let mut failures = Vec::new();
    for plan in &plans {
        let stem = plan.file_stem().unwrap().to_string_lossy().to_string();
        let skip = divergent_calls(&root().join("tests/plans"), &stem).unwrap();
        match check_plan(plan, &skip) {
            Ok(line) => println!("ok   {line}"),
            Err(line) => {
                println!("FAIL {line}");
                failures.push(line);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} plans disagree with TransformerLens:\n{}",
        failures.len(),
        plans.len(),
        failures.join("\n")
    );
}
