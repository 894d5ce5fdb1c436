#!/usr/bin/env python3
"""Write the committed plans under tests/plans/ (deterministic; rerunning rewrites identical files).

    python reference/make_plans.py [--out tests/plans]

Plans follow shared/spec/plan-format.md. Model paths are relative to the plan file. The gpt2-tiny token ids come
from the model's own tokenizer (tests/models/gpt2-tiny/tokenizer.json), so run make_models.py first.
Hand-written plans may live beside these: this script only rewrites the files it generates.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "tests" / "models"

HF = {"hf": "../models/gpt2-tiny"}
HF16 = {"hf": "../models/gpt2-tiny-f16"}
HFBF16 = {"hf": "../models/gpt2-tiny-bf16"}
TL_NAMES = ["tl-ln-relu", "tl-lnpre-gelu", "tl-rms-silu", "tl-rmspre-gelufast", "tl-none-gelunew", "tl-attnonly", "tl-solu"]


def tl(name: str) -> dict:
    return {"tl": {"config": f"../models/{name}/config.json", "weights": f"../models/{name}/weights.safetensors"}}


ALL_OFF = {"fold_ln": False, "center_writing_weights": False, "center_unembed": False, "fold_value_biases": False}


def only(flag: str) -> dict:
    d = dict(ALL_OFF)
    d[flag] = True
    return d


# ----------------------------------------------------------------------------------------------------------------------
# value helpers (plan-format argument encodings)
# ----------------------------------------------------------------------------------------------------------------------

def rng_(*items):
    """{"range": [...]}: exactly the entries given, read as Python's slice(*items)."""
    assert 1 <= len(items) <= 3
    return {"range": list(items)}


def idx(*i):
    return {"indices": list(i)}


def ten(x):
    return {"tensor": x}


def ref(cid):
    return {"ref": cid}


def call(cid, method, **args):
    return {"id": cid, "method": method, "args": args}


def get(cid, key):
    return {"id": cid, "method": "__getitem__", "args": {"key": key}}


def proj(shape, seed):
    """A projection tensor whose entries are multiples of 1/64 (exact in f32, and in any JSON parser)."""
    g = np.random.default_rng(seed)
    k = g.integers(-64, 65, size=shape)
    return ten((k / 64.0).tolist())


# ----------------------------------------------------------------------------------------------------------------------
# tokens
# ----------------------------------------------------------------------------------------------------------------------

def gpt2_tiny_encoders():
    """(enc, single) over the gpt2-tiny tokenizer: a text with BOS first, and a string that must be one token."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(MODELS / "gpt2-tiny" / "tokenizer.json"))
    bos = tok.token_to_id("<|endoftext|>")

    def enc(s):
        return [bos] + tok.encode(s).ids

    def single(s):
        ids = tok.encode(s).ids
        assert len(ids) == 1, (s, ids)
        return ids[0]

    return enc, single


def hf_tokens():
    enc, single = gpt2_tiny_encoders()
    bos = enc("")[0]
    full = [enc("When John and Mary went"), enc("When Tom and James went")]
    pairs = [(" John", " Mary"), (" Tom", " James"), (" Mary", " John")]
    methods3 = [enc(f"When{a} and{b} went") for a, b in pairs]
    # answers: (correct, incorrect) = (second name, first name), as in the IOI acceptance data
    answers3 = [[single(b), single(a)] for a, b in pairs]
    single_row = [enc("When John and Mary went")]
    short = [enc("When John and Mary"), enc("When Tom and James")]
    for rows in (full, methods3, single_row):
        assert len({len(r) for r in rows}) == 1 and len(rows[0]) == 6, rows
    assert methods3[:2] == full
    return dict(full=full, methods=methods3[:2], answers=answers3[:2], methods3=methods3, answers3=answers3,
                one=single_row, short=short, mary=single(" Mary"), john=single(" John"), tom=single(" Tom"), bos=bos)


TL_TOKENS = [[0, 5, 17, 3, 42, 8], [0, 11, 2, 49, 30, 7]]


# ----------------------------------------------------------------------------------------------------------------------
# plans
# ----------------------------------------------------------------------------------------------------------------------

def plan(model, tokens, calls=None, processing=None, run=None, comment=None, dtype=None):
    p = {}
    if comment:
        p["comment"] = comment
    p["model"] = model
    if processing is not None:
        p["processing"] = processing
    if dtype is not None:
        p["dtype"] = dtype
    p["tokens"] = tokens
    if run is not None:
        p["run"] = run
    p["calls"] = calls or []
    return p


def gpt2_resid_calls(T):
    ans0 = [a[0] for a in T["answers"]]
    return [
        # accumulated_resid: layer None / -1 / 0 / 1 / 2, incl_mid, mlp_input, return_labels
        call("acc_default", "accumulated_resid"),
        call("acc_labels", "accumulated_resid", return_labels=True),
        call("acc_none_mid_pos-1", "accumulated_resid", layer=None, incl_mid=True, pos_slice=-1, return_labels=True),
        call("acc_m1_mid_pos-1", "accumulated_resid", layer=-1, incl_mid=True, pos_slice=-1, return_labels=True),
        call("acc_l2_mid_pos-1", "accumulated_resid", layer=2, incl_mid=True, pos_slice=-1, return_labels=True),
        call("acc_m1_nomid", "accumulated_resid", layer=-1, return_labels=True),
        call("acc_l0", "accumulated_resid", layer=0, return_labels=True),
        call("acc_l0_mid", "accumulated_resid", layer=0, incl_mid=True, return_labels=True),
        call("acc_l0_mlpin", "accumulated_resid", layer=0, mlp_input=True, return_labels=True),
        call("acc_l1", "accumulated_resid", layer=1, return_labels=True),
        call("acc_l1_mid", "accumulated_resid", layer=1, incl_mid=True, return_labels=True),
        call("acc_l1_mid_mlpin", "accumulated_resid", layer=1, incl_mid=True, mlp_input=True, return_labels=True),
        call("acc_l2_mlpin", "accumulated_resid", layer=2, mlp_input=True, return_labels=True),
        call("acc_lm2", "accumulated_resid", layer=-2, return_labels=True),
        call("acc_l3", "accumulated_resid", layer=3),
        # pos_slice kinds
        call("acc_pos0", "accumulated_resid", incl_mid=True, pos_slice=0),
        call("acc_pos_range_1_5", "accumulated_resid", incl_mid=True, pos_slice=rng_(1, 5)),
        call("acc_pos_range_to3", "accumulated_resid", pos_slice=rng_(3)),
        call("acc_pos_range_m1_end", "accumulated_resid", pos_slice=rng_(-1, None)),
        call("acc_pos_range_step2", "accumulated_resid", pos_slice=rng_(1, None, 2)),
        call("acc_pos_indices", "accumulated_resid", incl_mid=True, pos_slice=idx(0, 2, 3)),
        call("acc_pos_null", "accumulated_resid", pos_slice=None, return_labels=True),
        # apply_ln: layer == L recomputes ln_final; layer < L uses the cached ln1/ln2 scale
        call("acc_ln_m1_mid_pos-1", "accumulated_resid", layer=-1, incl_mid=True, apply_ln=True, pos_slice=-1,
             return_labels=True),
        call("acc_ln_none_mid_posR", "accumulated_resid", layer=None, incl_mid=True, apply_ln=True,
             pos_slice=rng_(-1, None), return_labels=True),
        call("acc_ln_full", "accumulated_resid", incl_mid=True, apply_ln=True, return_labels=True),
        call("acc_ln_l0", "accumulated_resid", layer=0, apply_ln=True),
        call("acc_ln_l1", "accumulated_resid", layer=1, incl_mid=True, apply_ln=True, return_labels=True),
        call("acc_ln_l1_mlpin", "accumulated_resid", layer=1, incl_mid=True, mlp_input=True, apply_ln=True,
             return_labels=True),
        call("acc_ln_l1_mlpin_pos-1", "accumulated_resid", layer=1, mlp_input=True, apply_ln=True, pos_slice=-1),
        call("acc_ln_l1_pos_indices", "accumulated_resid", layer=1, apply_ln=True, pos_slice=idx(0, 2, 3)),
        call("acc_ln_l2_pos_range", "accumulated_resid", layer=2, incl_mid=True, apply_ln=True, pos_slice=rng_(1, 5)),
        call("acc_ln_pos_indices", "accumulated_resid", apply_ln=True, pos_slice=idx(5, 0)),
        # apply_ln_to_stack on those stacks (spec 10.1 cases 5 and 6)
        call("ln_recompute_m1_pos-1", "apply_ln_to_stack", residual_stack=ref("acc_m1_mid_pos-1"), layer=-1,
             pos_slice=-1, recompute_ln=True),
        call("ln_cached_m1_pos-1", "apply_ln_to_stack", residual_stack=ref("acc_m1_mid_pos-1"), layer=-1,
             pos_slice=-1),
        call("ln_cached_none_pos-1", "apply_ln_to_stack", residual_stack=ref("acc_m1_mid_pos-1"), pos_slice=-1),
        call("ln_l2", "apply_ln_to_stack", residual_stack=ref("acc_labels"), layer=2),
        call("ln_l1", "apply_ln_to_stack", residual_stack=ref("acc_labels"), layer=1),
        call("ln_l0", "apply_ln_to_stack", residual_stack=ref("acc_labels"), layer=0),
        call("ln_l1_mlpin", "apply_ln_to_stack", residual_stack=ref("acc_labels"), layer=1, mlp_input=True),
        call("ln_l0_mlpin_pos-1", "apply_ln_to_stack", residual_stack=ref("acc_m1_mid_pos-1"), layer=0,
             mlp_input=True, pos_slice=-1),
        call("ln_l1_pos_indices", "apply_ln_to_stack", residual_stack=ref("acc_pos_indices"), layer=1,
             pos_slice=idx(0, 2, 3)),
        call("ln_l1_pos_range", "apply_ln_to_stack", residual_stack=ref("acc_pos_range_1_5"), layer=1,
             pos_slice=rng_(1, 5)),
        call("ln_batch_int", "apply_ln_to_stack", residual_stack=ref("acc_labels"), layer=1, batch_slice=1),
        call("ln_batch_range", "apply_ln_to_stack", residual_stack=ref("acc_labels"), batch_slice=rng_(0, 2)),
        call("ln_batch_indices", "apply_ln_to_stack", residual_stack=ref("acc_m1_mid_pos-1"), layer=1,
             pos_slice=-1, batch_slice=idx(1, 0)),
        call("ln_batch_int_pos-1", "apply_ln_to_stack", residual_stack=ref("acc_m1_mid_pos-1"), pos_slice=-1,
             batch_slice=-1),
        call("ln_recompute_batch_int", "apply_ln_to_stack", residual_stack=ref("acc_labels"), layer=-1,
             batch_slice=1, recompute_ln=True),
        call("ln_recompute_full", "apply_ln_to_stack", residual_stack=ref("acc_labels"), recompute_ln=True),
        call("ln_recompute_l1_ignored", "apply_ln_to_stack", residual_stack=ref("acc_labels"), layer=1,
             recompute_ln=True),
        call("ln_has_batch_false", "apply_ln_to_stack", residual_stack=ref("acc_m1_mid_pos-1"), pos_slice=-1,
             batch_slice=0, has_batch_dim=False),
        call("ln_layer_m2", "apply_ln_to_stack", residual_stack=ref("acc_labels"), layer=-2),
        # decompose_resid
        call("dec_default", "decompose_resid"),
        call("dec_labels", "decompose_resid", return_labels=True),
        call("dec_attn", "decompose_resid", mode="attn", return_labels=True),
        call("dec_mlp", "decompose_resid", mode="mlp", return_labels=True),
        call("dec_noembeds", "decompose_resid", incl_embeds=False, return_labels=True),
        call("dec_l0", "decompose_resid", layer=0, return_labels=True),
        call("dec_l0_noembeds", "decompose_resid", layer=0, incl_embeds=False),
        call("dec_l0_mlpin", "decompose_resid", layer=0, mlp_input=True, return_labels=True),
        call("dec_l1", "decompose_resid", layer=1, return_labels=True),
        call("dec_l1_mlpin", "decompose_resid", layer=1, mlp_input=True, return_labels=True),
        call("dec_l1_mlpin_attn_noembeds_pos-1", "decompose_resid", layer=1, mlp_input=True, mode="attn",
             incl_embeds=False, pos_slice=-1, return_labels=True),
        call("dec_l1_mlpin_mlp", "decompose_resid", layer=1, mlp_input=True, mode="mlp", return_labels=True),
        call("dec_l2_mlpin", "decompose_resid", layer=2, mlp_input=True),
        call("dec_ln_none_posR", "decompose_resid", layer=None, pos_slice=rng_(-1, None), apply_ln=True,
             return_labels=True),
        call("dec_m1_pos-1", "decompose_resid", layer=-1, pos_slice=-1),
        call("dec_ln_m1_pos-1", "decompose_resid", layer=-1, pos_slice=-1, apply_ln=True),
        call("ln_of_dec_m1_pos-1", "apply_ln_to_stack", residual_stack=ref("dec_m1_pos-1"), layer=-1, pos_slice=-1),
        call("dec_ln_l1", "decompose_resid", layer=1, apply_ln=True, return_labels=True),
        call("dec_ln_l1_mlpin", "decompose_resid", layer=1, mlp_input=True, apply_ln=True, return_labels=True),
        call("dec_ln_l0_pos_indices", "decompose_resid", layer=0, apply_ln=True, pos_slice=idx(1, 4)),
        call("dec_pos_range", "decompose_resid", pos_slice=rng_(2, 6)),
        call("dec_pos_indices", "decompose_resid", mode="attn", pos_slice=idx(0, 2, 3)),
        # a logit-lens read-out of the residual stack (the logit_attrs plans cover the rest)
        call("dla_acc_ln", "logit_attrs", residual_stack=ref("acc_m1_mid_pos-1"), tokens=ten(ans0), pos_slice=-1),
    ]


def gpt2_heads_calls(T):
    return [
        call("shr_before_compute_l0", "stack_head_results", layer=0, return_labels=True),
        call("compute", "compute_head_results"),
        get("result0", "blocks.0.attn.hook_result"),
        get("result1", "blocks.1.attn.hook_result"),
        get("result_tuple_1", ["result", 1]),
        get("result_tuple_m1", ["result", -1, "attn"]),
        get("result_short0", "result0"),
        call("compute_again", "compute_head_results"),
        call("shr_default", "stack_head_results"),
        call("shr_labels", "stack_head_results", return_labels=True),
        call("shr_m1", "stack_head_results", layer=-1, return_labels=True),
        call("shr_none", "stack_head_results", layer=None),
        call("shr_l1", "stack_head_results", layer=1, return_labels=True),
        call("shr_l2", "stack_head_results", layer=2),
        call("shr_l0", "stack_head_results", layer=0, return_labels=True),
        call("shr_l0_pos-1", "stack_head_results", layer=0, pos_slice=-1),
        call("shr_l0_pos_indices", "stack_head_results", layer=0, pos_slice=idx(1, 2)),
        call("shr_l1_rem_pos-1", "stack_head_results", layer=1, incl_remainder=True, pos_slice=-1,
             return_labels=True),
        call("shr_l2_rem", "stack_head_results", layer=2, incl_remainder=True, return_labels=True),
        call("shr_l0_rem", "stack_head_results", layer=0, incl_remainder=True, return_labels=True),
        call("shr_l0_rem_pos-1", "stack_head_results", layer=0, incl_remainder=True, pos_slice=-1,
             return_labels=True),
        call("shr_m1_pos-1", "stack_head_results", layer=-1, pos_slice=-1),
        call("shr_ln_m1_pos-1", "stack_head_results", layer=-1, pos_slice=-1, apply_ln=True),
        call("ln_of_shr_m1_pos-1", "apply_ln_to_stack", residual_stack=ref("shr_m1_pos-1"), layer=None,
             pos_slice=-1),
        call("shr_ln_l1", "stack_head_results", layer=1, apply_ln=True, return_labels=True),
        call("shr_ln_l1_rem", "stack_head_results", layer=1, apply_ln=True, incl_remainder=True, pos_slice=-1,
             return_labels=True),
        call("shr_ln_l0_rem", "stack_head_results", layer=0, apply_ln=True, incl_remainder=True),
        call("shr_ln_l0", "stack_head_results", layer=0, apply_ln=True),
        call("shr_pos_range", "stack_head_results", pos_slice=rng_(1, 5)),
        call("shr_pos_indices", "stack_head_results", layer=1, pos_slice=idx(0, 2, 3), incl_remainder=True),
        call("shr_pos0_ln", "stack_head_results", pos_slice=0, apply_ln=True),
        # stack_activation (spec 10.1 case 22)
        call("sa_scale_ln1", "stack_activation", activation_name="scale", layer=-1, sublayer_type="ln1"),
        call("sa_scale_ln1_l1", "stack_activation", activation_name="scale", layer=1, sublayer_type="ln1"),
        call("sa_scale_ln2", "stack_activation", activation_name="scale", sublayer_type="ln2"),
        call("sa_resid_post", "stack_activation", activation_name="resid_post"),
        call("sa_pattern", "stack_activation", activation_name="pattern"),
        call("sa_attn_alias", "stack_activation", activation_name="attn", layer=None),
        call("sa_q", "stack_activation", activation_name="q", layer=2),
        call("sa_post", "stack_activation", activation_name="post", layer=1),
        call("sa_result", "stack_activation", activation_name="result"),
        call("sa_l0", "stack_activation", activation_name="resid_pre", layer=0),
        call("sa_scale_no_type", "stack_activation", activation_name="scale"),
        call("sa_l3", "stack_activation", activation_name="resid_pre", layer=3),
    ]


def gpt2_neuron_calls(T):
    p1 = proj([64], 1)
    p2 = proj([64, 3], 2)
    p4 = proj([64, 4], 3)
    return [
        # get_neuron_results (spec 10.1 cases 28-31)
        call("gnr_l1_n01_pos-1", "get_neuron_results", layer=1, neuron_slice=idx(0, 1), pos_slice=-1),
        call("gnr_l1_nrange01_pos-1", "get_neuron_results", layer=1, neuron_slice=rng_(0, 2), pos_slice=-1),
        call("gnr_l0_pos-1_every8", "get_neuron_results", layer=0, pos_slice=-1, neuron_slice=rng_(None, None, 8)),
        call("gnr_l1_nrange", "get_neuron_results", layer=1, neuron_slice=rng_(0, 8)),
        call("gnr_l0_nrange_step", "get_neuron_results", layer=0, neuron_slice=rng_(10, 20, 2), pos_slice=idx(1, 3)),
        call("gnr_l0_nint", "get_neuron_results", layer=0, neuron_slice=5, pos_slice=-1),
        call("gnr_l1_nint_full", "get_neuron_results", layer=1, neuron_slice=7),
        call("gnr_l1_nidx_posrange", "get_neuron_results", layer=1, neuron_slice=idx(3, 100, 255),
             pos_slice=rng_(2, 6)),
        call("gnr_l1_proj1d", "get_neuron_results", layer=1, project_output_onto=p1),
        call("gnr_l1_proj2d", "get_neuron_results", layer=1, project_output_onto=p2),
        call("gnr_l0_proj1d_pos-1_nidx", "get_neuron_results", layer=0, project_output_onto=p1, pos_slice=-1,
             neuron_slice=idx(0, 5, 9)),
        call("gnr_l0_proj2d_nint", "get_neuron_results", layer=0, project_output_onto=p2, neuron_slice=3),
        call("gnr_l2", "get_neuron_results", layer=2),
        # stack_neuron_results (cases 11-13, 32-33, 36-38)
        call("snr_l1_pos-1", "stack_neuron_results", layer=1, pos_slice=-1, return_labels=True),
        call("snr_l2_n012", "stack_neuron_results", layer=2, neuron_slice=idx(0, 1, 2), return_labels=True),
        call("snr_l2_nrange", "stack_neuron_results", layer=2, neuron_slice=rng_(0, 4), pos_slice=rng_(1, 5),
             return_labels=True),
        call("snr_m1_nrange_step", "stack_neuron_results", layer=-1, neuron_slice=rng_(1, 16, 5), pos_slice=-1,
             return_labels=True),
        call("snr_none_nidx", "stack_neuron_results", layer=None, neuron_slice=idx(255, 0), pos_slice=idx(0, 5),
             return_labels=True),
        call("snr_nint", "stack_neuron_results", layer=2, neuron_slice=3),
        call("snr_l0", "stack_neuron_results", layer=0, return_labels=True),
        call("snr_l0_pos-1", "stack_neuron_results", layer=0, pos_slice=-1),
        call("snr_l0_rem", "stack_neuron_results", layer=0, incl_remainder=True, return_labels=True),
        call("snr_l1_rem_pos-1", "stack_neuron_results", layer=1, incl_remainder=True, pos_slice=-1,
             neuron_slice=rng_(0, 64), return_labels=True),
        call("snr_l2_rem_n012", "stack_neuron_results", layer=2, incl_remainder=True, neuron_slice=idx(0, 1, 2),
             return_labels=True),
        call("snr_m1_pos-1", "stack_neuron_results", layer=-1, pos_slice=-1, neuron_slice=rng_(None, None, 16)),
        call("snr_ln_m1_pos-1", "stack_neuron_results", layer=-1, pos_slice=-1, neuron_slice=rng_(None, None, 16),
             apply_ln=True),
        call("ln_of_snr_m1_pos-1", "apply_ln_to_stack", residual_stack=ref("snr_m1_pos-1"), layer=None,
             pos_slice=-1),
        call("snr_ln_l1_nrange", "stack_neuron_results", layer=1, neuron_slice=rng_(0, 8), apply_ln=True,
             return_labels=True),
        call("snr_ln_l2_rem_nrange", "stack_neuron_results", layer=2, neuron_slice=rng_(0, 16), apply_ln=True,
             incl_remainder=True, pos_slice=rng_(1, 3)),
        call("snr_ln_l0", "stack_neuron_results", layer=0, apply_ln=True),
        call("snr_ln_l0_rem", "stack_neuron_results", layer=0, apply_ln=True, incl_remainder=True, pos_slice=-1),
        # projections, unfused
        call("snr_proj1d_l2_pos-1", "stack_neuron_results", layer=2, pos_slice=-1, project_output_onto=p1,
             return_labels=True),
        call("snr_proj2d_l2_pos-1", "stack_neuron_results", layer=2, pos_slice=-1, project_output_onto=p4),
        call("snr_proj1d_l2", "stack_neuron_results", layer=2, project_output_onto=p1),
        call("snr_proj1d_rem", "stack_neuron_results", layer=2, pos_slice=-1, project_output_onto=p1,
             incl_remainder=True, return_labels=True),
        call("snr_proj2d_rem_nidx", "stack_neuron_results", layer=1, neuron_slice=idx(1, 2, 3),
             project_output_onto=p2, incl_remainder=True),
        call("snr_proj1d_l0", "stack_neuron_results", layer=0, project_output_onto=p1),
        call("snr_proj2d_l0_rem", "stack_neuron_results", layer=0, project_output_onto=p2, incl_remainder=True),
        # apply_ln + projection: the fused path
        call("snr_ln_proj1d_l2_pos-1", "stack_neuron_results", layer=2, pos_slice=-1, apply_ln=True,
             project_output_onto=p1),
        call("snr_ln_proj2d_l2_pos-1", "stack_neuron_results", layer=2, pos_slice=-1, apply_ln=True,
             project_output_onto=p2),
        call("snr_ln_proj1d_rem", "stack_neuron_results", layer=2, pos_slice=-1, apply_ln=True,
             project_output_onto=p1, incl_remainder=True, return_labels=True),
        call("snr_ln_proj2d_l1_nidx", "stack_neuron_results", layer=1, neuron_slice=idx(0, 10, 20), apply_ln=True,
             project_output_onto=p2),
        call("snr_ln_proj1d_l2_full", "stack_neuron_results", layer=2, apply_ln=True, project_output_onto=p1),
        call("snr_ln_proj2d_l0", "stack_neuron_results", layer=0, apply_ln=True, project_output_onto=p2),
        call("snr_ln_proj1d_l0_rem", "stack_neuron_results", layer=0, apply_ln=True, project_output_onto=p1,
             incl_remainder=True, return_labels=True),
    ]


def gpt2_decomp_calls(T):
    p1 = proj([64], 11)
    p2 = proj([64, 2], 12)
    return [
        call("frd_l0", "get_full_resid_decomposition", layer=0, return_labels=True),
        call("frd_l0_mlpin", "get_full_resid_decomposition", layer=0, mlp_input=True, return_labels=True),
        call("frd_l0_mlpin_noexp", "get_full_resid_decomposition", layer=0, mlp_input=True, expand_neurons=False),
        call("frd_l1_noexp", "get_full_resid_decomposition", layer=1, expand_neurons=False, return_labels=True),
        call("frd_l1_exp_pos-1", "get_full_resid_decomposition", layer=1, pos_slice=-1, return_labels=True),
        call("frd_l1_mlpin_noexp", "get_full_resid_decomposition", layer=1, mlp_input=True, expand_neurons=False,
             return_labels=True),
        call("frd_l1_mlpin_exp_proj2d", "get_full_resid_decomposition", layer=1, mlp_input=True,
             project_output_onto=p2, return_labels=True),
        call("frd_l1_mlpin_noexp_ln", "get_full_resid_decomposition", layer=1, mlp_input=True,
             expand_neurons=False, apply_ln=True),
        call("frd_m1_noexp_ln_pos-1", "get_full_resid_decomposition", layer=-1, expand_neurons=False, apply_ln=True,
             pos_slice=-1, return_labels=True),
        call("frd_none_noexp", "get_full_resid_decomposition", layer=None, expand_neurons=False, return_labels=True),
        call("frd_l2_noexp_posrange", "get_full_resid_decomposition", layer=2, expand_neurons=False,
             pos_slice=rng_(2, 5)),
        call("frd_l2_mlpin", "get_full_resid_decomposition", layer=2, mlp_input=True),
        # projections (cases 34-35, 39-40)
        call("frd_l2_proj1d_pos-1", "get_full_resid_decomposition", layer=2, pos_slice=-1, project_output_onto=p1,
             return_labels=True),
        call("frd_l2_proj2d_pos-1", "get_full_resid_decomposition", layer=2, pos_slice=-1, project_output_onto=p2),
        call("frd_l2_proj1d", "get_full_resid_decomposition", layer=2, project_output_onto=p1),
        call("frd_l2_noexp_proj2d", "get_full_resid_decomposition", layer=2, expand_neurons=False,
             project_output_onto=p2, return_labels=True),
        call("frd_l2_ln_proj1d_pos-1", "get_full_resid_decomposition", layer=2, pos_slice=-1, apply_ln=True,
             project_output_onto=p1),
        call("frd_l2_ln_proj2d_pos-1", "get_full_resid_decomposition", layer=2, pos_slice=-1, apply_ln=True,
             project_output_onto=p2),
        call("frd_l2_noexp_ln_proj2d", "get_full_resid_decomposition", layer=2, expand_neurons=False, apply_ln=True,
             project_output_onto=p2),
        call("frd_l1_ln_proj1d", "get_full_resid_decomposition", layer=1, apply_ln=True, project_output_onto=p1),
        call("frd_l1_mlpin_ln_proj1d", "get_full_resid_decomposition", layer=1, mlp_input=True, apply_ln=True,
             project_output_onto=p1),
        call("frd_l0_ln_proj2d", "get_full_resid_decomposition", layer=0, apply_ln=True, project_output_onto=p2,
             return_labels=True),
        # a piece case 23 compares against
        call("dec_mlp_ln_pos-1", "decompose_resid", mode="mlp", apply_ln=True, pos_slice=-1, incl_embeds=False),
    ]


def gpt2_dla_calls(T):
    ans = T["answers"]
    ans0 = [a[0] for a in ans]
    ans1 = [a[1] for a in ans]
    B = len(ans)
    full_tok = [[(7 * b + 3 * p) % 512 for p in range(6)] for b in range(B)]
    return [
        call("acc", "accumulated_resid", layer=-1, incl_mid=True, pos_slice=-1, return_labels=True),
        call("acc_full", "accumulated_resid", incl_mid=True, return_labels=True),
        call("dec", "decompose_resid", pos_slice=-1, return_labels=True),
        call("shr", "stack_head_results", pos_slice=-1),
        call("frd", "get_full_resid_decomposition", expand_neurons=False, pos_slice=-1),
        # case 1: logit difference
        call("la_diff", "logit_attrs", residual_stack=ref("acc"), tokens=ten(ans0), incorrect_tokens=ten(ans1),
             pos_slice=-1),
        call("ln_ref_case1", "apply_ln_to_stack", residual_stack=ref("acc"), layer=-1, pos_slice=-1),
        # case 4 and friends: every token input shape
        call("la_tensor_B", "logit_attrs", residual_stack=ref("acc"), tokens=ten(ans0), pos_slice=-1),
        call("la_int", "logit_attrs", residual_stack=ref("acc"), tokens=T["mary"], pos_slice=-1),
        call("la_int_incorrect_int", "logit_attrs", residual_stack=ref("acc"), tokens=T["mary"],
             incorrect_tokens=T["john"], pos_slice=-1),
        call("la_str", "logit_attrs", residual_stack=ref("acc"), tokens=" Mary", pos_slice=-1),
        call("la_str_incorrect_str", "logit_attrs", residual_stack=ref("acc"), tokens=" Mary",
             incorrect_tokens=" John", pos_slice=-1),
        call("la_str_not_single", "logit_attrs", residual_stack=ref("acc"), tokens=" Mary John", pos_slice=-1),
        call("la_tensor_0d", "logit_attrs", residual_stack=ref("acc"), tokens=ten(T["tom"]), pos_slice=-1),
        call("la_tensor_1elem", "logit_attrs", residual_stack=ref("acc"), tokens=ten([T["tom"]]), pos_slice=-1),
        call("la_full_BP", "logit_attrs", residual_stack=ref("acc_full"), tokens=ten(full_tok)),
        call("la_full_int", "logit_attrs", residual_stack=ref("acc_full"), tokens=T["mary"],
             incorrect_tokens=T["tom"]),
        call("la_batch_int_tensor0d", "logit_attrs", residual_stack=ref("acc"), tokens=ten(ans0[-1]),
             incorrect_tokens=ten(ans1[-1]), batch_slice=-1, pos_slice=-1),
        call("la_batch_range_int", "logit_attrs", residual_stack=ref("acc"), tokens=T["mary"],
             incorrect_tokens=T["john"], batch_slice=rng_(-1, None), pos_slice=-1),
        call("la_batch_int_str", "logit_attrs", residual_stack=ref("acc"), tokens=" Mary", incorrect_tokens=" John",
             batch_slice=-1, pos_slice=-1),
        call("la_batch_list", "logit_attrs", residual_stack=ref("acc"), tokens=ten([ans0[1], ans0[0]]),
             incorrect_tokens=ten([ans1[1], ans1[0]]), batch_slice=idx(1, 0), pos_slice=-1),
        call("la_shape_mismatch", "logit_attrs", residual_stack=ref("acc"), tokens=ten(ans0),
             incorrect_tokens=ten([[a] for a in ans1]), pos_slice=-1),
        call("la_no_incorrect", "logit_attrs", residual_stack=ref("acc"), tokens=ten(ans0), pos_slice=-1),
        call("la_dec", "logit_attrs", residual_stack=ref("dec"), tokens=ten(ans0), incorrect_tokens=ten(ans1),
             pos_slice=-1),
        call("la_shr", "logit_attrs", residual_stack=ref("shr"), tokens=ten(ans0), incorrect_tokens=ten(ans1),
             pos_slice=-1),
        call("la_frd", "logit_attrs", residual_stack=ref("frd"), tokens=ten(ans0), incorrect_tokens=ten(ans1),
             pos_slice=-1),
        call("la_pos_none_with_pos-1_stack", "logit_attrs", residual_stack=ref("acc"), tokens=ten(ans0)),
        call("la_full_pos_range", "logit_attrs", residual_stack=ref("acc_full"), tokens=T["mary"],
             pos_slice=rng_(0, 6)),
        call("la_has_batch_false", "logit_attrs", residual_stack=ref("acc"), tokens=T["mary"], pos_slice=-1,
             has_batch_dim=False),
    ]


def gpt2_getitem_calls(T):
    keys = [
        ("k1", "k1"), ("q0", "q0"), ("v1", "v1"), ("z0", "z0"), ("pattern1", "pattern1"), ("attn0", "attn0"),
        ("attn_scores1", "attn_scores1"), ("pre0", "pre0"), ("post1", "post1"), ("mid0", "mid0"),
        ("scale0ln1", "scale0ln1"), ("scale1ln2", "scale1ln2"), ("normalized0ln2", "normalized0ln2"),
        ("pattern1a", "pattern1a"), ("k0attn", "k0attn"), ("scale", "scale"), ("normalized", "normalized"),
        ("embed", "embed"), ("pos_embed", "pos_embed"), ("hook_embed", "hook_embed"),
        ("full_pattern", "blocks.0.attn.hook_pattern"), ("full_ln_final_scale", "ln_final.hook_scale"),
        ("full_unembed_in", "unembed.hook_in"), ("full_unembed_out", "unembed.hook_out"),
        ("resid_pre1_str", "resid_pre1"), ("mlp_pre1_str", "mlp_pre1"), ("mlp_out0_str", "mlp_out0"),
        ("resid_pre_nolayer", "resid_pre"), ("k6_str", "k6"), ("missing_full", "blocks.0.hook_nothing"),
        ("t_resid_pre_1", ["resid_pre", 1]), ("t_resid_mid_0", ["resid_mid", 0]), ("t_resid_post_m1", ["resid_post", -1]),
        ("t_resid_post_m2", ["resid_post", -2]), ("t_resid_post_m3", ["resid_post", -3]),
        ("t_k_m1", ["k", -1]), ("t_k_m1_none", ["k", -1, None]), ("t_scale_1_ln1", ["scale", 1, "ln1"]),
        ("t_scale_m1_ln1", ["scale", -1, "ln1"]), ("t_scale_0_ln2", ["scale", 0, "ln2"]),
        ("t_normalized_1_ln2", ["normalized", 1, "ln2"]), ("t_scale_0", ["scale", 0]),
        ("t_scale_none_ln1", ["scale", None, "ln1"]), ("t_attn_0", ["attn", 0]), ("t_attn_logits_1", ["attn_logits", 1]),
        ("t_attn_scores_0", ["attn_scores", 0]), ("t_attn_out_1_block", ["attn_out", 1, "block"]),
        ("t_mlp_out_0_b", ["mlp_out", 0, "b"]), ("t_resid_pre_0_blocks", ["resid_pre", 0, "blocks"]),
        ("t_q_1_mlp", ["q", 1, "mlp"]), ("t_pre_1", ["pre", 1]), ("t_post_0_m", ["post", 0, "m"]),
        ("t_mid_1", ["mid", 1]), ("t_pre_linear_0", ["pre_linear", 0]), ("t_key_0", ["key", 0]),
        ("t_query_1", ["query", 1]), ("t_value_0", ["value", 0]), ("t_mlp_pre_1", ["mlp_pre", 1]),
        ("t_mlp_post_0", ["mlp_post", 0]), ("t_mlp_mid_0", ["mlp_mid", 0]), ("t_pattern_0_a", ["pattern", 0, "a"]),
        ("t_z_1_attention", ["z", 1, "attention"]), ("t_embed", ["embed"]), ("t_embed_none", ["embed", None]),
        ("t_pos_embed", ["pos_embed"]), ("t_scale", ["scale"]), ("t_normalized_none_none", ["normalized", None, None]),
        ("t_k6_3", ["k6", 3]), ("t_k1_0", ["k1", 0]), ("t_resid_pre_2", ["resid_pre", 2]),
        ("t_hook_embed", ["hook_embed"]), ("t_full_name_with_layer", ["blocks.0.hook_resid_pre", 0]),
        ("t_rot_q_0", ["rot_q", 0]), ("t_result_0", ["result", 0]),
    ]
    return [get("gi_" + cid, k) for cid, k in keys]


def gpt2_batch_calls(T):
    ans0 = [a[0] for a in T["answers3"]]
    return [
        call("rbd_batch3", "remove_batch_dim"),  # AssertionError: batch size 3 (spec 10.1 case 15)
        get("before_resid_post1", ["resid_post", 1]),
        call("slice_1_3", "apply_slice_to_batch_dim", batch_slice=rng_(1, 3)),
        get("s13_resid_post1", ["resid_post", 1]),
        get("s13_pattern0", "pattern0"),
        call("s13_acc_ln_pos-1", "accumulated_resid", incl_mid=True, apply_ln=True, pos_slice=-1, return_labels=True),
        call("s13_acc_ln_l1", "accumulated_resid", layer=1, apply_ln=True),
        call("s13_dec_ln", "decompose_resid", apply_ln=True, pos_slice=-1),
        call("s13_shr", "stack_head_results", pos_slice=-1, incl_remainder=True, return_labels=True),
        call("s13_snr_proj", "stack_neuron_results", layer=2, pos_slice=-1, apply_ln=True,
             project_output_onto=proj([64], 21)),
        call("s13_frd", "get_full_resid_decomposition", expand_neurons=False, apply_ln=True, pos_slice=-1),
        call("s13_la", "logit_attrs", residual_stack=ref("s13_acc_ln_pos-1"), tokens=ten(ans0[1:3]), pos_slice=-1),
        call("s13_ln_batch0", "apply_ln_to_stack", residual_stack=ref("s13_dec_ln"), pos_slice=-1, batch_slice=0),
        call("slice_indices", "apply_slice_to_batch_dim", batch_slice=idx(1, 0)),
        get("sidx_resid_post1", ["resid_post", 1]),
        call("sidx_acc", "accumulated_resid", layer=1, incl_mid=True, mlp_input=True, pos_slice=rng_(2, 4)),
        call("sidx_rbd", "remove_batch_dim"),  # batch 2: AssertionError
        call("slice_int", "apply_slice_to_batch_dim", batch_slice=0),  # batch-less from here on
        get("int_resid_post1", ["resid_post", 1]),
        get("int_scale", "scale"),
        call("int_acc", "accumulated_resid", incl_mid=True, return_labels=True),
        call("int_acc_ln_pos-1", "accumulated_resid", incl_mid=True, apply_ln=True, pos_slice=-1),
        call("int_acc_ln_full", "accumulated_resid", apply_ln=True),
        call("int_acc_ln_l1_pos-1", "accumulated_resid", layer=1, apply_ln=True, pos_slice=-1),
        call("int_dec", "decompose_resid", apply_ln=True, return_labels=True),
        call("int_shr", "stack_head_results", layer=1, incl_remainder=True, apply_ln=True, pos_slice=-1),
        call("int_gnr", "get_neuron_results", layer=0, neuron_slice=rng_(0, 3), pos_slice=-1),
        call("int_la", "logit_attrs", residual_stack=ref("int_acc"), tokens=T["mary"], has_batch_dim=False),
        call("int_la_pos-1", "logit_attrs", residual_stack=ref("int_acc_ln_pos-1"), tokens=T["mary"],
             pos_slice=-1, has_batch_dim=False),
        call("int_slice_again", "apply_slice_to_batch_dim", batch_slice=0),  # quirk 4: AssertionError
        call("int_slice_none", "apply_slice_to_batch_dim", batch_slice=None),  # quirk 4: AssertionError
        call("int_rbd", "remove_batch_dim"),  # already batch-less: warning, no change
        get("int_after_rbd_resid_post1", ["resid_post", 1]),
    ]


def gpt2_batchless_calls(T):
    p1 = proj([64], 31)
    p2 = proj([64, 3], 32)
    return [
        call("rbd", "remove_batch_dim"),  # batch 1 -> batch-less (spec 10.1 case 14)
        get("resid_post1", ["resid_post", 1]),
        get("pattern0", "pattern0"),
        get("scale0ln1", "scale0ln1"),
        call("rbd_again", "remove_batch_dim"),  # no change
        get("resid_post1_again", ["resid_post", 1]),
        call("acc", "accumulated_resid", incl_mid=True, return_labels=True),
        call("acc_pos-1", "accumulated_resid", incl_mid=True, pos_slice=-1),
        call("acc_ln", "accumulated_resid", incl_mid=True, apply_ln=True),
        call("acc_ln_pos-1", "accumulated_resid", incl_mid=True, apply_ln=True, pos_slice=-1),  # #1677 path
        call("acc_ln_pos_range", "accumulated_resid", apply_ln=True, pos_slice=rng_(2, 5)),
        call("acc_ln_l1_pos-1", "accumulated_resid", layer=1, mlp_input=True, apply_ln=True, pos_slice=-1),
        call("acc_ln_l1_pos_idx", "accumulated_resid", layer=1, apply_ln=True, pos_slice=idx(0, 3)),
        call("ln_recompute_pos-1", "apply_ln_to_stack", residual_stack=ref("acc_pos-1"), pos_slice=-1,
             recompute_ln=True, has_batch_dim=False),
        call("ln_recompute_pos-1_hasbatch", "apply_ln_to_stack", residual_stack=ref("acc_pos-1"), pos_slice=-1,
             recompute_ln=True),
        call("ln_cached_pos-1", "apply_ln_to_stack", residual_stack=ref("acc_pos-1"), pos_slice=-1,
             has_batch_dim=False),
        call("ln_l1_full", "apply_ln_to_stack", residual_stack=ref("acc"), layer=1, has_batch_dim=False),
        call("ln_l1_full_batch0", "apply_ln_to_stack", residual_stack=ref("acc"), layer=1, batch_slice=0),
        call("dec", "decompose_resid", return_labels=True),
        call("dec_ln_pos-1", "decompose_resid", apply_ln=True, pos_slice=-1),
        call("dec_ln_l1_mlpin", "decompose_resid", layer=1, mlp_input=True, apply_ln=True),
        call("compute", "compute_head_results"),
        get("result1", ["result", 1]),
        call("shr", "stack_head_results", return_labels=True),
        call("shr_rem_ln_pos-1", "stack_head_results", layer=1, incl_remainder=True, apply_ln=True, pos_slice=-1),
        call("shr_l0", "stack_head_results", layer=0),
        call("shr_l0_rem", "stack_head_results", layer=0, incl_remainder=True),
        call("sa_scale_ln2", "stack_activation", activation_name="scale", sublayer_type="ln2"),
        call("gnr_l1_pos-1", "get_neuron_results", layer=1, neuron_slice=idx(0, 1), pos_slice=-1),
        call("gnr_l0_proj2d", "get_neuron_results", layer=0, neuron_slice=rng_(0, 8), project_output_onto=p2),
        call("snr_nrange", "stack_neuron_results", layer=2, neuron_slice=rng_(0, 4), incl_remainder=True,
             return_labels=True),
        call("snr_ln_nrange_pos-1", "stack_neuron_results", layer=2, neuron_slice=rng_(0, 4), apply_ln=True,
             pos_slice=-1),
        call("snr_ln_proj1d", "stack_neuron_results", layer=2, apply_ln=True, project_output_onto=p1,
             incl_remainder=True),
        call("snr_ln_proj2d_pos-1", "stack_neuron_results", layer=1, apply_ln=True, project_output_onto=p2,
             pos_slice=-1),
        call("frd_noexp", "get_full_resid_decomposition", expand_neurons=False, return_labels=True),
        call("frd_noexp_ln_pos-1", "get_full_resid_decomposition", expand_neurons=False, apply_ln=True,
             pos_slice=-1),
        call("frd_ln_proj2d", "get_full_resid_decomposition", layer=1, apply_ln=True, project_output_onto=p2),
        call("frd_l0_pos-1", "get_full_resid_decomposition", layer=0, pos_slice=-1, return_labels=True),
        call("la_acc_ln_pos-1", "logit_attrs", residual_stack=ref("acc_pos-1"), tokens=T["mary"],
             incorrect_tokens=T["john"], pos_slice=-1, has_batch_dim=False),
        call("la_acc_full_tensorP", "logit_attrs", residual_stack=ref("acc"), tokens=ten(T["one"][0]),
             has_batch_dim=False),
        call("la_acc_full_default_hasbatch", "logit_attrs", residual_stack=ref("acc"), tokens=T["mary"]),
        call("la_frd_str", "logit_attrs", residual_stack=ref("frd_noexp"), tokens=" Mary", has_batch_dim=False),
        call("slice_fails", "apply_slice_to_batch_dim", batch_slice=None),  # quirk 4
    ]


def filtered_calls(T):
    return [
        get("pattern1", "pattern1"),
        get("resid_pre0", ["resid_pre", 0]),
        get("scale", "scale"),
        get("missing_embed", "embed"),
        call("acc", "accumulated_resid"),
        call("acc_l0", "accumulated_resid", layer=0),
        call("dec_l0", "decompose_resid", layer=0),
        call("dec_l1", "decompose_resid", layer=1),
        call("compute", "compute_head_results"),
        call("shr_l0", "stack_head_results", layer=0),
        call("snr_l0", "stack_neuron_results", layer=0),
        call("snr_l0_rem", "stack_neuron_results", layer=0, incl_remainder=True),
        call("sa_pattern", "stack_activation", activation_name="pattern"),
        call("sa_pattern_l1", "stack_activation", activation_name="pattern", layer=1),
        call("sa_resid_pre_l1", "stack_activation", activation_name="resid_pre", layer=1),
        call("ln_l0", "apply_ln_to_stack", residual_stack=ref("sa_resid_pre_l1"), layer=0),
        call("ln_final_cached", "apply_ln_to_stack", residual_stack=ref("sa_resid_pre_l1")),
        call("ln_final_recompute", "apply_ln_to_stack", residual_stack=ref("sa_resid_pre_l1"), recompute_ln=True),
        call("la", "logit_attrs", residual_stack=ref("sa_resid_pre_l1"), tokens=T["mary"]),
        call("frd_l0", "get_full_resid_decomposition", layer=0),
    ]


def stop_calls(T):
    p1 = proj([64], 41)
    return [
        get("resid_post0", ["resid_post", 0]),
        get("missing_resid_pre1", ["resid_pre", 1]),
        get("missing_scale", "scale"),
        get("k_m1", ["k", -1]),  # negative layers count from the model's n_layers: block 1, absent
        call("acc", "accumulated_resid"),
        call("acc_l0_mlpin", "accumulated_resid", layer=0, mlp_input=True, return_labels=True),
        call("acc_l0_mlpin_ln", "accumulated_resid", layer=0, mlp_input=True, apply_ln=True),
        call("acc_l1", "accumulated_resid", layer=1),
        call("dec_l1", "decompose_resid", layer=1, return_labels=True),
        call("dec_l1_ln", "decompose_resid", layer=1, apply_ln=True),
        call("dec_l0_mlpin_ln", "decompose_resid", layer=0, mlp_input=True, apply_ln=True, return_labels=True),
        call("compute", "compute_head_results"),
        get("result0_after_failed_compute", ["result", 0]),
        call("shr_l1", "stack_head_results", layer=1),
        call("gnr_l0", "get_neuron_results", layer=0, neuron_slice=idx(0, 1, 2)),
        call("snr_l1_rem_pos-1", "stack_neuron_results", layer=1, incl_remainder=True, pos_slice=-1,
             neuron_slice=rng_(0, 32), return_labels=True),
        call("snr_l1_proj", "stack_neuron_results", layer=1, project_output_onto=p1),
        call("snr_l1_ln_proj", "stack_neuron_results", layer=1, apply_ln=True, project_output_onto=p1),
        call("sa_resid_post_l1", "stack_activation", activation_name="resid_post", layer=1),
        call("sa_resid_post", "stack_activation", activation_name="resid_post"),
        call("ln_l0", "apply_ln_to_stack", residual_stack=ref("dec_l1"), layer=0),
        call("la", "logit_attrs", residual_stack=ref("dec_l1"), tokens=T["mary"]),
        call("frd_l0", "get_full_resid_decomposition", layer=0, return_labels=True),
        call("frd_l1", "get_full_resid_decomposition", layer=1, expand_neurons=False),
    ]


def pos_slice_calls(T, p_after):
    """Calls on a cache made with run.pos_slice (p_after = positions kept)."""
    return [
        call("acc", "accumulated_resid", incl_mid=True, return_labels=True),
        call("acc_ln", "accumulated_resid", incl_mid=True, apply_ln=True),
        call("acc_ln_l1", "accumulated_resid", layer=1, apply_ln=True),
        call("dec", "decompose_resid", return_labels=True),
        call("shr", "stack_head_results", incl_remainder=True, return_labels=True),
        call("snr_nrange", "stack_neuron_results", layer=2, neuron_slice=rng_(0, 4), apply_ln=True),
        call("frd_noexp", "get_full_resid_decomposition", expand_neurons=False, apply_ln=True),
        call("la", "logit_attrs", residual_stack=ref("acc"), tokens=T["mary"]),
        call("acc_pos0", "accumulated_resid", apply_ln=True, pos_slice=0),
    ]


def proc_none_calls(T):
    ans0 = [a[0] for a in T["answers"][:2]]
    return [
        call("acc_ln_pos-1", "accumulated_resid", incl_mid=True, apply_ln=True, pos_slice=-1, return_labels=True),
        call("acc_ln_full", "accumulated_resid", apply_ln=True),
        call("acc_ln_l1", "accumulated_resid", layer=1, incl_mid=True, apply_ln=True),
        call("dec_ln", "decompose_resid", apply_ln=True, return_labels=True),
        call("shr_ln", "stack_head_results", apply_ln=True, incl_remainder=True, pos_slice=-1),
        call("snr_ln_proj", "stack_neuron_results", layer=2, apply_ln=True, pos_slice=-1,
             project_output_onto=proj([64], 51)),
        call("frd", "get_full_resid_decomposition", pos_slice=-1, expand_neurons=False, return_labels=True),
        call("frd_ln_proj", "get_full_resid_decomposition", apply_ln=True, pos_slice=-1,
             project_output_onto=proj([64, 2], 52)),
        call("la", "logit_attrs", residual_stack=ref("acc_ln_pos-1"), tokens=ten(ans0), pos_slice=-1),
    ]


def tl_common_calls(n_vocab_out: int, d_model: int, seed: int):
    t0, t1 = 3, min(17, n_vocab_out - 1)
    return [
        call("acc", "accumulated_resid", incl_mid=True, return_labels=True),
        call("acc_pos-1", "accumulated_resid", incl_mid=True, pos_slice=-1, return_labels=True),
        call("acc_ln_pos-1", "accumulated_resid", incl_mid=True, apply_ln=True, pos_slice=-1),
        call("acc_ln_full", "accumulated_resid", apply_ln=True),
        call("acc_ln_l1", "accumulated_resid", layer=1, incl_mid=True, apply_ln=True, pos_slice=-1),
        call("acc_ln_l1_mlpin", "accumulated_resid", layer=1, mlp_input=True, apply_ln=True, pos_slice=idx(0, 5)),
        call("ln_cached_pos-1", "apply_ln_to_stack", residual_stack=ref("acc_pos-1"), pos_slice=-1),
        call("ln_recompute_pos-1", "apply_ln_to_stack", residual_stack=ref("acc_pos-1"), pos_slice=-1,
             recompute_ln=True),
        call("ln_batch1", "apply_ln_to_stack", residual_stack=ref("acc"), layer=1, batch_slice=1),
        call("dec", "decompose_resid", pos_slice=-1, return_labels=True),
        call("dec_ln", "decompose_resid", apply_ln=True, pos_slice=-1),
        call("dec_ln_l1_mlpin", "decompose_resid", layer=1, mlp_input=True, apply_ln=True, pos_slice=idx(0, 5),
             return_labels=True),
        call("shr", "stack_head_results", incl_remainder=True, pos_slice=rng_(4, None), return_labels=True),
        call("shr_ln_pos-1", "stack_head_results", apply_ln=True, pos_slice=-1),
        call("shr_l0_rem", "stack_head_results", layer=0, incl_remainder=True),
        call("gnr_l1", "get_neuron_results", layer=1, neuron_slice=rng_(0, 4), pos_slice=-1),
        call("snr", "stack_neuron_results", layer=-1, pos_slice=-1, incl_remainder=True, return_labels=True),
        call("snr_ln", "stack_neuron_results", layer=-1, pos_slice=-1, neuron_slice=rng_(None, None, 4),
             apply_ln=True),
        call("snr_ln_proj1d", "stack_neuron_results", layer=2, apply_ln=True, project_output_onto=proj([d_model], seed),
             incl_remainder=True),
        call("snr_ln_proj2d_l1", "stack_neuron_results", layer=1, apply_ln=True,
             project_output_onto=proj([d_model, 2], seed + 1), pos_slice=-1),
        call("frd", "get_full_resid_decomposition", pos_slice=-1, return_labels=True),
        call("frd_noexp_ln", "get_full_resid_decomposition", expand_neurons=False, apply_ln=True, pos_slice=-1,
             return_labels=True),
        call("frd_l1_mlpin_ln", "get_full_resid_decomposition", layer=1, mlp_input=True, apply_ln=True,
             pos_slice=-1),
        call("frd_ln_proj1d", "get_full_resid_decomposition", apply_ln=True, project_output_onto=proj([d_model], seed + 2)),
        call("frd_l1_mlpin_ln_proj1d", "get_full_resid_decomposition", layer=1, mlp_input=True, apply_ln=True,
             pos_slice=-1, project_output_onto=proj([d_model], seed + 2)),
        call("la", "logit_attrs", residual_stack=ref("acc_pos-1"), tokens=ten([t0, t1]), incorrect_tokens=ten([t1, t0]),
             pos_slice=-1),
        call("la_batch1", "logit_attrs", residual_stack=ref("acc_pos-1"), tokens=t0, pos_slice=-1, batch_slice=1),
        call("la_full", "logit_attrs", residual_stack=ref("acc"), tokens=t1),
        call("la_frd", "logit_attrs", residual_stack=ref("frd"), tokens=ten([t0, t1]), pos_slice=-1),
    ]


def tl_attnonly_calls():
    return [
        get("missing_result0", "blocks.0.attn.hook_result"),
        call("compute", "compute_head_results"),
        get("result0", "blocks.0.attn.hook_result"),
        call("compute_again", "compute_head_results"),  # case 27: not recomputed
        get("result0_again", "blocks.0.attn.hook_result"),
        call("shr_l1", "stack_head_results", layer=1, return_labels=True),
        call("shr_l1_pos-1", "stack_head_results", layer=1, pos_slice=-1),
        call("shr_rem_ln", "stack_head_results", incl_remainder=True, apply_ln=True, pos_slice=-1, return_labels=True),
        call("frd_l1_noexp", "get_full_resid_decomposition", layer=1, expand_neurons=False, return_labels=True),
        call("frd_l1_noexp_pos-1", "get_full_resid_decomposition", layer=1, expand_neurons=False, pos_slice=-1),
        call("frd_l1_exp", "get_full_resid_decomposition", layer=1),  # quirk 7: AttributeError
        call("frd_l0_exp", "get_full_resid_decomposition", layer=0, return_labels=True),
        call("frd_noexp_ln", "get_full_resid_decomposition", expand_neurons=False, apply_ln=True, return_labels=True),
        call("frd_noexp_proj_ln", "get_full_resid_decomposition", expand_neurons=False, apply_ln=True,
             project_output_onto=proj([32], 61)),
        call("frd_l1_mlpin_noexp", "get_full_resid_decomposition", layer=1, mlp_input=True, expand_neurons=False),
        call("acc", "accumulated_resid", return_labels=True),
        call("acc_mid", "accumulated_resid", incl_mid=True),  # no resid_mid: KeyError
        call("acc_ln_pos-1", "accumulated_resid", apply_ln=True, pos_slice=-1),
        call("acc_ln_l1", "accumulated_resid", layer=1, apply_ln=True),
        call("acc_ln_l1_mlpin", "accumulated_resid", layer=1, apply_ln=True, mlp_input=True),
        call("dec", "decompose_resid", return_labels=True),
        call("dec_mlp", "decompose_resid", mode="mlp", return_labels=True),
        call("dec_ln_l1_mlpin", "decompose_resid", layer=1, mlp_input=True, apply_ln=True, return_labels=True),
        call("gnr", "get_neuron_results", layer=0),
        call("snr", "stack_neuron_results", layer=1),
        call("snr_l0", "stack_neuron_results", layer=0, return_labels=True),
        call("sa_pattern", "stack_activation", activation_name="pattern"),
        get("missing_resid_mid0", ["resid_mid", 0]),
        call("la", "logit_attrs", residual_stack=ref("acc"), tokens=ten([[3] * 6, [17] * 6])),
    ]


def tl_solu_calls():
    return [
        get("mid0", "mid0"),
        get("t_mid_1", ["mid", 1]),
        get("mlp_ln_scale0", "blocks.0.mlp.ln.hook_scale"),
        get("mlp_ln_normalized1", "blocks.1.mlp.ln.hook_normalized"),
        get("t_scale_0_mlp.ln", ["scale", 0, "mlp.ln"]),
        get("t_mlp_mid_1", ["mlp_mid", 1]),
        call("sa_mid", "stack_activation", activation_name="mid"),
    ]


def tl_ln_relu_calls():
    return [
        get("result0_from_run", "blocks.0.attn.hook_result"),
        call("compute", "compute_head_results"),  # use_attn_result: already cached, returns early
        get("result1", ["result", 1]),
    ]


def tl_none_calls():
    return [
        call("ln_noop_batch", "apply_ln_to_stack", residual_stack=ref("acc"), batch_slice=0),
        call("ln_noop_l1_mlpin", "apply_ln_to_stack", residual_stack=ref("acc"), layer=1, mlp_input=True),
        call("ln_noop_recompute", "apply_ln_to_stack", residual_stack=ref("acc"), recompute_ln=True),
        get("missing_scale", "scale"),
    ]


def build_plans():
    T = hf_tokens()
    plans = {}

    # ---- full runs -----------------------------------------------------------------------------------------------
    plans["gpt2-tiny.full"] = plan(HF, T["full"], comment="gpt2-tiny, from_pretrained default processing, full cache")
    plans["gpt2-tiny-f16.full"] = plan(HF16, T["full"], comment="float16 checkpoint, upcast to f32 on load")
    plans["gpt2-tiny-bf16.full"] = plan(HFBF16, T["full"], comment="bfloat16 checkpoint, upcast to f32 on load")
    for name in TL_NAMES:
        plans[f"{name}.full"] = plan(tl(name), TL_TOKENS, comment=f"{name}: TL state dict as is, full cache")

    # ---- weight processing ---------------------------------------------------------------------------------------
    plans["gpt2-tiny.proc-none"] = plan(
        HF, T["full"], processing=ALL_OFF, calls=proc_none_calls(T),
        comment="no processing: unprocessed logits equal the HF model's (golden gpt2-tiny.hf-logits); "
                "apply_ln with unfolded LayerNorm")
    for flag in ("fold_ln", "center_writing_weights", "center_unembed", "fold_value_biases"):
        plans[f"gpt2-tiny.proc-{flag.replace('_', '-')}"] = plan(
            HF, T["full"], processing=only(flag), comment=f"only {flag}")
    plans["tl-ln-relu.proc-all"] = plan(
        tl("tl-ln-relu"), TL_TOKENS, processing={k: True for k in ALL_OFF},
        calls=[call("acc_ln", "accumulated_resid", incl_mid=True, apply_ln=True, pos_slice=-1)],
        comment="all four processing flags on a TL state dict (LN -> LNPre), d_vocab_out != d_vocab")
    plans["tl-rms-silu.proc-all"] = plan(
        tl("tl-rms-silu"), TL_TOKENS, processing={k: True for k in ALL_OFF},
        calls=[call("acc_ln", "accumulated_resid", incl_mid=True, apply_ln=True, pos_slice=-1)],
        comment="all four processing flags on an RMS model (RMS -> RMSPre; no centring)")

    # ---- run options ---------------------------------------------------------------------------------------------
    plans["gpt2-tiny.run-names-filter"] = plan(
        HF, T["full"],
        run={"names_filter": ["blocks.0.hook_resid_pre", "blocks.1.attn.hook_pattern", "ln_final.hook_scale"]},
        calls=filtered_calls(T), comment="names_filter with 3 names; most cache methods then fail")
    plans["gpt2-tiny.run-stop-at-layer"] = plan(
        HF, T["full"], run={"stop_at_layer": 1}, calls=stop_calls(T),
        comment="stop_at_layer=1: embeddings and block 0 only; `logits` holds the residual stream TL returns instead")
    plans["gpt2-tiny.run-remove-batch-dim"] = plan(
        HF, T["one"], run={"remove_batch_dim": True},
        calls=[call("acc_ln", "accumulated_resid", incl_mid=True, apply_ln=True, return_labels=True),
               call("acc_ln_pos-1", "accumulated_resid", incl_mid=True, apply_ln=True, pos_slice=-1),
               call("dec", "decompose_resid", apply_ln=True, pos_slice=-1, return_labels=True),
               call("shr", "stack_head_results", pos_slice=-1, incl_remainder=True),
               call("la", "logit_attrs", residual_stack=ref("acc_ln"), tokens=T["mary"], has_batch_dim=False),
               call("rbd", "remove_batch_dim"),
               call("slice", "apply_slice_to_batch_dim", batch_slice=0)],
        comment="run_with_cache(remove_batch_dim=True) on a batch of 1")
    plans["gpt2-tiny.run-pos-slice-int"] = plan(
        HF, T["full"], run={"pos_slice": -1}, calls=pos_slice_calls(T, 1),
        comment="run pos_slice=-1: Slice.unwrap keeps a size-1 position axis")
    plans["gpt2-tiny.run-pos-slice-range"] = plan(
        HF, T["full"], run={"pos_slice": rng_(1, 5)}, calls=pos_slice_calls(T, 4),
        comment="run pos_slice=[1:5] (q/k/v/z/result on axis -3, patterns on the query axis)")
    plans["gpt2-tiny.run-pos-slice-indices"] = plan(
        HF, T["full"], run={"pos_slice": idx(0, 2, 3)}, calls=pos_slice_calls(T, 3),
        comment="run pos_slice=[0,2,3] (gather)")

    # ---- cache methods (spec 10.1 re-expressed) ------------------------------------------------------------------
    M = T["methods"]
    plans["gpt2-tiny.methods-resid"] = plan(HF, M, calls=gpt2_resid_calls(T),
                                            comment="accumulated_resid, decompose_resid, apply_ln_to_stack")
    plans["gpt2-tiny.methods-heads"] = plan(HF, M, calls=gpt2_heads_calls(T),
                                            comment="compute_head_results, stack_head_results, stack_activation")
    plans["gpt2-tiny.methods-neurons"] = plan(HF, M, calls=gpt2_neuron_calls(T),
                                              comment="get_neuron_results, stack_neuron_results (incl. projections)")
    plans["gpt2-tiny.methods-decomp"] = plan(HF, M, calls=gpt2_decomp_calls(T),
                                             comment="get_full_resid_decomposition")
    plans["gpt2-tiny.methods-dla"] = plan(HF, M, calls=gpt2_dla_calls(T), comment="logit_attrs")
    plans["gpt2-tiny.methods-getitem"] = plan(HF, T["short"], calls=gpt2_getitem_calls(T),
                                              comment="__getitem__ with every get_act_name shorthand")
    plans["gpt2-tiny.methods-batch"] = plan(HF, T["methods3"], calls=gpt2_batch_calls(T),
                                            comment="apply_slice_to_batch_dim (range, indices, int) then calls")
    plans["gpt2-tiny.methods-batchless"] = plan(HF, T["one"], calls=gpt2_batchless_calls(T),
                                                comment="remove_batch_dim on a batch-1 cache, then calls")

    # ---- computing in half precision: from_pretrained(dtype=...); compared with the half-precision tolerance ------
    for dtype in ("bf16", "f16"):
        plans[f"gpt2-tiny.dtype-{dtype}"] = plan(
            HF, M, dtype=dtype, calls=gpt2_dla_calls(T),
            comment=f"the model in {dtype} (norms in f32), cached in {dtype}; methods upcast to f32")
    plans["gpt2-tiny.dtype-bf16-proc-none"] = plan(
        HF, M, dtype="bf16", processing=ALL_OFF,
        calls=[call("acc_ln", "accumulated_resid", incl_mid=True, apply_ln=True, pos_slice=-1, return_labels=True),
               call("recompute", "apply_ln_to_stack", residual_stack=ref("acc_ln"), recompute_ln=True, pos_slice=-1)],
        comment="bf16 without processing: LayerNorm's own bf16 weight and bias after the f32 normalisation")
    llama_tokens = [[0, 294, 298, 265, 290, 284, 261, 260], [0, 294, 291, 265, 293, 284, 261, 260]]
    plans["hf-llama.dtype-bf16"] = plan(
        {"hf": "../models/hf-llama"}, llama_tokens, dtype="bf16",
        calls=[call("acc_ln_pos-1", "accumulated_resid", incl_mid=True, apply_ln=True, pos_slice=-1,
                    return_labels=True),
               call("shr_ln_pos-1", "stack_head_results", apply_ln=True, pos_slice=-1, return_labels=True),
               call("la_pair", "logit_attrs", residual_stack=ref("acc_ln_pos-1"), tokens=ten([290, 293]),
                    incorrect_tokens=ten([298, 291]), pos_slice=-1)],
        comment="hf-llama in bf16: rotary tables cast to bf16, RMS norms in f32, gated SiLU MLP, grouped-query attention")

    common = {n: tl_common_calls(40 if n == "tl-ln-relu" else 50, 32, 70 + i) for i, n in enumerate(TL_NAMES)}
    plans["tl-attnonly.methods"] = plan(tl("tl-attnonly"), TL_TOKENS, calls=tl_attnonly_calls(),
                                        comment="attn-only model (spec 10.1 cases 26, 27)")
    plans["tl-solu.methods"] = plan(tl("tl-solu"), TL_TOKENS, calls=tl_solu_calls() + common["tl-solu"],
                                    comment="solu_ln MLP (mlp.ln hooks), LN")
    plans["tl-rms-silu.methods"] = plan(tl("tl-rms-silu"), TL_TOKENS, calls=common["tl-rms-silu"],
                                        comment="RMS: apply_ln without centring, recompute with RMS affine")
    plans["tl-rmspre-gelufast.methods"] = plan(tl("tl-rmspre-gelufast"), TL_TOKENS, calls=common["tl-rmspre-gelufast"],
                                               comment="RMSPre")
    plans["tl-lnpre-gelu.methods"] = plan(tl("tl-lnpre-gelu"), TL_TOKENS, calls=common["tl-lnpre-gelu"],
                                          comment="LNPre")
    plans["tl-ln-relu.methods"] = plan(tl("tl-ln-relu"), TL_TOKENS, calls=tl_ln_relu_calls() + common["tl-ln-relu"],
                                       comment="LN with use_attn_result (hook_result cached by the run), d_vocab_out 40")
    plans["tl-none-gelunew.methods"] = plan(tl("tl-none-gelunew"), TL_TOKENS,
                                            calls=common["tl-none-gelunew"] + tl_none_calls(),
                                            comment="normalization None: apply_ln_to_stack is a no-op (no batch slicing)")
    return plans


def dump_plan(p: dict) -> str:
    """JSON with one line per top-level key and per call (readable diffs, exact values)."""
    lines = ["{"]
    keys = list(p)
    for i, k in enumerate(keys):
        end = "," if i < len(keys) - 1 else ""
        if k == "calls" and p[k]:
            lines.append(f'  "calls": [')
            for j, c in enumerate(p[k]):
                cend = "," if j < len(p[k]) - 1 else ""
                lines.append("    " + json.dumps(c) + cend)
            lines.append("  ]" + end)
        else:
            lines.append(f"  {json.dumps(k)}: {json.dumps(p[k])}{end}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_plans(plans: dict, out: Path) -> None:
    """Writes each plan as `out/<stem>.json` (unique call ids; the deterministic layout of dump_plan)."""
    for stem, p in plans.items():
        ids = [c["id"] for c in p["calls"]]
        assert len(ids) == len(set(ids)), f"{stem}: duplicate call ids"
        text = dump_plan(p)
        assert json.loads(text) == p
        (out / f"{stem}.json").write_text(text)
    print(f"wrote {len(plans)} plans to {out}")


def plans_cli(build, description: str, argv=None) -> int:
    """The command line of a plan-making script: `--out` (default tests/plans), then `write_plans(build(), out)`."""
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "tests" / "plans"))
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_plans(build(), out)
    return 0


def main(argv=None) -> int:
    return plans_cli(build_plans, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
