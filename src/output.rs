//! Where a command writes, checked before any work: the folder exists, the path is not a folder, and the file is not
//! one of the command's inputs (`tlens run --model M --out M/model.safetensors` would replace the model's weights).
//! The write itself is atomic ([`write_atomically`](tlens_cache_core::atomic_file::write_atomically)).

use std::path::{Path, PathBuf};

use crate::error::{Result, TlensError};

/// Checks that `out` can be written and is none of `inputs` (files, or folders whose files are all inputs).
///
/// ```
/// use std::path::Path;
/// let err = tlens::output::check_output(
///     Path::new("tests/models/gpt2-tiny/model.safetensors"),
///     &[Path::new("tests/models/gpt2-tiny")],
/// )
/// .unwrap_err();
/// assert!(err.to_string().contains("is an input"), "{err}");
/// assert!(tlens::output::check_output(Path::new("/no/such/dir/out.html"), &[]).is_err());
/// ```
pub fn check_output(out: &Path, inputs: &[&Path]) -> Result<()> {
    let fail = |message: String| {
        Err(TlensError::File {
            path: out.display().to_string(),
            message,
        })
    };
    if out.is_dir() {
        return fail("is a folder; name a file to write".into());
    }
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return fail(format!("cannot write here: no folder {}", dir.display()));
    }
    // Only an existing file can be an input; compare real paths so `./m/../m/x` and links match too.
    let Ok(real) = out.canonicalize() else {
        return Ok(());
    };
    for input in inputs {
        let Ok(input_real) = input.canonicalize() else {
            continue;
        };
        if real == input_real || (input_real.is_dir() && real.starts_with(&input_real)) {
            return fail(format!(
                "is an input of this command ({}); write the output somewhere else",
                input.display()
            ));
        }
    }
    Ok(())
}

/// The inputs of a command that reads a model folder and maybe a file of token ids.
pub fn inputs<'a>(model: Option<&'a PathBuf>, tokens: Option<&'a PathBuf>) -> Vec<&'a Path> {
    model
        .into_iter()
        .chain(tokens)
        .map(PathBuf::as_path)
        .collect()
}
