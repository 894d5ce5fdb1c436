#!/usr/bin/env python3
"""Check that a folder written by `tlens harvest` loads as a Hugging Face dataset holding TransformerLens's activations.

    python reference/check_harvest.py DIR [--model MODEL_DIR] [--rows N] [--seed S]

Opens DIR with `datasets.load_from_disk` (the `save_to_disk` layout: `state.json`, `dataset_info.json`, Arrow IPC
stream files `data-00000.arrow`, ...) and reads the manifest `DIR/tlens-harvest.json` (`request.hooks`,
`request.context_size`, `request.dtype` "f32" | "f16" | "bf16", `request.model`, `complete`). Picks N rows (default 8; 0 = all)
by a seeded random sample (`random.Random(S)`, default seed 0) that always includes the first and the last row,
builds the TransformerLens model as check_cache.py does (`run_plan.load_hf_model` with default processing: fold_ln,
center_writing_weights, center_unembed, fold_value_biases all true; a TransformerLens-format folder, config.json +
weights.safetensors such as tests/models/induction, goes through `run_plan.load_tl_model` with the same four flags
true, as tlens loads its embedded model), runs `run_with_cache(tokens, names_filter=hooks)` on those rows' `token_ids`
as one batch (no BOS added: each window already starts with it) and checks:

* the manifest is complete (`complete` true) and the dataset's columns are exactly `token_ids` + `request.hooks`;
* `token_ids` is a fixed-length list of int32 of length `request.context_size`, every id in [0, d_vocab);
* each hook column is a nested fixed-length list of the value type of `request.dtype` (f32: float32, f16: float16, bf16:
  uint16 holding the raw bfloat16 bits) whose shape is TL's per-row shape, `cache[hook][row]` (e.g. [ctx, d_model],
  [n_heads, ctx, ctx] for patterns), and whose values agree with TL's for the same row:
  - f32: `torch.allclose(stored, tl, atol=1e-5, rtol=1e-4)`, as check_cache.py;
  - f16 / bf16: the stored half value h must lie within one unit in the last place (of that half format) of the
    interval TL's f32 value x rounds to under the f32 tolerance, i.e. with t = 1e-5 + 1e-4·|x|,
    prev(round(x − t)) <= h <= next(round(x + t)), where round is `.to(torch.float16)` / `.to(torch.bfloat16)`
    (round to nearest even) and prev/next step one representable half value down/up. So h may equal TL's value
    cast to the half type, be the adjacent half value (a different rounding, e.g. truncation), or be the rounding
    of any f32 value within the f32 tolerance. Equal infinities (masked attention scores) count as equal; NaN never
    does.

MODEL_DIR defaults to the manifest's `request.model` when that is an existing folder (relative to the current directory
or the repository root), to tests/models/induction when it names the embedded induction model, and otherwise to
tests/models/gpt2-tiny. Prints one summary line (rows checked, hooks, max |stored − TL f32| per hook), plus one line
per problem on stderr; exit status 1 on any mismatch, 2 on bad usage or an unreadable folder or manifest.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import run_plan  # noqa: E402  (sets the offline env vars, one torch thread, no grad, warning filters)
import numpy as np  # noqa: E402
import torch  # noqa: E402

MANIFEST = "tlens-harvest.json"
DEFAULT_MODEL = REPO / "tests" / "models" / "gpt2-tiny"
INDUCTION_MODEL = REPO / "tests" / "models" / "induction"
ATOL = 1e-5
RTOL = 1e-4
# request.dtype -> (arrow value type name, torch dtype the stored values stand for)
DTYPES = {"f32": ("float", torch.float32), "f16": ("halffloat", torch.float16), "bf16": ("uint16", torch.bfloat16)}
MAX_PROBLEMS_PER_HOOK = 3


class Unreadable(Exception):
    pass


# ----------------------------------------------------------------------------------------------------------------------
# Reading the folder
# ----------------------------------------------------------------------------------------------------------------------

def arrow_shape(t):
    """A nested fixed-size-list arrow type -> (per-row dims, value type, all levels fixed-size)."""
    import pyarrow as pa

    dims, fixed = [], True
    while pa.types.is_fixed_size_list(t) or pa.types.is_list(t) or pa.types.is_large_list(t):
        if pa.types.is_fixed_size_list(t):
            dims.append(t.list_size)
        else:
            dims.append(None)
            fixed = False
        t = t.value_type
    return dims, t, fixed


def column_to_numpy(col, dims, value_type) -> np.ndarray:
    """A pyarrow (Chunked)Array of nested lists -> ndarray [rows, *dims] with the column's value dtype.

    Chunk by chunk with `.flatten()`, which honours slice offsets at every level. (Not `take`/`filter`: in pyarrow
    26.0.1 both return the wrong rows of a *sliced* nested fixed-size-list array, which is what datasets hands out.)
    """
    import pyarrow as pa

    chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
    if all(d is not None for d in dims):
        parts = []
        for chunk in chunks:
            flat = chunk
            for _ in dims:
                flat = flat.flatten()
            parts.append(flat.to_numpy(zero_copy_only=False).reshape(len(chunk), *dims))
        if not parts:
            return np.zeros((0, *dims), dtype=value_type.to_pandas_dtype())
        return np.concatenate(parts)
    rows = [r for chunk in chunks for r in chunk.to_pylist()]
    return np.array(rows, dtype=value_type.to_pandas_dtype())  # ragged: fails later on the shape check


def load_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except Exception as e:  # noqa: BLE001
        raise Unreadable(f"{path}: cannot read the manifest: {run_plan.one_line(e)}") from e
    if not isinstance(manifest, dict):
        raise Unreadable(f"{path}: the manifest is not a JSON object")
    return manifest


def resolve_model(arg: Path | None, manifest_model) -> tuple[Path, str]:
    """The model folder to check against, and why it was chosen."""
    if arg is not None:
        return arg, "--model"
    if isinstance(manifest_model, str) and manifest_model:
        for base in (Path.cwd(), REPO):
            p = base / manifest_model
            if (p / "config.json").is_file():
                return p, "manifest request.model"
        if "induction" in manifest_model.lower():
            return INDUCTION_MODEL, f"manifest request.model {manifest_model!r} (embedded induction model)"
    return DEFAULT_MODEL, "default"


def load_model(model_dir: Path):
    flags = run_plan.processing_flags({}, True)
    if (model_dir / "weights.safetensors").is_file() and not (model_dir / "model.safetensors").is_file() \
            and not (model_dir / "model.safetensors.index.json").is_file():
        return run_plan.load_tl_model({"config": "config.json", "weights": "weights.safetensors"}, model_dir, flags)
    return run_plan.load_hf_model(model_dir, flags)


# ----------------------------------------------------------------------------------------------------------------------
# Comparisons
# ----------------------------------------------------------------------------------------------------------------------

def half_bits(x: torch.Tensor, dtype: torch.dtype) -> np.ndarray:
    """float tensor -> the uint16 bit patterns of x rounded (to nearest even) to float16 / bfloat16."""
    return x.to(dtype).contiguous().view(torch.int16).numpy().view(np.uint16)


def bits_to_f64(bits: np.ndarray, dtype: torch.dtype) -> np.ndarray:
    bits = bits.astype(np.uint16)
    with np.errstate(invalid="ignore"):  # NaN bit patterns
        if dtype == torch.float16:
            return bits.view(np.float16).astype(np.float64)
        return (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def step_bits(bits: np.ndarray, up: bool, dtype: torch.dtype) -> np.ndarray:
    """The next representable half value up (or down) from each value, as bits. ±0 step to ±the smallest subnormal;
    infinities and NaNs are returned unchanged."""
    b = bits.astype(np.int32)
    neg = (b & 0x8000) != 0
    mag = b & 0x7FFF
    inf_mag = 0x7C00 if dtype == torch.float16 else 0x7F80
    special = mag >= inf_mag
    away = ~neg if up else neg  # moving away from zero: magnitude + 1
    out = np.where(away, b + 1, b - 1)
    zero = mag == 0
    out = np.where(zero, np.where(up, 0x0001, 0x8001), out)  # from ±0: up -> +min subnormal, down -> -min subnormal
    out = np.where(special, b, out)
    return out.astype(np.uint16)


def compare_half(stored_bits: np.ndarray, tl: torch.Tensor, dtype: torch.dtype) -> np.ndarray:
    """Boolean mask of the stored half values (as bits) that are within tolerance of TL's f32 values."""
    x = tl.to(torch.float64)
    tol = ATOL + RTOL * x.abs()
    lo = bits_to_f64(step_bits(half_bits(x - tol, dtype), False, dtype), dtype)
    hi = bits_to_f64(step_bits(half_bits(x + tol, dtype), True, dtype), dtype)
    h = bits_to_f64(stored_bits, dtype)
    exact = h == bits_to_f64(half_bits(tl, dtype), dtype)  # covers equal infinities
    return exact | ((lo <= h) & (h <= hi))


def stored_as_f64(arr: np.ndarray, dtype: torch.dtype) -> np.ndarray:
    if dtype == torch.bfloat16:
        return bits_to_f64(arr, dtype)
    return arr.astype(np.float64)


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    with np.errstate(invalid="ignore"):
        diff = np.where(a == b, 0.0, np.abs(a - b))  # equal infinities: 0; NaN stays NaN
    if not diff.size:
        return 0.0
    return float("nan") if np.isnan(diff).any() else float(diff.max())


# ----------------------------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------------------------

def pick_rows(n: int, k: int, seed: int) -> list[int]:
    if k <= 0 or k >= n:
        return list(range(n))
    if k == 1:
        return [0]
    middle = random.Random(seed).sample(range(1, n - 1), k - 2) if n > 2 else []
    return sorted({0, n - 1, *middle})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path, help="output folder of `tlens harvest`")
    ap.add_argument("--model", type=Path, default=None,
                    help="model folder (default: the manifest's request.model if it is a folder, else gpt2-tiny)")
    ap.add_argument("--rows", type=int, default=8, help="rows to check, first and last included (0 = all; default 8)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the row sample (default 0)")
    args = ap.parse_args(argv)
    if args.rows < 0:
        ap.error("--rows must be >= 0")

    run_plan.quiet_transformers()
    try:
        import datasets

        datasets.utils.logging.set_verbosity_error()
        datasets.disable_progress_bars()
    except Exception:  # noqa: BLE001
        pass
    import pyarrow as pa

    problems: list[str] = []

    # -- the folder ----------------------------------------------------------------------------------------------------
    try:
        manifest = load_manifest(args.folder)
        ds = datasets.load_from_disk(str(args.folder))
        if not isinstance(ds, datasets.Dataset):
            raise Unreadable(f"{args.folder}: load_from_disk gave a {type(ds).__name__}, not a Dataset")
    except Unreadable as e:
        print(f"check_harvest: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001
        msg = run_plan.one_line(e)  # a features mismatch prints both feature dicts: keep the line readable
        print(f"check_harvest: {args.folder}: cannot load: {msg[:800]}{' ...' if len(msg) > 800 else ''}",
              file=sys.stderr)
        return 2

    margs = manifest.get("request")
    if not isinstance(margs, dict):
        problems.append("manifest has no request object")
        margs = {}
    if manifest.get("complete") is not True:
        problems.append(f"manifest complete is {manifest.get('complete')!r}, not true")
    columns = list(ds.column_names)
    hooks = margs.get("hooks")
    if not isinstance(hooks, list) or not all(isinstance(h, str) for h in hooks):
        problems.append(f"manifest request.hooks is {hooks!r}, not a list of hook names; checking the dataset's columns")
        hooks = [c for c in columns if c != "token_ids"]
    dtype_name = margs.get("dtype")
    if dtype_name not in DTYPES:
        problems.append(f"manifest request.dtype is {dtype_name!r}, not one of {sorted(DTYPES)}")
        dtype_name = None
    ctx = margs.get("context_size")
    if isinstance(ctx, bool) or not isinstance(ctx, int) or ctx <= 0:
        problems.append(f"manifest request.context_size is {ctx!r}, not a positive integer")
        ctx = None

    want_cols = ["token_ids", *hooks]
    if len(set(hooks)) != len(hooks):
        problems.append(f"manifest request.hooks repeats names: {sorted({h for h in hooks if hooks.count(h) > 1})}")
    missing = [c for c in want_cols if c not in columns]
    extra = [c for c in columns if c not in want_cols]
    if missing:
        problems.append(f"{len(missing)} columns missing from the dataset: {missing}")
    if extra:
        problems.append(f"{len(extra)} dataset columns not in token_ids + request.hooks: {extra}")
    n_rows = ds.num_rows
    if n_rows == 0:
        problems.append("the dataset has no rows")

    # -- the model -----------------------------------------------------------------------------------------------------
    model_dir, why = resolve_model(args.model, margs.get("model"))
    try:
        torch.manual_seed(0)
        model = load_model(model_dir)
    except Exception as e:  # noqa: BLE001
        print(f"check_harvest: {model_dir}: cannot load the model: {run_plan.one_line(e)}", file=sys.stderr)
        return 2
    d_vocab = model.cfg.d_vocab
    bad_hooks = [h for h in hooks if h not in model.hook_dict]
    if bad_hooks:
        problems.append(f"{len(bad_hooks)} manifest hooks are not hook points of the model: {bad_hooks}")

    rows = pick_rows(n_rows, args.rows, args.seed)
    schema = ds.data.schema
    table = ds.with_format("arrow")[rows] if rows else None  # a Table of row slices, in `rows` order
    keep = np.ones(len(rows), dtype=bool)  # rows whose token ids TL can run

    # -- token ids -----------------------------------------------------------------------------------------------------
    tokens = None
    if "token_ids" in columns and rows:
        dims, vt, fixed = arrow_shape(schema.field("token_ids").type)
        if not fixed or len(dims) != 1:
            problems.append(f"token_ids: type {schema.field('token_ids').type}, expected a fixed-length list of int32")
        elif vt != pa.int32():
            problems.append(f"token_ids: value type {vt}, expected int32")
        if ctx is not None and dims and dims[0] is not None and dims[0] != ctx:
            problems.append(f"token_ids: length {dims[0]}, manifest context_size {ctx}")
        if len(dims) == 1 and dims[0] is not None and pa.types.is_integer(vt):
            if table.column("token_ids").null_count:
                problems.append("token_ids: null values")
            else:
                toks = column_to_numpy(table.column("token_ids"), dims, vt).astype(np.int64)
                bad = (toks < 0) | (toks >= d_vocab)
                if bad.any():
                    r, p = np.argwhere(bad)[0]
                    problems.append(f"token_ids: {int(bad.sum())} ids outside [0, {d_vocab}) in the checked rows "
                                    f"(first: row {rows[r]} position {p} id {toks[r, p]}); those rows are not compared")
                keep = ~bad.any(axis=1)
                tokens = torch.from_numpy(toks[keep])
                if ctx is None:
                    ctx = dims[0]
                if dims[0] > model.cfg.n_ctx:
                    problems.append(f"token_ids: length {dims[0]} exceeds the model's n_ctx {model.cfg.n_ctx}")
                    tokens = None

    # -- activations ---------------------------------------------------------------------------------------------------
    tl: dict[str, torch.Tensor] = {}
    run_hooks = [h for h in hooks if h in columns and h in model.hook_dict]
    if tokens is not None and len(tokens) and run_hooks:
        try:
            _, cache = model.run_with_cache(tokens, names_filter=run_hooks)
            tl = {k: v.detach().cpu().to(torch.float32) for k, v in cache.cache_dict.items()}
        except Exception as e:  # noqa: BLE001
            problems.append(f"run_with_cache failed: {run_plan.one_line(e)}")
    elif tokens is None:
        problems.append("no usable token ids: activations not compared")

    compared_rows = [r for r, k in zip(rows, keep) if k]
    if dtype_name is None:  # no usable manifest dtype: go by the first hook column's value type
        by_value = {v[0]: k for k, v in DTYPES.items()}
        first = next((str(arrow_shape(schema.field(h).type)[1]) for h in hooks if h in columns), None)
        dtype_name = by_value.get(first)
    want_value, half = DTYPES[dtype_name] if dtype_name else (None, torch.float32)
    diffs: dict[str, float] = {}
    for h in hooks:
        if h not in columns:
            continue
        ftype = schema.field(h).type
        dims, vt, fixed = arrow_shape(ftype)
        if not fixed or not dims:
            problems.append(f"{h}: type {ftype} is not a nested fixed-length list")
            continue
        if want_value is None or str(vt) != want_value:
            problems.append(f"{h}: value type {vt}, expected {want_value} for dtype {dtype_name}")
            continue
        if ctx is not None and ctx not in dims:
            problems.append(f"{h}: per-row shape {dims} has no axis of context_size {ctx}")
        if h not in tl:
            if tl and h in model.hook_dict:
                problems.append(f"{h}: TL's cache has no such entry")
            continue
        ref = tl[h]
        if tuple(dims) != tuple(ref.shape[1:]):
            problems.append(f"{h}: per-row shape {dims}, TL {list(ref.shape[1:])}")
            continue
        if table.column(h).null_count:
            problems.append(f"{h}: null values")
            continue
        arr = column_to_numpy(table.column(h), dims, vt)[keep]
        got = stored_as_f64(arr, half)
        want = ref.to(torch.float64).numpy()
        d = max_abs_diff(got, want)
        diffs[h] = d
        if half == torch.float32:
            ok = torch.isclose(torch.from_numpy(got), torch.from_numpy(want), atol=ATOL, rtol=RTOL).numpy()
            ok |= got == want
            rule = f"atol {ATOL} + rtol {RTOL}"
        else:
            bits = arr.astype(np.uint16) if half == torch.bfloat16 else arr.astype(np.float16).view(np.uint16)
            ok = compare_half(bits, ref, half)
            rule = f"1 ulp of {dtype_name} beyond atol {ATOL} + rtol {RTOL}"
        if not ok.all():
            bad = np.argwhere(~ok)
            problems.append(f"{h}: max |diff| {d:.3g}, {len(bad)}/{ok.size} elements outside {rule}")
            for idx in bad[:MAX_PROBLEMS_PER_HOOK]:
                idx = tuple(int(i) for i in idx)
                problems.append(f"{h}: row {compared_rows[idx[0]]} index {list(idx[1:])}: "
                                f"stored {float(got[idx])!r}, TL {float(want[idx])!r}")

    per_hook = ", ".join(f"{h} {diffs[h]:.3g}" for h in hooks if h in diffs) or "none compared"
    n_checked = len(compared_rows) if tl else 0
    return run_plan.report("check_harvest", problems,
                           f"{args.folder}: {n_checked}/{n_rows} rows checked, context {ctx}, "
                           f"dtype {dtype_name}, model {model_dir} ({why}), {len(hooks)} hooks, {len(diffs)} compared; "
                           f"max |diff| per hook: {per_hook}; {len(problems)} problems")


if __name__ == "__main__":
    sys.exit(main())
