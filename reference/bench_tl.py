"""TransformerLens side of `cargo xtask bench --vs-python`.

`bench_tl.py CASE BATCH POS REPS [MODEL]` runs one case on a GPT-2-small-shaped HookedTransformer (MODEL
`gpt2-small`, the default; LNPre as after fold_ln) or a Llama-3.2-1B-shaped one (`llama-3.2-1b`; RMSPre; the config of
TransformerLens's `meta-llama/Llama-3.2-1B` entry, n_ctx 2048), random weights, torch CPU, fp32 (`forward_bf16` and
`forward_f16`: the model in that dtype), TLENS_BENCH_THREADS threads, and prints one JSON line with the fields
tlens-bench prints. The calls mirror src/bench.rs case by case.
"""

import json
import os
import resource
import statistics
import sys
import time

import torch
from transformer_lens import ActivationCache, HookedTransformer, HookedTransformerConfig


HALF = {"forward_bf16": torch.bfloat16, "forward_f16": torch.float16}


def config(model, dtype=torch.float32):
    if model == "gpt2-small":
        return HookedTransformerConfig(
            n_layers=12, d_model=768, n_ctx=1024, d_head=64, n_heads=12, d_mlp=3072, d_vocab=50257,
            act_fn="gelu_new", normalization_type="LNPre", device="cpu", seed=0, dtype=dtype,
        )
    if model == "llama-3.2-1b":
        return HookedTransformerConfig(
            n_layers=16, d_model=2048, n_ctx=2048, d_head=64, n_heads=32, n_key_value_heads=8, d_mlp=8192,
            d_vocab=128256, act_fn="silu", normalization_type="RMSPre", positional_embedding_type="rotary",
            rotary_dim=64, rotary_adjacent_pairs=False, rotary_base=500000.0, final_rms=True, gated_mlp=True,
            use_NTK_by_parts_rope=True, NTK_by_parts_factor=32.0, NTK_by_parts_low_freq_factor=1.0,
            NTK_by_parts_high_freq_factor=4.0, NTK_original_ctx_len=8192, device="cpu", seed=0, dtype=dtype,
        )
    raise SystemExit(f"error: unknown model {model}")


def cache_method(cache, case, batch):
    # A fresh cache each time, as tlens's methods leave their cache as it was: TransformerLens's stack_head_results
    # (head_results, both full_resid_decomposition cases) would otherwise keep the head results it computes on the
    # first rep and skip that work on the later ones.
    cache = ActivationCache(dict(cache.cache_dict), cache.model)
    last = -1
    if case == "accumulated_resid":
        return cache.accumulated_resid(incl_mid=True, apply_ln=True)
    if case == "decompose_resid":
        return cache.decompose_resid()
    if case == "head_results":
        cache.compute_head_results()
        return cache.stack_head_results(apply_ln=True)
    if case == "full_resid_decomposition":
        return cache.get_full_resid_decomposition(expand_neurons=False, apply_ln=True)
    if case == "full_resid_decomposition_expand":
        return cache.get_full_resid_decomposition(pos_slice=last)
    if case == "stack_neuron_results":
        return cache.stack_neuron_results(cache.model.cfg.n_layers, pos_slice=last)
    if case == "logit_attrs":
        acc = cache.accumulated_resid(incl_mid=True, pos_slice=last)
        return cache.logit_attrs(acc, tokens=torch.arange(batch) + 100, pos_slice=last)
    raise SystemExit(f"error: unknown case {case}")


def main():
    case, batch, pos, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    model_name = sys.argv[5] if len(sys.argv) > 5 else "gpt2-small"
    torch.set_num_threads(int(os.environ.get("TLENS_BENCH_THREADS", "2")))
    torch.set_grad_enabled(False)
    cfg = config(model_name, HALF.get(case, torch.float32))
    model = HookedTransformer(cfg)
    model.eval()
    vocab = cfg.d_vocab
    tokens = torch.tensor([[(b * 7919 + p * 104729 + 13) % vocab for p in range(pos)] for b in range(batch)])
    seconds, cache_bytes = [], 0
    if case == "forward" or case in HALF:
        for _ in range(reps):
            start = time.perf_counter()
            model(tokens)
            seconds.append(time.perf_counter() - start)
    elif case == "run_with_cache":
        for _ in range(reps):
            start = time.perf_counter()
            _, cache = model.run_with_cache(tokens)
            cache_bytes = sum(t.numel() * t.element_size() for t in cache.values())
            del cache
            seconds.append(time.perf_counter() - start)
    elif case == "patch_head_out_by_pos":
        from transformer_lens import patching

        _, cache = model.run_with_cache(tokens)
        corrupted = (tokens + 1) % vocab
        metric = lambda logits: (logits[:, -1, 100] - logits[:, -1, 200]).mean()  # noqa: E731
        for _ in range(reps):
            start = time.perf_counter()
            patching.get_act_patch_attn_head_out_by_pos(model, corrupted, cache, metric)
            seconds.append(time.perf_counter() - start)
    elif case == "grad_run":
        # run_with_cache(incl_bwd=True) with a logit difference as the back-propagated scalar, as the reference does
        for _ in range(reps):
            start = time.perf_counter()
            cache_dict, fwd, bwd = model.get_caching_hooks(None, True, None)
            with torch.enable_grad():
                with model.hooks(fwd_hooks=fwd, bwd_hooks=bwd):
                    logits = model(tokens)
                    (logits[:, -1, 100] - logits[:, -1, 200]).mean().backward()
            model.zero_grad(set_to_none=True)
            del cache_dict
            seconds.append(time.perf_counter() - start)
    else:
        if case in ("head_results", "full_resid_decomposition", "full_resid_decomposition_expand") and batch * pos >= 4096:
            # compute_head_results (which stack_head_results calls) materialises [batch, pos, heads, d_head, d_model]
            # per layer: ~10 GB at 4x1024, on top of the 8.6 GB cache; the kernel kills the process on this machine.
            raise SystemExit("skipped: compute_head_results needs a ~10 GB temporary per layer")
        _, cache = model.run_with_cache(tokens)
        cache_bytes = sum(t.numel() * t.element_size() for t in cache.values())
        for _ in range(reps):
            start = time.perf_counter()
            out = cache_method(cache, case, batch)
            seconds.append(time.perf_counter() - start)
            del out
    median = statistics.median_low(seconds)
    print(json.dumps({
        "model": model_name, "case": case, "batch": batch, "pos": pos, "seconds": seconds, "median_s": median,
        "tokens_per_s": batch * pos / median, "cache_bytes": cache_bytes,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }))


if __name__ == "__main__":
    main()
