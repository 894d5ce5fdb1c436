//! `tlens-bench BACKEND CASE BATCH POS REPS [MODEL]`: runs one benchmark case (on `gpt2-small` unless MODEL says
//! `llama-3.2-1b`) and prints its result as one JSON line.
//! `cargo xtask bench` drives it, one process per case.

use std::process::ExitCode;

use tlens::allocator::{DEFAULT_SLACK, ReusingAllocator};
use tlens::backend::run_on;
use tlens::bench::{BenchCase, BenchModel};

/// As the `tlens` binary: freed large blocks are reused, so a case's later repetitions find their memory mapped.
#[global_allocator]
static ALLOCATOR: ReusingAllocator = ReusingAllocator::new(DEFAULT_SLACK);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    const USAGE: &str = "error: usage: tlens-bench BACKEND CASE BATCH POS REPS [gpt2-small|llama-3.2-1b] (a known \
                         backend and three positive integers)";
    let (backend, case, batch, pos, reps, model) = match args.as_slice() {
        [backend, case, batch, pos, reps] => (backend, case, batch, pos, reps, "gpt2-small"),
        [backend, case, batch, pos, reps, model] => {
            (backend, case, batch, pos, reps, model.as_str())
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::FAILURE;
        }
    };
    let parsed = (
        backend.parse(),
        batch.parse(),
        pos.parse(),
        reps.parse(),
        BenchModel::from_name(model),
    );
    let (Ok(backend), Ok(batch), Ok(pos), Ok(reps), Some(model)) = parsed else {
        eprintln!("{USAGE}");
        return ExitCode::FAILURE;
    };
    match run_on(
        backend,
        BenchCase {
            model,
            case: case.clone(),
            batch,
            pos,
            reps,
        },
    )
    .and_then(|r| r)
    {
        Ok(result) => {
            println!(
                "{}",
                serde_json::to_string(&result).expect("results serialise")
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
