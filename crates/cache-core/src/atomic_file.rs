//! Writing a file so that a failed or interrupted write never costs the file that was there before.
//!
//! Every file tlens writes (a saved cache, a plan's output, a report) goes to a temporary file in the destination's
//! folder, is flushed to disk, and only then renamed over the destination. A full disk, an error half-way, or a kill
//! before the rename leaves the earlier file as it was; the rename itself is atomic on POSIX file systems, so a reader
//! sees the old file or the new one, never a part. (A process killed mid-write can leave its temporary,
//! `.NAME.XXXXXX.tmp`, beside the destination; it never takes the destination's name.)

use std::path::Path;

use crate::error::{CacheError, Result};

/// Writes `path` through `write`, which is given the temporary file's path to fill. On success the temporary is synced
/// and renamed to `path`; on any error it is removed and `path` is untouched.
///
/// ```
/// let dir = std::env::temp_dir().join(format!("tlens-doc-atomic-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("out.txt");
/// tlens_cache_core::atomic_file::write_atomically(&path, |tmp| std::fs::write(tmp, "first")).unwrap();
/// let failed = tlens_cache_core::atomic_file::write_atomically(&path, |tmp| {
///     std::fs::write(tmp, "half of the seco")?;
///     Err(std::io::Error::other("disk full"))
/// });
/// assert!(failed.is_err());
/// assert_eq!(std::fs::read_to_string(&path).unwrap(), "first");
/// assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "the temporary is gone");
/// # std::fs::remove_dir_all(dir).unwrap();
/// ```
pub fn write_atomically(
    path: &Path,
    write: impl FnOnce(&Path) -> std::io::Result<()>,
) -> Result<()> {
    let fail = |e: std::io::Error| CacheError::File {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let prefix = format!(
        ".{}.",
        path.file_name().unwrap_or_default().to_string_lossy()
    );
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    // The destination gets the permissions a plain create would give it (0666 less the umask), not the temporary's
    // private 0600.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let tmp = builder.tempfile_in(dir).map_err(fail)?;
    write(tmp.path()).map_err(fail)?;
    tmp.as_file().sync_all().map_err(fail)?;
    tmp.persist(path).map_err(|e| fail(e.error))?;
    Ok(())
}
