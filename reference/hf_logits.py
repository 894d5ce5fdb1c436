#!/usr/bin/env python3
"""Write tests/golden/gpt2-tiny.hf-logits.safetensors: `tokens` (int64) and `logits` (float32) computed by the
Hugging Face GPT2LMHeadModel itself (eager attention, float32) on the tokens of tests/plans/gpt2-tiny.full.json.

    python reference/hf_logits.py [PLAN] [OUT]

Unprocessed TransformerLens logits (plan gpt2-tiny.proc-none) should equal these up to float rounding.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    plan_path = Path(argv[0]) if argv else ROOT / "tests" / "plans" / "gpt2-tiny.full.json"
    out = Path(argv[1]) if len(argv) > 1 else ROOT / "tests" / "golden" / "gpt2-tiny.hf-logits.safetensors"
    import transformers
    from transformers import GPT2LMHeadModel

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    plan = json.loads(plan_path.read_text())
    model_dir = plan_path.resolve().parent / plan["model"]["hf"]
    model = GPT2LMHeadModel.from_pretrained(str(model_dir), dtype=torch.float32, attn_implementation="eager")
    model.eval()
    tokens = torch.tensor(plan["tokens"], dtype=torch.int64)
    with torch.no_grad():
        logits = model(tokens).logits.to(torch.float32)
    out.parent.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from run_plan import save_safetensors

    save_safetensors({"tokens": tokens, "logits": logits}, out,
                     metadata={"model": plan["model"]["hf"], "source": "transformers.GPT2LMHeadModel (eager, float32)"})
    print(f"wrote {out} logits {tuple(logits.shape)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
