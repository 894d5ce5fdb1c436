//! `tlens-bench BACKEND CASE BATCH POS REPS`: runs one benchmark case and prints its result as one JSON line.
//! `cargo xtask bench` drives it, one process per case.

use std::process::ExitCode;

use tlens::backend::run_on;
use tlens::bench::BenchCase;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [backend, case, batch, pos, reps] = args.as_slice() else {
        eprintln!("error: usage: tlens-bench BACKEND CASE BATCH POS REPS");
        return ExitCode::FAILURE;
    };
    let parsed = (backend.parse(), batch.parse(), pos.parse(), reps.parse());
    let (Ok(backend), Ok(batch), Ok(pos), Ok(reps)) = parsed else {
        eprintln!(
            "error: usage: tlens-bench BACKEND CASE BATCH POS REPS (a known backend and three positive integers)"
        );
        return ExitCode::FAILURE;
    };
    match run_on(
        backend,
        BenchCase {
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
