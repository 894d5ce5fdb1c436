//! Reading the small text files around a model (configs, indexes, plans, token lists) with a size cap, so that a
//! path that names `/dev/zero`, a pipe that never ends or a multi-gigabyte file by mistake is refused with one line
//! instead of filling memory.

use std::io::Read;
use std::path::Path;

use crate::error::{ModelError, Result};

/// The largest text file tlens reads: 256 MiB. Configs are kilobytes; a token list of this size holds tens of
/// millions of ids, more than any one run can hold.
pub const MAX_TEXT_BYTES: u64 = 256 << 20;

/// Reads `path` as UTF-8 text of at most [`MAX_TEXT_BYTES`].
///
/// ```
/// let err = tlens_model::text_file::read_text(std::path::Path::new("/dev/zero")).unwrap_err();
/// assert!(err.to_string().contains("larger than 256 MiB"), "{err}");
/// ```
pub fn read_text(path: &Path) -> Result<String> {
    let file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    let mut bytes = Vec::new();
    file.take(MAX_TEXT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ModelError::io(path, e))?;
    if bytes.len() as u64 > MAX_TEXT_BYTES {
        return Err(ModelError::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                format!(
                    "larger than {} MiB, too large for a text input",
                    MAX_TEXT_BYTES >> 20
                ),
            ),
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        ModelError::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not UTF-8 text: {e}"),
            ),
        )
    })
}
