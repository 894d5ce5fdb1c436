#!/usr/bin/env python3
"""Check and summarise the goldens: every plan in tests/plans has tests/golden/<stem>.safetensors, the file opens with
safetensors.torch.load_file, holds `logits` (the run's output) and the cache, and every call has exactly
one outcome (a `call/<id>` tensor, an `error/<id>` line, or nothing for the methods that return no tensor).

    python reference/summarize.py [--verbose]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parent.parent
NO_TENSOR = {"compute_head_results", "apply_slice_to_batch_dim", "remove_batch_dim"}


def main(argv=None) -> int:
    verbose = "--verbose" in (sys.argv[1:] if argv is None else argv)
    # divergences.json lists tlens's deliberate differences from TL (tests/parity.rs reads it); it is not a plan.
    plans = sorted(p for p in (ROOT / "tests" / "plans").glob("*.json") if p.stem != "divergences")
    problems = []
    total = 0
    print(f"{'golden':48s} {'bytes':>8s} cache calls labels errors")
    for p in plans:
        plan = json.loads(p.read_text())
        g = ROOT / "tests" / "golden" / f"{p.stem}.safetensors"
        if not g.exists():
            problems.append(f"{p.name}: no golden")
            continue
        tensors = load_file(str(g))
        with safe_open(str(g), "pt") as f:
            meta = f.metadata() or {}
        total += g.stat().st_size
        n_cache = sum(k.startswith("cache/") for k in tensors)
        n_call = sum(k.startswith("call/") for k in tensors)
        n_lab = sum(k.startswith("labels/") for k in meta)
        n_err = sum(k.startswith("error/") for k in meta)
        if "logits" not in tensors:
            problems.append(f"{g.name}: no logits")
        if n_cache == 0:
            problems.append(f"{g.name}: empty cache")
        if json.loads(meta.get("plan", "null")) != plan:
            problems.append(f"{g.name}: metadata plan differs from {p.name} (regenerate)")
        for c in plan.get("calls", []):
            cid = c["id"]
            has_t, has_e = f"call/{cid}" in tensors, f"error/{cid}" in meta
            if has_t and has_e:
                problems.append(f"{g.name}: {cid} has both a tensor and an error")
            if not has_t and not has_e and c["method"] not in NO_TENSOR:
                problems.append(f"{g.name}: {cid} has no outcome")
            if verbose:
                out = f"{tuple(tensors[f'call/{cid}'].shape)}" if has_t else (meta.get(f"error/{cid}", "-")[:90])
                print(f"    {cid:40s} {out}")
        print(f"{g.name:48s} {g.stat().st_size:8d} {n_cache:5d} {n_call:5d} {n_lab:6d} {n_err:6d}")
    hf_stems = ["gpt2-tiny"] + sorted(p.name[: -len(".proc-none.json")]
                                      for p in (ROOT / "tests" / "plans").glob("hf-*.proc-none.json"))
    for stem in hf_stems:
        hf = ROOT / "tests" / "golden" / f"{stem}.hf-logits.safetensors"
        if hf.exists():
            t = load_file(str(hf))
            total += hf.stat().st_size
            print(f"{hf.name:48s} {hf.stat().st_size:8d}  tokens {tuple(t['tokens'].shape)} "
                  f"logits {tuple(t['logits'].shape)}")
        else:
            problems.append(f"{stem}.hf-logits.safetensors missing")
        if stem.startswith("hf-"):
            cfg = ROOT / "tests" / "golden" / f"{stem}.tl-config.json"
            if not cfg.exists():
                problems.append(f"{cfg.name} missing")
            else:
                json.loads(cfg.read_text())
                total += cfg.stat().st_size
    print(f"{len(plans)} plans, goldens {total / 1e6:.2f} MB")
    for pr in problems:
        print("PROBLEM:", pr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
