//! Project tasks: `cargo xtask <task>`.
//!
//! - `reference`: set up the pinned TransformerLens environment (reference/.venv) and regenerate the tiny models, plans
//!   and golden files (needs PyPI; several GB of torch wheels the first time).
//! - `libtorch`: assemble libtorch 2.9.0 (what burn-tch 0.21's tch 0.22 links) from the PyPI torch wheel, cached in
//!   `~/.cache/tlens/libtorch-2.9.0` (or `$TLENS_LIBTORCH_DIR`); prints the `LIBTORCH` to build the `tch` feature with.
//! - `bench [--features LIST] [--model gpt2-small|llama-3.2-1b] [--shapes 1x128,8x128,4x1024] [--cases a,b]
//!   [--vs-python] [--vs-candle-mi] [--update] [--out FILE]`: time a GPT-2-small- or Llama-3.2-1B-shaped model (random weights) on each
//!   backend, one process per case (peak RSS is per case); with
//!   `--vs-python` the same cases in TransformerLens (reference/.venv), with `--vs-candle-mi` (Llama shape only) the
//!   forward and cached runs in candle-mi 0.2.2 (`candle_mi.rs`). Writes `target/bench/results.json` and the
//!   Markdown table (default `book/src/bench-results.md`); with `--update` the results of earlier runs that this one
//!   does not measure stay in both (`--features "" --update` only rewrites the table).
//! - `parity [--features LIST] [--out FILE]`: build `tlens` with those backend features (default: ndarray), run every
//!   committed plan on every compiled-in backend, compare each with its TransformerLens golden and with the first
//!   backend, print a table, write it to FILE (default `target/parity.md`; the book's is
//!   `book/src/parity-results.md`), and exit non-zero on any disagreement.

use std::path::{Path, PathBuf};
use std::process::{Command, exit};

mod candle_mi;

use tlens::Precision;
use tlens::parity::{PlanOutput, Tolerance, committed_plans, compare, divergent_calls};
use tlens::plan::Plan;

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
        Some("bench") => bench(&args[1..]),
        Some("libtorch") => libtorch().map(|dir| println!("LIBTORCH={}", dir.display())),
        _ => Err(
            "usage: cargo xtask <reference | libtorch | bench [...] | parity [--features ndarray,flex,...]>"
                .to_string(),
        ),
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

/// The libtorch folder `cargo xtask libtorch` fills (and the `tch` feature builds against).
fn libtorch_dir() -> PathBuf {
    match std::env::var_os("TLENS_LIBTORCH_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| ".".into()))
            .join(".cache/tlens/libtorch-2.9.0"),
    }
}

/// libtorch 2.9.0 from PyPI wheels: `libtorch_cpu.so`, `libc10.so`, `libgomp.so.1` and the headers from the torch
/// wheel, `libcudart.so.12` and `libcupti.so.12` (which `libtorch_cpu.so` needs at load time) from NVIDIA's wheels.
fn libtorch() -> Result<PathBuf, String> {
    let dir = libtorch_dir();
    if dir.join("build-version").exists() {
        return Ok(dir);
    }
    let wheels = dir.with_file_name("wheels");
    std::fs::create_dir_all(&wheels).map_err(|e| e.to_string())?;
    sh(Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            "3.11",
        ])
        .args([
            "--platform",
            "manylinux_2_28_x86_64",
            "--platform",
            "manylinux_2_17_x86_64",
            "-d",
        ])
        .arg(&wheels)
        .args([
            "torch==2.9.0",
            "nvidia-cuda-runtime-cu12==12.8.90",
            "nvidia-cuda-cupti-cu12==12.8.90",
        ]))?;
    let staging = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&staging);
    // Unpacked with Python's zipfile: python3 is already needed for pip.
    let unpack = r#"
import glob, os, shutil, sys, zipfile
wheels, out = sys.argv[1], sys.argv[2]
lib = os.path.join(out, "lib"); os.makedirs(lib)
def member(pattern, names):
    return [n for n in names if any(n == p or n.startswith(p) for p in pattern)]
for wheel in glob.glob(os.path.join(wheels, "*.whl")):
    z = zipfile.ZipFile(wheel)
    names = z.namelist()
    if os.path.basename(wheel).startswith("torch-"):
        for n in member(["torch/lib/libtorch_cpu.so", "torch/lib/libc10.so", "torch/lib/libgomp.so.1"], names):
            with z.open(n) as src, open(os.path.join(lib, os.path.basename(n)), "wb") as dst: shutil.copyfileobj(src, dst)
        for n in member(["torch/include/"], names):
            if n.endswith("/"): continue
            target = os.path.join(out, n[len("torch/"):])
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with z.open(n) as src, open(target, "wb") as dst: shutil.copyfileobj(src, dst)
    else:
        for n in names:
            if os.path.basename(n) in ("libcudart.so.12", "libcupti.so.12"):
                with z.open(n) as src, open(os.path.join(lib, os.path.basename(n)), "wb") as dst: shutil.copyfileobj(src, dst)
os.symlink("libtorch_cpu.so", os.path.join(lib, "libtorch.so"))
open(os.path.join(out, "build-version"), "w").write("2.9.0\n")
"#;
    sh(Command::new("python3")
        .args(["-c", unpack])
        .arg(&wheels)
        .arg(&staging))?;
    for need in [
        "lib/libtorch_cpu.so",
        "lib/libc10.so",
        "lib/libcudart.so.12",
        "lib/libcupti.so.12",
        "include/torch",
    ] {
        if !staging.join(need).exists() {
            return Err(format!(
                "libtorch: {need} is missing from the wheels in {}",
                wheels.display()
            ));
        }
    }
    std::fs::rename(&staging, &dir).map_err(|e| e.to_string())?;
    Ok(dir)
}

fn parity(args: &[String]) -> Result<(), String> {
    check_args("parity", args, &["--features", "--out"])?;
    let features = flag(args, "--features").unwrap_or("ndarray").to_string();
    let backends = backend_list(&features);
    let built = build_with_backends("tlens", None, false, &features, &backends)?;
    let out_dir = root().join("target/parity");
    std::fs::create_dir_all(&out_dir).map_err(|e| e.to_string())?;
    // A copy: another build in the same target folder may replace target/debug/tlens with other features.
    let exe = out_dir.join(format!("tlens-{}", backends.join("-")));
    std::fs::copy(built, &exe).map_err(|e| e.to_string())?;
    let plans_dir = root().join("tests/plans");
    let plans = committed_plans(&plans_dir).map_err(|e| e.to_string())?;

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
        let dtype = Plan::read(plan).map_err(|e| e.to_string())?.0.dtype;
        let tol = Tolerance::for_precision(dtype);
        let golden = PlanOutput::read(
            &root()
                .join("tests/golden")
                .join(format!("{stem}.safetensors")),
        )
        .map_err(|e| e.to_string())?;
        let mut cells = Vec::new();
        let mut first: Option<(String, PlanOutput)> = None;
        for backend in &backends {
            if dtype != Precision::F32 && backend == "ndarray" {
                cells.push(format!("— (no {dtype} arithmetic)"));
                continue;
            }
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
            let vs_golden = compare(&ours, &golden, tol, &skip);
            let mut problems = vs_golden.problems.clone();
            if let Some((base_name, base)) = &first {
                problems.extend(
                    compare(&ours, base, tol, &Default::default())
                        .problems
                        .into_iter()
                        .map(|p| format!("vs {base_name}: {p}")),
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
            first.get_or_insert((backend.clone(), ours));
        }
        table.push(format!("| {stem} | {} |", cells.join(" | ")));
    }
    let report = format!(
        "Each cell: verdict, then the worst absolute / relative error against the TransformerLens golden \
         (tolerance {} for f32 models, {} for f16 and {} for bf16, the largest magnitude being the reference \
         tensor's; deliberate divergences of tests/plans/divergences.json skipped).\n\n{}\n",
        Tolerance::F32,
        Tolerance::for_precision(Precision::F16),
        Tolerance::for_precision(Precision::Bf16),
        table.join("\n")
    );
    println!("{report}");
    let out = flag(args, "--out").map_or_else(|| root().join("target/parity.md"), PathBuf::from);
    write_file(&out, &report)?;
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

/// Builds the binary `bin` with exactly the backend `features` (LIBTORCH from `cargo xtask libtorch` when tch is among
/// them and none is set) and returns its path in the target folder. `package` names the crate when `bin` is not a
/// default member's: `tlens` is built as the default members see it, with the features `cargo test` unifies, so that
/// parity reuses the test build's crates.
fn build_with_backends(
    bin: &str,
    package: Option<&str>,
    release: bool,
    features: &str,
    backends: &[String],
) -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(&cargo);
    build.args([
        "build",
        "--quiet",
        "--bin",
        bin,
        "--no-default-features",
        "--features",
        features,
    ]);
    if release {
        build.arg("--release");
    }
    if let Some(package) = package {
        build.args(["--package", package]);
    }
    if backends.iter().any(|b| b == "tch") && std::env::var_os("LIBTORCH").is_none() {
        build.env("LIBTORCH", libtorch()?);
    }
    sh(build.current_dir(root()))?;
    Ok(root()
        .join(if release {
            "target/release"
        } else {
            "target/debug"
        })
        .join(bin))
}

/// An error naming the first argument that is not one of `known` (or is a value with no flag before it).
fn check_args(task: &str, args: &[String], known: &[&str]) -> Result<(), String> {
    match args.iter().enumerate().find(|(i, a)| {
        a.starts_with("--") && !known.contains(&a.as_str()) || (*i == 0 && !a.starts_with("--"))
    }) {
        Some((_, bad)) => Err(format!(
            "{task}: unknown argument `{bad}`; takes {}",
            known.join(", ")
        )),
        None => Ok(()),
    }
}

/// The backends of a `--features` list.
fn backend_list(features: &str) -> Vec<String> {
    features
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// A flag's value in `args` (`--name value`).
fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn bench(args: &[String]) -> Result<(), String> {
    check_args(
        "bench",
        args,
        &[
            "--features",
            "--model",
            "--shapes",
            "--cases",
            "--vs-python",
            "--vs-candle-mi",
            "--update",
            "--out",
        ],
    )?;
    let features = flag(args, "--features").unwrap_or("ndarray").to_string();
    let model = flag(args, "--model").unwrap_or("gpt2-small").to_string();
    if tlens::bench::BenchModel::from_name(&model).is_none() {
        return Err(format!(
            "bench: unknown --model `{model}`; models: gpt2-small, llama-3.2-1b"
        ));
    }
    let backends = backend_list(&features);
    let shapes: Vec<(usize, usize)> = flag(args, "--shapes")
        .unwrap_or("1x128,8x128,4x1024")
        .split(',')
        .map(|s| {
            s.split_once('x')
                .and_then(|(b, p)| Some((b.parse().ok()?, p.parse().ok()?)))
                .ok_or(format!("bench: bad shape `{s}` (want BxP)"))
        })
        .collect::<Result<_, _>>()?;
    let all_cases = tlens::bench::CASES.map(str::to_string).to_vec();
    let cases: Vec<String> = flag(args, "--cases")
        .map(|c| c.split(',').map(str::to_string).collect())
        .unwrap_or(all_cases);
    let vs_python = args.iter().any(|a| a == "--vs-python");
    let vs_candle_mi = args.iter().any(|a| a == "--vs-candle-mi");
    if vs_candle_mi && model != "llama-3.2-1b" {
        return Err(
            "bench --vs-candle-mi runs the Llama shape only: add --model llama-3.2-1b".into(),
        );
    }

    let bench_dir = root().join("target/bench");
    std::fs::create_dir_all(&bench_dir).map_err(|e| e.to_string())?;
    let exe = bench_dir.join(format!("tlens-bench-{}", backends.join("-")));
    // `--features ""` measures TransformerLens alone (with --vs-python): nothing of tlens to build.
    if !backends.is_empty() {
        let built = build_with_backends(
            "tlens-bench",
            Some("tlens-bench"),
            true,
            &features,
            &backends,
        )?;
        std::fs::copy(built, &exe).map_err(|e| e.to_string())?;
    }
    let python = root().join("reference/.venv/bin/python");
    if vs_python && !python.exists() {
        return Err(
            "bench --vs-python needs the reference environment: run `cargo xtask reference` first"
                .into(),
        );
    }

    let mut runners: Vec<(String, Command)> = backends
        .iter()
        .map(|b| (b.clone(), Command::new(&exe)))
        .collect();
    if vs_candle_mi {
        runners.push((CANDLE_MI.into(), candle_mi::runner(&root())?));
    }
    if vs_python {
        let mut py = Command::new(&python);
        py.arg(root().join("reference/bench_tl.py"));
        runners.push(("transformerlens".into(), py));
    }
    let json_path = bench_dir.join("results.json");
    let mut results: Vec<serde_json::Value> = match std::fs::read_to_string(&json_path) {
        Ok(text) if args.iter().any(|a| a == "--update") => {
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", json_path.display()))?
        }
        _ => Vec::new(),
    };
    for &(batch, pos) in &shapes {
        let reps = if batch * pos >= 4096 { 1 } else { 3 };
        for case in &cases {
            for (name, runner) in &mut runners {
                // candle-mi has no cache methods and no causal API to time.
                if name == CANDLE_MI && !["forward", "run_with_cache"].contains(&case.as_str()) {
                    continue;
                }
                let mut cmd = Command::new(runner.get_program());
                cmd.args(runner.get_args());
                cmd.envs(runner.get_envs().filter_map(|(k, v)| Some((k, v?))));
                // tlens-bench runs every backend and is told which; the other runners run one thing.
                if name != "transformerlens" && name != CANDLE_MI {
                    cmd.arg(name.as_str());
                }
                cmd.args([
                    case.clone(),
                    batch.to_string(),
                    pos.to_string(),
                    reps.to_string(),
                    model.clone(),
                ]);
                // Two threads everywhere: ndarray's matmul needs MATMUL_NUM_THREADS besides rayon's setting.
                cmd.envs([
                    ("RAYON_NUM_THREADS", "2"),
                    ("MATMUL_NUM_THREADS", "2"),
                    ("OMP_NUM_THREADS", "2"),
                    ("TLENS_BENCH_THREADS", "2"),
                ]);
                eprint!("bench {name:>15} {model} {case:<32} {batch}x{pos} ... ");
                let out = cmd.output().map_err(|e| format!("{name}: {e}"))?;
                let line = String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .last()
                    .unwrap_or_default()
                    .to_string();
                let mut value: serde_json::Value = if out.status.success() {
                    serde_json::from_str(&line)
                        .map_err(|e| format!("{name} {case}: bad output {line:?}: {e}"))?
                } else {
                    let stderr = String::from_utf8_lossy(&out.stderr);
                    let err = match out.status.code() {
                        // No exit code: a signal ended it, on Linux most likely the kernel's OOM killer.
                        None => "killed by a signal (out of memory?)".to_string(),
                        Some(_) => stderr.lines().last().unwrap_or_default().to_string(),
                    };
                    serde_json::json!({"case": case, "batch": batch, "pos": pos, "error": err})
                };
                value["backend"] = name.clone().into();
                value["model"] = model.clone().into();
                eprintln!(
                    "{}",
                    value["median_s"].as_f64().map_or_else(
                        || format!("error: {}", value["error"]),
                        |s| format!("{s:.3} s")
                    )
                );
                let same = |r: &serde_json::Value| {
                    model_of(r) == model_of(&value)
                        && ["backend", "case", "batch", "pos"]
                            .iter()
                            .all(|k| r[k] == value[k])
                };
                match results.iter().position(same) {
                    Some(i) => results[i] = value,
                    None => results.push(value),
                }
            }
        }
    }
    write_file(
        &json_path,
        &serde_json::to_string_pretty(&results).expect("json"),
    )?;
    // Columns: every runner in the results, TransformerLens last (the ratios are against it).
    let mut columns: Vec<String> = Vec::new();
    for r in &results {
        let name = r["backend"].as_str().unwrap_or_default().to_string();
        if !columns.contains(&name) {
            columns.push(name);
        }
    }
    columns.sort_by_key(|c| c == "transformerlens");
    let table = bench_table(&results, &columns);
    let out =
        flag(args, "--out").map_or_else(|| root().join("book/src/bench-results.md"), PathBuf::from);
    write_file(&out, &table)?;
    println!("{table}");
    Ok(())
}

/// The candle-mi runner's name in the results and the table.
const CANDLE_MI: &str = "candle-mi";

/// A result's model shape; results from before the `--model` flag are GPT-2 small.
fn model_of(r: &serde_json::Value) -> &str {
    r["model"].as_str().unwrap_or("gpt2-small")
}

/// One row per (model, shape, case): per runner the median time, tokens/s, peak RSS; and the ratio to
/// TransformerLens.
fn bench_table(results: &[serde_json::Value], runners: &[String]) -> String {
    let mut rows = vec![
        format!(
            "| shape | case | cache: tlens · TL | {} |",
            runners
                .iter()
                .map(|r| format!("{r}: s · tok/s · peak RSS"))
                .collect::<Vec<_>>()
                .join(" | ")
        ),
        format!("|---|---|---|{}", "---|".repeat(runners.len())),
    ];
    let mut keys: Vec<(String, u64, u64, String)> = Vec::new();
    for r in results {
        let key = (
            model_of(r).to_string(),
            r["batch"].as_u64().unwrap_or(0),
            r["pos"].as_u64().unwrap_or(0),
            r["case"].as_str().unwrap_or("").to_string(),
        );
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    for (model, batch, pos, case) in keys {
        let find = |runner: &str| {
            results.iter().find(|r| {
                r["backend"] == runner
                    && model_of(r) == model
                    && r["batch"] == batch
                    && r["pos"] == pos
                    && r["case"] == case.as_str()
            })
        };
        let tl_time = find("transformerlens").and_then(|r| r["median_s"].as_f64());
        // The cache's size is the same on every tlens backend; TransformerLens's may differ (its own hook set).
        let cache_gb = |tl: bool| {
            runners
                .iter()
                .filter(|r| (r.as_str() == "transformerlens") == tl)
                .filter_map(|r| find(r)?["cache_bytes"].as_f64())
                .find(|&b| b > 0.0)
                .map_or_else(|| "—".to_string(), |b| format!("{:.2} GB", b / 1e9))
        };
        let cache = format!("{} · {}", cache_gb(false), cache_gb(true));
        let cells: Vec<String> = runners
            .iter()
            .map(|runner| match find(runner) {
                Some(r) if r.get("median_s").is_some() => {
                    let s = r["median_s"].as_f64().unwrap_or(f64::NAN);
                    let ratio = match (tl_time, runner.as_str()) {
                        (Some(tl), name) if name != "transformerlens" => {
                            format!(" ({:.1}× TL)", tl / s)
                        }
                        _ => String::new(),
                    };
                    format!(
                        "{s:.3}{ratio} · {:.0} · {:.2} GB",
                        r["tokens_per_s"].as_f64().unwrap_or(0.0),
                        r["peak_rss_bytes"].as_f64().unwrap_or(0.0) / 1e9
                    )
                }
                Some(r) => r["error"].as_str().unwrap_or("?").to_string(),
                None => "—".into(),
            })
            .collect();
        // GPT-2 small rows keep their plain shape; other models name themselves.
        let shape = match model.as_str() {
            "gpt2-small" => format!("{batch}×{pos}"),
            other => format!("{other} {batch}×{pos}"),
        };
        rows.push(format!(
            "| {shape} | {case} | {cache} | {} |",
            cells.join(" | ")
        ));
    }
    format!(
        "The activation cache's size (all hooks; tlens, then TransformerLens), then per runner: median wall time in \
         seconds (with the speed-up over TransformerLens where measured), tokens per second (batch·pos / time) and \
         the process's peak RSS. GPT-2-small shape unless the shape names Llama 3.2 1B, random weights, fp32, 2 threads; \
         `cargo xtask bench`.\n\n{}\n",
        rows.join("\n")
    )
}

/// Writes a results file atomically (a failed or interrupted run keeps the previous results; the bench JSON
/// accumulates across runs).
fn write_file(path: &Path, text: &str) -> Result<(), String> {
    tlens::cache_core::atomic_file::write_atomically(path, |tmp| std::fs::write(tmp, text))
        .map_err(|e| e.to_string())
}
