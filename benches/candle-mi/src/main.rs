//! `candle-mi-bench CASE BATCH POS REPS [MODEL]`: candle-mi's column of `cargo xtask bench --vs-candle-mi`.
//!
//! Runs the random Llama-3.2-1B-shaped weights that `reference/write_llama_weights.py` wrote (an HF folder named by
//! `TLENS_BENCH_WEIGHTS`) through candle-mi 0.2.2 on the CPU, in f32, and prints one JSON line with the fields that
//! `tlens-bench` and `reference/bench_tl.py` print. The timing mirrors `src/bench.rs`: the model is loaded once, there
//! is no warm-up, each of REPS repetitions is timed on its own, and the median is `sorted[REPS / 2]`.
//!
//! - `forward`: `MIModel::forward` with an empty `HookSpec` (candle-mi's zero-overhead path).
//! - `run_with_cache`: the same call with every hook point `GenericTransformer` fires captured; `cache_bytes` sums the
//!   captured tensors, counting a tensor held under two names twice, as TransformerLens's and tlens's sums do.
//!
//! Threads: candle's CPU matmul (the `gemm` crate) and its other kernels use rayon's pool, so `RAYON_NUM_THREADS=2`
//! sets them.

use std::collections::HashMap;
use std::error::Error;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::exit;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_mi::{GenericTransformer, HookPoint, HookSpec, MIModel, TransformerConfig};
use serde::Serialize;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// The one model shape candle-mi runs here: the weights folder holds a Llama-3.2-1B-shaped checkpoint.
const MODEL: &str = "llama-3.2-1b";

/// The JSON line, with the field names and order of `tlens::bench::BenchResult`.
#[derive(Serialize)]
struct BenchResult {
    model: String,
    case: String,
    batch: usize,
    pos: usize,
    seconds: Vec<f64>,
    median_s: f64,
    tokens_per_s: f64,
    cache_bytes: usize,
    peak_rss_bytes: u64,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 || args.len() > 5 {
        eprintln!(
            "usage: candle-mi-bench CASE BATCH POS REPS [MODEL]  (TLENS_BENCH_WEIGHTS=HF folder)"
        );
        exit(2);
    }
    let case = args[0].as_str();
    if !matches!(case, "forward" | "run_with_cache") {
        // The cache-method and causal cases have no candle-mi counterpart.
        eprintln!("candle-mi-bench: unsupported case `{case}`; cases: forward, run_with_cache");
        exit(2);
    }
    let model = args.get(4).map_or(MODEL, String::as_str);
    if model != MODEL {
        eprintln!("candle-mi-bench: unsupported model `{model}`; models: {MODEL}");
        exit(2);
    }
    let numbers: std::result::Result<Vec<usize>, _> =
        args[1..4].iter().map(|a| a.parse()).collect();
    let (batch, pos, reps) = match numbers.as_deref() {
        Ok(&[b, p, r]) if b > 0 && p > 0 && r > 0 => (b, p, r),
        _ => {
            eprintln!("candle-mi-bench: BATCH, POS and REPS must be integers of at least 1");
            exit(2);
        }
    };
    match run(case, batch, pos, reps) {
        Ok(result) => println!("{}", serde_json::to_string(&result).expect("a JSON value")),
        Err(e) => {
            eprintln!("candle-mi-bench: {e}");
            exit(1);
        }
    }
}

fn run(case: &str, batch: usize, pos: usize, reps: usize) -> Result<BenchResult> {
    let dir = std::env::var("TLENS_BENCH_WEIGHTS").map_err(
        |_| "TLENS_BENCH_WEIGHTS must name the weights folder (reference/write_llama_weights.py)",
    )?;
    let model = load(Path::new(&dir))?;
    let vocab = model.vocab_size();
    // The token ids of src/bench.rs and bench_tl.py.
    let ids: Vec<u32> = (0..batch)
        .flat_map(|b| (0..pos).map(move |p| ((b * 7919 + p * 104_729 + 13) % vocab) as u32))
        .collect();
    let input = Tensor::from_vec(ids, (batch, pos), &Device::Cpu)?;

    let hooks = match case {
        "forward" => HookSpec::new(),
        _ => every_hook(model.num_layers()),
    };
    let mut seconds = Vec::with_capacity(reps);
    let mut cache_bytes = 0;
    for _ in 0..reps {
        let start = Instant::now();
        // candle computes eagerly on the CPU: the logits are there when `forward` returns.
        let cache = model.forward(&input, &hooks)?;
        cache_bytes = cache
            .captures()
            .map(|(_, t)| t.elem_count() * t.dtype().size_in_bytes())
            .sum();
        drop(cache);
        seconds.push(start.elapsed().as_secs_f64());
    }
    let mut sorted = seconds.clone();
    sorted.sort_by(f64::total_cmp);
    let median_s = sorted[sorted.len() / 2];
    Ok(BenchResult {
        model: MODEL.into(),
        case: case.into(),
        batch,
        pos,
        seconds,
        median_s,
        tokens_per_s: (batch * pos) as f64 / median_s,
        cache_bytes,
        peak_rss_bytes: peak_rss(),
    })
}

/// Every hook point `GenericTransformer::forward` fires on a Llama: the embedding, per layer the residual stream
/// (pre, mid, post), Q/K/V (before RoPE), scores, pattern, attention output, the MLP's normalised input and output
/// (`MlpOut` is the same tensor as `MlpPost` without Gemma 2's post-feedforward norm), and the final norm's output.
fn every_hook(n_layers: usize) -> HookSpec {
    let mut hooks = HookSpec::new();
    hooks
        .capture(HookPoint::Embed)
        .capture(HookPoint::FinalNorm);
    for l in 0..n_layers {
        hooks.capture_all([
            HookPoint::ResidPre(l),
            HookPoint::AttnQ(l),
            HookPoint::AttnK(l),
            HookPoint::AttnV(l),
            HookPoint::AttnScores(l),
            HookPoint::AttnPattern(l),
            HookPoint::AttnOut(l),
            HookPoint::ResidMid(l),
            HookPoint::MlpPre(l),
            HookPoint::MlpPost(l),
            HookPoint::MlpOut(l),
            HookPoint::ResidPost(l),
        ]);
    }
    hooks
}

/// Loads `dir`'s `config.json` and `model.safetensors` as candle-mi's `MIModel::from_pretrained` would, minus the Hub:
/// `from_pretrained` takes a Hub repo id (resolved through hf-fetch-model), not a local folder, so this builds the
/// same `TransformerConfig::from_hf_config` + `GenericTransformer::load` pair itself.
///
/// The tensors are read one at a time into owned CPU memory rather than memory-mapped: the mapped file's pages would
/// count towards the peak RSS (VmHWM) next to the copies candle makes of them, doubling it, while tlens and
/// TransformerLens make their random weights in memory and hold them once.
fn load(dir: &Path) -> Result<MIModel> {
    let config_path = dir.join("config.json");
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&config_path)
            .map_err(|e| format!("{}: {e}", config_path.display()))?,
    )?;
    let config = TransformerConfig::from_hf_config(&json)?;
    let device = Device::Cpu;
    let tensors = read_safetensors(&dir.join("model.safetensors"), &device)?;
    let vb = candle_nn::VarBuilder::from_tensors(tensors, DType::F32, &device);
    let transformer = GenericTransformer::load(config, &device, DType::F32, vb)?;
    Ok(MIModel::new(Box::new(transformer), device))
}

/// Reads every f32 tensor of a safetensors file (8-byte little-endian header length, JSON header, data).
fn read_safetensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let mut file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len)?;
    let header_len = u64::from_le_bytes(len);
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header)?;
    let header: HashMap<String, serde_json::Value> = serde_json::from_slice(&header)?;
    let mut tensors = HashMap::new();
    for (name, info) in header.iter().filter(|(name, _)| *name != "__metadata__") {
        if info["dtype"] != "F32" {
            return Err(format!(
                "{name}: dtype {} (the bench weights are F32)",
                info["dtype"]
            )
            .into());
        }
        let shape: Vec<usize> = serde_json::from_value(info["shape"].clone())?;
        let [start, end]: [u64; 2] = serde_json::from_value(info["data_offsets"].clone())?;
        let mut bytes = vec![0u8; (end - start) as usize];
        file.seek(SeekFrom::Start(8 + header_len + start))?;
        file.read_exact(&mut bytes)?;
        tensors.insert(
            name.clone(),
            Tensor::from_raw_buffer(&bytes, DType::F32, &shape, device)?,
        );
    }
    Ok(tensors)
}

/// Peak resident set size of this process (`VmHWM` of /proc/self/status), bytes; 0 where /proc is absent.
fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}
