"""Random Llama-3.2-1B-shaped weights as a Hugging Face folder, for `cargo xtask bench --vs-candle-mi`.

`write_llama_weights.py DIR` writes DIR/config.json (Llama-3.2-1B's own config: 16 layers, d_model 2048, 32 heads and
8 key/value heads of 64, d_mlp 8192, vocab 128256, rope theta 500000 with llama3 scaling, tied embeddings) and
DIR/model.safetensors (f32, ~4.9 GB; the tied unembedding is not written), initialised as transformers' LlamaForCausalLM
does (normal(0, 0.02) for every matrix, ones for the RMSNorm weights) from a fixed seed, so every run writes the same
bytes. candle-mi reads the folder as it would a checkpoint from the Hub (benches/candle-mi).

The tensors are made directly rather than through LlamaForCausalLM + save_pretrained: recent transformers moves
rope_theta into `rope_parameters` when it saves a config, and a reader of the classic layout (candle-mi reads a top-level
`rope_theta`, defaulting to 10000) would then run another rotary base without a word.

DIR/tlens-weights.json, written last, records the seed and config; a folder whose record matches is left as it is, so
the 5 GB are written once. Needs 8 GB free on DIR's disk before it writes.
"""

import json
import os
import shutil
import sys

import torch
from safetensors.torch import save_file

SEED = 0x5EED
STD = 0.02  # LlamaConfig's initializer_range
MIN_FREE_BYTES = 8 * 10**9

# meta-llama/Llama-3.2-1B's config.json, in f32.
CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 128000,
    "eos_token_id": 128001,
    "head_dim": 64,
    "hidden_act": "silu",
    "hidden_size": 2048,
    "initializer_range": STD,
    "intermediate_size": 8192,
    "max_position_embeddings": 131072,
    "mlp_bias": False,
    "model_type": "llama",
    "num_attention_heads": 32,
    "num_hidden_layers": 16,
    "num_key_value_heads": 8,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": {
        "factor": 32.0,
        "high_freq_factor": 4.0,
        "low_freq_factor": 1.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
    "rope_theta": 500000.0,
    "tie_word_embeddings": True,
    "torch_dtype": "float32",
    "use_cache": True,
    "vocab_size": 128256,
}


def shapes(cfg):
    """Every tensor of LlamaForCausalLM's state dict with its shape, in state-dict order; no lm_head (tied)."""
    d, f, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    q, kv = cfg["num_attention_heads"] * cfg["head_dim"], cfg["num_key_value_heads"] * cfg["head_dim"]
    out = [("model.embed_tokens.weight", (v, d))]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out += [
            (p + "self_attn.q_proj.weight", (q, d)),
            (p + "self_attn.k_proj.weight", (kv, d)),
            (p + "self_attn.v_proj.weight", (kv, d)),
            (p + "self_attn.o_proj.weight", (d, q)),
            (p + "mlp.gate_proj.weight", (f, d)),
            (p + "mlp.up_proj.weight", (f, d)),
            (p + "mlp.down_proj.weight", (d, f)),
            (p + "input_layernorm.weight", (d,)),
            (p + "post_attention_layernorm.weight", (d,)),
        ]
    out.append(("model.norm.weight", (d,)))
    return out


def main():
    if len(sys.argv) != 2:
        raise SystemExit("usage: write_llama_weights.py DIR")
    out_dir = sys.argv[1]
    record = {"seed": SEED, "std": STD, "config": CONFIG}
    record_path = os.path.join(out_dir, "tlens-weights.json")
    weights_path = os.path.join(out_dir, "model.safetensors")
    try:
        with open(record_path) as f:
            if json.load(f) == record and os.path.exists(weights_path):
                print(f"{out_dir}: already written", file=sys.stderr)
                return
    except (OSError, ValueError):
        pass

    os.makedirs(out_dir, exist_ok=True)
    if os.path.exists(record_path):
        os.remove(record_path)  # the folder is incomplete until the record is back
    free = shutil.disk_usage(out_dir).free
    if free < MIN_FREE_BYTES:
        raise SystemExit(f"error: {out_dir}: {free / 1e9:.1f} GB free, the weights need 8 GB; not writing them")

    gen = torch.Generator().manual_seed(SEED)
    tensors = {}
    for name, shape in shapes(CONFIG):
        if name.endswith("norm.weight"):
            tensors[name] = torch.ones(shape, dtype=torch.float32)
        else:
            tensors[name] = torch.empty(shape, dtype=torch.float32).normal_(0.0, STD, generator=gen)
    tmp = weights_path + ".tmp"
    save_file(tensors, tmp, metadata={"format": "pt"})
    os.replace(tmp, weights_path)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=2)
        f.write("\n")
    with open(record_path, "w") as f:
        json.dump(record, f, indent=2)
        f.write("\n")
    n = sum(t.numel() for t in tensors.values())
    print(f"{out_dir}: wrote {n:,} parameters ({os.path.getsize(weights_path) / 1e9:.2f} GB)", file=sys.stderr)


if __name__ == "__main__":
    main()
