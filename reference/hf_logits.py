#!/usr/bin/env python3
"""Write a `*.hf-logits.safetensors` golden: `tokens` (int64) and `logits` (float32) computed by the Hugging Face
model itself (`AutoModelForCausalLM`, eager attention, float32; f16/bf16 checkpoints upcast) on a plan's tokens.

    python reference/hf_logits.py [PLAN] [OUT] [--compare-tl]

Defaults: tests/plans/gpt2-tiny.full.json -> tests/golden/gpt2-tiny.hf-logits.safetensors. Works for every family
(GPT-2, Llama, Mistral, Qwen2, Qwen3, GPT-NeoX, Phi-3, Gemma, Gemma 2). Unprocessed TransformerLens logits (the
`*.proc-none` plans) should equal these up to float rounding (Gemma 1 excepted: TL runs exact GELU where HF runs
gelu_pytorch_tanh). `--compare-tl` prints max |TL unprocessed logits - HF logits| (TL loaded by
run_plan.load_hf_model with every processing flag off).
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
    compare = "--compare-tl" in argv
    argv = [a for a in argv if a != "--compare-tl"]
    plan_path = Path(argv[0]) if argv else ROOT / "tests" / "plans" / "gpt2-tiny.full.json"
    out = Path(argv[1]) if len(argv) > 1 else ROOT / "tests" / "golden" / "gpt2-tiny.hf-logits.safetensors"
    import transformers
    from transformers import AutoModelForCausalLM

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    plan = json.loads(plan_path.read_text())
    model_dir = plan_path.resolve().parent / plan["model"]["hf"]
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32, attn_implementation="eager")
    model.eval()
    tokens = torch.tensor(plan["tokens"], dtype=torch.int64)
    with torch.no_grad():
        logits = model(tokens).logits.to(torch.float32)
    out.parent.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from run_plan import save_safetensors

    save_safetensors({"tokens": tokens, "logits": logits}, out,
                     metadata={"model": plan["model"]["hf"],
                               "source": f"transformers.{type(model).__name__} (eager, float32)"})
    msg = f"wrote {out} logits {tuple(logits.shape)}"
    if compare:
        from run_plan import load_hf_model

        off = {"fold_ln": False, "center_writing_weights": False, "center_unembed": False, "fold_value_biases": False}
        tl = load_hf_model(model_dir, off)
        with torch.no_grad():
            tl_logits = tl(tokens)
        msg += f"; max |TL unprocessed - HF| = {(tl_logits - logits).abs().max().item():.3g}"
    print(msg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
