//! The command line against a generated corpus of broken inputs: broken model folders, token files, plans, arguments
//! and output paths. What tlens promises on bad input (the book's command-line chapter):
//!
//! - the exit status is 1 (the input is wrong) or 2 (the arguments are), never a panic's 101;
//! - stderr is one line, `error: …`;
//! - nothing is created or changed at `--out` unless the command succeeded, and no temporary is left beside it.
//!
//! Each case runs against an `--out` that already holds a "previous good file", and the same case with an `--out` that
//! does not exist yet. Successful neighbours of the broken cases run too, so the checks cannot pass vacuously.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use safetensors::{Dtype, SafeTensors};

const PREVIOUS: &[u8] = b"the previous good file";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The binary under test: this build's, or `TLENS_BIN` (to run the suite against another build, such as a release
/// from before a fix, and see which cases it fails).
fn binary() -> PathBuf {
    std::env::var_os("TLENS_BIN").map_or_else(|| env!("CARGO_BIN_EXE_tlens").into(), PathBuf::from)
}

fn tlens(args: &[String]) -> Output {
    Command::new(binary())
        .args(args)
        .output()
        .expect("the binary runs")
}

/// A scratch folder for one test, emptied first.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tlens-robust-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn copy_model(name: &str, to: &Path) -> PathBuf {
    let dir = to.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(root().join("tests/models").join(name)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    dir
}

/// Rewrites one tensor of a safetensors file with `f(values)`.
fn rewrite_tensor(path: &Path, name: &str, f: impl Fn(&mut [f32])) {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Dtype, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.shape().to_vec(), v.dtype(), v.data().to_vec()))
        .collect();
    let (_, _, dtype, data) = tensors.iter_mut().find(|t| t.0 == name).unwrap();
    assert_eq!(*dtype, Dtype::F32);
    let mut values: Vec<f32> = data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    f(&mut values);
    *data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, s, d, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// Sets a key of a JSON config (or removes it with `None`).
fn edit_json(path: &Path, key: &str, value: Option<serde_json::Value>) {
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let map = json.as_object_mut().unwrap();
    match value {
        Some(v) => map.insert(key.to_string(), v),
        None => map.remove(key),
    };
    std::fs::write(path, json.to_string()).unwrap();
}

/// The files of a folder other than `keep`, for the "no temporary left" check.
fn others(dir: &Path, keep: &[&Path]) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && !keep.contains(&p.as_path()))
        .map(|p| p.display().to_string())
        .collect()
}

/// Runs a command that must fail: status 1 or 2, one `error:` line, and `out` (when the command writes one) neither
/// created nor changed. `args` may hold `OUT`, which is replaced by the output path.
fn must_fail(case: &str, args: &[String], out_dir: &Path) {
    let writes = args.iter().any(|a| a == "OUT");
    for existing in [true, false] {
        let out = out_dir.join(format!("out-{}", existing as u8));
        let _ = std::fs::remove_file(&out);
        if existing {
            std::fs::write(&out, PREVIOUS).unwrap();
        }
        let args: Vec<String> = args
            .iter()
            .map(|a| {
                if a == "OUT" {
                    out.display().to_string()
                } else {
                    a.clone()
                }
            })
            .collect();
        let result = tlens(&args);
        let stderr = String::from_utf8_lossy(&result.stderr);
        let code = result.status.code();
        assert!(
            matches!(code, Some(1 | 2)),
            "{case}: {args:?} exited with {code:?}: {stderr}"
        );
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "{case}: {args:?}: {stderr}"
        );
        assert!(stderr.starts_with("error: "), "{case}: {args:?}: {stderr}");
        if existing {
            assert_eq!(
                std::fs::read(&out).unwrap(),
                PREVIOUS,
                "{case}: the previous file at --out was changed"
            );
        } else {
            assert!(!out.exists(), "{case}: a file was created at --out");
        }
        if !writes {
            break;
        }
    }
    let stray = others(out_dir, &[&out_dir.join("out-1")]);
    assert!(stray.is_empty(), "{case}: left behind {stray:?}");
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn ok(args: &[String]) -> String {
    let result = tlens(args);
    assert!(
        result.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    String::from_utf8(result.stdout).unwrap()
}

#[test]
fn broken_model_folders_are_refused_in_one_line() {
    let dir = scratch("models");
    let out_dir = dir.join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let mut corpus: Vec<(&str, PathBuf)> = Vec::new();
    let broken = |name: &str, from: &str, f: &dyn Fn(&Path)| {
        let model = copy_model(from, &dir.join(name));
        f(&model);
        model
    };
    corpus.push((
        "truncated HF weights",
        broken("trunc", "gpt2-tiny", &|m| {
            let w = m.join("model.safetensors");
            let bytes = std::fs::read(&w).unwrap();
            std::fs::write(&w, &bytes[..bytes.len() / 2]).unwrap();
        }),
    ));
    corpus.push((
        "empty TL weights",
        broken("empty", "tl-attnonly", &|m| {
            std::fs::write(m.join("weights.safetensors"), b"").unwrap()
        }),
    ));
    corpus.push((
        "a header length past the file",
        broken("header", "tl-attnonly", &|m| {
            let w = m.join("weights.safetensors");
            let mut bytes = std::fs::read(&w).unwrap();
            bytes[..8].copy_from_slice(&u64::MAX.to_le_bytes());
            std::fs::write(&w, bytes).unwrap();
        }),
    ));
    corpus.push((
        "NaN in a weight",
        broken("nan", "tl-attnonly", &|m| {
            rewrite_tensor(&m.join("weights.safetensors"), "blocks.0.attn.W_Q", |v| {
                v[3] = f32::NAN
            })
        }),
    ));
    corpus.push((
        "an infinite HF weight",
        broken("inf", "gpt2-tiny", &|m| {
            rewrite_tensor(
                &m.join("model.safetensors"),
                "transformer.h.1.mlp.c_fc.weight",
                |v| v[0] = f32::INFINITY,
            )
        }),
    ));
    for (name, key, value) in [
        ("eps0", "eps", Some(serde_json::json!(0.0))),
        ("epsneg", "eps", Some(serde_json::json!(-1e-5))),
        ("scale0", "attn_scale", Some(serde_json::json!(0.0))),
        ("dmodel", "d_model", Some(serde_json::json!(48))),
        ("nlayers", "n_layers", Some(serde_json::json!(3))),
        ("novocab", "d_vocab", None),
        ("hugeheads", "n_heads", Some(serde_json::json!(1e300))),
    ] {
        corpus.push((
            key,
            broken(name, "tl-attnonly", &|m| {
                edit_json(&m.join("config.json"), key, value.clone())
            }),
        ));
    }
    for (name, key, value) in [
        ("hfeps", "layer_norm_epsilon", serde_json::json!(0.0)),
        ("hfembd", "n_embd", serde_json::json!(96)),
        ("hftype", "model_type", serde_json::json!("mamba")),
    ] {
        corpus.push((
            key,
            broken(name, "gpt2-tiny", &|m| {
                edit_json(&m.join("config.json"), key, Some(value.clone()))
            }),
        ));
    }
    corpus.push((
        "config not JSON",
        broken("notjson", "tl-attnonly", &|m| {
            std::fs::write(m.join("config.json"), "{\"n_layers\": 2,").unwrap()
        }),
    ));
    corpus.push((
        "no config",
        broken("noconfig", "gpt2-tiny", &|m| {
            std::fs::remove_file(m.join("config.json")).unwrap()
        }),
    ));
    corpus.push((
        "a TransformerLens folder without weights",
        broken("noweights", "tl-attnonly", &|m| {
            std::fs::remove_file(m.join("weights.safetensors")).unwrap()
        }),
    ));
    corpus.push((
        "a corrupt tokenizer",
        broken("tokenizer", "gpt2-tiny", &|m| {
            std::fs::write(m.join("tokenizer.json"), "{\"model\": 3}").unwrap()
        }),
    ));
    #[cfg(unix)]
    for (name, file) in [
        ("zero-weights", "weights.safetensors"),
        ("zero-config", "config.json"),
    ] {
        corpus.push((
            "/dev/zero as a model file",
            broken(name, "tl-attnonly", &|m| {
                std::fs::remove_file(m.join(file)).unwrap();
                std::os::unix::fs::symlink("/dev/zero", m.join(file)).unwrap();
            }),
        ));
    }
    corpus.push(("no such folder", dir.join("missing")));
    corpus.push((
        "a file, not a folder",
        root().join("tests/models/gpt2-tiny/config.json"),
    ));
    for (case, model) in &corpus {
        let model = model.display().to_string();
        must_fail(
            case,
            &strings(&[
                "run", "--model", &model, "--tokens", "TOKENS", "--out", "OUT",
            ])
            .into_iter()
            .map(|a| {
                if a == "TOKENS" {
                    write_tokens(&dir, "[0, 1, 2]")
                } else {
                    a
                }
            })
            .collect::<Vec<_>>(),
            &out_dir,
        );
        must_fail(case, &strings(&["lens", "--model", &model]), &out_dir);
    }
    // The undamaged models work, so the failures above are the damage's.
    for model in ["gpt2-tiny", "tl-attnonly"] {
        let copy = copy_model(model, &dir.join("fine")).display().to_string();
        let tokens = write_tokens(&dir, "[0, 1, 2]");
        let out = out_dir.join("fine.safetensors");
        ok(&strings(&[
            "run",
            "--model",
            &copy,
            "--tokens",
            &tokens,
            "--out",
            out.to_str().unwrap(),
        ]));
        assert!(out.exists());
        std::fs::remove_file(out).unwrap();
    }
    let _ = std::fs::remove_dir_all(dir);
}

fn write_tokens(dir: &Path, json: &str) -> String {
    let path = dir.join(format!("tokens-{:x}.json", fxhash(json)));
    std::fs::write(&path, json).unwrap();
    path.display().to_string()
}

/// A file name for each token list (FNV-1a).
fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

#[test]
fn broken_token_files_are_refused_in_one_line() {
    let dir = scratch("tokens");
    let out_dir = dir.join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let long: Vec<u32> = vec![1; 40];
    let long = serde_json::to_string(&long).unwrap();
    for (case, json) in [
        ("ragged batch", "[[1, 2], [3]]"),
        ("negative id", "[1, -2, 3]"),
        ("fractional id", "[1, 2.5]"),
        ("id past u32", "[1, 99999999999999999999]"),
        ("id past u64 as float", "[1, 1e30]"),
        ("id past the vocabulary", "[0, 600]"),
        ("empty list", "[]"),
        ("empty sequence", "[[]]"),
        ("three levels", "[[[1]]]"),
        ("not JSON", "[1, 2"),
        ("an object", "{\"tokens\": [1]}"),
        ("a string", "\"hello\""),
        ("past n_ctx", long.as_str()),
    ] {
        let tokens = write_tokens(&dir, json);
        for command in ["run", "lens", "attribute", "report"] {
            let mut args = strings(&[
                command,
                "--model",
                "tests/models/gpt2-tiny",
                "--tokens",
                &tokens,
            ]);
            if matches!(command, "run" | "report") {
                args.extend(strings(&["--out", "OUT"]));
            }
            must_fail(case, &args, &out_dir);
        }
    }
    must_fail(
        "/dev/zero as tokens",
        &strings(&["run", "--tokens", "/dev/zero", "--out", "OUT"]),
        &out_dir,
    );
    must_fail(
        "a folder as tokens",
        &strings(&["run", "--tokens", "tests", "--out", "OUT"]),
        &out_dir,
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn broken_plans_are_refused_in_one_line() {
    let dir = scratch("plans");
    let out_dir = dir.join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let models = root().join("tests/models").display().to_string();
    let plan = |name: &str, json: String| {
        let path = dir.join(format!("{name}.json"));
        std::fs::write(&path, json).unwrap();
        path.display().to_string()
    };
    let good_model = format!("{{\"hf\": \"{models}/gpt2-tiny\"}}");
    let call = |id: &str| format!("{{\"id\": \"{id}\", \"method\": \"accumulated_resid\"}}");
    for (case, json) in [
        ("not JSON", "{".to_string()),
        ("no model", "{\"tokens\": [[0, 1]]}".to_string()),
        (
            "both hf and tl",
            r#"{"model": {"hf": "x", "tl": {"config": "c", "weights": "w"}}, "tokens": [[0]]}"#
                .to_string(),
        ),
        (
            "two calls of one id",
            format!(
                "{{\"model\": {good_model}, \"tokens\": [[0, 1]], \"calls\": [{}, {}]}}",
                call("a"),
                call("a")
            ),
        ),
        (
            "tokens past the vocabulary",
            format!("{{\"model\": {good_model}, \"tokens\": [[0, 100000]]}}"),
        ),
        (
            "a ragged batch",
            format!("{{\"model\": {good_model}, \"tokens\": [[0, 1], [0]]}}"),
        ),
        (
            "an unknown field",
            format!("{{\"model\": {good_model}, \"tokens\": [[0, 1]], \"tokenz\": 1}}"),
        ),
        (
            "a missing model folder",
            "{\"model\": {\"hf\": \"no/such/model\"}, \"tokens\": [[0, 1]]}".to_string(),
        ),
    ] {
        let path = plan(&case.replace(' ', "-"), json);
        must_fail(
            case,
            &strings(&["eval", "--plan", &path, "--out", "OUT"]),
            &out_dir,
        );
    }
    must_fail(
        "/dev/zero as a plan",
        &strings(&["eval", "--plan", "/dev/zero", "--out", "OUT"]),
        &out_dir,
    );
    // The neighbour that works: the same plan with distinct ids.
    let good = plan(
        "good",
        format!(
            "{{\"model\": {good_model}, \"tokens\": [[0, 1]], \"calls\": [{}, {}]}}",
            call("a"),
            call("b")
        ),
    );
    let out = out_dir.join("good.safetensors");
    ok(&strings(&[
        "eval",
        "--plan",
        &good,
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(out.exists());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_arguments_are_refused_before_any_work() {
    let dir = scratch("args");
    let out_dir = dir.join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let model = copy_model("gpt2-tiny", &dir).display().to_string();
    let weights = format!("{model}/model.safetensors");
    let tokens = write_tokens(&dir, "[[0, 1, 2], [0, 3, 4]]");
    let plan = dir.join("plan.json");
    std::fs::write(
        &plan,
        format!("{{\"model\": {{\"hf\": \"{model}\"}}, \"tokens\": [[0, 1]]}}"),
    )
    .unwrap();
    let plan = plan.display().to_string();
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("--top 0 (run)", vec!["run", "--top", "0", "--out", "OUT"]),
        ("--top 0 (lens)", vec!["lens", "--top", "0"]),
        ("--top 0 (attribute)", vec!["attribute", "--top", "0"]),
        ("--top not a number", vec!["lens", "--top", "many"]),
        ("--sequences 0", vec!["patterns", "--sequences", "0"]),
        (
            "--sequences past any run",
            vec!["patterns", "--sequences", "18446744073709551615"],
        ),
        (
            "report --sequences past any run",
            vec![
                "report",
                "--sequences",
                "18446744073709551615",
                "--out",
                "OUT",
            ],
        ),
        (
            "--seq-len past n_ctx",
            vec!["patterns", "--seq-len", "100000"],
        ),
        ("--head malformed", vec!["patterns", "--head", "head two"]),
        ("--head past the model", vec!["patterns", "--head", "L9H9"]),
        (
            "--prompt without --head",
            vec!["patterns", "--prompt", "hello"],
        ),
        (
            "--head on a batch",
            vec![
                "patterns", "--model", &model, "--head", "L0H0", "--tokens", &tokens,
            ],
        ),
        (
            "--position past the end",
            vec!["attribute", "--position", "99"],
        ),
        (
            "--position before the start",
            vec!["attribute", "--position", "-99"],
        ),
        (
            "--batch-index past the batch (lens)",
            vec![
                "lens",
                "--model",
                &model,
                "--tokens",
                &tokens,
                "--batch-index",
                "2",
            ],
        ),
        (
            "--batch-index past the batch (attribute)",
            vec![
                "attribute",
                "--model",
                &model,
                "--tokens",
                &tokens,
                "--batch-index",
                "5",
            ],
        ),
        (
            "--target id past u32",
            vec!["lens", "--target", "id:99999999999999999999"],
        ),
        (
            "--target id past the vocabulary",
            vec!["lens", "--target", "id:4294967295"],
        ),
        (
            "--against not one token",
            vec!["attribute", "--model", &model, "--against", "not one token"],
        ),
        ("--incl-mid without MLPs", vec!["lens", "--incl-mid"]),
        (
            "--hook misspelt",
            vec!["run", "--hook", "blocks.0.attn.hook_patern", "--out", "OUT"],
        ),
        (
            "--hook-op malformed",
            vec!["run", "--hook-op", "zero@", "--out", "OUT"],
        ),
        ("--out is a folder", vec!["run", "--out", "tests"]),
        (
            "--out in a missing folder",
            vec!["report", "--out", "/no/such/dir/report.html"],
        ),
        (
            "--out is the model's weights",
            vec!["run", "--model", &model, "--out", &weights],
        ),
        (
            "--out is the token file",
            vec![
                "run", "--model", &model, "--tokens", &tokens, "--out", &tokens,
            ],
        ),
        (
            "--out is the plan",
            vec!["eval", "--plan", &plan, "--out", &plan],
        ),
        (
            "--out is the plan's model weights",
            vec!["eval", "--plan", &plan, "--out", &weights],
        ),
        (
            "--max-memory malformed",
            vec!["--max-memory", "lots", "run", "--out", "OUT"],
        ),
        (
            "weights past --max-memory",
            vec!["--max-memory", "64K", "run", "--out", "OUT"],
        ),
        (
            "a batch past --max-memory",
            vec!["--max-memory", "700K", "run", "--out", "OUT"],
        ),
        (
            "a lens past --max-memory",
            vec!["--max-memory", "700K", "lens"],
        ),
        (
            "a report past --max-memory",
            vec!["--max-memory", "700K", "report", "--out", "OUT"],
        ),
        (
            "patterns past --max-memory",
            vec!["--max-memory", "700K", "patterns"],
        ),
        (
            "an eval past --max-memory",
            vec![
                "--max-memory",
                "1K",
                "eval",
                "--plan",
                &plan,
                "--out",
                "OUT",
            ],
        ),
        ("eval without --out", vec!["eval", "--plan", &plan]),
        (
            "an unknown backend",
            vec!["--backend", "metal", "run", "--out", "OUT"],
        ),
        ("an unknown command", vec!["frobnicate"]),
    ];
    for (case, args) in &cases {
        must_fail(case, &strings(args), &out_dir);
    }
    // Inputs named as --out are untouched.
    assert_eq!(
        std::fs::read(&weights).unwrap(),
        std::fs::read(root().join("tests/models/gpt2-tiny/model.safetensors")).unwrap()
    );
    // Inputs too large for the memory allowed: a 20 000-token sequence on a model with a long context (attention
    // patterns grow with its square), and a batch of 100 000 sequences.
    let long_ctx = copy_model("hf-llama", &dir.join("long"));
    edit_json(
        &long_ctx.join("config.json"),
        "max_position_embeddings",
        Some(serde_json::json!(32768)),
    );
    let long_ctx = long_ctx.display().to_string();
    let long = write_tokens(&dir, &serde_json::to_string(&vec![1u32; 20_000]).unwrap());
    let many = write_tokens(
        &dir,
        &serde_json::to_string(&vec![vec![1u32; 32]; 100_000]).unwrap(),
    );
    for command in ["run", "lens", "attribute", "report", "patterns"] {
        let mut args = strings(&[
            "--max-memory",
            "8G",
            command,
            "--model",
            &long_ctx,
            "--tokens",
            &long,
        ]);
        match command {
            "run" | "report" => args.extend(strings(&["--out", "OUT"])),
            "patterns" => args.extend(strings(&["--head", "L0H0"])),
            _ => {}
        }
        must_fail("a 20 000-token sequence", &args, &out_dir);
    }
    must_fail(
        "a batch of 100 000 sequences",
        &strings(&[
            "--max-memory",
            "2G",
            "run",
            "--model",
            &model,
            "--tokens",
            &many,
            "--out",
            "OUT",
        ]),
        &out_dir,
    );
    // lens and attribute read one sequence of the batch, so they run it alone and succeed.
    for command in ["lens", "attribute"] {
        ok(&strings(&[
            "--max-memory",
            "2G",
            command,
            "--model",
            &model,
            "--tokens",
            &many,
            "--batch-index",
            "99999",
        ]));
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn messages_name_what_is_wrong() {
    let expect = |args: &[&str], needle: &str| {
        let result = tlens(&strings(args));
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    };
    expect(&["eval", "--plan", "p.json"], "--out");
    expect(
        &["lens", "--target", "id:99999999999999999999"],
        "out of range",
    );
    expect(
        &["run", "--model", "tests/models/gpt2-tiny/config.json"],
        "a file, not a model folder",
    );
    expect(&["lens", "--incl-mid"], "no MLPs");
    expect(&["--max-memory", "64K", "run"], "--max-memory");
    expect(&["--max-memory", "64K", "run"], "the model's weights");
    expect(&["--max-memory", "700K", "run"], "--hook");
    let dir = scratch("messages");
    let tl = copy_model("tl-attnonly", &dir);
    std::fs::remove_file(tl.join("weights.safetensors")).unwrap();
    expect(
        &["lens", "--model", tl.to_str().unwrap()],
        "weights.safetensors",
    );
    let plan = dir.join("both.json");
    std::fs::write(
        &plan,
        r#"{"model": {"hf": "x", "tl": {"config": "c", "weights": "w"}}, "tokens": [[0]]}"#,
    )
    .unwrap();
    let out = dir.join("out.safetensors");
    let (plan, out_arg) = (plan.display().to_string(), out.display().to_string());
    expect(
        &["eval", "--plan", &plan, "--out", &out_arg],
        "exactly one of `hf`",
    );
    // A call's error is recorded in the output, and says what is wrong with the key.
    let plan = dir.join("keys.json");
    let model = root().join("tests/models/gpt2-tiny").display().to_string();
    std::fs::write(
        &plan,
        format!(
            r#"{{"model": {{"hf": "{model}"}}, "tokens": [[0, 1]], "calls": [
                {{"id": "neg", "method": "__getitem__", "args": {{"key": ["pattern", -99]}}}},
                {{"id": "huge", "method": "__getitem__", "args": {{"key": ["pattern", 99999999999999999999]}}}},
                {{"id": "far", "method": "accumulated_resid", "args": {{"layer": 1e20}}}}]}}"#
        ),
    )
    .unwrap();
    ok(&strings(&[
        "eval",
        "--plan",
        plan.to_str().unwrap(),
        "--out",
        &out_arg,
    ]));
    let bytes = std::fs::read(&out).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let errors = meta.metadata().clone().unwrap();
    assert!(
        errors["error/neg"].contains("layer -99 is out of range"),
        "{errors:?}"
    );
    assert!(errors["error/huge"].contains("out of range"), "{errors:?}");
    assert!(errors["error/far"].contains("out of range"), "{errors:?}");
    let _ = std::fs::remove_dir_all(dir);
}

/// A model whose output vocabulary is smaller than its input one: tokens past `d_vocab_out` can be read but never
/// predicted, so the lens gives them probability 0 (it used to panic in a gather) and the report picks its induction
/// task among tokens the model can predict.
#[test]
fn tokens_past_the_output_vocabulary_are_read_but_not_predicted() {
    let dir = scratch("vocab-out");
    let tokens = write_tokens(&dir, "[1, 2, 45, 3]");
    let model = "tests/models/tl-ln-relu";
    let stdout = ok(&strings(&["lens", "--model", model, "--tokens", &tokens]));
    assert!(
        stdout.contains("position 1 \"#2\" -> target \"#45\""),
        "{stdout}"
    );
    let after = stdout.split("-> target \"#45\"").nth(1).unwrap();
    for line in after.lines().skip(1).take(3) {
        assert!(line.contains("p(target) 0.0000"), "{line}");
    }
    let out = dir.join("report.html");
    ok(&strings(&[
        "report",
        "--model",
        model,
        "--tokens",
        &tokens,
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(out.exists());
    let _ = std::fs::remove_dir_all(dir);
}

/// A reader that closes the pipe early (`tlens run | head -1`) does not stop the command: the cache is still written
/// and the exit status is 0.
#[test]
fn a_closed_stdout_does_not_stop_the_work() {
    let dir = scratch("pipe");
    let out = dir.join("cache.safetensors");
    let mut child = Command::new(binary())
        .args(["run", "--out", out.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let result = child.wait_with_output().unwrap();
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    assert!(SafeTensors::deserialize(&std::fs::read(&out).unwrap()).is_ok());
    let _ = std::fs::remove_dir_all(dir);
}

/// A successful run replaces the previous file whole, and leaves no temporary beside it.
#[test]
fn a_successful_write_replaces_the_file_and_leaves_nothing_else() {
    let dir = scratch("replace");
    let out = dir.join("cache.safetensors");
    std::fs::write(&out, PREVIOUS).unwrap();
    ok(&strings(&["run", "--out", out.to_str().unwrap()]));
    assert!(SafeTensors::deserialize(&std::fs::read(&out).unwrap()).is_ok());
    assert_eq!(others(&dir, &[&out]), Vec::<String>::new());
    let _ = std::fs::remove_dir_all(dir);
}

/// Weights that pass the load checks (all finite) but overflow in the forward pass: the commands still succeed, and
/// say the numbers are not meaningful instead of reporting them as findings.
#[test]
fn non_finite_outputs_are_flagged() {
    let dir = scratch("overflow");
    let model = copy_model("tl-attnonly", &dir);
    rewrite_tensor(&model.join("weights.safetensors"), "embed.W_E", |v| {
        v.iter_mut().for_each(|x| *x *= 1e38)
    });
    let model = model.display().to_string();
    let tokens = write_tokens(&dir, "[0, 1, 2, 3]");
    for command in ["run", "lens", "attribute"] {
        let mut args = strings(&[command, "--model", &model, "--tokens", &tokens]);
        if command == "run" {
            args.extend(strings(&[
                "--out",
                dir.join("c.safetensors").to_str().unwrap(),
            ]));
        }
        let result = tlens(&args);
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(result.status.success(), "{command}: {stderr}");
        assert!(
            stderr.contains("warning: the model's output holds NaN"),
            "{command}: {stderr}"
        );
    }
    let stdout = ok(&strings(&[
        "patterns",
        "--model",
        &model,
        "--sequences",
        "2",
    ]));
    assert!(
        stdout.contains("no induction scores: the attention patterns are NaN"),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
