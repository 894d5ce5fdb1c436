//! `tlens harvest` end to end: the rows it writes are the model's activations of SAELens-packed windows; a harvest
//! killed (SIGKILL) at random points and resumed, or stopped by a full disk and resumed, or split over machines and
//! merged, ends with the same bytes as one uninterrupted run; bad input is refused with one line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Int32Type};
use arrow_array::{Array, FixedSizeListArray, RecordBatch};
use tlens::backend::NdArray;
use tlens::harvest::manifest::{MANIFEST_FILE, Manifest, ShardOf};
use tlens::harvest::windows::Packer;
use tlens::harvest::{HarvestArgs, HarvestError, harvest};
use tlens::memory::MemoryBudget;
use tlens::{NamesFilter, Precision, RunOptions, TlensError, TokenBatch};

const MODEL: &str = "tests/models/gpt2-tiny";
const HOOKS: [&str; 2] = ["blocks.0.hook_resid_post", "blocks.1.attn.hook_pattern"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A scratch folder for one test, emptied first and removed when the test passes (kept for a look when it fails).
struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn scratch(name: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("tlens-harvest-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

/// `documents` JSON Lines records of 0 to 80 words, with a malformed line now and then; the same for a seed.
fn corpus(documents: usize, seed: u64) -> Vec<String> {
    let words = [
        "the", "cat", "sat", "on", "a", "mat", "when", "John", "and", "Mary", "went", "to",
        "shops", "bag",
    ];
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = |n: u64| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % n
    };
    (0..documents)
        .map(|i| {
            if i % 101 == 7 {
                return "{\"text\": 12}".to_string();
            }
            let text: Vec<&str> = (0..next(81))
                .map(|_| words[next(words.len() as u64) as usize])
                .collect();
            serde_json::json!({ "text": text.join(" ") }).to_string()
        })
        .collect()
}

fn write_corpus(dir: &Path, documents: usize) -> PathBuf {
    let path = dir.join("corpus.jsonl");
    std::fs::write(&path, corpus(documents, 1).join("\n") + "\n").unwrap();
    path
}

/// `tlens ARGS`, run from the repository root.
fn tlens(args: impl IntoIterator<Item = impl AsRef<std::ffi::OsStr>>) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tlens"));
    command.current_dir(root()).args(args);
    command
}

fn cli(args: &[&str]) -> Output {
    tlens(args).output().expect("the binary runs")
}

/// `tlens harvest --merge --out OUT`, which must succeed.
fn merge(out: &Path) {
    run_ok(&[
        "harvest".into(),
        "--merge".into(),
        "--out".into(),
        out.display().to_string(),
    ]);
}

/// The command line of a harvest of `data` into `out` with the test's settings, `extra` flags replacing or adding to
/// them (`--hooks` takes its names space-separated).
fn harvest_args(data: &Path, out: &Path, extra: &[(&str, &str)]) -> Vec<String> {
    let hooks = HOOKS.join(" ");
    let (data, out) = (data.display().to_string(), out.display().to_string());
    let mut flags: Vec<(&str, &str)> = vec![
        ("--model", MODEL),
        ("--data", &data),
        ("--hooks", &hooks),
        ("--context-size", "16"),
        ("--batch-size", "4"),
        ("--shard-size", "32"),
        ("--out", &out),
    ];
    for (flag, value) in extra {
        match flags.iter_mut().find(|(f, _)| f == flag) {
            Some(slot) => slot.1 = value,
            None => flags.push((flag, value)),
        }
    }
    let mut args = vec!["harvest".to_string()];
    for (flag, value) in flags {
        args.push(flag.to_string());
        args.extend(value.split(' ').map(String::from));
    }
    args
}

fn run_ok(args: &[String]) -> String {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = cli(&args);
    assert!(
        out.status.success(),
        "tlens {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every file of a folder and its bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

fn assert_same_folder(got: &Path, want: &Path) {
    let (got, want) = (files(got), files(want));
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (name, bytes) in &want {
        assert!(got[name] == *bytes, "{name} differs");
    }
}

/// The one-machine, uninterrupted harvest the other tests compare with.
fn reference(dir: &Path, data: &Path) -> PathBuf {
    let out = dir.join("reference");
    let stdout = run_ok(&harvest_args(data, &out, &[]));
    assert!(stdout.contains("is complete"), "{stdout}");
    out
}

/// The record batches of a shard file.
fn read_shard(path: &Path) -> Vec<RecordBatch> {
    let file = std::fs::File::open(path).unwrap();
    arrow_ipc::reader::StreamReader::try_new(file, None)
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// A nested fixed-size-list column's values, row-major.
fn flat_f32(column: &Arc<dyn Array>) -> Vec<f32> {
    let mut array = column.clone();
    while let Some(list) = array.as_any().downcast_ref::<FixedSizeListArray>() {
        array = list.values().clone();
    }
    array.as_primitive::<Float32Type>().values().to_vec()
}

#[test]
fn rows_are_the_activations_of_saelens_packed_windows() {
    let dir = scratch("rows");
    let data = write_corpus(&dir, 120);
    let device = Default::default();
    let loaded =
        tlens::load_folder::<NdArray>(&root().join(MODEL), Default::default(), &device).unwrap();
    let args = HarvestArgs {
        data: vec![data.clone()],
        text_field: "text".into(),
        hooks: HOOKS.map(String::from).to_vec(),
        context_size: 16,
        batch_size: 3,
        max_tokens: None,
        dtype: Precision::F32,
        out: dir.join("out"),
        shard: ShardOf::default(),
        shard_size: Some(9),
    };
    let mut calls = 0;
    let summary = harvest(
        &loaded,
        "gpt2-tiny",
        &args,
        &MemoryBudget::default(),
        &mut |_| calls += 1,
    )
    .unwrap();
    let manifest = &summary.manifest;
    let end = manifest.end.unwrap();
    assert!(manifest.complete && calls > 0);
    assert_eq!(
        (end.records, end.skipped),
        (120, 2),
        "records 7 and 108 are malformed"
    );
    assert_eq!(
        summary
            .first_skipped
            .as_deref()
            .map(|s| s.ends_with("line 8: field \"text\" is not a string but a number")),
        Some(true)
    );

    // The windows, packed independently from the tokenized documents.
    let tokenizer = loaded.tokenizer.as_ref().unwrap();
    let bos = tokenizer.bos_token_id();
    let mut packer = Packer::new(16, bos, bos);
    let mut windows = Vec::new();
    for line in corpus(120, 1) {
        let json: serde_json::Value = serde_json::from_str(&line).unwrap();
        if let Some(text) = json["text"].as_str() {
            packer.push(&tokenizer.to_tokens(text, false).unwrap(), |w| {
                windows.push(w)
            });
        }
    }
    assert_eq!(end.windows, windows.len() as u64);
    assert!(windows.iter().all(|w| w[0] == bos.unwrap()));
    assert_eq!(manifest.tokens_done, 16 * windows.len() as u64);

    // Each row against a run of its window alone.
    let mut row = 0;
    for shard in &manifest.shards {
        for batch in read_shard(&args.out.join(&shard.file)) {
            let ids = batch
                .column(0)
                .as_fixed_size_list()
                .values()
                .as_primitive::<Int32Type>()
                .values()
                .to_vec();
            let hooks: Vec<Vec<f32>> = (1..=HOOKS.len())
                .map(|c| flat_f32(batch.column(c)))
                .collect();
            for r in 0..batch.num_rows() {
                let window: Vec<u32> = ids[r * 16..(r + 1) * 16]
                    .iter()
                    .map(|&t| t as u32)
                    .collect();
                assert_eq!(window, windows[row], "window {row}");
                let tokens = TokenBatch::single(window).unwrap();
                let options = RunOptions {
                    names_filter: NamesFilter::Names(HOOKS.map(String::from).to_vec()),
                    ..Default::default()
                };
                let (_, cache) = loaded.model.run_with_cache(&tokens, options).unwrap();
                for (h, name) in HOOKS.iter().enumerate() {
                    let want = cache.get(*name).unwrap().to_vec();
                    let got = &hooks[h][r * want.len()..(r + 1) * want.len()];
                    for (g, w) in got.iter().zip(&want) {
                        // A row computed in a batch of 3 against the same row alone: f32 rounding of the products.
                        assert!(
                            (g - w).abs() <= 1e-5 + 1e-5 * w.abs(),
                            "{name} row {row}: {g} vs {w}"
                        );
                    }
                }
                row += 1;
            }
        }
    }
    assert_eq!(row, windows.len());
}

#[test]
fn a_harvest_killed_at_random_points_resumes_to_the_same_bytes() {
    let dir = scratch("kill");
    let data = write_corpus(&dir, 3000);
    let want = reference(&dir, &data);
    let out = dir.join("killed");
    let args = harvest_args(&data, &out, &[]);
    let mut state = 12345u64;
    let mut interrupted = 0;
    for _ in 0..6 {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
        let mut child = tlens(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(30 + (state >> 33) % 400));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let complete = Manifest::read(&out.join(MANIFEST_FILE)).is_ok_and(|m| m.complete);
        interrupted += usize::from(!complete);
    }
    assert!(
        interrupted >= 3,
        "only {interrupted} kills landed before the end: the test proves little"
    );
    let stdout = run_ok(&args);
    assert!(stdout.contains("is complete"), "{stdout}");
    assert_same_folder(&out, &want);
    // Once complete, running again does nothing.
    assert!(run_ok(&args).contains("nothing to do"));
    assert_same_folder(&out, &want);
}

#[test]
fn machines_with_shards_merge_to_the_one_machine_result() {
    let dir = scratch("machines");
    let data = write_corpus(&dir, 600);
    let want = reference(&dir, &data);
    let out = dir.join("split");
    let machines: Vec<_> = (0..3)
        .map(|k| {
            let shard = format!("{k}/3");
            tlens(harvest_args(&data, &out, &[("--shard", shard.as_str())])).output()
        })
        .collect();
    for m in machines {
        let m = m.unwrap();
        assert!(m.status.success(), "{}", String::from_utf8_lossy(&m.stderr));
        assert!(String::from_utf8_lossy(&m.stdout).contains("--merge"));
    }
    // Before the merge the folder is the machines'; a one-machine run may not mix into it.
    let refused = cli(&harvest_args(&data, &out, &[])
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("shared by 3 machines"));
    merge(&out);
    assert_same_folder(&out, &want);
}

#[test]
fn machines_run_at_once_into_one_folder() {
    let dir = scratch("concurrent");
    let data = write_corpus(&dir, 600);
    let want = reference(&dir, &data);
    let out = dir.join("split");
    let children: Vec<_> = (0..2)
        .map(|k| {
            let shard = format!("{k}/2");
            tlens(harvest_args(&data, &out, &[("--shard", shard.as_str())]))
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let done = child.wait_with_output().unwrap();
        assert!(
            done.status.success(),
            "{}",
            String::from_utf8_lossy(&done.stderr)
        );
    }
    merge(&out);
    assert_same_folder(&out, &want);
}

#[test]
#[cfg(unix)]
fn a_full_disk_stops_cleanly_and_the_folder_resumes() {
    let dir = scratch("full");
    let data = write_corpus(&dir, 600);
    let want = reference(&dir, &data);
    let out = dir.join("full");
    let args = harvest_args(&data, &out, &[]);
    // A file-size limit below a shard's size makes the write fail with EFBIG, as a full disk fails with ENOSPC (the
    // signal the kernel sends first is ignored, as a shell's `trap '' XFSZ` does). The killed-and-resumed test covers
    // a stop after some shards; here the write of the first one fails.
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    let script = format!(
        "trap '' XFSZ; ulimit -f 200; exec '{}' {}",
        env!("CARGO_BIN_EXE_tlens"),
        quoted.join(" ")
    );
    let full = Command::new("sh")
        .current_dir(root())
        .args(["-c", &script])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&full.stderr);
    assert_eq!(full.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("error: ") && stderr.trim().lines().count() == 1,
        "{stderr}"
    );
    assert!(
        stderr.contains("data-00000.arrow: File too large"),
        "{stderr}"
    );
    assert!(
        files(&out).is_empty(),
        "no shard and no temporary is left: {:?}",
        files(&out).keys()
    );
    run_ok(&args);
    assert_same_folder(&out, &want);
}

#[test]
fn parquet_and_json_lines_of_the_same_documents_give_the_same_rows() {
    use arrow_array::StringArray;
    use parquet::arrow::ArrowWriter;
    use parquet::basic::Compression;
    use parquet::file::properties::WriterProperties;
    let dir = scratch("parquet");
    let data = write_corpus(&dir, 300);
    let want = reference(&dir, &data);
    // The same records as Parquet (a malformed JSON record becomes a null): several row groups, snappy pages.
    let texts: Vec<Option<String>> = corpus(300, 1)
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["text"]
                .as_str()
                .map(String::from)
        })
        .collect();
    let path = dir.join("corpus.parquet");
    let schema = Arc::new(arrow_schema::Schema::new(vec![
        arrow_schema::Field::new("id", arrow_schema::DataType::Int32, false),
        arrow_schema::Field::new("text", arrow_schema::DataType::Utf8, true),
    ]));
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(70))
        .build();
    let mut writer = ArrowWriter::try_new(
        std::fs::File::create(&path).unwrap(),
        schema.clone(),
        Some(props),
    )
    .unwrap();
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(arrow_array::Int32Array::from_iter_values(0..300)),
            Arc::new(StringArray::from(texts)),
        ],
    )
    .unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    let out = dir.join("from-parquet");
    run_ok(&harvest_args(&path, &out, &[]));
    let (got, want) = (files(&out), files(&want));
    for (name, bytes) in want.iter().filter(|(n, _)| n.ends_with(".arrow")) {
        assert!(got[name] == *bytes, "{name} differs");
    }
    let manifest = Manifest::read(&out.join(MANIFEST_FILE)).unwrap();
    assert_eq!(manifest.end.map(|e| (e.records, e.skipped)), Some((300, 3)));
    // A column that is missing is an error that names the columns there are.
    let err = cli(
        &harvest_args(&path, &dir.join("x"), &[("--text-field", "body")])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(
        String::from_utf8_lossy(&err.stderr).contains("no column \"body\" (its columns: id, text)")
    );
}

#[test]
fn bad_requests_are_refused_in_one_line() {
    let dir = scratch("bad");
    let data = write_corpus(&dir, 200);
    let empty = dir.join("empty.txt");
    std::fs::write(&empty, "\n\n").unwrap();
    let out = dir.join("out");
    let check = |args: Vec<String>, want: &str| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let got = cli(&args);
        let stderr = String::from_utf8_lossy(&got.stderr);
        assert_ne!(got.status.code(), Some(0), "{args:?} succeeded");
        assert!(
            stderr.starts_with("error: ") && stderr.trim().lines().count() == 1,
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    };
    check(
        harvest_args(&empty, &out, &[]),
        "no complete window of 16 tokens (2 records read, 0 skipped",
    );
    check(
        harvest_args(&data, &out, &[("--context-size", "33")]),
        "a context size of 33 tokens is outside 2..=32",
    );
    check(
        harvest_args(&data, &out, &[("--hooks", "blocks.0.hook_resid_pots")]),
        "did you mean",
    );
    check(
        harvest_args(&data, &out, &[("--max-tokens", "15")]),
        "less than one window",
    );
    check(
        harvest_args(&data, &out, &[("--shard", "3/3")]),
        "K must be below N",
    );
    // A folder of other files is not a harvest's.
    let other = dir.join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("notes.txt"), "mine").unwrap();
    check(
        harvest_args(&data, &other, &[]),
        "holds notes.txt, which is not part of a harvest",
    );
    assert_eq!(std::fs::read(other.join("notes.txt")).unwrap(), b"mine");
    // A harvest asked for differently does not mix into a folder.
    run_ok(&harvest_args(&data, &out, &[("--max-tokens", "320")]));
    let before = files(&out);
    check(
        harvest_args(&data, &out, &[("--max-tokens", "320"), ("--dtype", "f16")]),
        "dtype (\"f32\" there, \"f16\" here)",
    );
    check(
        harvest_args(&data, &out, &[]),
        "max_tokens (320 there, null here)",
    );
    assert_eq!(files(&out), before, "nothing changed");
    // The library's error is typed.
    let loaded =
        tlens::load_folder::<NdArray>(&root().join(MODEL), Default::default(), &Default::default())
            .unwrap();
    let args = HarvestArgs {
        data: vec![empty],
        text_field: "text".into(),
        hooks: vec![HOOKS[0].into()],
        context_size: 16,
        batch_size: 2,
        max_tokens: None,
        dtype: Precision::F16,
        out: dir.join("typed"),
        shard: ShardOf::default(),
        shard_size: None,
    };
    let err = harvest(&loaded, "m", &args, &MemoryBudget::default(), &mut |_| {}).unwrap_err();
    assert!(
        matches!(
            err,
            TlensError::Harvest(HarvestError::Empty { records: 2, .. })
        ),
        "{err}"
    );
}
