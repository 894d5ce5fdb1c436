//! The `tlens` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use burn_tensor::{activation::softmax, backend::Backend};
use clap::{Parser, Subcommand};
use tlens::backend::{run_on, BackendName, BackendTask};
use tlens::plan::EvalPlan;
use tlens::{
    embedded, load_hf_gpt2, NamesFilter, Processing, Result, RunOptions, TlensError, TokenBatch,
};

#[derive(Parser)]
#[command(
    name = "tlens",
    version,
    about = "TransformerLens-grade mechanistic interpretability on burn"
)]
struct Cli {
    /// Backend to run on (one compiled into this build; default: the first of ndarray, flex, tch, cuda).
    #[arg(long, global = true)]
    backend: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a prompt, print the top next-token predictions and write the activation cache to safetensors.
    Run(RunArgs),
    /// Execute a plan file and write its output (logits, cache, call results) to safetensors.
    Eval {
        /// The plan (JSON; see the book's "Plans" chapter).
        #[arg(long)]
        plan: PathBuf,
        /// Where to write the output.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// A Hugging Face GPT-2 folder (default: the embedded tiny model).
    #[arg(long)]
    model: Option<PathBuf>,
    /// The prompt (a BOS token is prepended).
    #[arg(
        long,
        default_value = "When John and Mary went to the shops, John gave the bag to"
    )]
    prompt: String,
    /// Hook names to cache (default: all).
    #[arg(long = "hook", value_name = "NAME")]
    hooks: Vec<String>,
    /// How many predictions to print.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Where to write the cache.
    #[arg(long, default_value = "tlens-cache.safetensors")]
    out: PathBuf,
}

impl BackendTask for RunArgs {
    type Output = Result<()>;

    fn run<B: Backend>(self, device: burn_tensor::Device<B>) -> Result<()> {
        let loaded = match &self.model {
            Some(dir) => load_hf_gpt2::<B>(dir, Processing::default(), &device)?,
            None => embedded::gpt2_tiny::<B>(&device)?,
        };
        let tokenizer = loaded.tokenizer.ok_or_else(|| TlensError::File {
            path: "model".into(),
            message: "the model folder has no tokenizer".into(),
        })?;
        let ids = tokenizer.to_tokens(&self.prompt, true)?;
        let tokens = TokenBatch::single(ids.clone())?;
        let names_filter = if self.hooks.is_empty() {
            NamesFilter::All
        } else {
            NamesFilter::Names(self.hooks.clone())
        };
        let (logits, cache) = loaded.model.run_with_cache(
            &tokens,
            RunOptions {
                names_filter,
                ..RunOptions::default()
            },
        )?;
        let [_, pos, vocab] = logits.dims();
        let probs = softmax(logits.narrow(1, pos - 1, 1).reshape([vocab]), 0);
        let (values, indices) = probs.sort_descending_with_indices(0);
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
        println!("prompt: {:?} ({} tokens)", self.prompt, ids.len());
        println!("top {} next-token predictions:", self.top.min(vocab));
        for (p, id) in values.iter().zip(&indices).take(self.top) {
            let text = tokenizer.to_str_tokens(&[*id as u32])?.concat();
            println!("  {p:>7.4}  {text:?} (id {id})");
        }
        cache.save(&self.out)?;
        println!(
            "cached {} activations to {}",
            cache.len(),
            self.out.display()
        );
        Ok(())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
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
    match cli.command {
        Command::Run(args) => run_on(backend, args)?,
        Command::Eval { plan, out } => {
            let summary = run_on(
                backend,
                EvalPlan {
                    plan,
                    out: out.clone(),
                },
            )??;
            println!(
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
