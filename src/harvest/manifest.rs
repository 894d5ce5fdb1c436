//! The manifest of a harvest (`tlens-harvest.json`): what was asked, which shards are done, and where the data ended.
//!
//! One machine keeps the manifest itself up to date after every shard. Each of `N` machines started with
//! `--shard K/N` keeps its own (`tlens-harvest.K-of-N.json`), so that no two processes ever write one file;
//! `tlens harvest --merge` joins them into the manifest one machine would have written and removes them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::HarvestError;
use super::dataset::{Column, Layout, write_json};
use crate::cache_core::Precision;

/// The manifest's file name.
pub const MANIFEST_FILE: &str = "tlens-harvest.json";
/// What `format` says.
pub const FORMAT: &str = "tlens-harvest/1";

/// Which part of the windows one machine harvests: shards `index`, `index + count`, `index + 2·count`, ...
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardOf {
    /// This machine's number, below `count`.
    pub index: usize,
    /// How many machines share the work.
    pub count: usize,
}

impl Default for ShardOf {
    fn default() -> Self {
        Self { index: 0, count: 1 }
    }
}

impl std::str::FromStr for ShardOf {
    type Err = String;

    /// `K/N`, e.g. `3/16`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (k, n) = s.split_once('/').ok_or("expected K/N, e.g. 0/4")?;
        let index: usize = k.trim().parse().map_err(|e| format!("K in {s:?}: {e}"))?;
        let count: usize = n.trim().parse().map_err(|e| format!("N in {s:?}: {e}"))?;
        if count == 0 || index >= count {
            return Err(format!(
                "{s}: K must be below N (0/{count} ... {}/{count})",
                count.max(1) - 1
            ));
        }
        Ok(Self { index, count })
    }
}

impl std::fmt::Display for ShardOf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl ShardOf {
    /// Whether output shard `shard` is this machine's.
    pub fn owns(&self, shard: u64) -> bool {
        shard % self.count as u64 == self.index as u64
    }

    /// The file this machine's progress is kept in.
    pub fn manifest_file(&self) -> String {
        if self.count == 1 {
            MANIFEST_FILE.to_string()
        } else {
            format!("tlens-harvest.{}-of-{}.json", self.index, self.count)
        }
    }
}

/// One input file, by name and size (paths differ between machines; the content is what must agree).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFile {
    /// The file's name.
    pub name: String,
    /// Its size in bytes.
    pub bytes: u64,
}

/// What a harvest was asked for: a run resumes or joins a folder only when these agree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The model (for the reader; the config hash is what is compared).
    pub model: String,
    /// SHA-256 of the model's resolved config (JSON).
    pub config_sha256: String,
    /// The backend computing the activations (another backend's last bits differ, so its shards would not match).
    pub backend: String,
    /// The hooks, in column order.
    pub hooks: Vec<String>,
    /// Tokens per window.
    pub context_size: usize,
    /// Windows per forward pass (a window's activations do not depend on it, but their last bits may).
    pub batch_size: usize,
    /// Windows per shard file.
    pub shard_size: usize,
    /// How activations are stored.
    pub dtype: Precision,
    /// The input files, in order.
    pub data: Vec<DataFile>,
    /// The JSON Lines / Parquet field holding the text.
    pub text_field: String,
    /// The most tokens to harvest (whole windows), if bounded.
    pub max_tokens: Option<u64>,
    /// The token each window starts with.
    pub begin_token: Option<u32>,
    /// The token between documents.
    pub separator_token: Option<u32>,
}

impl Request {
    /// The fields in which `self` and `other` differ (the model's name excepted).
    pub fn differences(&self, other: &Request) -> Vec<String> {
        let (a, b) = (
            serde_json::to_value(self).unwrap_or_default(),
            serde_json::to_value(other).unwrap_or_default(),
        );
        let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
            return vec!["everything".into()];
        };
        a.iter()
            .filter(|(k, v)| *k != "model" && b.get(*k) != Some(v))
            .map(|(k, v)| {
                format!(
                    "{k} ({} there, {} here)",
                    b.get(k).cloned().unwrap_or_default(),
                    v
                )
            })
            .collect()
    }
}

/// One finished shard file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// Its number: it holds windows `index·shard_size ..`.
    pub index: u64,
    /// The file, in the output folder.
    pub file: String,
    /// How many windows (rows) it holds.
    pub windows: u64,
    /// Records of the input read when its last window was complete.
    pub records_end: u64,
    /// Of those, how many were skipped as malformed.
    pub skipped_end: u64,
    /// The file's size.
    pub bytes: u64,
}

/// Where the data ended (known once one pass has read to the end, or to `--max-tokens`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct End {
    /// Windows in all.
    pub windows: u64,
    /// Records read.
    pub records: u64,
    /// Records skipped as malformed.
    pub skipped: u64,
}

/// The manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: String,
    /// What was asked.
    pub request: Request,
    /// `K/N` in a machine's own manifest; absent in the folder's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
    /// Each hook's column: its name and the shape of one window's activation.
    pub columns: Vec<Column>,
    /// The shards done, by index.
    pub shards: Vec<Shard>,
    /// Tokens in the shards done.
    pub tokens_done: u64,
    /// Where the data ended, once known.
    pub end: Option<End>,
    /// Whether every shard (of this machine, in a machine's manifest) is done.
    pub complete: bool,
}

impl Manifest {
    /// A manifest with nothing done.
    pub fn new(request: Request, columns: Vec<Column>, machine: ShardOf) -> Self {
        Self {
            format: FORMAT.into(),
            request,
            machine: (machine.count > 1).then(|| machine.to_string()),
            columns,
            shards: Vec::new(),
            tokens_done: 0,
            end: None,
            complete: false,
        }
    }

    /// Reads a manifest.
    pub fn read(path: &Path) -> Result<Self, HarvestError> {
        let text = std::fs::read_to_string(path).map_err(|e| folder_error(path, e))?;
        let manifest: Manifest = serde_json::from_str(&text).map_err(|e| folder_error(path, e))?;
        if manifest.format != FORMAT {
            return Err(folder_error(
                path,
                format_args!("format {:?}, not {FORMAT:?}", manifest.format),
            ));
        }
        Ok(manifest)
    }

    /// The layout of the rows.
    pub fn layout(&self) -> Layout {
        Layout {
            context: self.request.context_size,
            hooks: self.columns.clone(),
            dtype: self.request.dtype,
        }
    }

    /// Records a finished shard.
    pub fn add(&mut self, shard: Shard) {
        self.shards.retain(|s| s.index != shard.index);
        self.shards.push(shard);
        self.shards.sort_by_key(|s| s.index);
        self.tokens_done =
            self.shards.iter().map(|s| s.windows).sum::<u64>() * self.request.context_size as u64;
    }

    /// How many shard files the whole harvest has, once the end is known.
    pub fn shard_count(&self) -> Option<u64> {
        self.end
            .map(|end| end.windows.div_ceil(self.request.shard_size as u64))
    }

    /// Sets `complete`: the end is known and every shard `machine` owns is done.
    pub fn update_complete(&mut self, machine: ShardOf) {
        let done: BTreeSet<u64> = self.shards.iter().map(|s| s.index).collect();
        self.complete = self.shard_count().is_some_and(|n| {
            (0..n)
                .filter(|&j| machine.owns(j))
                .all(|j| done.contains(&j))
        });
    }

    /// A fingerprint of the content (`state.json`'s `_fingerprint`).
    pub fn fingerprint(&self) -> String {
        use sha2::Digest;
        let text = serde_json::to_string(&(&self.request, &self.shards)).unwrap_or_default();
        let digest = sha2::Sha256::digest(text.as_bytes());
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Writes the manifest to `dir/file`; for the folder's own manifest, also the `datasets` index of the shards done.
    pub fn write(&self, dir: &Path, file: &str) -> Result<(), HarvestError> {
        if self.machine.is_none() {
            let files: Vec<String> = self.shards.iter().map(|s| s.file.clone()).collect();
            self.layout()
                .write_index(dir, &files, &self.fingerprint())?;
        }
        write_json(&dir.join(file), self)
    }
}

/// The name of shard `index`'s file.
pub fn shard_file(index: u64) -> String {
    format!("data-{index:05}.arrow")
}

/// An error about the output folder.
pub fn folder_error(path: &Path, e: impl std::fmt::Display) -> HarvestError {
    HarvestError::Folder {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// The shard a file name names: the inverse of [`shard_file`].
pub fn shard_of_file(name: &str) -> Option<u64> {
    let index = name
        .strip_prefix("data-")?
        .strip_suffix(".arrow")?
        .parse()
        .ok()?;
    (shard_file(index) == name).then_some(index)
}

/// The machine whose manifest a file name names: the inverse of [`ShardOf::manifest_file`] for `N > 1`.
pub fn machine_of_file(name: &str) -> Option<ShardOf> {
    let k_of_n = name.strip_prefix("tlens-harvest.")?.strip_suffix(".json")?;
    let machine: ShardOf = k_of_n.replace("-of-", "/").parse().ok()?;
    (machine.count > 1 && machine.manifest_file() == name).then_some(machine)
}

/// The names and paths of the files in `dir` (none when it does not exist).
pub fn folder_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, HarvestError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(folder_error(dir, e)),
    };
    entries
        .map(|entry| {
            let entry = entry.map_err(|e| folder_error(dir, e))?;
            Ok((
                entry.file_name().to_string_lossy().into_owned(),
                entry.path(),
            ))
        })
        .collect()
}

/// The machine manifests (`tlens-harvest.K-of-N.json`) in `dir`, with their `K/N`.
pub fn machine_manifests(dir: &Path) -> Result<Vec<(ShardOf, PathBuf)>, HarvestError> {
    let mut found: Vec<(ShardOf, PathBuf)> = folder_files(dir)?
        .into_iter()
        .filter_map(|(name, path)| Some((machine_of_file(&name)?, path)))
        .collect();
    found.sort_by_key(|(s, _)| (s.count, s.index));
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_own_every_nth_file() {
        let s: ShardOf = "2/3".parse().unwrap();
        assert_eq!((0..9).filter(|&j| s.owns(j)).collect::<Vec<_>>(), [2, 5, 8]);
        assert_eq!(s.manifest_file(), "tlens-harvest.2-of-3.json");
        assert_eq!(ShardOf::default().manifest_file(), MANIFEST_FILE);
        assert_eq!(machine_of_file("tlens-harvest.2-of-3.json"), Some(s));
        assert_eq!(machine_of_file(MANIFEST_FILE), None);
        assert_eq!(shard_of_file(&shard_file(12)), Some(12));
        assert_eq!(shard_of_file("data-12.arrow"), None);
        for bad in ["3/3", "1/0", "x/2", "1", "-1/2"] {
            assert!(bad.parse::<ShardOf>().is_err(), "{bad}");
        }
    }
}
