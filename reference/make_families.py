#!/usr/bin/env python3
"""Build tiny random Hugging Face checkpoints of several model families, their plans, and TL's resolved configs.

    python reference/make_families.py [--models-only] [--no-configs]

Deterministic (fixed seeds, one torch thread; a rerun rewrites identical bytes). Writes, for each family FAM in
FAMILIES (llama, mistral, qwen2, qwen3, neox, phi3, gemma, gemma2):

* tests/models/hf-FAM/          `save_pretrained` output of a `transformers` model built with
                                `AutoModelForCausalLM.from_config` (config.json, model.safetensors or shards +
                                model.safetensors.index.json, generation_config.json), the gpt2-tiny tokenizer.json
                                and a tokenizer_config.json (bos = eos = unk = `<|endoftext|>`, id 0)
* tests/plans/hf-FAM.full.json      default processing, every hook cached, the family call list
* tests/plans/hf-FAM.proc-none.json no processing, every hook cached, a few calls
* tests/golden/hf-FAM.tl-config.json  TL's resolved HookedTransformerConfig (`cfg.to_dict()` after
                                `load_and_process_state_dict` with the default flags), JSON-serialisable fields only,
                                `dtype`/`device` dropped and the path-valued `tokenizer_name` dropped

Shapes: 2 layers, hidden 32, 4 heads of 8, 2 key/value heads (GQA) except GPT-NeoX, intermediate 64, vocab 512 (the
gpt2-tiny byte-level BPE), 64 positions. Weights: the HF init with initializer_range 0.2 (seed per family), then every
norm weight 1 + 0.2·randn (Gemma: w = 0.2·randn, the model uses 1 + w), every bias 0.1·randn.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from make_plans import call, dump_plan, get, ref, rng_, ten  # noqa: E402

torch.set_num_threads(1)
torch.set_grad_enabled(False)

ROOT = HERE.parent
MODELS = ROOT / "tests" / "models"
PLANS = ROOT / "tests" / "plans"
GOLDEN = ROOT / "tests" / "golden"
EOT = "<|endoftext|>"

COMMON = dict(
    vocab_size=512,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=64,
    initializer_range=0.2,
    bos_token_id=0,
    eos_token_id=0,
    pad_token_id=None,
)

# family -> (config class name, kwargs on top of COMMON, seed, save options)
FAMILIES: dict[str, dict] = {
    "llama": dict(
        cls="LlamaConfig",
        kw=dict(
            num_key_value_heads=2, head_dim=8, rms_norm_eps=1e-5, hidden_act="silu", tie_word_embeddings=False,
            # Llama-3.1-style NTK-by-parts scaling; TL 3.9 maps it to use_NTK_by_parts_rope
            rope_parameters={"rope_type": "llama3", "rope_theta": 50000.0, "factor": 8.0, "low_freq_factor": 1.0,
                             "high_freq_factor": 4.0, "original_max_position_embeddings": 16},
        ),
        seed=11,
    ),
    "mistral": dict(
        cls="MistralConfig",
        kw=dict(
            num_key_value_heads=2, head_dim=8, rms_norm_eps=1e-5, hidden_act="silu", tie_word_embeddings=False,
            sliding_window=6,  # < 8 positions: every layer really masks (TL: attn_types ["local"] * n_layers)
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        ),
        seed=12,
        dtype=torch.bfloat16,
        max_shard_size="40KB",
    ),
    "qwen2": dict(
        cls="Qwen2Config",
        kw=dict(
            num_key_value_heads=2, rms_norm_eps=1e-6, hidden_act="silu", tie_word_embeddings=False,
            use_sliding_window=False, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        ),
        seed=13,
    ),
    "qwen3": dict(
        cls="Qwen3Config",
        kw=dict(
            num_key_value_heads=2, head_dim=8, rms_norm_eps=1e-6, hidden_act="silu", tie_word_embeddings=True,
            attention_bias=False, use_sliding_window=False,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        ),
        seed=14,
    ),
    "neox": dict(
        cls="GPTNeoXConfig",
        kw=dict(
            hidden_act="gelu", layer_norm_eps=1e-5, tie_word_embeddings=False, use_parallel_residual=True,
            attention_bias=True,
            # rope_theta stays 10000: TL 3.9's GPT-NeoX config conversion sets no rotary_base (always the default
            # 10000); with 20000 here TL's logits differ from HF's by 2.4e-2.
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5},
        ),
        seed=15,
    ),
    "phi3": dict(
        cls="Phi3Config",
        kw=dict(
            num_key_value_heads=2, rms_norm_eps=1e-5, hidden_act="silu", tie_word_embeddings=False,
            original_max_position_embeddings=64, sliding_window=None,
            # partial_rotary_factor stays 1.0: TL 3.9's Phi3 conversion ignores it (rotary_dim = d_head)
            rope_parameters={"rope_type": "default", "rope_theta": 25000.0, "partial_rotary_factor": 1.0},
        ),
        seed=16,
    ),
    "gemma": dict(
        cls="GemmaConfig",
        kw=dict(
            num_key_value_heads=2, head_dim=8, rms_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh",
            tie_word_embeddings=True, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        ),
        seed=17,
    ),
    "gemma2": dict(
        cls="Gemma2Config",
        kw=dict(
            num_key_value_heads=2, head_dim=8, rms_norm_eps=1e-6, hidden_activation="gelu_pytorch_tanh",
            tie_word_embeddings=True, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
            query_pre_attn_scalar=16,  # != head_dim: attention scale 1/sqrt(16)
            sliding_window=4,  # < 8 positions, so the local layers (0) really mask
            attn_logit_softcapping=3.0,  # small enough to bend the tiny model's scores / logits
            final_logit_softcapping=2.0,
        ),
        seed=18,
    ),
    "gptj": dict(
        cls="GPTJConfig",
        kw=dict(
            # GPT-J's own names (COMMON's hidden_size etc. map onto them); n_inner stays None: d_mlp = 4·n_embd
            n_embd=32, n_layer=2, n_head=4, n_positions=64, n_inner=None,
            rotary_dim=4,  # partial rotary, GPT-J's adjacent pairs
            activation_function="gelu_new", layer_norm_epsilon=1e-5, tie_word_embeddings=False,
        ),
        drop=("intermediate_size",),
        seed=19,
    ),
    "opt": dict(
        cls="OPTConfig",
        kw=dict(
            ffn_dim=64, activation_function="relu", do_layer_norm_before=True, word_embed_proj_dim=32,
            enable_bias=True, tie_word_embeddings=True,
        ),
        drop=("intermediate_size",),
        seed=20,
    ),
}
GEMMA_FAMILIES = ("gemma", "gemma2")


def norm_modules(model):
    """(name, module) of every normalisation module (class name contains 'Norm')."""
    return [(n, m) for n, m in model.named_modules() if "Norm" in type(m).__name__]


def build_model(fam: str):
    import transformers
    from transformers import AutoModelForCausalLM

    spec = FAMILIES[fam]
    cfg_cls = getattr(transformers, spec["cls"])
    kw = dict(COMMON)
    kw.update(spec["kw"])
    for key in spec.get("drop", ()):  # COMMON's names a family's config does not have
        kw.pop(key)
    cfg = cfg_cls(**kw)
    torch.manual_seed(spec["seed"])
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    g = torch.Generator().manual_seed(1000 + spec["seed"])
    done = set()
    for _, mod in norm_modules(model):
        for pname, p in mod.named_parameters(recurse=False):
            if id(p) in done:
                continue
            done.add(id(p))
            if pname == "weight":
                base = 0.0 if fam in GEMMA_FAMILIES else 1.0  # Gemma's RMSNorm multiplies by (1 + w)
                p.copy_(base + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    for name, p in model.named_parameters():
        if id(p) in done:
            continue
        if name.endswith(".bias"):
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
            done.add(id(p))
    tied = model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    assert tied == bool(kw.get("tie_word_embeddings")), (fam, tied)
    return model


def save_model(fam: str, model, out: Path) -> None:
    spec = FAMILIES[fam]
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    dtype = spec.get("dtype", torch.float32)
    if dtype != torch.float32:
        model = model.to(dtype)
    kwargs = {}
    if "max_shard_size" in spec:
        kwargs["max_shard_size"] = spec["max_shard_size"]
    model.save_pretrained(str(out), **kwargs)
    # tokenizer: the gpt2-tiny byte-level BPE (vocab 512); TL and HF read tokenizer.json + tokenizer_config.json
    shutil.copyfile(MODELS / "gpt2-tiny" / "tokenizer.json", out / "tokenizer.json")
    tok_cfg = {
        "add_bos_token": False,
        "add_eos_token": False,
        "bos_token": EOT,
        "clean_up_tokenization_spaces": False,
        "eos_token": EOT,
        "model_max_length": COMMON["max_position_embeddings"],
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": EOT,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2) + "\n")


# ----------------------------------------------------------------------------------------------------------------------
# plans
# ----------------------------------------------------------------------------------------------------------------------

def family_tokens():
    from make_plans import gpt2_tiny_encoders

    enc, single = gpt2_tiny_encoders()

    rows = [enc("When John and Mary went to the"), enc("When Tom and James went to the")]
    assert all(len(r) == 8 for r in rows), rows
    return dict(rows=rows, correct=[single(" Mary"), single(" James")], incorrect=[single(" John"), single(" Tom")])


def full_calls(T):
    return [
        call("acc_ln_pos-1", "accumulated_resid", apply_ln=True, pos_slice=-1, return_labels=True),
        # parallel blocks (neox) have no resid_mid: KeyError recorded
        call("acc_mid_ln_pos-1", "accumulated_resid", incl_mid=True, apply_ln=True, pos_slice=-1, return_labels=True),
        call("acc_pos-1", "accumulated_resid", pos_slice=-1, return_labels=True),
        call("dec_ln", "decompose_resid", apply_ln=True, return_labels=True),
        call("shr_ln_pos-1", "stack_head_results", apply_ln=True, pos_slice=-1, return_labels=True),
        call("snr_pos-1", "stack_neuron_results", layer=-1, pos_slice=-1, return_labels=True),
        call("frd_pos-1", "get_full_resid_decomposition", expand_neurons=False, pos_slice=-1, return_labels=True),
        call("frd_exp_pos-1", "get_full_resid_decomposition", expand_neurons=True, pos_slice=-1, return_labels=True),
        call("la_pair", "logit_attrs", residual_stack=ref("acc_pos-1"), tokens=ten(T["correct"]),
             incorrect_tokens=ten(T["incorrect"]), pos_slice=-1),
        call("gnr_l1_pos-1_n16", "get_neuron_results", layer=1, pos_slice=-1, neuron_slice=rng_(0, 16)),
        call("compute", "compute_head_results"),
        get("result0", "blocks.0.attn.hook_result"),
    ]


def proc_none_calls(T):
    # one row: T["correct"][:1] / T["incorrect"][:1] are its answer pair
    return [
        # recompute_ln with the unfolded ln_final (RMS/LN weights applied)
        call("acc_ln_pos-1", "accumulated_resid", apply_ln=True, pos_slice=-1, return_labels=True),
        call("acc_pos-1", "accumulated_resid", pos_slice=-1),
        call("shr_ln_pos-1", "stack_head_results", apply_ln=True, pos_slice=-1),
        call("la_pair", "logit_attrs", residual_stack=ref("acc_pos-1"), tokens=ten(T["correct"][:1]),
             incorrect_tokens=ten(T["incorrect"][:1]), pos_slice=-1),
    ]


ALL_OFF = {"fold_ln": False, "center_writing_weights": False, "center_unembed": False, "fold_value_biases": False}


def build_plans() -> dict:
    T = family_tokens()
    plans = {}
    for fam in FAMILIES:
        model = {"hf": f"../models/hf-{fam}"}
        plans[f"hf-{fam}.full"] = {
            "comment": f"hf-{fam}: from_pretrained default processing, full cache",
            "model": model,
            "tokens": T["rows"],
            "calls": full_calls(T),
        }
        plans[f"hf-{fam}.proc-none"] = {
            "comment": f"hf-{fam}: no processing (logits = tests/golden/hf-{fam}.hf-logits), full cache",
            "model": model,
            "processing": dict(ALL_OFF),
            "tokens": T["rows"][:1],  # one row keeps the golden small; full covers the batch of 2
            "calls": proc_none_calls(T),
        }
    return plans


# ----------------------------------------------------------------------------------------------------------------------
# TL config dump
# ----------------------------------------------------------------------------------------------------------------------

def jsonable(v):
    import numpy as np

    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    return v


def tl_config_json(fam: str) -> str:
    from run_plan import load_hf_model

    flags = {"fold_ln": True, "center_writing_weights": True, "center_unembed": True, "fold_value_biases": True}
    model = load_hf_model(MODELS / f"hf-{fam}", flags)
    out = {}
    for k, v in sorted(model.cfg.to_dict().items()):
        if k in ("dtype", "device", "tokenizer_name"):
            continue
        v = jsonable(v)
        try:
            json.dumps(v)
        except TypeError:
            continue
        out[k] = v
    return json.dumps(out, indent=2, sort_keys=True) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models-only", action="store_true")
    ap.add_argument("--no-configs", action="store_true", help="skip tests/golden/hf-*.tl-config.json")
    args = ap.parse_args(argv)
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    for fam in FAMILIES:
        model = build_model(fam)
        d = MODELS / f"hf-{fam}"
        save_model(fam, model, d)
        files = sorted(p.name for p in d.iterdir())
        print(f"wrote {d.relative_to(ROOT)}: {', '.join(files)}")
    if args.models_only:
        return 0
    plans = build_plans()
    for stem, p in plans.items():
        ids = [c["id"] for c in p["calls"]]
        assert len(ids) == len(set(ids)), stem
        text = dump_plan(p)
        assert json.loads(text) == p
        (PLANS / f"{stem}.json").write_text(text)
    print(f"wrote {len(plans)} plans to {PLANS.relative_to(ROOT)}")
    if not args.no_configs:
        GOLDEN.mkdir(parents=True, exist_ok=True)
        for fam in FAMILIES:
            (GOLDEN / f"hf-{fam}.tl-config.json").write_text(tl_config_json(fam))
        print(f"wrote {len(FAMILIES)} TL configs to {GOLDEN.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
