#!/usr/bin/env python3
"""Write the intervention, activation-patching and gradient plans under tests/plans/ (deterministic).

    python reference/make_interventions.py [--out tests/plans]

Plans follow shared/spec/plan-format.md, section "Interventions and gradients" (`run.hooks`, `run.incl_bwd`,
`patching.get_act_patch_*` calls), plus the reference's `knockout` op (reference/README.md). Written here:

* gpt2-tiny.hooks-zero-scale, .hooks-add, .hooks-patch-mean, .hooks-knockout   one `run.hooks` list each
* gpt2-tiny.patching      every `get_act_patch_*` function of transformer_lens.patching (+ one unknown function)
* gpt2-tiny.grad, gpt2-tiny.grad-hooked    `run.incl_bwd` (without / with a forward hook)
* hf-llama.patching (GQA k/v), hf-llama.hooks, hf-neox.patching (parallel blocks), hf-gemma2.grad

Every run keeps a small `names_filter` so the goldens stay small (the cache is most of a golden). Token ids come from
the gpt2-tiny tokenizer (shared by the hf-* checkpoints); run make_models.py (and make_families.py for hf-*) first.
"""
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from make_plans import call, get, gpt2_tiny_encoders, plans_cli, proj, ref, ten  # noqa: E402

ROOT = HERE.parent
GPT2 = {"hf": "../models/gpt2-tiny"}


def fam(name: str) -> dict:
    return {"hf": f"../models/hf-{name}"}


def plan(model, tokens, run, calls, comment):
    return {"comment": comment, "model": model, "tokens": tokens, "run": run, "calls": calls}


def tokens():
    enc, single = gpt2_tiny_encoders()
    clean = [enc("When John and Mary went"), enc("When Tom and James went")]
    corrupted = [enc("When Mary and John went"), enc("When James and Tom went")]  # names swapped
    other = [enc("When Tom and Mary went"), enc("When John and James went")]
    for rows in (clean, corrupted, other):
        assert [len(r) for r in rows] == [6, 6], rows
    mary, john, tom, james = (single(s) for s in (" Mary", " John", " Tom", " James"))
    return dict(clean=clean, corrupted=corrupted, other=other, mary=mary, john=john, tom=tom, james=james)


def resid_filter(n_layers=2, mid=True):
    names = []
    for layer in range(n_layers):
        names.append(f"blocks.{layer}.hook_resid_pre")
        if mid:
            names.append(f"blocks.{layer}.hook_resid_mid")
    names += [f"blocks.{n_layers - 1}.hook_resid_post", "ln_final.hook_scale"]
    return names


def downstream_calls(T, mid=True):
    """A few cache methods on the hooked cache: accumulated_resid (apply_ln, pos -1) and the logit attribution of
    the unnormalised stack (logit_attrs applies ln_final's cached scale itself, pos_slice -1 picking it)."""
    return [
        call("acc_ln_pos-1", "accumulated_resid", incl_mid=mid, apply_ln=True, pos_slice=-1, return_labels=True),
        call("acc_pos-1", "accumulated_resid", incl_mid=mid, pos_slice=-1),
        call("la_diff", "logit_attrs", residual_stack=ref("acc_pos-1"), tokens=ten([T["mary"], T["james"]]),
             incorrect_tokens=ten([T["john"], T["tom"]]), pos_slice=-1),
    ]


def logit_diff(T):
    return {"logit_diff": [T["mary"], T["john"]]}


# the functions of transformer_lens.patching (TL 3.9) named get_act_patch_*, in the module's order
PATCHING_FUNCTIONS = [
    "get_act_patch_resid_pre",
    "get_act_patch_resid_mid",
    "get_act_patch_attn_out",
    "get_act_patch_mlp_out",
    "get_act_patch_attn_head_out_by_pos",
    "get_act_patch_attn_head_q_by_pos",
    "get_act_patch_attn_head_k_by_pos",
    "get_act_patch_attn_head_v_by_pos",
    "get_act_patch_attn_head_pattern_by_pos",
    "get_act_patch_attn_head_pattern_dest_src_pos",
    "get_act_patch_attn_head_out_all_pos",
    "get_act_patch_attn_head_q_all_pos",
    "get_act_patch_attn_head_k_all_pos",
    "get_act_patch_attn_head_v_all_pos",
    "get_act_patch_attn_head_pattern_all_pos",
    "get_act_patch_attn_head_all_pos_every",
    "get_act_patch_attn_head_by_pos_every",
    "get_act_patch_block_every",
]


def patch_id(fn: str) -> str:
    return fn[len("get_act_patch_"):]


def patch_call(T, fn: str, cid: str | None = None):
    return call(cid or patch_id(fn), f"patching.{fn}", corrupted_tokens=ten(T["corrupted"]), metric=logit_diff(T))


def patching_filter(n_layers=2, mid=True, heads=("z", "q", "k", "v", "pattern")):
    names = []
    for layer in range(n_layers):
        names.append(f"blocks.{layer}.hook_resid_pre")
        if mid:
            names.append(f"blocks.{layer}.hook_resid_mid")
        names += [f"blocks.{layer}.hook_attn_out", f"blocks.{layer}.hook_mlp_out"]
        names += [f"blocks.{layer}.attn.hook_{h}" for h in heads]
    return names


def build_plans() -> dict:
    T = tokens()
    clean = T["clean"]
    plans = {}

    # ---- run.hooks on gpt2-tiny ----------------------------------------------------------------------------------
    plans["gpt2-tiny.hooks-zero-scale"] = plan(
        GPT2, clean,
        run={
            "names_filter": resid_filter() + ["blocks.0.hook_resid_post", "blocks.0.attn.hook_z",
                                              "blocks.0.hook_attn_out", "blocks.1.attn.hook_q",
                                              "blocks.1.attn.hook_pattern", "blocks.1.attn.hook_z"],
            "hooks": [
                {"hook": "blocks.0.attn.hook_z", "op": "zero", "heads": [1]},
                {"hook": "blocks.1.hook_resid_pre", "op": "scale", "factor": 0.5, "positions": [2, 3]},
                # three selectors: their intersection (outer product of the index sets)
                {"hook": "blocks.1.attn.hook_q", "op": "scale", "factor": -1.5, "heads": [0, 2], "positions": [4, 5],
                 "neurons": [1, 3, 8]},
            ],
        },
        calls=downstream_calls(T) + [
            call("shr_ln_pos-1", "stack_head_results", apply_ln=True, pos_slice=-1, return_labels=True),
        ],
        comment="run.hooks zero (heads [1] of L0 hook_z) and scale (positions [2,3] of L1 resid_pre, 0.5; "
                "heads x positions x neurons of L1 hook_q, -1.5); blocks.0.hook_resid_post stays unscaled",
    )
    plans["gpt2-tiny.hooks-add"] = plan(
        GPT2, clean,
        run={
            "names_filter": resid_filter() + ["hook_embed", "hook_pos_embed", "blocks.0.hook_attn_out",
                                              "blocks.0.hook_mlp_out", "blocks.1.hook_attn_out",
                                              "blocks.1.hook_mlp_out", "blocks.0.hook_resid_post",
                                              "blocks.1.ln1.hook_scale"],
            "hooks": [
                {"hook": "blocks.1.hook_resid_pre", "op": "add", "vector": proj([64], 501), "coeff": 2},
                # a second hook at the same point runs after the first (list order): it scales the steered value
                {"hook": "blocks.1.hook_resid_pre", "op": "scale", "factor": 0.25, "positions": [5]},
            ],
        },
        calls=downstream_calls(T) + [
            # the components (embeddings, attn_out, mlp_out) do not include the steering vector
            call("dec_ln_pos-1", "decompose_resid", apply_ln=True, pos_slice=-1, return_labels=True),
        ],
        comment="run.hooks add (steering: 2 x a d_model vector of multiples of 1/64 on L1 resid_pre), then a scale "
                "at the same point (list order)",
    )
    plans["gpt2-tiny.hooks-patch-mean"] = plan(
        GPT2, clean,
        run={
            "names_filter": resid_filter() + ["blocks.0.mlp.hook_post", "blocks.0.hook_mlp_out",
                                              "blocks.1.attn.hook_pattern", "blocks.1.attn.hook_z"],
            "hooks": [
                {"hook": "blocks.0.mlp.hook_post", "op": "patch", "tokens": ten(T["other"]), "neurons": [0, 5, 7]},
                {"hook": "blocks.1.attn.hook_pattern", "op": "mean", "heads": [2]},
            ],
        },
        calls=downstream_calls(T) + [
            call("gnr_l0_pos-1_n8", "get_neuron_results", layer=0, pos_slice=-1, neuron_slice={"range": [0, 8]}),
        ],
        comment="run.hooks patch (L0 mlp hook_post neurons [0,5,7] from a clean run of other tokens) and mean "
                "(head [2] of L1 hook_pattern, mean over the batch)",
    )
    plans["gpt2-tiny.hooks-knockout"] = plan(
        GPT2, clean,
        run={
            "names_filter": resid_filter() + ["blocks.0.attn.hook_attn_scores", "blocks.0.attn.hook_pattern",
                                              "blocks.1.attn.hook_attn_scores", "blocks.1.attn.hook_pattern",
                                              "blocks.1.attn.hook_z"],
            "hooks": [
                # every head (no selector)
                {"hook": "blocks.0.attn.hook_attn_scores", "op": "knockout", "edges": [[2, 1], [5, 0]]},
                # [0, 0] empties query 0's row: softmax gives NaN, which TL's attention turns into a zero row
                {"hook": "blocks.1.attn.hook_attn_scores", "op": "knockout", "heads": [0, 3],
                 "edges": [[0, 0], [3, 1], [4, 2], [5, 5], [5, 0]]},
            ],
        },
        calls=downstream_calls(T),
        comment="run.hooks knockout (query->key scores to -inf before the softmax): every head of L0, heads [0,3] "
                "of L1 including a fully knocked-out row (query 0)",
    )

    # ---- activation patching on gpt2-tiny ------------------------------------------------------------------------
    plans["gpt2-tiny.patching"] = plan(
        GPT2, clean,
        run={"names_filter": patching_filter()},
        calls=[patch_call(T, fn) for fn in PATCHING_FUNCTIONS] + [
            # not a function of transformer_lens.patching: AttributeError recorded
            patch_call(T, "get_act_patch_resid_post"),
        ],
        comment="every transformer_lens.patching.get_act_patch_* function; clean = the run (names as in the tokens), "
                "corrupted = the names swapped, metric logit_diff( Mary, John)",
    )

    # ---- gradients on gpt2-tiny ----------------------------------------------------------------------------------
    grad_filter = ["hook_embed", "hook_pos_embed", "blocks.0.hook_resid_pre", "blocks.0.attn.hook_attn_scores",
                   "blocks.0.mlp.hook_post", "blocks.1.attn.hook_pattern", "blocks.1.hook_mlp_out",
                   "ln_final.hook_scale"]
    plans["gpt2-tiny.grad"] = plan(
        GPT2, clean,
        run={"names_filter": grad_filter, "incl_bwd": logit_diff(T)},
        calls=[get("embed_grad", "hook_embed_grad"), get("pattern1_grad", "blocks.1.attn.hook_pattern_grad")],
        comment="run.incl_bwd logit_diff( Mary, John): <hook>_grad for 8 hooks",
    )
    plans["gpt2-tiny.grad-hooked"] = plan(
        GPT2, clean,
        run={
            "names_filter": ["blocks.0.hook_resid_pre", "blocks.0.attn.hook_v", "blocks.0.attn.hook_pattern",
                             "blocks.0.attn.hook_z", "blocks.1.hook_resid_pre", "ln_final.hook_scale"],
            "hooks": [{"hook": "blocks.0.attn.hook_z", "op": "zero", "heads": [1]}],
            "incl_bwd": logit_diff(T),
        },
        calls=[],
        comment="run.incl_bwd with a zero hook on head 1 of L0 hook_z: hook_z_grad is the gradient at the changed "
                "output; head 1's v / pattern gradients are 0",
    )

    # ---- families -------------------------------------------------------------------------------------------------
    plans["hf-llama.patching"] = plan(
        fam("llama"), clean,
        run={"names_filter": patching_filter()},
        calls=[patch_call(T, fn) for fn in (
            "get_act_patch_resid_pre",
            "get_act_patch_attn_head_out_all_pos",
            "get_act_patch_attn_head_q_all_pos",
            "get_act_patch_attn_head_k_all_pos",
            "get_act_patch_attn_head_v_all_pos",
            "get_act_patch_attn_head_q_by_pos",
            "get_act_patch_attn_head_k_by_pos",
            "get_act_patch_attn_head_v_by_pos",
            "get_act_patch_attn_head_all_pos_every",
            "get_act_patch_attn_head_by_pos_every",
        )],
        comment="GQA (2 key/value heads): k/v patching iterates over n_key_value_heads; the *_every stacks pad k/v "
                "with zeros to n_heads",
    )
    plans["hf-llama.hooks"] = plan(
        fam("llama"), clean,
        run={
            "names_filter": resid_filter() + ["blocks.0.attn.hook_rot_q", "blocks.0.attn.hook_attn_scores",
                                              "blocks.0.attn.hook_pattern", "blocks.1.mlp.hook_pre_linear",
                                              "blocks.1.mlp.hook_post"],
            "hooks": [
                {"hook": "blocks.0.attn.hook_rot_q", "op": "zero", "heads": [1]},
                {"hook": "blocks.1.mlp.hook_pre_linear", "op": "scale", "factor": -2.0, "neurons": [3, 10, 40]},
            ],
        },
        calls=downstream_calls(T),
        comment="run.hooks on Llama: zero head 1 of L0 hook_rot_q (its scores become 0, pattern uniform), scale "
                "neurons of L1 mlp.hook_pre_linear (gated MLP)",
    )
    plans["hf-neox.patching"] = plan(
        fam("neox"), clean,
        run={"names_filter": patching_filter(mid=False, heads=("z",))},
        calls=[patch_call(T, fn) for fn in (
            "get_act_patch_resid_pre",
            "get_act_patch_resid_mid",
            "get_act_patch_attn_out",
            "get_act_patch_mlp_out",
            "get_act_patch_attn_head_out_all_pos",
            "get_act_patch_block_every",
        )],
        comment="parallel attention + MLP: no hook_resid_mid (get_act_patch_resid_mid fails)",
    )
    plans["hf-gemma2.grad"] = plan(
        fam("gemma2"), clean,
        run={
            "names_filter": ["hook_embed", "blocks.0.attn.hook_attn_scores", "blocks.0.attn.hook_pattern",
                             "blocks.0.ln1_post.hook_scale", "blocks.1.attn.hook_rot_k", "blocks.1.hook_resid_mid",
                             "blocks.1.ln2_post.hook_normalized", "ln_final.hook_scale"],
            "incl_bwd": logit_diff(T),
        },
        calls=[],
        comment="run.incl_bwd through Gemma 2's attention / output soft caps, post norms, a sliding window (L0) "
                "and GQA rot_k",
    )
    # ---- the same in bf16 (from_pretrained(dtype=torch.bfloat16)): steering, patching and gradients -------------
    for stem in ("gpt2-tiny.hooks-add", "gpt2-tiny.patching", "gpt2-tiny.grad", "hf-llama.hooks"):
        f32 = plans[stem]
        rest = {k: v for k, v in f32.items() if k not in ("comment", "model")}
        plans[stem.replace(".", ".dtype-bf16-", 1)] = {
            "comment": f"{stem} with the model in bf16", "model": f32["model"], "dtype": "bf16", **rest}
    return plans


def main(argv=None) -> int:
    return plans_cli(build_plans, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
