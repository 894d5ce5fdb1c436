//! Fuzzing of everything tlens reads from outside: mutated safetensors files (mostly their header: the
//! little-endian length, then the JSON), `config.json` texts (Hugging Face and TransformerLens), plan files and
//! token-id files go through the loaders and parsers, which must answer `Ok` or `Err` and never panic.
//!
//! Every input starts from a committed fixture (the tiny models under `tests/models`, the plans under
//! `tests/plans`) and is mutated by proptest: byte edits (set, flip, delete, insert, splice, truncate at any
//! length, a forged header length), structured edits of the JSON (a value replaced by `0`, `-1`, `1e300`,
//! `18446744073709551615`, `"NaN"`, ...; keys removed or added; values wrapped or duplicated), raw number
//! tokens (`NaN`, `1e999`, ...) and, for safetensors headers, edits of a tensor's shape, dtype, offsets or name,
//! after which the data region is laid out again so that the file stays valid safetensors and the edit reaches
//! the conversion code. A panic fails the property with the input that caused it (proptest shrinks it first).
//!
//! `tokenizer.json` files are mutated the same way. `found_inputs_never_panic` replays the inputs that did panic.
//!
//! The case counts keep the file to a few seconds in a debug build; `PROPTEST_CASES=N` runs more, and
//! `PROPTEST_RNG_SEED=N` explores other inputs than the fixed default seed.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::{RngSeed, TestCaseError};
use serde_json::{Map, Value, json};
use tlens::backend::NdArray;
use tlens::{HookedTransformerConfig, Processing};

/// The seed of every property unless `PROPTEST_RNG_SEED` says otherwise (the same inputs on every CI run).
const SEED: u64 = 0x746c_656e_735f_667a;

/// Proptest's configuration: `cases` unless `PROPTEST_CASES` is set, the fixed seed unless `PROPTEST_RNG_SEED` is,
/// no regression files, and a bounded shrink.
fn config(cases: u32) -> ProptestConfig {
    let set = |var: &str| std::env::var_os(var).is_some();
    let mut cfg = ProptestConfig::default();
    if !set("PROPTEST_CASES") {
        cfg.cases = cases;
    }
    if !set("PROPTEST_RNG_SEED") {
        cfg.rng_seed = RngSeed::Fixed(SEED);
    }
    cfg.failure_persistence = None;
    cfg.max_shrink_iters = 2000;
    cfg
}

// ---------------------------------------------------------------------------------------------------------------
// Fixtures.

/// A model folder's config text and weight bytes.
struct Fixture {
    name: &'static str,
    config: String,
    weights: Vec<u8>,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests")
}

fn fixture(name: &'static str, weights: &str) -> Fixture {
    let dir = root().join("models").join(name);
    Fixture {
        name,
        config: std::fs::read_to_string(dir.join("config.json")).expect("fixture config"),
        weights: std::fs::read(dir.join(weights)).expect("fixture weights"),
    }
}

/// Hugging Face folders (`model.safetensors`): GPT-2, and one of each conversion path (grouped-query attention with
/// Llama 3 rope scaling, NeoX's fused qkv, Phi-3's fused projections, Gemma 2's norms and local layers, OPT's
/// offset positions).
static HF: LazyLock<Vec<Fixture>> = LazyLock::new(|| {
    [
        "gpt2-tiny",
        "hf-llama",
        "hf-neox",
        "hf-phi3",
        "hf-gemma2",
        "hf-opt",
    ]
    .into_iter()
    .map(|name| fixture(name, "model.safetensors"))
    .collect()
});

/// TransformerLens folders (`weights.safetensors`): attention-only, LN + ReLU, SoLU, RMS + SiLU.
static TL: LazyLock<Vec<Fixture>> = LazyLock::new(|| {
    ["tl-attnonly", "tl-ln-relu", "tl-solu", "tl-rms-silu"]
        .into_iter()
        .map(|name| fixture(name, "weights.safetensors"))
        .collect()
});

/// Every JSON file under `tests/plans`, by name.
static PLANS: LazyLock<Vec<(String, String)>> = LazyLock::new(|| {
    let mut plans: Vec<(String, String)> = std::fs::read_dir(root().join("plans"))
        .expect("tests/plans")
        .map(|entry| entry.expect("plan entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("plan text");
            (file_name(&path), text)
        })
        .collect();
    plans.sort();
    plans
});

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The `tokenizer.json` of the tiny models (a byte-level BPE).
static TOKENIZER: LazyLock<String> = LazyLock::new(|| {
    std::fs::read_to_string(root().join("models/gpt2-tiny/tokenizer.json")).expect("tokenizer.json")
});

/// Valid token files the token mutations start from.
const TOKEN_SEEDS: [&str; 4] = [
    "[50256, 464, 3797, 3332]",
    "[[0, 5, 17, 3, 42, 8], [0, 11, 2, 49, 30, 7]]",
    "[[1]]",
    "[4294967295, 0]",
];

fn hf_load(config: &str, weights: &[u8]) -> bool {
    tlens::model::load_hf_bytes::<NdArray>(
        config,
        weights,
        None,
        Processing::default(),
        &Default::default(),
    )
    .is_ok()
}

fn tl_load(config: &str, weights: &[u8]) -> bool {
    tlens::load_transformerlens_bytes::<NdArray>(
        config,
        weights,
        None,
        Processing::default(),
        &Default::default(),
    )
    .is_ok()
}

/// Runs `f`, turning a panic into a failed case that shows the input.
fn no_panic<T>(
    what: &str,
    input: impl FnOnce() -> String,
    f: impl FnOnce() -> T,
) -> Result<T, TestCaseError> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("(no message)");
        TestCaseError::fail(format!(
            "{what} panicked: {message}\n--- input ---\n{}\n-------------",
            input()
        ))
    })
}

/// A safetensors file as text for a failure message: its length, header length field and header.
fn describe_safetensors(bytes: &[u8]) -> String {
    let Some((len, rest)) = bytes.split_first_chunk::<8>() else {
        return format!("{} bytes: {bytes:?}", bytes.len());
    };
    let len = u64::from_le_bytes(*len);
    let shown = usize::try_from(len)
        .unwrap_or(usize::MAX)
        .min(rest.len())
        .min(16_384);
    format!(
        "{} bytes, header length field {len}, header ({shown} bytes shown):\n{}",
        bytes.len(),
        String::from_utf8_lossy(&rest[..shown])
    )
}

// ---------------------------------------------------------------------------------------------------------------
// Byte edits.

/// One edit of a byte string. `header` edits land in the safetensors header region (the 8 length bytes and the JSON,
/// as the current length field bounds it), the others anywhere in the file.
#[derive(Clone, Debug)]
enum ByteOp {
    Set {
        at: Index,
        header: bool,
        byte: u8,
    },
    Flip {
        at: Index,
        header: bool,
        bit: u8,
    },
    Truncate {
        at: Index,
    },
    Delete {
        at: Index,
        header: bool,
        len: u8,
    },
    Insert {
        at: Index,
        header: bool,
        bytes: Vec<u8>,
    },
    /// Copies `len` bytes from `from` over `to`.
    Splice {
        from: Index,
        to: Index,
        header: bool,
        len: u8,
    },
    HeaderLen(HeaderLen),
}

/// A forged header length field.
#[derive(Clone, Debug)]
enum HeaderLen {
    Exact(u64),
    /// The current length plus this.
    Delta(i32),
}

fn header_bias() -> impl Strategy<Value = bool> {
    prop::bool::weighted(0.85)
}

fn interesting_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        any::<u8>(),
        select(b"{}[]\",:0123456789-+.eE\\ntfu \x00\xff".to_vec()),
    ]
}

fn header_len() -> impl Strategy<Value = HeaderLen> {
    let exact = [
        0,
        1,
        2,
        7,
        8,
        100_000_000,
        100_000_001,
        u64::from(u32::MAX),
        1 << 32,
        1 << 62,
        i64::MAX as u64,
        u64::MAX - 7,
        u64::MAX,
    ];
    prop_oneof![
        2 => select(exact.to_vec()).prop_map(HeaderLen::Exact),
        1 => any::<u64>().prop_map(HeaderLen::Exact),
        2 => (-64i32..64).prop_map(HeaderLen::Delta),
    ]
}

fn byte_op() -> impl Strategy<Value = ByteOp> {
    prop_oneof![
        4 => (any::<Index>(), header_bias(), interesting_byte())
            .prop_map(|(at, header, byte)| ByteOp::Set { at, header, byte }),
        4 => (any::<Index>(), header_bias(), 0u8..8)
            .prop_map(|(at, header, bit)| ByteOp::Flip { at, header, bit }),
        2 => any::<Index>().prop_map(|at| ByteOp::Truncate { at }),
        2 => (any::<Index>(), header_bias(), 1u8..64)
            .prop_map(|(at, header, len)| ByteOp::Delete { at, header, len }),
        2 => (any::<Index>(), header_bias(), vec(interesting_byte(), 1..16))
            .prop_map(|(at, header, bytes)| ByteOp::Insert { at, header, bytes }),
        2 => (any::<Index>(), any::<Index>(), header_bias(), 1u8..64)
            .prop_map(|(from, to, header, len)| ByteOp::Splice { from, to, header, len }),
        3 => header_len().prop_map(ByteOp::HeaderLen),
    ]
}

/// The length field of a safetensors file, if it has one.
fn length_field(bytes: &[u8]) -> Option<u64> {
    bytes.first_chunk::<8>().map(|b| u64::from_le_bytes(*b))
}

/// How many bytes an edit may touch: the header region, or the whole file.
fn region(bytes: &[u8], header: bool) -> usize {
    match length_field(bytes) {
        Some(n) if header => usize::try_from(n)
            .unwrap_or(usize::MAX)
            .saturating_add(8)
            .min(bytes.len()),
        _ => bytes.len(),
    }
}

/// A position in `0..len` (`0` when `len` is 0).
fn pick(at: &Index, len: usize) -> usize {
    if len == 0 { 0 } else { at.index(len) }
}

fn apply_byte_op(bytes: &mut Vec<u8>, op: &ByteOp) {
    match op {
        ByteOp::Set { at, header, byte } => {
            let i = pick(at, region(bytes, *header));
            if let Some(b) = bytes.get_mut(i) {
                *b = *byte;
            }
        }
        ByteOp::Flip { at, header, bit } => {
            let i = pick(at, region(bytes, *header));
            if let Some(b) = bytes.get_mut(i) {
                *b ^= 1 << bit;
            }
        }
        ByteOp::Truncate { at } => bytes.truncate(pick(at, bytes.len() + 1)),
        ByteOp::Delete { at, header, len } => {
            let i = pick(at, region(bytes, *header));
            let end = (i + usize::from(*len)).min(bytes.len());
            bytes.drain(i.min(end)..end);
        }
        ByteOp::Insert {
            at,
            header,
            bytes: new,
        } => {
            let i = pick(at, region(bytes, *header) + 1).min(bytes.len());
            bytes.splice(i..i, new.iter().copied());
        }
        ByteOp::Splice {
            from,
            to,
            header,
            len,
        } => {
            let (from, to) = (pick(from, bytes.len()), pick(to, region(bytes, *header)));
            let chunk: Vec<u8> = bytes
                .iter()
                .skip(from)
                .take(usize::from(*len))
                .copied()
                .collect();
            for (i, b) in chunk.into_iter().enumerate() {
                if let Some(slot) = bytes.get_mut(to + i) {
                    *slot = b;
                }
            }
        }
        ByteOp::HeaderLen(len) => {
            let current = length_field(bytes).unwrap_or(0);
            let new = match len {
                HeaderLen::Exact(n) => *n,
                HeaderLen::Delta(d) => current.wrapping_add_signed(i64::from(*d)),
            };
            if bytes.len() < 8 {
                bytes.resize(8, 0);
            }
            bytes[..8].copy_from_slice(&new.to_le_bytes());
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// JSON edits.

/// Keys that an inserted entry may take: TransformerLens and Hugging Face config fields, plan fields, safetensors
/// header fields, tokenizer fields, and one nobody reads.
const KEYS: &str = "\
    n_layers d_model n_ctx d_head n_heads d_mlp d_vocab d_vocab_out act_fn eps normalization_type \
    attn_only attn_scale use_attn_scale positional_embedding_type rotary_dim rotary_base \
    rotary_adjacent_pairs use_NTK_by_parts_rope NTK_by_parts_factor NTK_original_ctx_len \
    use_normalization_before_and_after window_size use_local_attn attn_types use_qk_norm final_rms \
    parallel_attn_mlp gated_mlp n_key_value_heads attn_scores_soft_cap output_logits_soft_cap \
    attention_dir use_split_qkv_input post_embedding_ln scale_attn_by_inverse_layer_idx model_type \
    n_embd n_head n_layer n_positions n_inner vocab_size layer_norm_epsilon activation_function \
    hidden_size num_attention_heads num_key_value_heads intermediate_size num_hidden_layers \
    max_position_embeddings head_dim rms_norm_eps hidden_act hidden_activation rope_theta rope_scaling \
    rope_parameters rope_type original_max_position_embeddings sliding_window layer_types rotary_pct \
    partial_rotary_factor query_pre_attn_scalar attn_logit_softcapping use_parallel_residual \
    word_embed_proj_dim do_layer_norm_before dtype shape data_offsets __metadata__ model tokens run \
    calls hooks pos_slice names_filter stop_at_layer incl_bwd processing unknown_field type vocab merges \
    normalizer pre_tokenizer decoder post_processor added_tokens precompiled_charsmap id content";

/// Strings that are meaningful somewhere (enum values of the configs, families, dtypes, plan words, tokenizer parts).
const WORDS: &str = "\
    standard rotary causal bidirectional LN LNPre RMS RMSPre relu gelu gelu_new gelu_fast \
    gelu_pytorch_tanh silu swish solu_ln tanh gpt2 gpt_neox gptj opt llama mistral qwen2 qwen3 phi3 \
    gemma gemma2 bert llama3 linear dynamic default local global sliding_attention full_attention F32 \
    F16 BF16 F64 I64 BOOL F8_E4M3 hook_resid_pre blocks.0.attn.hook_z \
    BPE WordPiece WordLevel Unigram ByteLevel Metaspace Precompiled Sequence Split NFC Replace";

/// Replacement leaves: zero, negative, huge and tiny numbers, the strings JSON has for NaN and the infinities, and
/// values of the wrong type.
const INTERESTING: &str = r#"[0, -1, 1, 2, 3, 4, 7, 8, 64, 1e300, -1e300, 1e-300, 0.5, -0.0, 2.5,
    18446744073709551615, 9223372036854775807, -9223372036854775808, 2147483648, 4294967296, 4611686018427387904,
    1000000000, "NaN", "nan", "inf", "-Infinity", "1e300", "18446744073709551615", "", null, true, false, [], {},
    [-1], [0, 0]]"#;

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => select(serde_json::from_str::<Vec<Value>>(INTERESTING).expect("JSON")),
        2 => select(WORDS.split_whitespace().collect::<Vec<_>>()).prop_map(|w| json!(w)),
        1 => any::<i64>().prop_map(|n| json!(n)),
        1 => any::<f64>().prop_map(|x| json!(x)),
    ]
}

/// A replacement value: mostly a leaf, sometimes a small list or object of them.
fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            vec(
                (select(KEYS.split_whitespace().collect::<Vec<_>>()), inner),
                0..3
            )
            .prop_map(|entries| {
                Value::Object(
                    entries
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect(),
                )
            }),
        ]
    })
}

/// One structured edit of a JSON document; `node` picks a node of the document in pre-order (the root first).
#[derive(Clone, Debug)]
enum JsonOp {
    Replace {
        node: Index,
        with: Value,
    },
    Remove {
        node: Index,
    },
    /// Adds an entry under one of [`KEYS`] to an object, or an element to a list.
    Insert {
        node: Index,
        key: Index,
        with: Value,
    },
    /// `v` becomes `[v]`.
    Wrap {
        node: Index,
    },
    /// In a list, the element appears twice.
    Duplicate {
        node: Index,
    },
}

fn json_op() -> impl Strategy<Value = JsonOp> {
    prop_oneof![
        6 => (any::<Index>(), json_value()).prop_map(|(node, with)| JsonOp::Replace { node, with }),
        3 => any::<Index>().prop_map(|node| JsonOp::Remove { node }),
        2 => (any::<Index>(), any::<Index>(), json_value())
            .prop_map(|(node, key, with)| JsonOp::Insert { node, key, with }),
        1 => any::<Index>().prop_map(|node| JsonOp::Wrap { node }),
        1 => any::<Index>().prop_map(|node| JsonOp::Duplicate { node }),
    ]
}

/// A step on the way from a JSON document to its parent or child.
#[derive(Clone, Debug)]
enum Seg {
    Key(String),
    At(usize),
}

/// The paths of every node, in pre-order.
fn nodes(v: &Value) -> Vec<Vec<Seg>> {
    fn walk(v: &Value, path: &mut Vec<Seg>, out: &mut Vec<Vec<Seg>>) {
        out.push(path.clone());
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    path.push(Seg::Key(k.clone()));
                    walk(child, path, out);
                    path.pop();
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    path.push(Seg::At(i));
                    walk(child, path, out);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

fn node_mut<'a>(v: &'a mut Value, path: &[Seg]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |v, seg| match seg {
        Seg::Key(k) => v.get_mut(k.as_str()),
        Seg::At(i) => v.get_mut(*i),
    })
}

fn apply_json_op(doc: &mut Value, op: &JsonOp) {
    let paths = nodes(doc);
    let path = |node: &Index| paths[node.index(paths.len())].clone();
    match op {
        JsonOp::Replace { node, with } => {
            if let Some(v) = node_mut(doc, &path(node)) {
                *v = with.clone();
            }
        }
        JsonOp::Remove { node } => {
            let path = path(node);
            let Some((last, parent)) = path.split_last() else {
                return;
            };
            match (node_mut(doc, parent), last) {
                (Some(Value::Object(map)), Seg::Key(k)) => {
                    map.remove(k);
                }
                (Some(Value::Array(items)), Seg::At(i)) => {
                    items.remove(*i);
                }
                _ => {}
            }
        }
        JsonOp::Insert { node, key, with } => match node_mut(doc, &path(node)) {
            Some(Value::Object(map)) => {
                let keys: Vec<&str> = KEYS.split_whitespace().collect();
                map.insert(keys[key.index(keys.len())].to_string(), with.clone());
            }
            Some(Value::Array(items)) => {
                let at = key.index(items.len() + 1);
                items.insert(at, with.clone());
            }
            _ => {}
        },
        JsonOp::Wrap { node } => {
            if let Some(v) = node_mut(doc, &path(node)) {
                *v = Value::Array(vec![v.take()]);
            }
        }
        JsonOp::Duplicate { node } => {
            let path = path(node);
            if let Some((Seg::At(i), parent)) = path.split_last()
                && let Some(Value::Array(items)) = node_mut(doc, parent)
            {
                let copy = items[*i].clone();
                items.insert(*i, copy);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Text edits (configs, plans, token files).

/// Raw number tokens that JSON does not allow or that overflow every integer type.
const RAW_NUMBERS: &str = "\
    NaN nan Infinity -Infinity inf 1e999 -1e999 1e-400 18446744073709551616 99999999999999999999999999 \
    -9223372036854775809 -0 0x10 1_000 \"NaN\" null 4.0 -1 0 18446744073709551615";

/// One edit of a JSON text: structured (when the text still parses), a number token replaced raw, or bytes.
#[derive(Clone, Debug)]
enum TextEdit {
    Json(JsonOp),
    Number { which: Index, raw: &'static str },
    Bytes(ByteOp),
}

fn text_edit() -> impl Strategy<Value = TextEdit> {
    prop_oneof![
        6 => json_op().prop_map(TextEdit::Json),
        2 => (any::<Index>(), select(RAW_NUMBERS.split_whitespace().collect::<Vec<_>>()))
            .prop_map(|(which, raw)| TextEdit::Number { which, raw }),
        2 => byte_op().prop_map(TextEdit::Bytes),
    ]
}

/// The byte ranges of the number tokens of a JSON text (roughly: runs of `-0-9.eE+` that start with `-` or a digit).
fn number_tokens(text: &str) -> Vec<std::ops::Range<usize>> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let starts = (bytes[i] == b'-' || bytes[i].is_ascii_digit())
            && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric() && bytes[i - 1] != b'_');
        if starts {
            let start = i;
            i += 1;
            while i < bytes.len()
                && matches!(bytes[i], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
            {
                i += 1;
            }
            out.push(start..i);
        } else {
            i += 1;
        }
    }
    out
}

fn apply_text_edits(text: &str, edits: &[TextEdit]) -> String {
    let mut text = text.to_string();
    for edit in edits {
        match edit {
            TextEdit::Json(op) => {
                if let Ok(mut doc) = serde_json::from_str::<Value>(&text) {
                    apply_json_op(&mut doc, op);
                    text = doc.to_string();
                }
            }
            TextEdit::Number { which, raw } => {
                let tokens = number_tokens(&text);
                if !tokens.is_empty() {
                    text.replace_range(tokens[which.index(tokens.len())].clone(), raw);
                }
            }
            TextEdit::Bytes(op) => {
                let mut bytes = text.into_bytes();
                apply_byte_op(&mut bytes, op);
                text = String::from_utf8_lossy(&bytes).into_owned();
            }
        }
    }
    text
}

// ---------------------------------------------------------------------------------------------------------------
// Safetensors header edits.

/// Names a tensor may be renamed to or copied as: ones the loaders look for under another shape, buffers they drop,
/// and names nothing reads.
const TENSOR_NAMES: [&str; 16] = [
    "wpe.weight",
    "transformer.wpe.weight",
    "lm_head.weight",
    "h.0.attn.bias",
    "transformer.h.0.attn.c_attn.weight",
    "model.embed_tokens.weight",
    "model.layers.0.self_attn.qkv_proj.weight",
    "model.layers.0.mlp.gate_up_proj.weight",
    "model.layers.9.self_attn.rotary_emb.inv_freq",
    "gpt_neox.layers.0.attention.query_key_value.weight",
    "blocks.0.attn._W_K",
    "blocks.0.attn.IGNORE",
    "pos_embed.W_pos",
    "__metadata__",
    "",
    "not.a.weight",
];

const DTYPES: [&str; 12] = [
    "F32", "F16", "BF16", "F64", "I64", "I32", "U8", "BOOL", "F8_E4M3", "F4", "C64", "X99",
];

/// An edit of a tensor's shape.
#[derive(Clone, Debug)]
enum ShapeEdit {
    Set(Vec<u64>),
    /// One dimension plus or minus a little.
    Nudge(Index, i8),
    Drop(Index),
    Push(u64),
    Reverse,
}

fn dim() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0u64..=130,
        2 => select(vec![192u64, 256, 512, 1024, 1 << 16]),
        1 => select(vec![1u64 << 31, 1 << 32, 1 << 62, i64::MAX as u64, u64::MAX]),
        1 => any::<u64>(),
    ]
}

fn shape_edit() -> impl Strategy<Value = ShapeEdit> {
    prop_oneof![
        2 => vec(dim(), 0..5).prop_map(ShapeEdit::Set),
        3 => (any::<Index>(), any::<i8>()).prop_map(|(at, by)| ShapeEdit::Nudge(at, by)),
        1 => any::<Index>().prop_map(ShapeEdit::Drop),
        1 => dim().prop_map(ShapeEdit::Push),
        1 => Just(ShapeEdit::Reverse),
    ]
}

/// An edit of one tensor's entry in a safetensors header (`tensor` picks the entry), or of the header as JSON.
#[derive(Clone, Debug)]
enum TensorOp {
    Shape {
        tensor: Index,
        edit: ShapeEdit,
    },
    Dtype {
        tensor: Index,
        dtype: &'static str,
    },
    Offsets {
        tensor: Index,
        start: u64,
        end: u64,
    },
    /// Renames the entry to another entry's name or to one of [`TENSOR_NAMES`].
    Rename {
        tensor: Index,
        to: Index,
    },
    /// Copies the entry under one of [`TENSOR_NAMES`].
    Copy {
        tensor: Index,
        to: Index,
    },
    Remove {
        tensor: Index,
    },
    Json(JsonOp),
}

fn tensor_op() -> impl Strategy<Value = TensorOp> {
    let offset = prop_oneof![0u64..600_000, select(vec![u64::MAX, 1 << 62, 1 << 32])];
    prop_oneof![
        5 => (any::<Index>(), shape_edit()).prop_map(|(tensor, edit)| TensorOp::Shape { tensor, edit }),
        2 => (any::<Index>(), select(DTYPES.to_vec()))
            .prop_map(|(tensor, dtype)| TensorOp::Dtype { tensor, dtype }),
        1 => (any::<Index>(), offset.clone(), offset)
            .prop_map(|(tensor, start, end)| TensorOp::Offsets { tensor, start, end }),
        2 => (any::<Index>(), any::<Index>()).prop_map(|(tensor, to)| TensorOp::Rename { tensor, to }),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(tensor, to)| TensorOp::Copy { tensor, to }),
        2 => any::<Index>().prop_map(|tensor| TensorOp::Remove { tensor }),
        1 => json_op().prop_map(TensorOp::Json),
    ]
}

fn apply_tensor_op(header: &mut Map<String, Value>, op: &TensorOp) {
    let names: Vec<String> = header
        .keys()
        .filter(|k| *k != "__metadata__")
        .cloned()
        .collect();
    let name =
        |tensor: &Index| (!names.is_empty()).then(|| names[tensor.index(names.len())].clone());
    match op {
        TensorOp::Shape { tensor, edit } => {
            let Some(entry) = name(tensor).and_then(|n| header.get_mut(&n)) else {
                return;
            };
            let mut dims: Vec<u64> = entry
                .get("shape")
                .and_then(Value::as_array)
                .map(|shape| shape.iter().filter_map(Value::as_u64).collect())
                .unwrap_or_default();
            match edit {
                ShapeEdit::Set(new) => dims.clone_from(new),
                ShapeEdit::Nudge(at, by) if !dims.is_empty() => {
                    let i = at.index(dims.len());
                    dims[i] = dims[i].saturating_add_signed(i64::from(*by));
                }
                ShapeEdit::Drop(at) if !dims.is_empty() => {
                    dims.remove(at.index(dims.len()));
                }
                ShapeEdit::Push(d) => dims.push(*d),
                ShapeEdit::Reverse => dims.reverse(),
                _ => {}
            }
            set_field(entry, "shape", json!(dims));
        }
        TensorOp::Dtype { tensor, dtype } => {
            if let Some(entry) = name(tensor).and_then(|n| header.get_mut(&n)) {
                set_field(entry, "dtype", json!(dtype));
            }
        }
        TensorOp::Offsets { tensor, start, end } => {
            if let Some(entry) = name(tensor).and_then(|n| header.get_mut(&n)) {
                set_field(entry, "data_offsets", json!([start, end]));
            }
        }
        TensorOp::Rename { tensor, to } | TensorOp::Copy { tensor, to } => {
            let Some(from) = name(tensor) else { return };
            let targets: Vec<&str> = names
                .iter()
                .map(String::as_str)
                .chain(TENSOR_NAMES)
                .collect();
            let target = targets[to.index(targets.len())].to_string();
            let entry = if matches!(op, TensorOp::Rename { .. }) {
                header.remove(&from)
            } else {
                header.get(&from).cloned()
            };
            if let Some(entry) = entry {
                header.insert(target, entry);
            }
        }
        TensorOp::Remove { tensor } => {
            if let Some(n) = name(tensor) {
                header.remove(&n);
            }
        }
        TensorOp::Json(op) => {
            let mut doc = Value::Object(std::mem::take(header));
            apply_json_op(&mut doc, op);
            if let Value::Object(map) = doc {
                *header = map;
            }
        }
    }
}

/// Sets a field of a header entry, if the entry is still an object.
fn set_field(entry: &mut Value, key: &str, value: Value) {
    if let Some(entry) = entry.as_object_mut() {
        entry.insert(key.to_string(), value);
    }
}

/// Lays the data region out again for the (edited) header: each entry with a readable shape and dtype gets the next
/// `size` bytes, filled from the old data, so the file is valid safetensors whatever shapes and dtypes the edits
/// chose. `None` (no re-layout) when the data would pass `limit` bytes.
fn relayout(header: &mut Map<String, Value>, old_data: &[u8], limit: u64) -> Option<Vec<u8>> {
    let bits = |dtype: &str| -> Option<u64> {
        Some(match dtype {
            "F4" => 4,
            "BOOL" | "U8" | "I8" | "F8_E4M3" | "F8_E5M2" => 8,
            "F16" | "BF16" | "I16" | "U16" => 16,
            "F32" | "I32" | "U32" => 32,
            "F64" | "I64" | "U64" | "C64" => 64,
            _ => return None,
        })
    };
    let mut data = Vec::new();
    for (name, entry) in header.iter_mut() {
        if name == "__metadata__" {
            continue;
        }
        let shape = entry.get("shape").and_then(Value::as_array);
        let dtype = entry.get("dtype").and_then(Value::as_str).and_then(bits);
        let (Some(shape), Some(bits)) = (shape, dtype) else {
            continue;
        };
        let size = shape
            .iter()
            .try_fold(bits, |n, d| d.as_u64().and_then(|d| n.checked_mul(d)))
            .map(|n| n.div_ceil(8));
        let size = size.filter(|&s| data.len() as u64 + s <= limit)?;
        let start = data.len() as u64;
        data.extend(old_data.iter().copied().cycle().take(size as usize));
        data.resize((start + size) as usize, 0);
        set_field(entry, "data_offsets", json!([start, start + size]));
    }
    Some(data)
}

/// A safetensors mutation: header edits (then, maybe, a re-layout of the data), then byte edits.
#[derive(Clone, Debug)]
struct SafetensorsCase {
    fixture: Index,
    header: Vec<TensorOp>,
    relayout: bool,
    bytes: Vec<ByteOp>,
}

fn safetensors_case() -> impl Strategy<Value = SafetensorsCase> {
    let header = vec(tensor_op(), 0..4);
    prop_oneof![
        // Byte edits only, mostly of the header region.
        2 => (any::<Index>(), vec(byte_op(), 1..5)).prop_map(|(fixture, bytes)| SafetensorsCase {
            fixture,
            header: Vec::new(),
            relayout: false,
            bytes,
        }),
        // Structured header edits, usually laid out again, sometimes with a byte edit on top.
        3 => (any::<Index>(), header, prop::bool::weighted(0.8), vec(byte_op(), 0..2)).prop_map(
            |(fixture, header, relayout, bytes)| SafetensorsCase { fixture, header, relayout, bytes }
        ),
    ]
}

fn mutate_safetensors(original: &[u8], case: &SafetensorsCase) -> Vec<u8> {
    let mut bytes = if !case.header.is_empty() || case.relayout {
        rewrite_header(
            original,
            |header| {
                case.header
                    .iter()
                    .for_each(|op| apply_tensor_op(header, op))
            },
            case.relayout,
        )
    } else {
        original.to_vec()
    };
    for op in &case.bytes {
        apply_byte_op(&mut bytes, op);
    }
    bytes
}

/// A fixture's safetensors file with its header edited, and the data laid out again for it if `relayout`.
fn rewrite_header(
    original: &[u8],
    edit: impl FnOnce(&mut Map<String, Value>),
    relayout_data: bool,
) -> Vec<u8> {
    let n = length_field(original).expect("a fixture has a header") as usize;
    let mut header: Map<String, Value> =
        serde_json::from_slice(&original[8..8 + n]).expect("a fixture's header is JSON");
    edit(&mut header);
    let old_data = &original[8 + n..];
    let data = if relayout_data {
        relayout(&mut header, old_data, 8 << 20)
    } else {
        None
    };
    let text = serde_json::to_vec(&header).expect("JSON");
    let mut bytes = (text.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&text);
    bytes.extend_from_slice(data.as_deref().unwrap_or(old_data));
    bytes
}

/// A text mutation of fixture `fixture`.
#[derive(Clone, Debug)]
struct TextCase {
    fixture: Index,
    edits: Vec<TextEdit>,
}

fn text_case(edits: std::ops::Range<usize>) -> impl Strategy<Value = TextCase> {
    (any::<Index>(), vec(text_edit(), edits))
        .prop_map(|(fixture, edits)| TextCase { fixture, edits })
}

// ---------------------------------------------------------------------------------------------------------------
// Token files.

fn token_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => any::<u32>().prop_map(|n| json!(n)),
        3 => select(vec![
            json!(u64::MAX),
            json!(u64::from(u32::MAX) + 1),
            json!(-1),
            json!(i64::MIN),
            json!(1.5),
            json!(1e300),
            json!(-0.0),
            json!(0.0),
            json!("5"),
            Value::Null,
            json!(true),
            json!({}),
        ]),
    ]
}

/// A token file: a JSON value of nested lists (ragged, empty, mixed) of ids and things that are not ids.
fn token_value() -> impl Strategy<Value = Value> {
    token_leaf().prop_recursive(4, 64, 8, |inner| vec(inner, 0..8).prop_map(Value::Array))
}

// ---------------------------------------------------------------------------------------------------------------
// The properties.

/// The fixtures load as they are: the mutations start from valid inputs.
#[test]
fn fixtures_load() {
    for f in HF.iter() {
        assert!(hf_load(&f.config, &f.weights), "{} does not load", f.name);
    }
    for f in TL.iter() {
        assert!(tl_load(&f.config, &f.weights), "{} does not load", f.name);
        HookedTransformerConfig::from_json(&f.config).expect("TransformerLens config");
    }
    for (name, text) in PLANS.iter() {
        if name != "divergences.json" {
            serde_json::from_str::<tlens::plan::Plan>(text)
                .unwrap_or_else(|e| panic!("plan {name}: {e}"));
        }
    }
    for text in TOKEN_SEEDS {
        tlens::analysis::input::parse_token_json(text, "tokens").expect(text);
    }
}

/// A fixture's config text with `key` set to `value` (`None`: removed).
fn with_field(text: &str, key: &str, value: Option<Value>) -> String {
    let mut doc: Map<String, Value> = serde_json::from_str(text).expect("a fixture config");
    match value {
        Some(v) => doc.insert(key.to_string(), v),
        None => doc.remove(key),
    };
    Value::Object(doc).to_string()
}

fn hf_fixture(name: &str) -> &'static Fixture {
    HF.iter().find(|f| f.name == name).expect("an HF fixture")
}

fn tl_fixture(name: &str) -> &'static Fixture {
    TL.iter().find(|f| f.name == name).expect("a TL fixture")
}

/// Inputs that panicked (found by the properties above, or by reading the code they pointed at), each tried on every
/// run and all reported together. "Open" marks the ones whose panic is still there.
#[test]
fn found_inputs_never_panic() {
    let gpt2 = hf_fixture("gpt2-tiny");
    let (llama, gemma2) = (hf_fixture("hf-llama"), hf_fixture("hf-gemma2"));
    let (phi3, opt) = (hf_fixture("hf-phi3"), hf_fixture("hf-opt"));
    let attn_only = tl_fixture("tl-attnonly");
    let huge = json!(u64::MAX);
    let mistral = with_field(&llama.config, "model_type", Some(json!("mistral")));
    let mistral = with_field(&mistral, "sliding_window", Some(json!(4)));
    let hf_configs = [
        // `4 · hidden_size` overflowed, evaluated even with `intermediate_size` given (fixed in hf.rs).
        (
            "hf-llama",
            with_field(&llama.config, "hidden_size", Some(huge.clone())),
        ),
        // Gemma 2's per-layer attention types, sized by num_hidden_layers: capacity overflow (fixed in hf.rs).
        (
            "hf-gemma2",
            with_field(&gemma2.config, "num_hidden_layers", Some(huge.clone())),
        ),
        // Mistral's, likewise; 2^40 layers was an allocation of a terabyte, an abort (fixed in hf.rs).
        (
            "hf-llama",
            with_field(&mistral, "num_hidden_layers", Some(json!(1u64 << 40))),
        ),
        // Overflows in the shapes the weight conversion computes (fixed in hf.rs): `heads · head_dim`, Phi-3's
        // `2 · d_mlp`, OPT's `n_ctx + 2`.
        (
            "hf-gemma2",
            with_field(
                &gemma2.config,
                "num_attention_heads",
                Some(json!(3_482_004_057_214_121_534u64)),
            ),
        ),
        (
            "hf-phi3",
            with_field(&phi3.config, "intermediate_size", Some(huge.clone())),
        ),
        (
            "hf-opt",
            with_field(&opt.config, "max_position_embeddings", Some(huge.clone())),
        ),
        // Open: GPT-2's `4 · n_embd` (gpt2.rs).
        (
            "gpt2-tiny",
            with_field(&gpt2.config, "n_embd", Some(json!(1u64 << 62))),
        ),
    ];
    let tl_configs = [
        // The blocks vector was sized by n_layers: capacity overflow, or an abort for 2^40 (fixed in state_dict.rs).
        with_field(&attn_only.config, "n_layers", Some(huge.clone())),
        with_field(&attn_only.config, "n_layers", Some(json!(1u64 << 40))),
        // Open: `4 · d_model` when d_mlp is derived (cache-core config.rs, `resolved`).
        with_field(
            &with_field(&attn_only.config, "d_mlp", None),
            "d_model",
            Some(huge),
        ),
    ];
    // Open: a scalar `wpe.weight` (shape `[]`), whose first dimension is read unchecked (gpt2.rs).
    let scalar_wpe = rewrite_header(
        &gpt2.weights,
        |header| {
            let entry = header.get_mut("transformer.wpe.weight").expect("wpe");
            set_field(entry, "shape", json!([]));
        },
        true,
    );
    // A `tokenizer.json` cut short inside its `decoder` entry: `tokenizers` panicked on the syntax error (fixed in
    // tokenizer.rs, which checks the JSON first).
    let decoder = TOKENIZER.find("\"decoder\"").expect("a decoder entry");
    let truncated = TOKENIZER[..decoder + 40].to_string();
    // Open: a `Precompiled` normalizer without its charsmap; `tokenizers` panics on this valid JSON.
    let precompiled = TOKENIZER.replacen(
        "\"normalizer\": null",
        "\"normalizer\": {\"type\": \"Precompiled\"}",
        1,
    );
    assert_ne!(
        precompiled, *TOKENIZER,
        "tokenizer.json has no null normalizer"
    );
    let mut failures = Vec::new();
    let mut check = |result: Result<bool, TestCaseError>| {
        if let Err(e) = result {
            failures.push(e.to_string());
        }
    };
    for (name, config) in &hf_configs {
        let weights = &hf_fixture(name).weights;
        check(no_panic(
            &format!("load_hf_bytes ({name} weights)"),
            || config.clone(),
            || hf_load(config, weights),
        ));
    }
    for config in &tl_configs {
        check(no_panic(
            "HookedTransformerConfig::from_json",
            || config.clone(),
            || HookedTransformerConfig::from_json(config).is_ok(),
        ));
        check(no_panic(
            "load_transformerlens_bytes (tl-attnonly weights)",
            || config.clone(),
            || tl_load(config, &attn_only.weights),
        ));
    }
    check(no_panic(
        "load_hf_bytes (gpt2-tiny config)",
        || describe_safetensors(&scalar_wpe),
        || hf_load(&gpt2.config, &scalar_wpe),
    ));
    for json in [&truncated, &precompiled] {
        check(no_panic(
            "Tokenizer::from_json_bytes",
            || json.clone(),
            || tlens::Tokenizer::from_json_bytes(json.as_bytes()).is_ok(),
        ));
    }
    assert!(
        failures.is_empty(),
        "{} inputs panicked:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

proptest! {
    #![proptest_config(config(500))]

    /// Mutated `model.safetensors` files of Hugging Face folders, loaded with their own config.
    #[test]
    fn hf_safetensors_never_panic(case in safetensors_case()) {
        let f = &HF[case.fixture.index(HF.len())];
        let bytes = mutate_safetensors(&f.weights, &case);
        no_panic(
            &format!("load_hf_bytes ({} config)", f.name),
            || describe_safetensors(&bytes),
            || hf_load(&f.config, &bytes),
        )?;
    }

    /// Mutated `weights.safetensors` files of TransformerLens folders, loaded with their own config.
    #[test]
    fn tl_safetensors_never_panic(case in safetensors_case()) {
        let f = &TL[case.fixture.index(TL.len())];
        let bytes = mutate_safetensors(&f.weights, &case);
        no_panic(
            &format!("load_transformerlens_bytes ({} config)", f.name),
            || describe_safetensors(&bytes),
            || tl_load(&f.config, &bytes),
        )?;
    }

    /// Mutated Hugging Face `config.json` texts, loaded with the folder's weights.
    #[test]
    fn hf_configs_never_panic(case in text_case(1..5)) {
        let f = &HF[case.fixture.index(HF.len())];
        let config = apply_text_edits(&f.config, &case.edits);
        no_panic(
            &format!("load_hf_bytes ({} weights)", f.name),
            || config.clone(),
            || hf_load(&config, &f.weights),
        )?;
    }

    /// Mutated TransformerLens `config.json` texts: read as a config, and loaded with the folder's weights.
    #[test]
    fn tl_configs_never_panic(case in text_case(1..5)) {
        let f = &TL[case.fixture.index(TL.len())];
        let config = apply_text_edits(&f.config, &case.edits);
        no_panic(
            "HookedTransformerConfig::from_json",
            || config.clone(),
            || HookedTransformerConfig::from_json(&config).is_ok(),
        )?;
        no_panic(
            &format!("load_transformerlens_bytes ({} weights)", f.name),
            || config.clone(),
            || tl_load(&config, &f.weights),
        )?;
    }
}

proptest! {
    #![proptest_config(config(1000))]

    /// Mutated plan files, parsed (not run).
    #[test]
    fn plans_never_panic(case in text_case(1..5)) {
        let (name, text) = &PLANS[case.fixture.index(PLANS.len())];
        let plan = apply_text_edits(text, &case.edits);
        no_panic(
            &format!("parsing a plan (from {name})"),
            || plan.clone(),
            || serde_json::from_str::<tlens::plan::Plan>(&plan).is_ok(),
        )?;
    }

    /// Mutated `tokenizer.json` files: loaded, and when they load, used to tokenize and detokenize a text.
    #[test]
    fn tokenizers_never_panic(case in text_case(1..5)) {
        let json = apply_text_edits(&TOKENIZER, &case.edits);
        no_panic("Tokenizer::from_json_bytes", || json.clone(), || {
            let Ok(tokenizer) = tlens::Tokenizer::from_json_bytes(json.as_bytes()) else {
                return;
            };
            let text = "When Mary and John went to the store,<|endoftext|> 1234 \u{fc}\u{1f600}";
            if let Ok(ids) = tokenizer.to_tokens(text, true) {
                let _ = tokenizer.to_str_tokens(&ids);
            }
            let _ = tokenizer.to_single_token(" Mary");
        })?;
    }

    /// Token files: generated JSON values, and mutations of valid ones.
    #[test]
    fn token_files_never_panic(
        generated in token_value(),
        seed in any::<Index>(),
        edits in vec(text_edit(), 0..4),
        use_seed in any::<bool>(),
    ) {
        let text = if use_seed {
            apply_text_edits(TOKEN_SEEDS[seed.index(TOKEN_SEEDS.len())], &edits)
        } else {
            generated.to_string()
        };
        no_panic(
            "parse_token_json",
            || text.clone(),
            || tlens::analysis::input::parse_token_json(&text, "tokens").is_ok(),
        )?;
    }
}
