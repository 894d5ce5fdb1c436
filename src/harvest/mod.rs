//! `tlens harvest`: the activations of a whole dataset, streamed to disk as a Hugging Face `datasets` folder.
//!
//! The documents of the data files are read as a stream ([`records`]), tokenized, packed into windows of
//! `context_size` tokens as SAELens packs them ([`windows`]), run through the model a batch at a time with the chosen
//! hooks cached, and written as Arrow shards of `shard_size` windows ([`dataset`]) with a manifest ([`manifest`]).
//! Reading and tokenizing, the forward pass and writing run on three threads joined by bounded queues, so memory holds
//! a few batches whatever the size of the data.
//!
//! Nothing is lost and nothing is written twice: a shard is written under a temporary name and renamed when complete,
//! and the manifest (rewritten atomically after each shard) lists only complete shards. A harvest killed at any point
//! and started again with the same arguments redoes only the shards its manifest does not list, and the folder it
//! ends with is byte for byte the one an uninterrupted run writes. Shard `j` holds windows `j·shard_size ..` whoever
//! computes it, and its batches are cut at the same windows, so `N` machines started with `--shard K/N` write the
//! same files one machine would; [`merge`] then joins their manifests.

pub mod dataset;
pub mod manifest;
pub mod records;
pub mod windows;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use tlens_model::Kernels;

use burn_tensor::backend::Backend;
use thiserror::Error;
use tlens_cache_core::error::closest;
use tlens_cache_core::{CacheError, HookPoint, NamesFilter, Precision, RunOptions};
use tlens_model::{LoadedModel, TokenBatch, Tokenizer};

use crate::Result;
use crate::memory::{self, Derivable, MemoryBudget};
use dataset::{Column, INFO_FILE, Layout, STATE_FILE};
use manifest::{
    DataFile, End, MANIFEST_FILE, Manifest, Request, Shard, ShardOf, folder_error, folder_files,
    machine_manifests, machine_of_file, shard_file, shard_of_file,
};
use records::{Record, Records};
use windows::Packer;

/// What a shard file aims at when `shard_size` is not given: about this many bytes.
pub const SHARD_TARGET_BYTES: u64 = 256 << 20;

/// Batches waiting between two threads (each way): enough to keep the forward pass busy, few enough that memory
/// stays flat.
const QUEUE: usize = 2;

/// An error of a harvest.
#[derive(Debug, Error)]
pub enum HarvestError {
    /// A data file that cannot be read (missing, or a Parquet file without the text column or with a corrupt page).
    #[error("{path}: {message}")]
    Data {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// An output folder that holds something else, or a harvest asked for differently.
    #[error("{path}: {message}")]
    Folder {
        /// The folder or file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Data without one complete window.
    #[error(
        "the data holds no complete window of {context} tokens ({records} records read, {skipped} skipped as malformed)"
    )]
    Empty {
        /// Tokens per window.
        context: usize,
        /// Records read.
        records: u64,
        /// Records skipped.
        skipped: u64,
    },
    /// Arguments that cannot work (a context longer than the model's, no hooks, ...).
    #[error("{0}")]
    Invalid(String),
    /// Building the Arrow data.
    #[error("Arrow: {0}")]
    Arrow(String),
    /// Writing a file.
    #[error(transparent)]
    Write(#[from] CacheError),
}

/// What to harvest and where.
#[derive(Debug, Clone)]
pub struct HarvestArgs {
    /// The data files, read in order.
    pub data: Vec<PathBuf>,
    /// The field (JSON Lines) or column (Parquet) holding the text.
    pub text_field: String,
    /// The hooks to store, one column each.
    pub hooks: Vec<String>,
    /// Tokens per window (at most the model's `n_ctx`).
    pub context_size: usize,
    /// Windows per forward pass.
    pub batch_size: usize,
    /// Stop after this many tokens (whole windows).
    pub max_tokens: Option<u64>,
    /// How activations are stored.
    pub dtype: Precision,
    /// The output folder.
    pub out: PathBuf,
    /// This machine's part of the work.
    pub shard: ShardOf,
    /// Windows per shard file (default: about [`SHARD_TARGET_BYTES`], a multiple of the batch size).
    pub shard_size: Option<usize>,
}

/// How far a harvest is, after each batch.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    /// Tokens harvested by this run.
    pub tokens: u64,
    /// Bytes written by this run.
    pub bytes_written: u64,
    /// How much of the data has been read, 0 to 1.
    pub fraction: f64,
}

/// What a harvest did.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The manifest as it now stands.
    pub manifest: Manifest,
    /// Shard files this run wrote.
    pub shards_written: usize,
    /// Tokens this run harvested.
    pub tokens: u64,
    /// Bytes this run wrote.
    pub bytes_written: u64,
    /// The first malformed record skipped, if any (the manifest's `end` counts them).
    pub first_skipped: Option<String>,
    /// Whether the folder was complete before this run (it then did nothing).
    pub was_complete: bool,
}

/// The reader's messages to the forward pass.
enum Work {
    /// Windows of one shard to run.
    Batch { shard: u64, windows: Vec<Vec<u32>> },
    /// A shard's last window has been sent.
    ShardDone(Shard),
    /// The data ended.
    End(End),
}

/// The forward pass's messages to the writer.
enum Out {
    /// One batch's tokens (rows × context) and each hook's activations (rows × the hook's shape).
    Batch {
        shard: u64,
        tokens: Vec<u32>,
        hooks: Vec<Vec<f32>>,
    },
    /// See [`Work::ShardDone`].
    ShardDone(Shard),
    /// See [`Work::End`].
    End(End),
}

/// Harvests `args.data` through `loaded` (named `model_name` in the manifest) into `args.out`, calling `progress`
/// after each batch. Resumes a folder this request started; refuses one that holds anything else.
pub fn harvest<B: Kernels>(
    loaded: &LoadedModel<B>,
    model_name: &str,
    args: &HarvestArgs,
    budget: &MemoryBudget,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Summary> {
    let cfg = loaded.model.cfg();
    let tokenizer = loaded.tokenizer.as_ref().ok_or_else(|| {
        HarvestError::Invalid("the model has no tokenizer to read text with".into())
    })?;
    let layout = layout(loaded, args)?;
    let request = request(loaded, model_name, args, &layout, tokenizer)?;
    let options = RunOptions {
        names_filter: NamesFilter::Names(args.hooks.clone()),
        stop_at_layer: stop_at_layer(&args.hooks),
        ..RunOptions::default()
    };
    budget.check(
        memory::run_bytes(
            cfg,
            args.batch_size,
            args.context_size,
            &options,
            false,
            Derivable::Recipes,
        )
        .and_then(|run| {
            // The batches queued on both sides of the forward pass, and the one being written.
            let queued = (2 * QUEUE as u64 + 1) * args.batch_size as u64 * layout.window_bytes();
            run.checked_add(queued)
        }),
        &format!(
            "harvesting batches of {} windows of {} tokens",
            args.batch_size, args.context_size
        ),
        "pass a smaller --batch-size or fewer hooks",
    )?;
    let Some(mut manifest) = prepare_folder(&args.out, &request, &layout, args.shard)? else {
        let manifest = Manifest::read(&args.out.join(args.shard.manifest_file()))
            .or_else(|_| Manifest::read(&args.out.join(MANIFEST_FILE)))?;
        return Ok(Summary {
            manifest,
            shards_written: 0,
            tokens: 0,
            bytes_written: 0,
            first_skipped: None,
            was_complete: true,
        });
    };
    let done: BTreeSet<u64> = manifest.shards.iter().map(|s| s.index).collect();
    let bytes_read = AtomicU64::new(0);
    let bytes_written = AtomicU64::new(0);
    let windows_read = AtomicU64::new(0);
    let first_skipped = std::sync::Mutex::new(None);
    let total_bytes: u64 = request.data.iter().map(|d| d.bytes).sum();
    let max_windows = args.max_tokens.map(|t| t / args.context_size as u64);
    let shards_before = manifest.shards.len();
    let mut tokens_done = 0u64;

    let (work_tx, work_rx) = sync_channel::<std::result::Result<Work, HarvestError>>(QUEUE);
    let (out_tx, out_rx) = sync_channel::<Out>(QUEUE);
    let reader = Reader {
        tokenizer,
        packer: Packer::new(
            args.context_size,
            request.begin_token,
            request.separator_token,
        ),
        shard_size: request.shard_size as u64,
        batch_size: args.batch_size,
        max_windows,
        wanted: |j: u64| args.shard.owns(j) && !done.contains(&j),
        bytes_read: &bytes_read,
        windows_read: &windows_read,
        first_skipped: &first_skipped,
    };
    let (forward, written) = std::thread::scope(|scope| {
        let reading =
            scope.spawn(|| reader.run(Records::new(args.data.clone(), &args.text_field), work_tx));
        let writing = scope
            .spawn(|| write_shards(out_rx, &args.out, &mut manifest, args.shard, &bytes_written));
        let forward = (|| -> Result<()> {
            for work in work_rx.iter() {
                let message = match work? {
                    Work::Batch { shard, windows } => {
                        let tokens = TokenBatch::new(&windows)?;
                        let (_, cache) = loaded.model.run_with_cache(&tokens, options.clone())?;
                        let hooks = args
                            .hooks
                            .iter()
                            .map(|name| Ok(cache.get(name.as_str())?.to_vec()))
                            .collect::<Result<Vec<_>>>()?;
                        tokens_done += (windows.len() * args.context_size) as u64;
                        Out::Batch {
                            shard,
                            tokens: windows.concat(),
                            hooks,
                        }
                    }
                    Work::ShardDone(shard) => Out::ShardDone(shard),
                    Work::End(end) => Out::End(end),
                };
                if out_tx.send(message).is_err() {
                    break; // the writer stopped: its error says why
                }
                let read = bytes_read.load(Ordering::Relaxed) as f64 / total_bytes.max(1) as f64;
                let windows = max_windows.map_or(0.0, |m| {
                    windows_read.load(Ordering::Relaxed) as f64 / m.max(1) as f64
                });
                progress(&Progress {
                    tokens: tokens_done,
                    bytes_written: bytes_written.load(Ordering::Relaxed),
                    fraction: read.max(windows).min(1.0),
                });
            }
            Ok(())
        })();
        // Closing both queues stops the other threads wherever they are.
        drop(work_rx);
        drop(out_tx);
        reading.join().expect("the reader does not panic");
        let written = writing.join().expect("the writer does not panic");
        (forward, written)
    });
    // The forward pass's own error comes first (the writer then failed because it stopped); when the writer failed
    // first (a full disk, say), the forward pass stopped without one.
    forward?;
    written?;
    let shards_written = manifest.shards.len().saturating_sub(shards_before);
    Ok(Summary {
        manifest,
        shards_written,
        tokens: tokens_done,
        bytes_written: bytes_written.load(Ordering::Relaxed),
        first_skipped: first_skipped.into_inner().unwrap_or_default(),
        was_complete: false,
    })
}

/// The columns: each hook's activation shape for one window, checked against the model's hook names.
fn layout<B: Backend>(loaded: &LoadedModel<B>, args: &HarvestArgs) -> Result<Layout> {
    let cfg = loaded.model.cfg();
    if args.hooks.is_empty() {
        return Err(HarvestError::Invalid("name at least one hook to harvest".into()).into());
    }
    if args.context_size < 2 || args.context_size > cfg.n_ctx {
        return Err(HarvestError::Invalid(format!(
            "a context size of {} tokens is outside 2..={}, the model's n_ctx",
            args.context_size, cfg.n_ctx
        ))
        .into());
    }
    if args.batch_size == 0 {
        return Err(HarvestError::Invalid("the batch size must be at least 1".into()).into());
    }
    let all = loaded.model.hook_names();
    let mut hooks = Vec::new();
    for (i, name) in args.hooks.iter().enumerate() {
        if !all.contains(name) {
            return Err(CacheError::UnknownHook {
                name: name.clone(),
                suggestions: closest(name, all.iter().map(String::as_str)),
            }
            .into());
        }
        if args.hooks[..i].contains(name) {
            return Err(HarvestError::Invalid(format!("hook {name} is named twice")).into());
        }
        let point: HookPoint = name
            .parse()
            .map_err(|_| HarvestError::Invalid(format!("{name} is not a hook point")))?;
        let mut shape = point
            .dims(cfg, 1, args.context_size)
            .ok_or_else(|| HarvestError::Invalid(format!("{name} is too large to count")))?;
        // The batch axis goes; Qwen 3's flattened q/k norms (`[B·P·H, ..]`) keep theirs, which for one window is
        // `P·H`.
        if point.shape().starts_with("[B,") {
            shape.remove(0);
        }
        hooks.push(Column {
            name: name.clone(),
            shape,
        });
    }
    Ok(Layout {
        context: args.context_size,
        hooks,
        dtype: args.dtype,
    })
}

/// The request recorded in the manifest.
fn request<B: Backend>(
    loaded: &LoadedModel<B>,
    model_name: &str,
    args: &HarvestArgs,
    layout: &Layout,
    tokenizer: &Tokenizer,
) -> Result<Request> {
    use sha2::Digest;
    if args.data.is_empty() {
        return Err(HarvestError::Invalid("name at least one data file".into()).into());
    }
    let cfg = loaded.model.cfg();
    let config = serde_json::to_string(cfg).map_err(|e| HarvestError::Invalid(e.to_string()))?;
    let data = args
        .data
        .iter()
        .map(|path| {
            let meta = std::fs::metadata(path).map_err(|e| HarvestError::Data {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
            Ok(DataFile {
                name: path
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                bytes: meta.len(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if args
        .max_tokens
        .is_some_and(|t| t < args.context_size as u64)
    {
        return Err(HarvestError::Invalid(format!(
            "--max-tokens {} is less than one window of {} tokens",
            args.max_tokens.unwrap_or_default(),
            args.context_size
        ))
        .into());
    }
    let batch = args.batch_size;
    let shard_size = match args.shard_size {
        Some(0) => {
            return Err(HarvestError::Invalid("a shard holds at least one window".into()).into());
        }
        Some(n) => n,
        None => {
            ((SHARD_TARGET_BYTES / layout.window_bytes().max(1)) as usize / batch).max(1) * batch
        }
    };
    let bos = tokenizer.bos_token_id();
    Ok(Request {
        model: model_name.to_string(),
        config_sha256: sha2::Sha256::digest(config.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        backend: B::name(&loaded.model.device()),
        hooks: args.hooks.clone(),
        context_size: args.context_size,
        batch_size: batch,
        shard_size,
        dtype: args.dtype,
        data,
        text_field: args.text_field.clone(),
        max_tokens: args.max_tokens,
        // As the family's `to_tokens`: BOS first where TransformerLens prepends it, and between documents wherever
        // the tokenizer has one.
        begin_token: bos.filter(|_| cfg.default_prepend_bos),
        separator_token: bos,
    })
}

/// Where the forward pass can stop: after the last block a hook reads, when no hook lies past the blocks (the
/// unembedding, the largest product of a small model, is then skipped too).
fn stop_at_layer(hooks: &[String]) -> Option<i64> {
    let mut last = 0;
    for name in hooks {
        match name.parse::<HookPoint>().ok()?.layer() {
            Some(layer) => last = last.max(layer + 1),
            None if name.starts_with("hook_") => {} // the embeddings, before every block
            None => return None,
        }
    }
    Some(last as i64)
}

/// Checks the output folder against the request and readies it: `None` when it already holds this request complete;
/// else the manifest to continue (the shards it lists whose files are intact), with stale temporaries removed.
fn prepare_folder(
    dir: &Path,
    request: &Request,
    layout: &Layout,
    shard: ShardOf,
) -> Result<Option<Manifest>, HarvestError> {
    std::fs::create_dir_all(dir).map_err(|e| folder_error(dir, e))?;
    let top = dir.join(MANIFEST_FILE);
    let machines = machine_manifests(dir)?;
    let mut existing = Vec::new();
    if top.exists() {
        existing.push((top.clone(), Manifest::read(&top)?));
    }
    for (_, path) in &machines {
        existing.push((path.clone(), Manifest::read(path)?));
    }
    for (path, manifest) in &existing {
        let differences = request.differences(&manifest.request);
        if !differences.is_empty() {
            return Err(folder_error(
                path,
                format_args!(
                    "this folder holds a harvest asked for differently: {}; harvest into another folder",
                    differences.join(", ")
                ),
            ));
        }
    }
    if let Some((_, manifest)) = existing.first().filter(|(p, _)| *p == top) {
        if manifest.complete {
            return Ok(None);
        }
        if shard.count > 1 {
            return Err(folder_error(
                &top,
                "a harvest on one machine is under way in this folder; continue it without --shard",
            ));
        }
    }
    if let Some((other, path)) = machines.iter().find(|(m, _)| m.count != shard.count) {
        return Err(folder_error(
            path,
            format_args!(
                "this folder is shared by {} machines ({other}); run with --shard K/{}, or --merge when all are done",
                other.count, other.count
            ),
        ));
    }
    check_only_harvest_files(dir)?;
    let own = shard.manifest_file();
    remove_stale_temporaries(dir, shard, &own)?;
    let mut manifest = match Manifest::read(&dir.join(&own)) {
        Ok(manifest) => manifest,
        Err(_) if !dir.join(&own).exists() => {
            Manifest::new(request.clone(), layout.hooks.clone(), shard)
        }
        Err(e) => return Err(e),
    };
    if manifest.complete {
        return Ok(None);
    }
    // A shard whose file went missing or changed size is done again.
    let intact = |s: &Shard| std::fs::metadata(dir.join(&s.file)).is_ok_and(|m| m.len() == s.bytes);
    manifest.shards.retain(intact);
    manifest.columns = layout.hooks.clone();
    Ok(Some(manifest))
}

/// Whether `name` is one of the files a harvest writes.
fn is_harvest_file(name: &str) -> bool {
    [MANIFEST_FILE, STATE_FILE, INFO_FILE].contains(&name)
        || shard_of_file(name).is_some()
        || machine_of_file(name).is_some()
}

/// The file a temporary `.NAME.XXXXXX.tmp` (see `write_atomically`) was to become.
fn temporary_of(name: &str) -> Option<&str> {
    let inner = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    Some(&inner[..inner.rfind('.')?])
}

/// Refuses a folder that holds files no harvest writes: harvesting into it could mix its files with the dataset.
fn check_only_harvest_files(dir: &Path) -> Result<(), HarvestError> {
    for (name, _) in folder_files(dir)? {
        if !is_harvest_file(temporary_of(&name).unwrap_or(&name)) {
            return Err(folder_error(
                dir,
                format_args!(
                    "the folder holds {name}, which is not part of a harvest; harvest into an empty or new folder"
                ),
            ));
        }
    }
    Ok(())
}

/// Removes temporaries a killed run of this machine left: those of its shards and its manifest (and, on one machine,
/// of the `datasets` index). Other machines' temporaries may be files in the making.
fn remove_stale_temporaries(dir: &Path, shard: ShardOf, own: &str) -> Result<(), HarvestError> {
    for (name, path) in folder_files(dir)? {
        let Some(target) = temporary_of(&name) else {
            continue;
        };
        let mine = match shard_of_file(target) {
            Some(j) => shard.owns(j),
            None => {
                target == own || (shard.count == 1 && [STATE_FILE, INFO_FILE].contains(&target))
            }
        };
        if mine {
            std::fs::remove_file(&path).map_err(|e| folder_error(&path, e))?;
        }
    }
    Ok(())
}

/// The reading thread: records → tokens → windows → batches of the shards this machine computes.
struct Reader<'a, F: Fn(u64) -> bool> {
    tokenizer: &'a Tokenizer,
    packer: Packer,
    shard_size: u64,
    batch_size: usize,
    max_windows: Option<u64>,
    /// Whether this machine computes shard `j` now.
    wanted: F,
    bytes_read: &'a AtomicU64,
    windows_read: &'a AtomicU64,
    first_skipped: &'a std::sync::Mutex<Option<String>>,
}

impl<F: Fn(u64) -> bool> Reader<'_, F> {
    /// Sends the work to `tx`; stops quietly when the forward pass has stopped.
    fn run(
        mut self,
        mut records: Records,
        tx: SyncSender<std::result::Result<Work, HarvestError>>,
    ) {
        let (mut read, mut skipped, mut windows) = (0u64, 0u64, 0u64);
        let mut batch: Vec<Vec<u32>> = Vec::new();
        let send = |work| tx.send(Ok(work)).is_ok();
        'records: while let Some(record) = records.next() {
            let record = match record {
                Ok(record) => record,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            read += 1;
            let doc = match record {
                Record::Text(text) => self
                    .tokenizer
                    .to_tokens(&text, false)
                    .map_err(|e| e.to_string()),
                Record::Malformed(why) => Err(why),
            };
            let doc = match doc {
                Ok(doc) => doc,
                Err(why) => {
                    skipped += 1;
                    self.first_skipped
                        .lock()
                        .expect("not poisoned")
                        .get_or_insert(why);
                    continue;
                }
            };
            let mut complete = Vec::new();
            self.packer.push(&doc, |w| complete.push(w));
            for window in complete {
                let shard = windows / self.shard_size;
                windows += 1;
                let last_of_shard = windows % self.shard_size == 0;
                if (self.wanted)(shard) {
                    batch.push(window);
                    let sent = if last_of_shard {
                        self.finish_shard(&send, &mut batch, shard, windows, read, skipped)
                    } else if batch.len() == self.batch_size {
                        send(Work::Batch {
                            shard,
                            windows: std::mem::take(&mut batch),
                        })
                    } else {
                        true
                    };
                    if !sent {
                        return;
                    }
                }
                self.windows_read.store(windows, Ordering::Relaxed);
                if Some(windows) == self.max_windows {
                    break 'records;
                }
            }
            self.bytes_read
                .store(records.bytes_read(), Ordering::Relaxed);
        }
        // The last shard, if partial.
        let shard = windows / self.shard_size;
        if windows % self.shard_size != 0
            && (self.wanted)(shard)
            && !self.finish_shard(&send, &mut batch, shard, windows, read, skipped)
        {
            return;
        }
        send(Work::End(End {
            windows,
            records: read,
            skipped,
        }));
    }

    /// Sends the windows of shard `index` still in `batch` and the shard's end, whose last window is window
    /// `windows − 1`, with `read` records read and `skipped` skipped by then. False when the forward pass has stopped.
    fn finish_shard(
        &self,
        send: &impl Fn(Work) -> bool,
        batch: &mut Vec<Vec<u32>>,
        index: u64,
        windows: u64,
        read: u64,
        skipped: u64,
    ) -> bool {
        (batch.is_empty()
            || send(Work::Batch {
                shard: index,
                windows: std::mem::take(batch),
            }))
            && send(Work::ShardDone(Shard {
                index,
                file: shard_file(index),
                windows: windows - index * self.shard_size,
                records_end: read,
                skipped_end: skipped,
                bytes: 0,
            }))
    }
}

/// The writing thread: each shard's batches into its file, then the manifest.
fn write_shards(
    rx: Receiver<Out>,
    dir: &Path,
    manifest: &mut Manifest,
    machine: ShardOf,
    bytes_written: &AtomicU64,
) -> std::result::Result<(), HarvestError> {
    let layout = manifest.layout();
    let schema = Arc::new(layout.schema());
    let own = machine.manifest_file();
    while let Ok(message) = rx.recv() {
        match message {
            Out::Batch {
                shard,
                tokens,
                hooks,
            } => {
                let path = dir.join(shard_file(shard));
                let mut first = Some((tokens, hooks));
                let mut finished = None;
                crate::cache_core::atomic_file::write_atomically(&path, |tmp| {
                    let file =
                        std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(tmp)?);
                    let mut writer = arrow_ipc::writer::StreamWriter::try_new(file, &schema)
                        .map_err(io_error)?;
                    loop {
                        let (tokens, hooks) = match first.take() {
                            Some(batch) => batch,
                            None => match rx.recv() {
                                Ok(Out::Batch {
                                    shard: s,
                                    tokens,
                                    hooks,
                                }) if s == shard => (tokens, hooks),
                                Ok(Out::ShardDone(done)) if done.index == shard => {
                                    finished = Some(done);
                                    break;
                                }
                                Ok(_) => {
                                    return Err(std::io::Error::other(
                                        "shard messages out of order",
                                    ));
                                }
                                Err(_) => {
                                    return Err(std::io::Error::other(
                                        "the harvest stopped before this shard was complete",
                                    ));
                                }
                            },
                        };
                        let batch = layout
                            .batch(&schema, &tokens, hooks)
                            .map_err(std::io::Error::other)?;
                        writer.write(&batch).map_err(io_error)?;
                        bytes_written.fetch_add(
                            batch.num_rows() as u64 * layout.window_bytes(),
                            Ordering::Relaxed,
                        );
                    }
                    writer.finish().map_err(io_error)?;
                    writer
                        .into_inner()
                        .map_err(io_error)?
                        .into_inner()
                        .map_err(|e| e.into_error())?
                        .flush()
                })?;
                let mut done = finished.expect("set before the write succeeds");
                done.bytes = std::fs::metadata(&path)
                    .map_err(|e| folder_error(&path, e))?
                    .len();
                manifest.add(done);
                manifest.update_complete(machine);
                manifest.write(dir, &own)?;
            }
            Out::ShardDone(_) => {
                return Err(HarvestError::Invalid(
                    "a shard ended before it began".into(),
                ));
            }
            Out::End(end) => {
                if end.windows == 0 {
                    return Err(HarvestError::Empty {
                        context: manifest.request.context_size,
                        records: end.records,
                        skipped: end.skipped,
                    });
                }
                manifest.end = Some(end);
                manifest.update_complete(machine);
                manifest.write(dir, &own)?;
            }
        }
    }
    Ok(())
}

/// An Arrow error as the I/O error it wraps, if it wraps one (so a full disk reads as one).
fn io_error(e: arrow_schema::ArrowError) -> std::io::Error {
    match e {
        arrow_schema::ArrowError::IoError(_, e) => e,
        e => std::io::Error::other(e),
    }
}

/// Joins the manifests of the `N` machines of a `--shard K/N` harvest in `dir` into the folder's own manifest and
/// `datasets` index, the files one machine would have written, and removes theirs. A folder already merged (or
/// harvested on one machine) is returned as it is.
pub fn merge(dir: &Path) -> Result<Manifest, HarvestError> {
    let machines = machine_manifests(dir)?;
    let top = dir.join(MANIFEST_FILE);
    if machines.is_empty() {
        let manifest = Manifest::read(&top)?;
        if !manifest.complete {
            return Err(folder_error(
                &top,
                "the harvest is not complete; run it again to finish it",
            ));
        }
        return Ok(manifest);
    }
    let count = machines[0].0.count;
    if let Some((other, path)) = machines.iter().find(|(m, _)| m.count != count) {
        return Err(folder_error(
            path,
            format_args!("machines of two splits ({other} and K/{count}) share this folder"),
        ));
    }
    let manifests = machines
        .iter()
        .map(|(_, path)| Manifest::read(path))
        .collect::<Result<Vec<_>, _>>()?;
    let missing: Vec<String> = (0..count)
        .filter(|k| !machines.iter().any(|(m, _)| m.index == *k))
        .map(|k| format!("{k}/{count}"))
        .collect();
    if !missing.is_empty() {
        return Err(folder_error(
            dir,
            format_args!(
                "machines {} have not started; run them first",
                missing.join(", ")
            ),
        ));
    }
    let first = &manifests[0];
    let mut merged = Manifest::new(
        first.request.clone(),
        first.columns.clone(),
        ShardOf::default(),
    );
    merged.end = first.end;
    for ((machine, path), manifest) in machines.iter().zip(&manifests) {
        let differences = first.request.differences(&manifest.request);
        if !differences.is_empty() || manifest.columns != first.columns {
            return Err(folder_error(
                path,
                format_args!(
                    "asked for differently from machine 0: {}",
                    differences.join(", ")
                ),
            ));
        }
        if !manifest.complete || manifest.end != first.end {
            return Err(folder_error(
                path,
                format_args!(
                    "machine {machine} is not done ({} shards so far); run it again to finish",
                    manifest.shards.len()
                ),
            ));
        }
        for shard in &manifest.shards {
            merged.add(shard.clone());
        }
    }
    merged.update_complete(ShardOf::default());
    if !merged.complete || Some(merged.shards.len() as u64) != merged.shard_count() {
        return Err(folder_error(
            dir,
            "the machines' shards do not make up the whole harvest",
        ));
    }
    merged.write(dir, MANIFEST_FILE)?;
    for (_, path) in &machines {
        std::fs::remove_file(path).map_err(|e| folder_error(path, e))?;
    }
    Ok(merged)
}
