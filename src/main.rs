//! The `tlens` command line: a thin layer over [`tlens::analysis`] and [`tlens::report`].

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use burn_tensor::{ElementConversion, backend::Backend};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use tlens::analysis::attribution::{DlaArgs, direct_logit_attribution};
use tlens::analysis::heads::SCORE_CHUNK;
use tlens::analysis::heads::{HeadScoresArgs, head_scores, prev_token_scores};
use tlens::analysis::input::{parse_token, read_token_file, token_strings};
use tlens::analysis::lens::{LensArgs, logit_lens};
use tlens::analysis::patching::{parse_hook_op, standard_sweeps};
use tlens::analysis::{Labelled, resolve_position};
use tlens::backend::{BackendName, BackendTask, run_on};
use tlens::cache_core::atomic_file::write_atomically;
use tlens::harvest::HarvestArgs;
use tlens::harvest::manifest::ShardOf;
use tlens::memory::{self, Derivable, MemoryBudget};
use tlens::model::Kernels;
use tlens::model::patching::{LogitDiff, PATCHES_PER_PASS};
use tlens::output::check_output;
use tlens::plan::EvalPlan;
use tlens::report::{ReportArgs, STEPS, build_report};
use tlens::{
    Hook, LoadedModel, NamesFilter, Precision, Processing, Result, RunOptions, TlensError,
    TokenBatch, embedded, load_folder,
};

/// Prints a line to stdout. A reader that goes away (`tlens run | head -1`) ends the printing quietly, not the
/// command: the rest of the work (writing the cache) still happens. Any other failure to print is reported at exit.
macro_rules! say {
    ($($arg:tt)*) => {
        print_line(format_args!($($arg)*))
    };
}

/// The first error printing to stdout met, other than a closed pipe.
static STDOUT_ERROR: std::sync::OnceLock<std::io::Error> = std::sync::OnceLock::new();

fn print_line(line: std::fmt::Arguments) {
    use std::io::Write;
    static CLOSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if CLOSED.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    if let Err(e) = writeln!(std::io::stdout().lock(), "{line}") {
        CLOSED.store(true, std::sync::atomic::Ordering::Relaxed);
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            let _ = STDOUT_ERROR.set(e);
        }
    }
}

#[derive(Parser)]
#[command(
    name = "tlens",
    version,
    about = "TransformerLens-grade mechanistic interpretability on burn",
    after_help = "Every subcommand runs the embedded model unless --model names a folder."
)]
struct Cli {
    /// Backend to run on (one compiled into this build; default: the first compiled of flex, ndarray, tch, cuda).
    #[arg(long, global = true)]
    backend: Option<String>,
    /// The most memory a command may use, e.g. 12G or 512M (default: 80% of physical memory). Work estimated to need
    /// more is refused before it starts.
    #[arg(long, global = true, value_name = "SIZE")]
    max_memory: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a prompt, print the top next-token predictions and write the activation cache to safetensors.
    Run(RunArgs),
    /// The logit lens: the top tokens and the target's probability after every layer, at every position.
    Lens(LensCmd),
    /// Direct logit attribution of heads, sublayers and neurons for a target token (optionally against another).
    Attribute(AttributeCmd),
    /// Induction, previous-token and duplicate-token scores of every head; optionally one head's pattern.
    Patterns(PatternsCmd),
    /// Execute a plan file and write its output (logits, cache, call results) to safetensors.
    Eval {
        /// The plan (JSON; see the book's "Plans and parity" chapter).
        #[arg(long)]
        plan: PathBuf,
        /// Where to write the output.
        #[arg(long)]
        out: PathBuf,
    },
    /// Everything above in one self-contained HTML file (charts drawn by inline JavaScript, no network).
    Report(ReportCmd),
    /// Run the model over a dataset and stream the chosen hooks' activations to a Hugging Face `datasets` folder
    /// (`datasets.load_from_disk` opens it): bounded memory, resumable, and shardable across machines.
    Harvest(HarvestCmd),
    /// Activation patching: patch a clean prompt's activations into a corrupted one and print the metric
    /// logit(target) − logit(against) for the residual stream by layer × position, each head over all positions, and
    /// each head by position.
    Patch(PatchCmd),
}

#[derive(Args)]
struct PatchCmd {
    /// `--max-memory` (set from the global flag).
    #[arg(skip)]
    budget: MemoryBudget,
    /// A model folder (see `tlens run --help`). Default: the embedded model.
    #[arg(long)]
    model: Option<PathBuf>,
    /// The clean prompt.
    #[arg(long)]
    clean: String,
    /// The corrupted prompt (as many tokens as the clean one).
    #[arg(long)]
    corrupt: String,
    /// The answer token (text that is one token, or id:N).
    #[arg(long)]
    target: String,
    /// The wrong answer token.
    #[arg(long)]
    against: String,
}

#[derive(Args)]
struct HarvestCmd {
    /// `--max-memory` (set from the global flag).
    #[arg(skip)]
    budget: MemoryBudget,
    /// A model folder (see `tlens run --help`). Default: the embedded model.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Data files, read in order as a stream: text (one document per line), JSON Lines (.jsonl, .ndjson, .json) or
    /// Parquet (.parquet). Malformed records are skipped, counted and reported.
    #[arg(long, value_name = "FILE", num_args = 1.., required_unless_present = "merge")]
    data: Vec<PathBuf>,
    /// The JSON Lines field or Parquet column holding the text.
    #[arg(long, default_value = "text")]
    text_field: String,
    /// Hooks to store, one column each, e.g. blocks.3.hook_resid_post.
    #[arg(long, alias = "hook", value_name = "NAME", num_args = 1.., required_unless_present = "merge")]
    hooks: Vec<String>,
    /// Tokens per window (at most the model's n_ctx); documents are packed into full windows as SAELens does.
    #[arg(long, required_unless_present = "merge")]
    context_size: Option<usize>,
    /// Windows per forward pass.
    #[arg(long, default_value_t = 8, value_parser = at_least_one)]
    batch_size: usize,
    /// Stop after this many tokens (whole windows).
    #[arg(long)]
    max_tokens: Option<u64>,
    /// How activations are stored (bf16 as uint16 bits: Arrow has no bfloat16).
    #[arg(long, default_value = "f32", value_name = "f32|f16|bf16")]
    dtype: Precision,
    /// This machine's part, K/N: shards K, K+N, K+2N, ... (e.g. $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT).
    #[arg(long, default_value = "0/1", value_name = "K/N")]
    shard: ShardOf,
    /// Windows per shard file (default: about 256 MiB of activations, a multiple of --batch-size).
    #[arg(long, value_name = "WINDOWS", value_parser = at_least_one)]
    shard_size: Option<usize>,
    /// Join the manifests of the N machines of a --shard K/N harvest, once all are done.
    #[arg(long, conflicts_with_all = ["data", "hooks", "context_size", "model"])]
    merge: bool,
    /// The output folder (created if missing; a harvest started there before is resumed).
    #[arg(long)]
    out: PathBuf,
}

/// Which model and which tokens.
#[derive(Args, Clone)]
struct Input {
    /// A model folder: a Hugging Face checkpoint (config.json + model.safetensors or its shards; gpt2, gpt_neox, gptj,
    /// opt, llama, mistral, qwen2, qwen3, phi3, gemma, gemma2) or TransformerLens (config.json + weights.safetensors), e.g.
    /// tests/models/hf-llama. Default: the embedded model.
    #[arg(long)]
    model: Option<PathBuf>,
    /// The prompt (a BOS token is prepended unless the family does without, as TransformerLens). Default: a prompt
    /// suited to the embedded model.
    #[arg(long, conflicts_with = "tokens")]
    prompt: Option<String>,
    /// A JSON file of token ids instead of a prompt: a list of ids, or a list of equal-length lists (a batch).
    #[arg(long, value_name = "FILE")]
    tokens: Option<PathBuf>,
    /// The precision the model is loaded and run in, as TransformerLens's `dtype` (norms still compute in f32). f16
    /// and bf16 halve the weights; not on ndarray.
    #[arg(long, default_value = "f32", value_name = "f32|f16|bf16")]
    dtype: Precision,
}

/// Interventions applied during the run, before caching.
#[derive(Args, Clone)]
struct HookOps {
    /// An intervention before caching, `OP@HOOK[:heads=..][:positions=..][:neurons=..][:factor=F]` with OP zero,
    /// scale or mean; e.g. `zero@blocks.1.attn.hook_z:heads=3` ablates head L1H3. Repeatable.
    #[arg(long = "hook-op", value_name = "SPEC")]
    hook_ops: Vec<String>,
}

impl Input {
    /// The files this input reads (for `--out` checks).
    fn files(&self) -> Vec<&Path> {
        tlens::output::inputs(self.model.as_ref(), self.tokens.as_ref())
    }
}

impl HookOps {
    /// The one sequence `lens` and `attribute` analyse, run with every hook cached: first checked against the budget
    /// with `extra` bytes for the analysis (`what`, for the message), then run under a spinner (returned, for the
    /// next step's message), with a warning when the output is not finite.
    fn analyse_row<B: Kernels>(
        &self,
        loaded: &LoadedModel<B>,
        tokens: &TokenBatch,
        budget: &MemoryBudget,
        extra: Option<u64>,
        what: &str,
    ) -> Result<(
        burn_tensor::Tensor<B, 3>,
        tlens::ActivationCache<B>,
        ProgressBar,
    )> {
        let positions = tokens.positions();
        budget.check(
            memory::one_sequence_bytes(loaded.model.cfg(), positions)
                .zip(extra)
                .and_then(|(run, extra)| run.checked_add(extra)),
            &format!("{what} of {positions} tokens"),
            "pass a shorter sequence",
        )?;
        let bar = spinner("running the model");
        let (logits, cache) = self.run_with_cache(loaded, tokens, RunOptions::default())?;
        warn_non_finite(&logits);
        Ok((logits, cache, bar))
    }

    /// The run's logits and cache, with the interventions active.
    fn run_with_cache<B: Kernels>(
        &self,
        loaded: &LoadedModel<B>,
        tokens: &TokenBatch,
        options: RunOptions,
    ) -> Result<(burn_tensor::Tensor<B, 3>, tlens::ActivationCache<B>)> {
        let mut interventions = self
            .hook_ops
            .iter()
            .map(|spec| parse_hook_op(spec, &loaded.model))
            .collect::<Result<Vec<_>>>()?;
        let mut hooks: Vec<&mut dyn Hook<B>> = interventions
            .iter_mut()
            .map(|i| i as &mut dyn Hook<B>)
            .collect();
        Ok(loaded
            .model
            .run_with_hooks_and_cache(tokens, &mut hooks, options)?)
    }
}

#[derive(Args)]
struct RunArgs {
    /// `--max-memory` (set from the global flag).
    #[arg(skip)]
    budget: MemoryBudget,
    #[command(flatten)]
    input: Input,
    /// Hook names to cache (default: all).
    #[arg(long = "hook", value_name = "NAME")]
    hooks: Vec<String>,
    /// The precision the cache is kept in while the run lasts (f16 and bf16 halve it; not on ndarray). The file is
    /// written as f32. Default: each activation as computed (f32, or the model's --dtype except the norms' scale and
    /// normalized values, which are f32), as TransformerLens.
    #[arg(long, value_name = "f32|f16|bf16")]
    cache_dtype: Option<Precision>,
    #[command(flatten)]
    ops: HookOps,
    /// How many predictions to print.
    #[arg(long, default_value_t = 5, value_parser = at_least_one)]
    top: usize,
    /// Where to write the cache.
    #[arg(long, default_value = "tlens-cache.safetensors")]
    out: PathBuf,
}

#[derive(Args)]
struct LensCmd {
    /// `--max-memory` (set from the global flag).
    #[arg(skip)]
    budget: MemoryBudget,
    #[command(flatten)]
    input: Input,
    /// Follow this token's probability at every position (text that is one token, or id:N). Default: each
    /// position's next token, and the model's prediction at the last.
    #[arg(long)]
    target: Option<String>,
    /// How many top tokens to print per cell.
    #[arg(long, default_value_t = 3, value_parser = at_least_one)]
    top: usize,
    /// Also read the stream between attention and MLP (models with MLPs).
    #[arg(long)]
    incl_mid: bool,
    /// Which sequence of a --tokens batch.
    #[arg(long, default_value_t = 0)]
    batch_index: usize,
    #[command(flatten)]
    ops: HookOps,
}

#[derive(Args)]
struct AttributeCmd {
    /// `--max-memory` (set from the global flag).
    #[arg(skip)]
    budget: MemoryBudget,
    #[command(flatten)]
    input: Input,
    /// The token to explain (text that is one token, or id:N). Default: the model's top prediction.
    #[arg(long)]
    target: Option<String>,
    /// Explain logit(target) − logit(this token).
    #[arg(long)]
    against: Option<String>,
    /// The position (negative counts from the end).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    position: i64,
    /// How many heads, neurons and sublayers to print (largest |attribution| first).
    #[arg(long, default_value_t = 10, value_parser = at_least_one)]
    top: usize,
    /// Which sequence of a --tokens batch.
    #[arg(long, default_value_t = 0)]
    batch_index: usize,
    #[command(flatten)]
    ops: HookOps,
}

#[derive(Args)]
struct ScoreOpts {
    /// Length of the random sequence that is repeated (default: min(20, (n_ctx − 1) / 2)).
    #[arg(long)]
    seq_len: Option<usize>,
    /// How many random sequences to average over (at most 1000000; they run 16 at a time).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    sequences: u32,
    /// Seed of the random tokens.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

impl ScoreOpts {
    fn args(&self) -> HeadScoresArgs {
        HeadScoresArgs {
            seq_len: self.seq_len,
            batch: self.sequences as usize,
            seed: self.seed,
        }
    }
}

#[derive(Args)]
struct PatternsCmd {
    /// `--max-memory` (set from the global flag).
    #[arg(skip)]
    budget: MemoryBudget,
    #[command(flatten)]
    input: Input,
    #[command(flatten)]
    scores: ScoreOpts,
    /// Also print this head's attention on the prompt (e.g. L1H2): each query's most attended keys.
    #[arg(long)]
    head: Option<String>,
}

#[derive(Args)]
struct ReportCmd {
    /// `--max-memory` (set from the global flag).
    #[arg(skip)]
    budget: MemoryBudget,
    #[command(flatten)]
    input: Input,
    #[command(flatten)]
    scores: ScoreOpts,
    /// The token to attribute at the last position (text that is one token, or id:N). Default: the top prediction.
    #[arg(long)]
    target: Option<String>,
    /// A counterfactual token for the attribution.
    #[arg(long)]
    against: Option<String>,
    /// Where to write the report.
    #[arg(long, default_value = "tlens-report.html")]
    out: PathBuf,
}

/// A count that must be at least 1 (`--top 0` would print nothing, or silently one).
fn at_least_one(s: &str) -> std::result::Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// The one sequence of a batch that `lens` and `attribute` analyse: they run that row alone.
fn one_row(tokens: &TokenBatch, batch_index: usize) -> Result<TokenBatch> {
    match tokens.rows().get(batch_index) {
        Some(row) => Ok(TokenBatch::single(row.clone())?),
        None => Err(TlensError::Analysis(format!(
            "--batch-index {batch_index} is outside the batch of {} sequences",
            tokens.batch()
        ))),
    }
}

/// A token the model must be able to predict (`--target`, `--against`): below `d_vocab_out`.
fn output_token<B: Backend>(loaded: &LoadedModel<B>, spec: Option<&str>) -> Result<Option<u32>> {
    let Some(id) = token_arg(loaded, spec)? else {
        return Ok(None);
    };
    let vocab = loaded.model.cfg().d_vocab_out;
    if id as usize >= vocab {
        return Err(TlensError::Analysis(format!(
            "token id {id} is past the model's output vocabulary of {vocab} tokens, so it has no logit"
        )));
    }
    Ok(Some(id))
}

/// Warns (one line on stderr) when the logits hold NaN or ±∞: the numbers printed from them mean nothing.
fn warn_non_finite<B: Backend>(logits: &burn_tensor::Tensor<B, 3>) {
    if !logits
        .clone()
        .is_finite()
        .all()
        .into_scalar()
        .elem::<bool>()
    {
        eprintln!(
            "warning: the model's output holds NaN or infinite values; the results below are not meaningful"
        );
    }
}

/// A spinner on stderr (hidden when stderr is not a terminal).
fn spinner(message: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner().with_message(message.to_string());
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// The model of `--model`, or the embedded one, and a name for it.
/// Its weights are counted against `budget` before loading.
fn load<B: Backend>(
    input: &Input,
    device: &burn_tensor::Device<B>,
    budget: &mut MemoryBudget,
) -> Result<(LoadedModel<B>, String)> {
    let bar = spinner("loading the model");
    let processing = Processing {
        dtype: input.dtype,
        ..Processing::default()
    };
    let loaded = match &input.model {
        Some(dir) => {
            budget.reserve_weights(tlens::model::loading::weight_bytes(dir)?)?;
            (
                load_folder::<B>(dir, processing, device)?,
                dir.display().to_string(),
            )
        }
        None => {
            budget.reserve_weights(embedded::WEIGHT_BYTES)?;
            (
                embedded::induction_with::<B>(processing, device)?,
                embedded::NAME.to_string(),
            )
        }
    };
    bar.finish_and_clear();
    Ok(loaded)
}

/// The token batch of `--tokens`, or the tokenized prompt (`--prompt` or the default prompt).
fn tokens<B: Backend>(input: &Input, loaded: &LoadedModel<B>) -> Result<TokenBatch> {
    if let Some(path) = &input.tokens {
        return read_token_file(path);
    }
    let prompt = input.prompt.as_deref().unwrap_or(embedded::DEFAULT_PROMPT);
    let tokenizer = loaded.tokenizer.as_ref().ok_or_else(|| TlensError::File {
        path: input
            .model
            .as_deref()
            .unwrap_or(Path::new("model"))
            .display()
            .to_string(),
        message: "the model folder has no tokenizer; pass token ids with --tokens FILE".into(),
    })?;
    // As TransformerLens's `to_tokens`: BOS first unless the family's `default_prepend_bos` says otherwise (Qwen,
    // GPT-NeoX).
    let bos = loaded.model.cfg().default_prepend_bos;
    Ok(TokenBatch::single(tokenizer.to_tokens(prompt, bos)?)?)
}

fn text<B: Backend>(loaded: &LoadedModel<B>, ids: &[u32]) -> Vec<String> {
    token_strings(ids, loaded.tokenizer.as_ref())
}

fn token_arg<B: Backend>(loaded: &LoadedModel<B>, spec: Option<&str>) -> Result<Option<u32>> {
    spec.map(|s| parse_token(s, loaded.tokenizer.as_ref()))
        .transpose()
}

fn describe_tokens<B: Backend>(loaded: &LoadedModel<B>, tokens: &TokenBatch) -> String {
    if tokens.batch() == 1 {
        let parts = text(loaded, tokens.row(0));
        format!("{} tokens: {}", parts.len(), quoted(&parts))
    } else {
        describe_size(tokens)
    }
}

/// `3 sequences of 12 tokens` (`1 sequence of 12 tokens`).
fn describe_size(tokens: &TokenBatch) -> String {
    format!(
        "{} sequence{} of {} tokens",
        tokens.batch(),
        if tokens.batch() == 1 { "" } else { "s" },
        tokens.positions()
    )
}

fn quoted(parts: &[String]) -> String {
    parts
        .iter()
        .map(|p| format!("{p:?}"))
        .collect::<Vec<_>>()
        .join(" ")
}

impl BackendTask for RunArgs {
    type Output = Result<()>;

    fn run<B: Kernels>(mut self, device: burn_tensor::Device<B>) -> Result<()> {
        check_output(&self.out, &self.input.files())?;
        let (loaded, name) = load::<B>(&self.input, &device, &mut self.budget)?;
        let tokens = tokens(&self.input, &loaded)?;
        let options = RunOptions {
            names_filter: if self.hooks.is_empty() {
                NamesFilter::All
            } else {
                NamesFilter::Names(self.hooks.clone())
            },
            cache_dtype: self.cache_dtype,
            ..RunOptions::default()
        };
        self.budget.check(
            memory::run_bytes(
                loaded.model.cfg(),
                tokens.batch(),
                tokens.positions(),
                &options,
                true,
                Derivable::Recipes,
            ),
            &format!("caching {}", describe_size(&tokens)),
            "cache fewer hooks (--hook NAME), in half precision (--cache-dtype f16), or pass fewer or shorter sequences",
        )?;
        let bar = spinner("running the model");
        let (logits, cache) = self.ops.run_with_cache(&loaded, &tokens, options)?;
        bar.finish_and_clear();
        warn_non_finite(&logits);
        let [batch, pos, vocab] = logits.dims();
        let last = burn_tensor::activation::softmax(
            logits.narrow(1, pos - 1, 1).reshape([batch, vocab]),
            1,
        );
        let (values, indices) = last
            .narrow(0, 0, 1)
            .reshape([vocab])
            .topk_with_indices(self.top.min(vocab), 0);
        let values = values
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .unwrap_or_default();
        let indices = indices
            .into_data()
            .convert::<i64>()
            .to_vec::<i64>()
            .unwrap_or_default();
        say!("model: {name}");
        if self.input.tokens.is_none() {
            let prompt = self
                .input
                .prompt
                .as_deref()
                .unwrap_or(embedded::DEFAULT_PROMPT);
            say!("prompt: {prompt:?} ({} tokens)", tokens.positions());
        } else {
            say!("tokens: {}", describe_tokens(&loaded, &tokens));
        }
        let of = if batch > 1 { " (sequence 0)" } else { "" };
        say!("top {} next-token predictions{of}:", values.len());
        for (p, id) in values.iter().zip(&indices) {
            let t = text(&loaded, &[*id as u32]).concat();
            say!("  {p:>7.4}  {t:?} (id {id})");
        }
        cache.save(&self.out)?;
        say!(
            "cached {} activations to {}",
            cache.len(),
            self.out.display()
        );
        Ok(())
    }
}

impl BackendTask for LensCmd {
    type Output = Result<()>;

    fn run<B: Kernels>(mut self, device: burn_tensor::Device<B>) -> Result<()> {
        let (loaded, name) = load::<B>(&self.input, &device, &mut self.budget)?;
        if self.incl_mid && !loaded.model.cfg().has_mlp() {
            return Err(TlensError::Analysis(
                "--incl-mid reads the stream between attention and MLP, and this model has no MLPs"
                    .into(),
            ));
        }
        let tokens = one_row(&tokens(&self.input, &loaded)?, self.batch_index)?;
        let target = output_token(&loaded, self.target.as_deref())?;
        let (_, cache, bar) = self.ops.analyse_row(
            &loaded,
            &tokens,
            &self.budget,
            memory::lens_bytes(loaded.model.cfg(), tokens.positions()),
            "the logit lens",
        )?;
        bar.set_message("logit lens");
        let row = tokens.row(0).to_vec();
        let table = logit_lens(
            &cache,
            &row,
            &LensArgs {
                batch_index: 0,
                top_k: self.top,
                incl_mid: self.incl_mid,
                target,
            },
        )?;
        bar.finish_and_clear();
        let words = text(&loaded, &row);
        say!("model: {name}");
        say!("tokens: {}", quoted(&words));
        say!(
            "logit lens: per layer, the target's probability and the top {} tokens",
            self.top
        );
        for (p, word) in words.iter().enumerate() {
            let t = table.targets[p];
            say!(
                "position {p} {word:?} -> target {:?}",
                text(&loaded, &[t]).concat()
            );
            for (r, label) in table.labels.iter().enumerate() {
                let top = table.top[r][p]
                    .iter()
                    .map(|tp| format!("{:?} {:.3}", text(&loaded, &[tp.id]).concat(), tp.prob))
                    .collect::<Vec<_>>()
                    .join(", ");
                say!(
                    "  {label:>10}  p(target) {:.4}   top: {top}",
                    table.target_probs[r][p]
                );
            }
        }
        Ok(())
    }
}

fn print_ranked(title: &str, items: &[Labelled], top: usize) {
    let mut sorted = items.to_vec();
    sorted.sort_by(|a, b| b.value.abs().total_cmp(&a.value.abs()));
    say!("{title}:");
    for it in sorted.iter().take(top) {
        say!("  {:>12}  {:+.4}", it.label, it.value);
    }
}

impl BackendTask for PatchCmd {
    type Output = Result<()>;

    fn run<B: Kernels>(mut self, device: burn_tensor::Device<B>) -> Result<()> {
        let input = |prompt: &str| Input {
            model: self.model.clone(),
            prompt: Some(prompt.to_string()),
            tokens: None,
            dtype: Precision::F32,
        };
        let (loaded, name) = load::<B>(&input(&self.clean), &device, &mut self.budget)?;
        let clean = tokens(&input(&self.clean), &loaded)?;
        let corrupted = tokens(&input(&self.corrupt), &loaded)?;
        let token = |spec: &str| -> Result<u32> {
            Ok(output_token(&loaded, Some(spec))?.expect("a token was named"))
        };
        let metric = LogitDiff {
            correct: token(&self.target)?,
            incorrect: token(&self.against)?,
        };
        let positions = clean.positions();
        self.budget.check(
            memory::run_bytes(
                loaded.model.cfg(),
                2,
                positions,
                &RunOptions::default(),
                false,
                Derivable::Recipes,
            )
            .zip(memory::forward_bytes(
                loaded.model.cfg(),
                PATCHES_PER_PASS,
                positions,
            ))
            .and_then(|(runs, patching)| runs.checked_add(patching)),
            &format!("patching {positions} tokens, {PATCHES_PER_PASS} patches a pass"),
            "pass shorter prompts",
        )?;
        let labels: Vec<String> = text(&loaded, clean.row(0))
            .iter()
            .enumerate()
            .map(|(i, t)| format!("{i}:{t:?}"))
            .collect();
        let bar = spinner("patching");
        let report = standard_sweeps(&loaded.model, &clean, &corrupted, metric, &labels, true)?;
        bar.finish_and_clear();
        say!("model: {name}");
        say!(
            "logit({}) - logit({}): clean {:.4}, corrupted {:.4}",
            self.target,
            self.against,
            report.clean,
            report.corrupted
        );
        for (title, grid) in [
            (
                "residual stream before each layer (get_act_patch_resid_pre)",
                Some(&report.resid_pre),
            ),
            (
                "each head over all positions (get_act_patch_attn_head_out_all_pos)",
                Some(&report.heads),
            ),
            (
                "each head by position (get_act_patch_attn_head_out_by_pos)",
                report.heads_by_pos.as_ref(),
            ),
        ]
        .into_iter()
        .filter_map(|(title, grid)| Some((title, grid?)))
        {
            say!("\n{title}:");
            say!(
                "{:>8} {}",
                "",
                grid.columns
                    .iter()
                    .map(|c| format!("{c:>10.10}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            for (row, values) in grid.rows.iter().zip(&grid.values) {
                let cells: Vec<String> = values.iter().map(|v| format!("{v:>10.4}")).collect();
                say!("{row:>8} {}", cells.join(" "));
            }
        }
        Ok(())
    }
}

impl BackendTask for AttributeCmd {
    type Output = Result<()>;

    fn run<B: Kernels>(mut self, device: burn_tensor::Device<B>) -> Result<()> {
        let (loaded, name) = load::<B>(&self.input, &device, &mut self.budget)?;
        let tokens = one_row(&tokens(&self.input, &loaded)?, self.batch_index)?;
        let position = resolve_position(self.position, tokens.positions())?;
        let target = output_token(&loaded, self.target.as_deref())?;
        let against = output_token(&loaded, self.against.as_deref())?;
        let (logits, cache, bar) =
            self.ops
                .analyse_row(&loaded, &tokens, &self.budget, Some(0), "an attribution")?;
        let target = match target {
            Some(t) => t,
            None => {
                let [_, _, vocab] = logits.dims();
                let row = logits.clone().narrow(1, position, 1).reshape([vocab]);
                row.argmax(0).into_scalar().elem::<i64>() as u32
            }
        };
        bar.set_message("direct logit attribution");
        let dla = direct_logit_attribution(
            &cache,
            &logits,
            &DlaArgs {
                batch_index: 0,
                position: position as i64,
                target,
                against,
                top_neurons: self.top,
            },
        )?;
        bar.finish_and_clear();
        let word = |id: u32| format!("{:?}", text(&loaded, &[id]).concat());
        let row = tokens.row(0);
        say!("model: {name}");
        say!("tokens: {}", quoted(&text(&loaded, row)));
        match against {
            Some(a) => say!(
                "direct logit attribution at position {position} ({}): logit({}) - logit({}) = {:.4}",
                word(row[position]),
                word(target),
                word(a),
                dla.logit
            ),
            None => say!(
                "direct logit attribution at position {position} ({}): logit({}) = {:.4}",
                word(row[position]),
                word(target),
                dla.logit
            ),
        }
        print_ranked("heads", &dla.heads, self.top);
        print_ranked("sublayers", &dla.layers, self.top);
        if let Some(neurons) = &dla.neurons {
            print_ranked("neurons", neurons, self.top);
        }
        Ok(())
    }
}

/// `L1H2` -> (1, 2).
fn parse_head(spec: &str) -> Result<(usize, usize)> {
    let bad = || {
        TlensError::Analysis(format!(
            "`{spec}` is not a head; write it as L<layer>H<head>, e.g. L1H2"
        ))
    };
    let rest = spec.strip_prefix('L').ok_or_else(bad)?;
    let (l, h) = rest.split_once('H').ok_or_else(bad)?;
    Ok((l.parse().map_err(|_| bad())?, h.parse().map_err(|_| bad())?))
}

fn print_scores(title: &str, scores: &[Vec<f32>]) {
    say!("{title}:");
    let heads = scores.first().map_or(0, Vec::len);
    let header: String = (0..heads)
        .map(|h| format!("{:>7}", format!("H{h}")))
        .collect();
    say!("       {header}");
    for (l, row) in scores.iter().enumerate() {
        let cells: String = row.iter().map(|v| format!("{v:>7.3}")).collect();
        say!("  {:>4} {cells}", format!("L{l}"));
    }
}

impl BackendTask for PatternsCmd {
    type Output = Result<()>;

    fn run<B: Kernels>(mut self, device: burn_tensor::Device<B>) -> Result<()> {
        let head = self.head.as_deref().map(parse_head).transpose()?;
        if head.is_none() && (self.input.prompt.is_some() || self.input.tokens.is_some()) {
            return Err(TlensError::Analysis(
                "--prompt and --tokens give the sequence whose pattern --head prints; without --head the scores use \
                 random tokens"
                    .into(),
            ));
        }
        let (loaded, name) = load::<B>(&self.input, &device, &mut self.budget)?;
        let cfg = loaded.model.cfg();
        let prompt = match head {
            Some((l, h)) => {
                if l >= cfg.n_layers || h >= cfg.n_heads {
                    return Err(TlensError::Analysis(format!(
                        "L{l}H{h}: the model has {} layers of {} heads",
                        cfg.n_layers, cfg.n_heads
                    )));
                }
                let tokens = tokens(&self.input, &loaded)?;
                if tokens.batch() != 1 {
                    return Err(TlensError::Analysis(format!(
                        "--head prints one sequence's pattern; --tokens holds {}",
                        tokens.batch()
                    )));
                }
                Some(tokens)
            }
            None => None,
        };
        let bos = loaded.tokenizer.as_ref().and_then(|t| t.bos_token_id());
        let args = self.scores.args();
        let positions = args.positions(cfg, bos)?;
        let pattern_hooks = NamesFilter::Predicate(std::sync::Arc::new(|n: &str| {
            n.ends_with("attn.hook_pattern")
        }));
        self.budget.check(
            memory::run_bytes(
                cfg,
                SCORE_CHUNK,
                positions,
                &RunOptions {
                    names_filter: pattern_hooks,
                    ..RunOptions::default()
                },
                false,
                Derivable::Recipes,
            ),
            &format!("scoring heads on {SCORE_CHUNK} sequences of {positions} tokens at a time"),
            "pass a shorter --seq-len",
        )?;
        if let Some(tokens) = &prompt {
            self.budget.check(
                memory::one_sequence_bytes(cfg, tokens.positions()),
                &format!("the pattern of {} tokens", tokens.positions()),
                "pass a shorter sequence",
            )?;
        }
        let bar = ProgressBar::new(args.batch as u64).with_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} sequences scored, {eta} left")
                .expect("a valid template"),
        );
        let scores = head_scores(&loaded.model, &args, bos, &mut |done| {
            bar.set_position(done as u64)
        })?;
        bar.finish_and_clear();
        say!("model: {name}");
        say!(
            "head scores on {} sequences {} of {} repeated random tokens (seed {}):",
            scores.batch,
            scores.layout(),
            scores.seq_len,
            scores.seed
        );
        print_scores("induction", &scores.induction);
        print_scores("previous token", &scores.prev_token);
        print_scores("duplicate token", &scores.duplicate);
        let (l, h, s) = scores.best_prev_token();
        say!("strongest previous-token head: L{l}H{h} ({s:.2})");
        say!("{}", scores.headline());
        if let (Some((l, h)), Some(tokens)) = (head, prompt) {
            let spec = format!("L{l}H{h}");
            let (_, cache) = loaded
                .model
                .run_with_cache(&tokens, RunOptions::default())?;
            let patterns = tlens::analysis::heads::attention_patterns(&cache, 0)?;
            let prev = prev_token_scores(&cache, 0)?;
            let words = text(&loaded, tokens.row(0));
            let p = words.len();
            let pattern = &patterns[l][h];
            say!(
                "{spec} on the prompt (previous-token score {:.3}); each query's top keys:",
                prev[l][h]
            );
            for (q, word) in words.iter().enumerate() {
                let mut keys: Vec<(usize, f32)> =
                    (0..=q).map(|k| (k, pattern[q * p + k])).collect();
                keys.sort_by(|a, b| b.1.total_cmp(&a.1));
                let top = keys
                    .iter()
                    .take(3)
                    .map(|(k, w)| format!("{k} {:?} {w:.2}", words[*k]))
                    .collect::<Vec<_>>()
                    .join(", ");
                say!("  {q:>3} {word:?}: {top}");
            }
        }
        Ok(())
    }
}

impl BackendTask for ReportCmd {
    type Output = Result<()>;

    fn run<B: Kernels>(mut self, device: burn_tensor::Device<B>) -> Result<()> {
        check_output(&self.out, &self.input.files())?;
        let (loaded, name) = load::<B>(&self.input, &device, &mut self.budget)?;
        let tokens = tokens(&self.input, &loaded)?;
        if tokens.batch() != 1 {
            return Err(TlensError::Analysis(format!(
                "the report reads one sequence; --tokens holds {}",
                tokens.batch()
            )));
        }
        let args = ReportArgs {
            model_name: name,
            tokens: tokens.row(0).to_vec(),
            target: output_token(&loaded, self.target.as_deref())?,
            against: output_token(&loaded, self.against.as_deref())?,
            scores: self.scores.args(),
            top_k: 5,
        };
        let cfg = loaded.model.cfg();
        let positions = tokens.positions();
        self.budget.check(
            memory::one_sequence_bytes(cfg, positions)
                .zip(memory::lens_bytes(cfg, positions))
                .zip(memory::forward_bytes(cfg, PATCHES_PER_PASS, positions))
                .and_then(|((run, lens), patching)| run.checked_add(lens)?.checked_add(patching)),
            &format!("a report on {positions} tokens"),
            "pass a shorter prompt",
        )?;
        let bar = ProgressBar::new(STEPS.len() as u64 + 1).with_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}").expect("a valid template"),
        );
        let report = build_report(&loaded, &args, &mut |i| {
            bar.set_position(i as u64);
            bar.set_message(STEPS[i]);
        })?;
        bar.set_message("writing the report");
        write_atomically(&self.out, |tmp| std::fs::write(tmp, report.to_html()))?;
        bar.finish_and_clear();
        say!("wrote {}", self.out.display());
        say!("{}", report.headline);
        Ok(())
    }
}

impl BackendTask for HarvestCmd {
    type Output = Result<()>;

    fn run<B: Kernels>(mut self, device: burn_tensor::Device<B>) -> Result<()> {
        if self.out.exists() && !self.out.is_dir() {
            return Err(TlensError::File {
                path: self.out.display().to_string(),
                message: "is a file; --out names the folder a harvest writes".into(),
            });
        }
        let input = Input {
            model: self.model.clone(),
            prompt: None,
            tokens: None,
            dtype: Precision::F32,
        };
        let (loaded, name) = load::<B>(&input, &device, &mut self.budget)?;
        let args = HarvestArgs {
            data: self.data,
            text_field: self.text_field,
            hooks: self.hooks,
            context_size: self.context_size.unwrap_or_default(),
            batch_size: self.batch_size,
            max_tokens: self.max_tokens,
            dtype: self.dtype,
            out: self.out,
            shard: self.shard,
            shard_size: self.shard_size,
        };
        let bar = ProgressBar::new(10_000).with_style(
            ProgressStyle::with_template(
                "{spinner} harvest {wide_bar} {percent:>3}% ETA {eta} · {msg}",
            )
            .expect("a valid template"),
        );
        let start = std::time::Instant::now();
        let summary = tlens::harvest::harvest(&loaded, &name, &args, &self.budget, &mut |p| {
            bar.set_position((p.fraction * 10_000.0) as u64);
            bar.set_message(format!(
                "{} tokens, {:.0} tokens/s, {} written",
                p.tokens,
                p.tokens as f64 / start.elapsed().as_secs_f64().max(1e-9),
                memory::Bytes(p.bytes_written)
            ));
        })?;
        bar.finish_and_clear();
        let manifest = &summary.manifest;
        let out = args.out.display();
        if summary.was_complete {
            say!("{out} already holds this harvest, complete: nothing to do");
            return Ok(());
        }
        let seconds = start.elapsed().as_secs_f64();
        say!(
            "harvested {} tokens into {} shard files of {out} ({} written, {:.0} tokens/s)",
            summary.tokens,
            summary.shards_written,
            memory::Bytes(summary.bytes_written),
            summary.tokens as f64 / seconds.max(1e-9)
        );
        if let Some(end) = manifest.end.filter(|e| e.skipped > 0) {
            eprintln!(
                "warning: skipped {} of {} records as malformed (the first: {})",
                end.skipped,
                end.records,
                summary
                    .first_skipped
                    .as_deref()
                    .unwrap_or("in an earlier run")
            );
        }
        match (manifest.complete, args.shard.count) {
            (true, 1) => say!(
                "{out} is complete: {} tokens in {} shards",
                manifest.tokens_done,
                manifest.shards.len()
            ),
            (true, n) => say!(
                "machine {} is done; when all {n} are, run `tlens harvest --merge --out {out}`",
                args.shard
            ),
            (false, _) => say!("{out} is not complete: run the same command again to continue"),
        }
        Ok(())
    }
}

/// Freed activations of 1 MiB or more are kept for the next tensor of their size, within 1 GiB of the most ever in
/// use: a command's layers and passes repeat their shapes, and fresh pages cost more than the arithmetic on them (see
/// [`tlens::allocator`]).
#[global_allocator]
static ALLOCATOR: tlens::allocator::ReusingAllocator =
    tlens::allocator::ReusingAllocator::new(tlens::allocator::DEFAULT_SLACK);

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                e.exit();
            }
            // clap's message on one line: everything before its usage block (a missing flag's name is on the
            // second line), without clap's own "error: ".
            let text = e.render().to_string();
            let message = text
                .lines()
                .take_while(|l| !l.is_empty() && !l.starts_with("Usage:"))
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" ");
            eprintln!(
                "error: {} (see --help)",
                message.trim_start_matches("error: ")
            );
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(()) => match STDOUT_ERROR.get() {
            Some(e) => {
                eprintln!("error: cannot print the results: {e}");
                ExitCode::FAILURE
            }
            None => ExitCode::SUCCESS,
        },
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let backend = match &cli.backend {
        Some(name) => name.parse()?,
        None => BackendName::default_compiled()?,
    };
    let budget = match &cli.max_memory {
        Some(size) => size.parse()?,
        None => MemoryBudget::default(),
    };
    match cli.command {
        Command::Run(args) => run_on(backend, RunArgs { budget, ..args })?,
        Command::Lens(args) => run_on(backend, LensCmd { budget, ..args })?,
        Command::Attribute(args) => run_on(backend, AttributeCmd { budget, ..args })?,
        Command::Patterns(args) => run_on(backend, PatternsCmd { budget, ..args })?,
        Command::Report(args) => run_on(backend, ReportCmd { budget, ..args })?,
        Command::Patch(args) => run_on(backend, PatchCmd { budget, ..args })?,
        Command::Harvest(args) if args.merge => {
            let manifest = tlens::harvest::merge(&args.out)?;
            say!(
                "{}: {} shards, {} tokens, complete",
                args.out.display(),
                manifest.shards.len(),
                manifest.tokens_done
            );
            Ok(())
        }
        Command::Harvest(args) => run_on(backend, HarvestCmd { budget, ..args })?,
        Command::Eval { plan, out } => {
            let summary = run_on(
                backend,
                EvalPlan {
                    plan,
                    out: out.clone(),
                    budget,
                },
            )??;
            say!(
                "wrote {} tensors to {} ({} calls, {} recorded an error)",
                summary.tensors,
                out.display(),
                summary.calls,
                summary.failed_calls
            );
            Ok(())
        }
    }
}
