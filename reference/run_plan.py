#!/usr/bin/env python3
"""Execute a tlens plan with TransformerLens (the reference) and write the golden file.

    python reference/run_plan.py PLAN.json OUT.safetensors [PLAN2.json OUT2.safetensors ...]

Follows shared/spec/plan-format.md: loads the model named by the plan (a Hugging Face folder -- GPT-2, Llama,
Mistral, Qwen2, Qwen3, GPT-NeoX, Phi-3, Gemma, Gemma 2 -- converted with TransformerLens's own config and weight
conversion, or a TransformerLens config + state dict), runs `run_with_cache` on the plan's
tokens, then calls `getattr(cache, method)(**decoded_args)` for each call in order. Output layout:

* `logits`            the forward output (float32): the logits, or, when `run.stop_at_layer` is set, the residual
                      stream TransformerLens returns instead (`[B, P, d_model]`)
* `cache/<hook>`      every cache entry as `run_with_cache` returned it (snapshot taken before any call)
* `call/<id>`         the tensor a call returned (the stack when it also returned labels)
* metadata `labels/<id>` (compact JSON array of strings), `error/<id>` (one line: `ExceptionType: message`),
  `plan` (the plan file's text)

Interventions and gradients (plan-format.md, "Interventions and gradients"; reference/README.md): `run.hooks` are
forward hooks added with `model.hooks(fwd_hooks=...)` around the run, so they fire before the caching hooks at the
same point; `run.incl_bwd` (a metric) back-propagates the metric of the logits and caches `<hook>_grad`; a call
`patching.get_act_patch_*` runs that `transformer_lens.patching` function with the run's cache as the clean cache.

Exit status is non-zero only when the plan cannot be read or the model cannot be loaded (or the run itself fails).
"""
from __future__ import annotations

import json
import logging
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")  # transformer_lens.patching shows a progress bar per function

import struct  # noqa: E402

import torch  # noqa: E402

torch.set_num_threads(1)
torch.set_grad_enabled(False)
warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=FutureWarning)

SLICE_ARGS = {"pos_slice", "batch_slice", "neuron_slice"}
TENSOR_ARGS = {"tokens", "incorrect_tokens", "project_output_onto"}
STACK_ARGS = {"residual_stack"}
PROCESSING_FLAGS = ("fold_ln", "center_writing_weights", "center_unembed", "fold_value_biases")


class PlanError(Exception):
    pass


# ----------------------------------------------------------------------------------------------------------------------
# Model loading
# ----------------------------------------------------------------------------------------------------------------------

def quiet_transformers() -> None:
    """Errors only from logging and transformers, and no progress bars: the scripts print one summary line."""
    logging.basicConfig(level=logging.ERROR)
    try:
        import transformers

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except Exception:  # noqa: BLE001
        pass


def report(tool: str, problems: list, summary: str) -> int:
    """Prints each problem on stderr and one `TOOL OK|FAIL: SUMMARY` line; returns the exit status (1 on any problem)."""
    for p in problems:
        print(f"{tool}: {p}", file=sys.stderr)
    print(f"{tool} {'FAIL' if problems else 'OK'}: {summary}")
    return 1 if problems else 0


def processing_flags(plan: dict, default: bool) -> dict:
    proc = plan.get("processing") or {}
    unknown = set(proc) - set(PROCESSING_FLAGS)
    if unknown:
        raise PlanError(f"unknown processing flags: {sorted(unknown)}")
    return {k: bool(proc.get(k, default)) for k in PROCESSING_FLAGS}


PLAN_DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


def plan_dtype(plan: dict) -> torch.dtype:
    """plan.dtype: the `dtype` the model is loaded in, as `from_pretrained(dtype=...)`."""
    name = plan.get("dtype", "f32")
    if name not in PLAN_DTYPES:
        raise PlanError(f"plan.dtype must be one of {sorted(PLAN_DTYPES)}, not {name!r}")
    return PLAN_DTYPES[name]


def hf_architecture(model_dir: Path) -> str:
    cfg = json.loads((model_dir / "config.json").read_text())
    archs = cfg.get("architectures") or []
    return archs[0] if archs else ""


def load_hf_model(model_dir: Path, flags: dict, dtype: torch.dtype = torch.float32):
    """Mirror HookedTransformer.from_pretrained for a local Hugging Face folder (no hub access).

    GPT-2 folders take the original GPT-2-only path below (unchanged, so the gpt2-tiny goldens stay byte-identical);
    every other architecture goes through load_hf_family_model.
    """
    if hf_architecture(model_dir) != "GPT2LMHeadModel":
        return load_hf_family_model(model_dir, flags, dtype)
    return load_gpt2_model(model_dir, flags, dtype)


def load_gpt2_model(model_dir: Path, flags: dict, dtype: torch.dtype = torch.float32):
    """Mirror HookedTransformer.from_pretrained for a local GPT-2 folder (no hub access).

    from_pretrained = get_pretrained_model_config -> convert_gpt2_weights (via get_pretrained_state_dict) ->
    HookedTransformer(cfg, tokenizer=None, move_to_device=False) -> load_and_process_state_dict. The HF weights are
    loaded upcast to float32 whatever their stored dtype; the model runs in plan.dtype (float32 unless the plan says
    otherwise): as from_pretrained(dtype=...), the state dict is cast to it and load_and_process_state_dict processes
    it in float32 and casts it back.
    """
    from transformer_lens import HookedTransformer
    from transformer_lens import loading_from_pretrained as loading
    from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights
    from transformers import GPT2LMHeadModel

    hf_model = GPT2LMHeadModel.from_pretrained(str(model_dir), dtype=torch.float32)
    hf_model.eval()
    cfg = loading.get_pretrained_model_config(
        str(model_dir), fold_ln=flags["fold_ln"], device="cpu", dtype=dtype
    )
    if cfg.original_architecture != "GPT2LMHeadModel":
        raise PlanError(f"{model_dir}: not a GPT-2 model ({cfg.original_architecture})")
    state_dict = convert_gpt2_weights(hf_model, cfg)
    state_dict = {k: v.detach().to(dtype) for k, v in state_dict.items()}
    has_tokenizer = (model_dir / "tokenizer.json").exists() or (model_dir / "vocab.json").exists()
    if not has_tokenizer:
        cfg.tokenizer_name = None
    model = HookedTransformer(cfg, None, move_to_device=False)
    model.load_and_process_state_dict(state_dict, refactor_factored_attn_matrices=False, **flags)
    model.eval()
    return model


# TL recognises Gemma only by official model name (convert_hf_model_config's name branches), so a local Gemma folder
# gets the HookedTransformerConfig dict those branches would give, with the folder's sizes.
GEMMA_ARCHITECTURES = ("GemmaForCausalLM", "Gemma2ForCausalLM")


def _rope_theta(hf_config) -> float:
    rp = getattr(hf_config, "rope_parameters", None) or {}
    return rp.get("rope_theta", getattr(hf_config, "rope_theta", 10000.0))


def gemma_cfg_dict(hf_config, architecture: str, name: str) -> dict:
    """The cfg_dict of TL 3.9's `google/gemma-2b`/`gemma-7b` (Gemma) or `google/gemma-2-*` (Gemma 2) branch of
    convert_hf_model_config, with sizes, eps, rope theta, window, soft caps and layer kinds read from the HF config.

    As in those branches, except one deliberate difference: TL's Gemma 1 branches say act_fn "gelu" (exact), but HF
    runs gelu_pytorch_tanh (GemmaConfig rewrites hidden_act "gelu" to it), which moves the logits by ~1e-3; tlens
    follows HF, so the reference is built with "gelu_pytorch_tanh" for Gemma 1 as for Gemma 2 (the book's divergences
    page). Otherwise: initializer_range 0.02; RMS, final_rms, gated MLP,
    rotary with rotary_adjacent_pairs left at its default False; Gemma 2 also use_normalization_before_and_after,
    use_local_attn with attn_types "local" for HF's "sliding_attention" layers ("global" otherwise),
    attn_scores_soft_cap / output_logits_soft_cap, and attn_scale = sqrt(query_pre_attn_scalar) (the gemma-2-27b
    branch's 12.0 = sqrt(144); the 2b/9b branches leave the default sqrt(d_head), equal there).
    """
    c = hf_config
    d = {
        "d_model": c.hidden_size,
        "d_head": c.head_dim,
        "n_heads": c.num_attention_heads,
        "d_mlp": c.intermediate_size,
        "n_layers": c.num_hidden_layers,
        "n_ctx": c.max_position_embeddings,
        "eps": c.rms_norm_eps,
        "d_vocab": c.vocab_size,
        "initializer_range": 0.02,
        "normalization_type": "RMS",
        "rotary_base": _rope_theta(c),
        "positional_embedding_type": "rotary",
        "use_attn_scale": True,
        "n_key_value_heads": c.num_key_value_heads,
        "gated_mlp": True,
        "final_rms": True,
    }
    d["act_fn"] = "gelu_pytorch_tanh"
    if architecture == "GemmaForCausalLM":
        d["rotary_dim"] = c.head_dim
    else:
        d["attn_scale"] = math.sqrt(c.query_pre_attn_scalar)
        d["window_size"] = c.sliding_window
        d["use_local_attn"] = True
        d["attn_types"] = ["local" if t == "sliding_attention" else "global" for t in c.layer_types]
        d["attn_scores_soft_cap"] = c.attn_logit_softcapping
        d["output_logits_soft_cap"] = c.final_logit_softcapping
        d["use_normalization_before_and_after"] = True
    # the common tail of convert_hf_model_config
    d["original_architecture"] = architecture
    d["quantization_method"] = None
    d["tokenizer_name"] = name
    return d


def load_hf_family_model(model_dir: Path, flags: dict, dtype: torch.dtype = torch.float32):
    """HookedTransformer.from_pretrained(official_name, hf_model=AutoModelForCausalLM.from_pretrained(DIR)) without
    the hub, for every architecture TL 3.9 converts (Llama, Mistral, Qwen2, Qwen3, GPT-NeoX, Phi-3, Gemma, Gemma 2).

    * hf_model = AutoModelForCausalLM.from_pretrained(DIR, dtype=float32) (bf16/f16 and sharded checkpoints upcast).
    * TL's config: loading.get_pretrained_model_config(PATH, hf_cfg=hf_model.config.to_dict(), fold_ln, device,
      dtype), on a copy of DIR at a neutral path (TL picks the architecture from "llama"/"gemma" substrings of the
      name before reading config.json). Gemma: the same call with convert_hf_model_config replaced by
      gemma_cfg_dict (TL has no config-driven Gemma branch).
    * from_pretrained's own overrides: shortformer / post-norm architectures drop fold_ln and centring; a logit soft
      cap turns center_unembed off.
    * loading.get_pretrained_state_dict(PATH, cfg, hf_model) (the architecture's convert_*_weights), then
      HookedTransformer(cfg, None, move_to_device=False) (tokenizer from PATH) and load_and_process_state_dict.
    """
    import shutil
    import tempfile

    from transformer_lens import HookedTransformer
    from transformer_lens import loading_from_pretrained as loading
    from transformer_lens.utilities.activation_functions import softcap_enabled
    from transformer_lens.utilities.architectures import POST_NORM_ARCHITECTURES
    from transformers import AutoModelForCausalLM

    flags = dict(flags)
    hf_model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    hf_model.eval()
    for p in hf_model.parameters():
        p.requires_grad = False
    hf_cfg = hf_model.config.to_dict()
    architecture = hf_model.config.architectures[0]

    # Substrings TL acts on in a model / tokenizer name: "llama"/"gemma" pick an architecture without reading
    # config.json, "phi" makes HookedTransformer load a slow tokenizer.
    special = ("llama", "gemma", "phi")
    while True:
        tmp = Path(tempfile.mkdtemp(prefix="tlref-"))
        if not any(s in str(tmp).lower() for s in special):
            break
        shutil.rmtree(tmp, ignore_errors=True)
    try:
        neutral = tmp / "model"
        shutil.copytree(model_dir, neutral)
        name = str(neutral)
        cfg_kwargs = dict(hf_cfg=hf_cfg, fold_ln=flags["fold_ln"], device="cpu", dtype=dtype)
        if architecture in GEMMA_ARCHITECTURES:
            cfg_dict = gemma_cfg_dict(hf_model.config, architecture, name)
            original = loading.convert_hf_model_config
            loading.convert_hf_model_config = lambda model_name, **kw: dict(cfg_dict)
            try:
                cfg = loading.get_pretrained_model_config(name, **cfg_kwargs)
            finally:
                loading.convert_hf_model_config = original
        else:
            cfg = loading.get_pretrained_model_config(name, **cfg_kwargs)
        if cfg.original_architecture != architecture:
            raise PlanError(f"{model_dir}: TL resolved {cfg.original_architecture}, config says {architecture}")

        if cfg.positional_embedding_type == "shortformer":
            flags["fold_ln"] = flags["center_unembed"] = flags["center_writing_weights"] = False
        if cfg.original_architecture in POST_NORM_ARCHITECTURES:
            flags["fold_ln"] = flags["center_writing_weights"] = False
        if flags["center_unembed"] and softcap_enabled(cfg.output_logits_soft_cap):
            flags["center_unembed"] = False

        state_dict = loading.get_pretrained_state_dict(name, cfg, hf_model, dtype=torch.float32)
        state_dict = {k: v.detach().to(dtype) for k, v in state_dict.items()}
        model = HookedTransformer(cfg, None, move_to_device=False)
        model.load_and_process_state_dict(state_dict, refactor_factored_attn_matrices=False, **flags)
        model.eval()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return model


def load_tl_model(spec: dict, base: Path, flags: dict, dtype: torch.dtype = torch.float32):
    from safetensors.torch import load_file
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg_json = json.loads((base / spec["config"]).read_text())
    cfg_json = dict(cfg_json)
    cfg_json["device"] = "cpu"
    cfg_json["dtype"] = dtype
    cfg = HookedTransformerConfig(**cfg_json)
    torch.manual_seed(0)
    model = HookedTransformer(cfg, None, move_to_device=False)
    state_dict = {k: v.to(dtype) for k, v in load_file(str(base / spec["weights"])).items()}
    model.load_and_process_state_dict(state_dict, refactor_factored_attn_matrices=False, **flags)
    model.eval()
    return model


def load_model(plan: dict, base: Path):
    spec = plan.get("model")
    if not isinstance(spec, dict) or len(spec) != 1:
        raise PlanError("plan.model must be exactly one of {'hf': DIR} or {'tl': {...}}")
    dtype = plan_dtype(plan)
    if "hf" in spec:
        return load_hf_model(base / spec["hf"], processing_flags(plan, True), dtype)
    if "tl" in spec:
        return load_tl_model(spec["tl"], base, processing_flags(plan, False), dtype)
    raise PlanError(f"unknown model kind {list(spec)}")


# ----------------------------------------------------------------------------------------------------------------------
# Argument decoding (plan-format.md, "Argument values")
# ----------------------------------------------------------------------------------------------------------------------

def decode_slice(v: Any):
    if v is None or (isinstance(v, int) and not isinstance(v, bool)):
        return v
    if isinstance(v, dict) and len(v) == 1:
        if "range" in v:
            items = v["range"]
            if not isinstance(items, list) or not 1 <= len(items) <= 3:
                raise PlanError(f"bad range {v}")
            return slice(*items)
        if "indices" in v:
            return [int(i) for i in v["indices"]]
    raise PlanError(f"bad slice value {v!r}")


def _all_ints(x) -> bool:
    if isinstance(x, list):
        return all(_all_ints(i) for i in x)
    return isinstance(x, int) and not isinstance(x, bool)


def decode_tensor(v: Any):
    if isinstance(v, (int, str)) and not isinstance(v, bool):
        return v
    if isinstance(v, dict) and set(v) == {"tensor"}:
        data = v["tensor"]
        if _all_ints(data):
            return torch.tensor(data, dtype=torch.int64)
        return torch.tensor(data, dtype=torch.float32)
    raise PlanError(f"bad tensor value {v!r}")


def decode_stack(v: Any, outputs: dict):
    if isinstance(v, dict) and set(v) == {"ref"}:
        ref = v["ref"]
        if ref not in outputs:
            raise KeyError(f"ref {ref!r} names no earlier call with an output")
        return outputs[ref]
    return decode_generic(v, outputs)


def decode_generic(v: Any, outputs: dict):
    if isinstance(v, dict) and len(v) == 1:
        (k,) = v
        if k == "ref":
            return decode_stack(v, outputs)
        if k == "tensor":
            return decode_tensor(v)
        if k in ("range", "indices"):
            return decode_slice(v)
    return v


def decode_args(args: dict, outputs: dict) -> dict:
    out = {}
    for name, v in args.items():
        if name in SLICE_ARGS:
            out[name] = decode_slice(v)
        elif name in TENSOR_ARGS:
            out[name] = decode_tensor(v)
        elif name in STACK_ARGS:
            out[name] = decode_stack(v, outputs)
        else:
            out[name] = decode_generic(v, outputs)
    return out


def decode_key(k: Any):
    if isinstance(k, list):
        return tuple(k)
    return k


# ----------------------------------------------------------------------------------------------------------------------
# Interventions, metrics and patching (plan-format.md, "Interventions and gradients"; knockout: reference/README.md)
# ----------------------------------------------------------------------------------------------------------------------

HOOK_OPS = {
    # op: the keys it takes besides "hook", "op" and the selectors
    "zero": set(),
    "scale": {"factor"},
    "add": {"vector", "coeff"},
    "patch": {"tokens"},
    "mean": set(),
    "knockout": {"edges"},
}
SELECTORS = ("heads", "positions", "neurons")
PATTERN_LIKE = ("hook_attn_scores", "hook_pattern")  # [batch, head, query_pos, key_pos]


def activation_axes(name: str, ndim: int) -> dict:
    """Which axis each selector hits on hook `name`'s activation during the forward pass (batch first).

    `[batch, head, q, k]` attention scores / patterns: heads -> 1, positions -> 2 (the query axis); other 4-D
    activations (`[batch, pos, head, d]`: q, k, v, z, rot_q, rot_k, result, q/k/v_input): heads -> 2, positions -> 1;
    3-D `[batch, pos, d]`: positions -> 1, no head axis. neurons -> the last axis always.
    """
    axes: dict = {"neurons": ndim - 1}
    if name.endswith(PATTERN_LIKE) and ndim == 4:
        axes["heads"], axes["positions"] = 1, 2
    elif ndim == 4:
        axes["heads"], axes["positions"] = 2, 1
    elif ndim == 3:
        axes["positions"] = 1
    return axes


def _int_list(v, what: str) -> list:
    if not isinstance(v, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in v):
        raise PlanError(f"{what} must be a list of integers, got {v!r}")
    return list(v)


def selection_mask(spec: dict, name: str, act: torch.Tensor) -> torch.Tensor:
    """Boolean mask (act's shape) of the entries the hook's selectors pick: the outer product of the index sets."""
    axes = activation_axes(name, act.ndim)
    mask = torch.ones(act.shape, dtype=torch.bool)
    for sel in SELECTORS:
        if sel not in spec:
            continue
        if sel not in axes:
            raise PlanError(f"hook {name}: {act.ndim}-D activation {tuple(act.shape)} has no {sel} axis")
        ax = axes[sel]
        pick = torch.zeros(act.shape[ax], dtype=torch.bool)
        pick[torch.tensor(_int_list(spec[sel], sel), dtype=torch.int64)] = True
        shape = [1] * act.ndim
        shape[ax] = act.shape[ax]
        mask = mask & pick.reshape(shape)
    if spec["op"] == "knockout":
        edges = spec["edges"]
        if not isinstance(edges, list) or not all(isinstance(e, list) and len(e) == 2 for e in edges):
            raise PlanError(f"hook {name}: knockout edges must be a list of [query, key] pairs")
        qk = torch.zeros(act.shape[-2:], dtype=torch.bool)
        if edges:
            q = torch.tensor(_int_list([e[0] for e in edges], "edges"), dtype=torch.int64)
            k = torch.tensor(_int_list([e[1] for e in edges], "edges"), dtype=torch.int64)
            qk[q, k] = True
        mask = mask & qk
    return mask.to(act.device)


def _float(v, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise PlanError(f"{what} must be a number, got {v!r}")
    return float(v)


def check_hook_spec(spec: Any, model, tokens_t: torch.Tensor) -> None:
    if not isinstance(spec, dict) or not isinstance(spec.get("hook"), str) or not isinstance(spec.get("op"), str):
        raise PlanError(f"bad run.hooks entry {spec!r}")
    name, op = spec["hook"], spec["op"]
    if op not in HOOK_OPS:
        raise PlanError(f"hook {name}: unknown op {op!r}")
    if name not in model.hook_dict:
        raise PlanError(f"hook {name}: no such hook point")
    extra = set(spec) - {"hook", "op", *SELECTORS} - HOOK_OPS[op]
    if extra:
        raise PlanError(f"hook {name}: op {op} does not take {sorted(extra)}")
    if op == "scale":
        _float(spec.get("factor"), "scale factor")
    if op == "add":
        vec = decode_tensor(spec.get("vector"))
        if not isinstance(vec, torch.Tensor) or vec.ndim != 1:
            raise PlanError(f"hook {name}: add vector must be {{'tensor': [d]}}")
        _float(spec.get("coeff", 1), "add coeff")
    if op == "patch":
        t = decode_tensor(spec.get("tokens"))
        if not isinstance(t, torch.Tensor) or t.shape != tokens_t.shape or t.is_floating_point():
            raise PlanError(f"hook {name}: patch tokens must be an integer batch of the run's shape")
    if op == "knockout":
        if not name.endswith("attn.hook_attn_scores"):
            raise PlanError(f"hook {name}: knockout applies to attn.hook_attn_scores only")
        if "edges" not in spec:
            raise PlanError(f"hook {name}: knockout needs edges")
        if "positions" in spec or "neurons" in spec:
            raise PlanError(f"hook {name}: knockout takes the heads selector only")


def make_hook(spec: dict, clean: torch.Tensor | None):
    """The TL hook function for one run.hooks entry. Out of place: `torch.where(mask, new, act)`, so unselected
    entries are passed through bit for bit, the caller's tensor (shared with earlier hook points, e.g.
    resid_post -> next resid_pre) is not mutated, and gradients flow through both branches."""
    name, op = spec["hook"], spec["op"]

    def hook_fn(act: torch.Tensor, hook) -> torch.Tensor:
        mask = selection_mask(spec, name, act)
        if op == "zero":
            new = torch.zeros_like(act)
        elif op == "scale":
            new = act * float(spec["factor"])
        elif op == "add":
            vec = decode_tensor(spec["vector"]).to(act.dtype).to(act.device)
            if vec.shape[0] != act.shape[-1]:
                raise PlanError(f"hook {name}: add vector has {vec.shape[0]} entries, last axis {act.shape[-1]}")
            new = act + float(spec.get("coeff", 1)) * vec
        elif op == "patch":
            assert clean is not None
            if clean.shape != act.shape:
                raise PlanError(f"hook {name}: patch activation {tuple(clean.shape)} vs {tuple(act.shape)}")
            new = clean.to(act.dtype).to(act.device)
        elif op == "mean":
            new = act.mean(dim=0, keepdim=True).expand_as(act)
        elif op == "knockout":
            new = torch.full_like(act, float("-inf"))
        else:  # pragma: no cover - checked by check_hook_spec
            raise PlanError(op)
        return torch.where(mask, new, act)

    return hook_fn


def build_run_hooks(model, specs: Any, tokens_t: torch.Tensor) -> list:
    """run.hooks -> TL fwd_hooks [(name, fn)], in list order. `patch` sources come from clean runs (no hooks)."""
    if specs is None:
        return []
    if not isinstance(specs, list):
        raise PlanError("run.hooks must be a list")
    for spec in specs:
        check_hook_spec(spec, model, tokens_t)
    fwd = []
    for spec in specs:
        clean = None
        if spec["op"] == "patch":
            src = decode_tensor(spec["tokens"])
            _, src_cache = model.run_with_cache(src, names_filter=[spec["hook"]])
            clean = src_cache[spec["hook"]].detach().clone()
        fwd.append((spec["hook"], make_hook(spec, clean)))
    return fwd


def _token_id(model, v, what: str) -> int:
    if isinstance(v, str):
        return int(model.to_single_token(v))
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    raise PlanError(f"{what}: a token id or a one-token string, got {v!r}")


def make_metric(model, spec: Any):
    """A plan metric -> fn(logits) -> 0-d tensor. {"logit_diff": [C, I]}: mean_b(logits[b,-1,C] - logits[b,-1,I])."""
    if isinstance(spec, dict) and set(spec) == {"logit_diff"}:
        pair = spec["logit_diff"]
        if not isinstance(pair, list) or len(pair) != 2:
            raise PlanError(f"logit_diff takes [CORRECT, INCORRECT], got {pair!r}")
        c, i = (_token_id(model, v, "logit_diff") for v in pair)

        def logit_diff(logits: torch.Tensor) -> torch.Tensor:
            return (logits[:, -1, c] - logits[:, -1, i]).mean()

        return logit_diff
    raise PlanError(f"unknown metric {spec!r}")


def call_patching(model, fn_name: str, args: dict, clean_cache):
    """`patching.<fn>`: transformer_lens.patching.<fn>(model, corrupted_tokens, clean_cache, metric)."""
    import transformer_lens.patching as patching

    if not fn_name.startswith("get_act_patch_") or not callable(getattr(patching, fn_name, None)):
        raise AttributeError(f"transformer_lens.patching has no function {fn_name!r}")
    if set(args) != {"corrupted_tokens", "metric"}:
        raise TypeError(f"patching.{fn_name} takes exactly corrupted_tokens and metric, got {sorted(args)}")
    corrupted = decode_tensor(args["corrupted_tokens"])
    if not isinstance(corrupted, torch.Tensor):
        raise TypeError("corrupted_tokens must be {'tensor': [[...]]}")
    metric = make_metric(model, args["metric"])
    return getattr(patching, fn_name)(model, corrupted, clean_cache, metric)


# ----------------------------------------------------------------------------------------------------------------------
# Execution
# ----------------------------------------------------------------------------------------------------------------------

def to_store(t: torch.Tensor) -> torch.Tensor:
    t = t.detach().cpu()
    if t.is_floating_point() or t.is_complex():
        t = t.to(torch.float32)
    else:
        t = t.to(torch.int64)
    return t.clone().contiguous()


_ST_DTYPES = {torch.float32: "F32", torch.int64: "I64", torch.float16: "F16", torch.bfloat16: "BF16"}


def save_safetensors(tensors: dict, path, metadata: dict | None = None) -> None:
    """Write a safetensors file byte-for-byte deterministically.

    safetensors' own writer keeps the metadata in a hash map, so its key order (and the file bytes) change from run to
    run; here the header is compact JSON with `__metadata__` first and tensors sorted by name, data in the same order.
    """
    header: dict = {}
    if metadata:
        header["__metadata__"] = {str(k): str(metadata[k]) for k in sorted(metadata)}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        if t.dtype not in _ST_DTYPES:
            raise TypeError(f"{name}: unsupported dtype {t.dtype}")
        data = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": _ST_DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    hb = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    hb += b" " * (-len(hb) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for b in blobs:
            f.write(b)


def one_line(e: BaseException) -> str:
    msg = " ".join(str(e).split())
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def run_with_grad_cache(model, tokens_t: torch.Tensor, run: dict, run_kwargs: dict, fwd_hooks: list):
    """run.incl_bwd: what `run_with_cache(incl_bwd=True)` does, with the metric of the logits as the scalar that is
    back-propagated: get_caching_hooks(names_filter, incl_bwd=True, ...) -> model.hooks(fwd, bwd) -> model(tokens)
    -> metric(logits).backward(), all inside `model.hooks(fwd_hooks=run.hooks)` and with grad enabled for this part
    only. The cache then holds `<hook>` and `<hook>_grad` (the gradient w.r.t. the hook's output, i.e. after the
    run.hooks at that point) for every kept hook point whose backward hook fired."""
    from transformer_lens.ActivationCache import ActivationCache

    if "stop_at_layer" in run_kwargs:
        raise PlanError("run.incl_bwd needs logits; it cannot be combined with run.stop_at_layer")
    metric = make_metric(model, run["incl_bwd"])
    remove_batch_dim = bool(run_kwargs.get("remove_batch_dim", False))
    cache_dict, fwd, bwd = model.get_caching_hooks(
        run_kwargs.get("names_filter"), True, None, remove_batch_dim=remove_batch_dim,
        pos_slice=run_kwargs.get("pos_slice"),
    )
    with torch.enable_grad():
        with model.hooks(fwd_hooks=fwd_hooks):
            with model.hooks(fwd_hooks=fwd, bwd_hooks=bwd):
                out = model(tokens_t)
                metric(out).backward()
    model.zero_grad(set_to_none=True)
    return out.detach(), ActivationCache(cache_dict, model, has_batch_dim=not remove_batch_dim)


def run_plan(plan: dict, base: Path):
    from transformer_lens.ActivationCache import ActivationCache

    model = load_model(plan, base)

    tokens = plan.get("tokens")
    if not isinstance(tokens, list) or not tokens or not all(isinstance(r, list) for r in tokens):
        raise PlanError("plan.tokens must be a non-empty list of rows")
    if len({len(r) for r in tokens}) != 1:
        raise PlanError("plan.tokens rows must have equal length")
    tokens_t = torch.tensor(tokens, dtype=torch.int64)

    run = plan.get("run") or {}
    run_kwargs: dict = {}
    if run.get("remove_batch_dim"):
        run_kwargs["remove_batch_dim"] = True
    if run.get("names_filter") is not None:
        run_kwargs["names_filter"] = list(run["names_filter"])
    if run.get("stop_at_layer") is not None:
        run_kwargs["stop_at_layer"] = int(run["stop_at_layer"])
    if run.get("pos_slice") is not None:
        run_kwargs["pos_slice"] = decode_slice(run["pos_slice"])

    fwd_hooks = build_run_hooks(model, run.get("hooks"), tokens_t)
    if run.get("incl_bwd") is not None:
        out, cache = run_with_grad_cache(model, tokens_t, run, run_kwargs, fwd_hooks)
    elif fwd_hooks:
        with model.hooks(fwd_hooks=fwd_hooks):
            out, cache = model.run_with_cache(tokens_t, **run_kwargs)
    else:
        out, cache = model.run_with_cache(tokens_t, **run_kwargs)
    run_cache = cache

    tensors: dict[str, torch.Tensor] = {}
    metadata: dict[str, str] = {}
    if not isinstance(out, torch.Tensor):
        raise PlanError(f"run_with_cache returned {type(out).__name__}, not a tensor")
    tensors["logits"] = to_store(out)
    for name, value in cache.cache_dict.items():
        tensors[f"cache/{name}"] = to_store(value)

    outputs: dict[str, torch.Tensor] = {}
    seen: set = set()
    for call in plan.get("calls") or []:
        cid = call.get("id")
        method = call.get("method")
        if not isinstance(cid, str) or not isinstance(method, str):
            raise PlanError(f"bad call {call!r}")
        if cid in seen:
            raise PlanError(f"duplicate call id {cid!r}")
        seen.add(cid)
        args = call.get("args") or {}
        try:
            if method == "__getitem__":
                if set(args) != {"key"}:
                    raise TypeError("__getitem__ takes exactly {'key': K}")
                result = cache[decode_key(args["key"])]
            elif method.startswith("patching."):
                result = call_patching(model, method[len("patching."):], args, run_cache)
            else:
                if method.startswith("_"):
                    raise AttributeError(f"'ActivationCache' method {method!r} is not public")
                fn = getattr(cache, method)
                result = fn(**decode_args(args, outputs))
        except Exception as e:  # noqa: BLE001 - every failure is recorded, as the plan format says
            metadata[f"error/{cid}"] = one_line(e)
            continue

        if isinstance(result, ActivationCache):
            cache = result  # apply_slice_to_batch_dim / remove_batch_dim: later calls use it
            continue
        if result is None:
            continue  # compute_head_results
        labels = None
        if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], list):
            result, labels = result
        if not isinstance(result, torch.Tensor):
            metadata[f"error/{cid}"] = f"UnsupportedReturn: {type(result).__name__}"
            continue
        outputs[cid] = result
        tensors[f"call/{cid}"] = to_store(result)
        if labels is not None:
            metadata[f"labels/{cid}"] = json.dumps([str(x) for x in labels], separators=(",", ":"))

    return tensors, metadata


def run_one(plan_path: Path, out_path: Path) -> int:
    try:
        text = plan_path.read_text()
        plan = json.loads(text)
        if not isinstance(plan, dict):
            raise PlanError("plan must be a JSON object")
        torch.manual_seed(0)
        tensors, metadata = run_plan(plan, plan_path.resolve().parent)
        metadata["plan"] = text  # the plan file's own text
    except Exception as e:  # noqa: BLE001
        print(f"run_plan: {plan_path}: {one_line(e)}", file=sys.stderr)
        return 1
    out_path.parent.mkdir(parents=True, exist_ok=True)
    save_safetensors(tensors, out_path, metadata)
    n_err = sum(1 for k in metadata if k.startswith("error/"))
    n_call = sum(1 for k in tensors if k.startswith("call/"))
    print(f"{plan_path.name}: {len(tensors)} tensors ({n_call} calls), {n_err} errors -> {out_path}")
    return 0


def main(argv=None) -> int:
    """`run_plan.py PLAN OUT [PLAN OUT ...]`: several pairs share one interpreter start (regenerate.sh)."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or len(argv) % 2:
        print(__doc__, file=sys.stderr)
        return 2
    quiet_transformers()
    status = 0
    for i in range(0, len(argv), 2):
        status |= run_one(Path(argv[i]), Path(argv[i + 1]))
    return status


if __name__ == "__main__":
    sys.exit(main())
