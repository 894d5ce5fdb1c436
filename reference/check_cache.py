#!/usr/bin/env python3
"""Check that an activation-cache file written by tlens loads in Python as TransformerLens's own cache.

    python reference/check_cache.py CACHE.safetensors [--model DIR] [--prompt TEXT]

Defaults: --model tests/models/gpt2-tiny, --prompt "When John and Mary went to the shops, John gave the bag to" (pass
the prompt the cache was run on). Loads the file with `safetensors.torch.load_file` and its metadata with
`safetensors.safe_open(...).metadata()` (`format` must be "tlens-activation-cache"; `has_batch_dim`, `config` JSON,
`keys` JSON list in firing order), builds the TransformerLens model as run_plan.py does for `{"hf": DIR}` with default
processing (fold_ln, center_writing_weights, center_unembed, fold_value_biases all true), tokenises the prompt with
`model.to_tokens(prompt)` (prepends BOS), runs `run_with_cache` (with `remove_batch_dim=True` when the file says
`has_batch_dim` is false) and checks:

* the file's tensor names equal TL's cache keys, and the `keys` metadata equals TL's key order;
* every tensor has TL's shape and agrees within atol 1e-5 + rtol 1e-4 (`torch.allclose`);
* the `config` metadata's n_layers, d_model, n_heads equal TL's `model.cfg`.

Prints one summary line (plus one line per problem on stderr); exit status 1 on any mismatch, 2 on bad usage or an
unreadable file.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run_plan  # noqa: E402  (sets the offline env vars, one torch thread, no grad, warning filters)
import torch  # noqa: E402

DEFAULT_PROMPT = "When John and Mary went to the shops, John gave the bag to"
DEFAULT_MODEL = HERE.parent / "tests" / "models" / "gpt2-tiny"
ATOL = 1e-5
RTOL = 1e-4
CONFIG_FIELDS = ("n_layers", "d_model", "n_heads")


def parse_bool(s: str | None):
    if s is None:
        return None
    v = s.strip().lower()
    if v in ("true", "1"):
        return True
    if v in ("false", "0"):
        return False
    raise ValueError(f"has_batch_dim metadata is {s!r}, not a boolean")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cache", type=Path, help="cache file written by tlens (e.g. `tlens run --out FILE`)")
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="HF GPT-2 folder (default %(default)s)")
    ap.add_argument("--prompt", default=DEFAULT_PROMPT, help="the prompt the cache was run on (default %(default)r)")
    args = ap.parse_args(argv)

    run_plan.quiet_transformers()
    from safetensors import safe_open
    from safetensors.torch import load_file

    problems: list[str] = []

    # -- the tlens file ------------------------------------------------------------------------------------------------
    try:
        tensors = load_file(str(args.cache))
        with safe_open(str(args.cache), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # noqa: BLE001
        print(f"check_cache: {args.cache}: cannot load: {run_plan.one_line(e)}", file=sys.stderr)
        return 2

    fmt = meta.get("format")
    if fmt != "tlens-activation-cache":
        problems.append(f"metadata format is {fmt!r}, expected 'tlens-activation-cache'")
    try:
        has_batch_dim = parse_bool(meta.get("has_batch_dim"))
    except ValueError as e:
        problems.append(str(e))
        has_batch_dim = None
    if has_batch_dim is None:
        problems.append("metadata has no usable has_batch_dim; assuming true")
        has_batch_dim = True
    try:
        file_keys = json.loads(meta["keys"])
        if not isinstance(file_keys, list) or not all(isinstance(k, str) for k in file_keys):
            raise ValueError("not a JSON list of strings")
    except Exception as e:  # noqa: BLE001
        problems.append(f"metadata keys unusable: {run_plan.one_line(e)}")
        file_keys = None
    try:
        file_cfg = json.loads(meta["config"])
        if not isinstance(file_cfg, dict):
            raise ValueError("not a JSON object")
    except Exception as e:  # noqa: BLE001
        problems.append(f"metadata config unusable: {run_plan.one_line(e)}")
        file_cfg = None

    # -- TransformerLens -----------------------------------------------------------------------------------------------
    torch.manual_seed(0)
    model = run_plan.load_hf_model(args.model, run_plan.processing_flags({}, True))
    tokens = model.to_tokens(args.prompt)
    _, cache = model.run_with_cache(tokens, remove_batch_dim=not has_batch_dim)
    tl = {k: v.detach().cpu() for k, v in cache.cache_dict.items()}
    tl_keys = list(tl)

    # -- comparisons ---------------------------------------------------------------------------------------------------
    missing = [k for k in tl_keys if k not in tensors]
    extra = [k for k in tensors if k not in tl]
    if missing:
        problems.append(f"{len(missing)} TL keys missing from the file: {missing}")
    if extra:
        problems.append(f"{len(extra)} file tensors that are not TL keys: {extra}")
    if file_keys is not None and file_keys != tl_keys:
        first = next((i for i, (a, b) in enumerate(zip(file_keys, tl_keys)) if a != b), min(len(file_keys), len(tl_keys)))
        problems.append(f"keys metadata order differs from TL's at index {first} "
                        f"(file {file_keys[first:first + 3]} vs TL {tl_keys[first:first + 3]}; "
                        f"lengths {len(file_keys)} vs {len(tl_keys)})")
    if file_keys is not None and sorted(file_keys) != sorted(tensors):
        problems.append("keys metadata does not list exactly the file's tensors")

    worst_abs = 0.0
    worst_key = None
    n_compared = 0
    for k in tl_keys:
        if k not in tensors:
            continue
        a, b = tensors[k], tl[k]
        if tuple(a.shape) != tuple(b.shape):
            problems.append(f"{k}: shape {tuple(a.shape)} vs TL {tuple(b.shape)}")
            continue
        if a.dtype != b.dtype:
            problems.append(f"{k}: dtype {a.dtype} vs TL {b.dtype}")
        a32, b32 = a.to(torch.float64), b.to(torch.float64)
        n_compared += 1
        diff = torch.where(a32 == b32, torch.zeros_like(a32), (a32 - b32).abs())  # equal infs (masked scores): 0
        d = float(diff.max()) if diff.numel() else 0.0
        if d != d or d > worst_abs or worst_key is None:  # NaN counts as worst
            worst_abs, worst_key = d, k
        if not torch.allclose(a32, b32, atol=ATOL, rtol=RTOL):
            bad = int((diff > ATOL + RTOL * b32.abs()).sum())
            problems.append(f"{k}: max |diff| {d:.3g}, {bad}/{diff.numel()} elements outside atol {ATOL} + rtol {RTOL}")

    if file_cfg is not None:
        for field in CONFIG_FIELDS:
            want = getattr(model.cfg, field)
            got = file_cfg.get(field)
            if got != want:
                problems.append(f"config {field}: file {got!r} vs TL {want!r}")

    return run_plan.report("check_cache", problems,
                           f"{args.cache}: {len(tensors)} tensors vs TL {len(tl_keys)} keys, "
                           f"{n_compared} compared, tokens {list(tokens.shape)}, has_batch_dim {has_batch_dim}, "
                           f"max |diff| {worst_abs:.3g} ({worst_key}), {len(problems)} problems")


if __name__ == "__main__":
    sys.exit(main())
