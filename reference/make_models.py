#!/usr/bin/env python3
"""Build the tiny deterministic test models under tests/models/.

    python reference/make_models.py [--out tests/models]

Models (all seeds fixed, so a rerun writes identical files):

* gpt2-tiny/        Hugging Face GPT-2 folder: config.json, model.safetensors (f32, tied lm_head: only wte saved),
                    tokenizer.json, vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json.
                    The tokenizer is a byte-level BPE (GPT-2 style) trained here on TRAINING_TEXT.
* gpt2-tiny-f16/    the same weights saved as float16 (config.json + model.safetensors + tokenizer files)
* gpt2-tiny-bf16/   the same weights saved as bfloat16
* tl-<name>/        a TransformerLens HookedTransformerConfig as JSON (config.json) and the TransformerLens state
                    dict (weights.safetensors: named parameters only, TL names)
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

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_plan import save_safetensors  # noqa: E402  (deterministic writer)

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parent.parent
EOT = "<|endoftext|>"

# Fixed English text the BPE tokenizer is trained on. IOI-style sentences make the names single tokens.
TRAINING_TEXT = """\
When John and Mary went to the shops, John gave the bag to Mary. When Mary and John went to the shops, Mary gave the bag to John.
When Tom and James went to the park, Tom gave the ball to James. When James and Tom went to the park, James gave the ball to Tom.
When Dan and Sid went to the store, Dan gave a drink to Sid. When Sid and Dan went to the store, Sid gave a drink to Dan.
When Martin and Amy went to the house, Martin gave a book to Amy. When Amy and Martin went to the house, Amy gave a book to Martin.
After John and Mary arrived at the school, John said hello to Mary. After Tom and James arrived at the office, James handed the key to Tom.
Then, Mary and John had a long argument, and afterwards Mary said to John that the weather was nice.
Then, Tom and James had a lot of fun at the park, and afterwards James gave a ring to Tom.

The quick brown fox jumps over the lazy dog. The dog did not mind, because the dog was asleep in the warm sun.
A small model learns to predict the next word in a sentence. It reads the words one by one, from left to right,
and at every position it writes a guess for the word that comes after. Attention heads move information between
positions, and the layers of the network add their outputs to the residual stream.

Once upon a time there was a little town by the sea. The people of the town went to the market every morning.
They bought bread, fish and apples, and they talked about the weather, the boats and the news of the day.
In the evening the children played in the street until their mothers called them home for dinner.

John likes tea, Mary likes coffee, Tom likes water and James likes milk. Everyone went home happy at the end of the day.
"""


# ----------------------------------------------------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------------------------------------------------

def train_tokenizer(vocab_size: int = 512):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        show_progress=False,
        special_tokens=[EOT],  # id 0: bos = eos = unk, like GPT-2's <|endoftext|>
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    lines = TRAINING_TEXT.splitlines(keepends=True)
    tok.train_from_iterator(lines, trainer=trainer, length=len(lines))
    assert tok.token_to_id(EOT) == 0
    return tok


def save_tokenizer_files(tok, out: Path, n_ctx: int) -> None:
    tok.save(str(out / "tokenizer.json"), pretty=True)
    tok.model.save(str(out))  # vocab.json + merges.txt
    special = {"bos_token": EOT, "eos_token": EOT, "unk_token": EOT}
    tok_cfg = {
        "add_bos_token": False,
        "add_prefix_space": False,
        "model_max_length": n_ctx,
        "tokenizer_class": "GPT2Tokenizer",
        "clean_up_tokenization_spaces": False,
        **special,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2) + "\n")
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")


# ----------------------------------------------------------------------------------------------------------------------
# Hugging Face GPT-2
# ----------------------------------------------------------------------------------------------------------------------

def build_gpt2(vocab_size: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(1234)
    cfg = GPT2Config(
        n_layer=2,
        n_embd=64,
        n_head=4,
        n_positions=32,
        vocab_size=vocab_size,
        initializer_range=0.1,
        activation_function="gelu_new",
        bos_token_id=0,
        eos_token_id=0,
        tie_word_embeddings=True,
    )
    model = GPT2LMHeadModel(cfg)
    model.eval()
    g = torch.Generator().manual_seed(4321)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".ln_" in name or name.startswith("transformer.ln_f"):
                if name.endswith("weight"):
                    p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
                else:
                    p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr(), "lm_head must stay tied"
    return model


def save_hf_model(model, out: Path, dtype: torch.dtype) -> None:
    """Write config.json + model.safetensors in HF layout (tied lm_head is not stored)."""
    out.mkdir(parents=True, exist_ok=True)
    cfg = model.config.to_dict()
    cfg["torch_dtype"] = str(dtype).replace("torch.", "")
    cfg["dtype"] = cfg["torch_dtype"]
    cfg.pop("transformers_version", None)
    cfg["architectures"] = ["GPT2LMHeadModel"]
    # Like the real GPT-2 config.json: TransformerLens's GPT-2 config conversion reads `n_ctx`, which
    # transformers 5's GPT2Config no longer defines by itself.
    cfg["n_ctx"] = cfg["n_positions"]
    (out / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    sd = {}
    for k, v in model.state_dict().items():
        if k == "lm_head.weight":
            continue  # tied to transformer.wte.weight, as save_pretrained does
        if k.endswith(".attn.bias") or k.endswith(".attn.masked_bias"):
            continue  # causal-mask buffers of old transformers versions
        sd[k] = v.detach().to(dtype).contiguous().clone()
    save_safetensors(sd, out / "model.safetensors", {"format": "pt"})


# ----------------------------------------------------------------------------------------------------------------------
# TransformerLens-config models
# ----------------------------------------------------------------------------------------------------------------------

TL_BASE = dict(n_layers=2, d_model=32, d_head=8, n_heads=4, d_mlp=64, d_vocab=50, n_ctx=16)

TL_MODELS = {
    "tl-ln-relu": dict(normalization_type="LN", act_fn="relu", use_attn_result=True, d_vocab_out=40),
    "tl-lnpre-gelu": dict(normalization_type="LNPre", act_fn="gelu", scale_attn_by_inverse_layer_idx=True),
    "tl-rms-silu": dict(normalization_type="RMS", act_fn="silu", attn_scale=5.0),
    "tl-rmspre-gelufast": dict(normalization_type="RMSPre", act_fn="gelu_fast", use_attn_scale=False),
    "tl-none-gelunew": dict(normalization_type=None, act_fn="gelu_new"),
    "tl-attnonly": dict(normalization_type="LN", act_fn="gelu_new", attn_only=True),
    "tl-solu": dict(normalization_type="LN", act_fn="solu_ln"),
}

# Fields written to config.json (post-__post_init__ values), all JSON-serialisable.
TL_CONFIG_FIELDS = [
    "n_layers", "d_model", "n_ctx", "d_head", "n_heads", "d_mlp", "d_vocab", "d_vocab_out", "act_fn", "eps",
    "normalization_type", "attn_only", "use_attn_result", "use_attn_scale", "attn_scale",
    "scale_attn_by_inverse_layer_idx", "positional_embedding_type", "original_architecture", "final_rms",
    "parallel_attn_mlp", "gated_mlp", "attention_dir", "use_split_qkv_input", "use_hook_mlp_in", "use_attn_in",
    "use_hook_tokens", "attn_scores_soft_cap", "output_logits_soft_cap", "default_prepend_bos", "init_weights",
    "initializer_range", "seed",
]


def build_tl_model(name: str, overrides: dict, seed: int):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    kwargs = dict(TL_BASE)
    kwargs.update(overrides)
    kwargs.update(device="cpu", seed=seed, dtype=torch.float32)
    cfg = HookedTransformerConfig(**kwargs)
    torch.manual_seed(seed)
    model = HookedTransformer(cfg)
    model.eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            leaf = pname.rsplit(".", 1)[-1]
            if leaf == "w":  # LayerNorm / RMSNorm weights (ln1, ln2, ln_final, mlp.ln)
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif leaf.startswith("b"):  # every bias: b_Q/b_K/b_V/b_O, b_in/b_out, b_U, LN b
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif leaf in ("W_Q", "W_K"):
                # attention patterns clearly non-uniform, yet not one-hot
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            elif leaf in ("W_E", "W_pos"):
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            else:  # W_V, W_O, W_in, W_out, W_U
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[-2]))
    cfg_json = {}
    for f in TL_CONFIG_FIELDS:
        v = getattr(cfg, f)
        if isinstance(v, float) and v == int(v) and f not in ("attn_scale", "eps", "initializer_range",
                                                             "attn_scores_soft_cap", "output_logits_soft_cap"):
            v = int(v)
        json.dumps(v)  # must be serialisable
        cfg_json[f] = v
    params = {k: v.detach().contiguous().clone() for k, v in model.named_parameters()}
    return cfg_json, params


# ----------------------------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "tests" / "models"))
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    tok = train_tokenizer(512)
    vocab = tok.get_vocab_size()
    model = build_gpt2(vocab)
    for sub, dtype in (("gpt2-tiny", torch.float32), ("gpt2-tiny-f16", torch.float16), ("gpt2-tiny-bf16", torch.bfloat16)):
        d = out / sub
        if d.exists():
            shutil.rmtree(d)
        save_hf_model(model, d, dtype)
        save_tokenizer_files(tok, d, model.config.n_positions)
        print(f"wrote {d} (vocab {vocab}, {dtype})")

    for i, (name, overrides) in enumerate(TL_MODELS.items()):
        d = out / name
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        cfg_json, params = build_tl_model(name, overrides, seed=100 + i)
        (d / "config.json").write_text(json.dumps(cfg_json, indent=2) + "\n")
        save_safetensors(params, d / "weights.safetensors", {"format": "pt"})
        print(f"wrote {d} ({len(params)} tensors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
