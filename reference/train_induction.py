#!/usr/bin/env python3
"""Train the embedded induction model: a 2-layer attention-only TransformerLens model with a real induction circuit.

    python reference/train_induction.py [--out tests/models/induction] [--plan tests/plans/induction.full.json]
                                        [--golden tests/golden/induction.full.safetensors] [--no-plan]

(`reference/train_induction.sh` runs it with the venv and the single-thread environment regenerate.sh uses.)

Model: `HookedTransformer(HookedTransformerConfig(...))`, attn_only, n_layers 2, d_model 64, n_heads 4, d_head 16,
LN, standard positional embeddings, n_ctx 64, d_vocab 512 (the gpt2-tiny byte-level BPE tokenizer, whose
`<|endoftext|>` = id 0 is BOS), TransformerLens's default (gpt2-style) init under a fixed seed.

Data (one fixed torch.Generator, so every run sees the same batches; every non-BOS token uniform over ids 1..511, the
"ordinary" tokens), batch 32, Adam, two phases:
1. SHORT_STEPS steps on short rows `[BOS, seg, seg]`, one len(seg) in SEG_MIN..SEG_MAX (10..25) per batch, lr LR
   (1e-3, warm-up). The circuit forms here (around step 2000): with only 2 len(seg) positions to attend to it forms
   several times sooner than on full rows, which barely start it in the time this script may take. (A larger lr, 3e-3,
   finds a positional shortcut on these rows instead: low loss, no induction head.)
2. FULL_STEPS steps on full n_ctx = 64 rows `[BOS, prefix, seg, seg, suffix]`: the first copy starts anywhere that
   leaves room for it and 2 tokens of the second copy, which runs on right after it (cut off at n_ctx); random tokens
   before and after. lr LR2 (3e-3, which extends the previous-token head to later positions faster than 1e-3), cosine
   decay over the last DECAY steps. Phase 1 only used positions < 51 (first copies < 26); here the previous-token head
   learns later positions. It works for a first copy inside positions ~1..40; later than that the induction score fades
   (results.position_sweep in training.json): a key at position x is only useful if x + len(seg) - 1 < n_ctx, so late
   positions get little training signal.
Loss: next-token cross entropy over every position (`model(tokens, return_type="loss")`); only the second copy of seg
is predictable, so an induction circuit (a previous-token head in layer 0 feeding the keys of induction heads in layer
1) is what lowers it.

Measured afterwards on held-out `[BOS, s, s]` rows (s: k = EVAL_K random tokens, another generator):
* loss on the first copy (targets at positions 1..k) and on the second copy (targets k+1..2k; also without its first
  token, which nothing can predict);
* per head: induction score = mean attention from each position q of the second copy (k+1..2k) to q-(k-1), the token
  after the earlier occurrence of the token at q (the pattern diagonal at offset -(k-1), restricted to the second
  copy); `induction_diag` is TransformerLens's demo version, the mean of that whole diagonal (k+2 entries, the 2 extra
  ones lying in the first copy); previous-token score = mean attention from q to q-1 over q = 1..2k;
* the induction score on `[BOS, 20 random tokens, s, s]` rows (ind(+pre)), a sweep of the first copy's position, and
  a text prompt (the gpt2-tiny tokenizer) repeated twice.

Writes (deterministic: a rerun rewrites byte-identical files):
* OUT/config.json           HookedTransformerConfig fields (post __post_init__, JSON-serialisable), as tl-*/config.json
* OUT/weights.safetensors   named_parameters() only, TL names, float32
* OUT/tokenizer.json        copy of tests/models/gpt2-tiny/tokenizer.json
* OUT/training.json         recipe, hyper-parameters, losses, per-head scores, versions
* PLAN                      a `full` plan (all caches) on one [BOS, s, s] row with k = PLAN_K, and its golden GOLDEN
                            written by run_plan.py
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_models import TL_CONFIG_FIELDS  # noqa: E402
from run_plan import run_one, save_safetensors  # noqa: E402  (deterministic writer; the reference plan runner)

torch.set_grad_enabled(True)  # run_plan switches autograd off at import
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)
warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=FutureWarning)

ROOT = Path(__file__).resolve().parent.parent
TOKENIZER = ROOT / "tests" / "models" / "gpt2-tiny" / "tokenizer.json"

BOS = 0
VOCAB = 512
TOK_LO, TOK_HI = 1, VOCAB  # ordinary tokens: ids 1..511 (randint's upper bound is exclusive)

CONFIG = dict(
    n_layers=2,
    d_model=64,
    n_heads=4,
    d_head=16,
    n_ctx=64,
    d_vocab=VOCAB,
    attn_only=True,
    normalization_type="LN",
    positional_embedding_type="standard",
)

MODEL_SEED = 2024  # HookedTransformerConfig.seed + torch.manual_seed before construction
DATA_SEED = 7  # training batches
EVAL_SEED = 12345  # held-out rows
PLAN_SEED = 99  # the plan's single row
SEG_MIN, SEG_MAX = 10, 25
SHORT_STEPS = 2500  # phase 1: short rows [BOS, seg, seg]
FULL_STEPS = 3000  # phase 2: full n_ctx rows [BOS, prefix, seg, seg, suffix]
BATCH = 32
LR = 1e-3  # phase 1 (a larger one finds a positional shortcut on [BOS, seg, seg] rows instead of induction)
LR2 = 3e-3  # phase 2 (extends the previous-token head to later positions faster than 1e-3)
WARMUP = 100
DECAY = 1000  # cosine decay to 0.1 * LR2 over the last DECAY steps
BETAS = (0.9, 0.99)
FINAL_LOSS_WINDOW = 100  # "final train loss" = mean of the last this-many step losses
EVAL_K = 20
EVAL_ROWS = 256
EVAL_PREFIX = 20  # the ind(+pre) column: [BOS, 20 random tokens, s, s]
SWEEP_K, SWEEP_ROWS = 10, 128  # position sweep: [BOS, prefix random tokens, s, s] with k = 10
SWEEP_PREFIXES = (0, 10, 20, 30, 35, 40, 43)  # first copy at positions prefix+1..prefix+10
TEXT = "When John and Mary went to the shops, John gave the bag to Mary."
PLAN_K = 16


# ----------------------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------------------

def short_batch(g: torch.Generator, batch: int) -> torch.Tensor:
    """Phase 1, [batch, 1 + 2 len(seg)]: BOS, seg, seg; one len(seg) in SEG_MIN..SEG_MAX per batch."""
    seg = int(torch.randint(SEG_MIN, SEG_MAX + 1, (1,), generator=g))
    return repeated_rows(g, batch, seg)


def train_batch(g: torch.Generator, batch: int, n_ctx: int) -> torch.Tensor:
    """Phase 2, [batch, n_ctx]: BOS, random prefix, seg, seg (cut at n_ctx), random suffix.

    Per row len(seg) is uniform in SEG_MIN..SEG_MAX and the first copy starts uniformly anywhere that leaves room for
    the whole first copy and at least 2 tokens of the second (start in 1..n_ctx-2-len(seg)), so the first copy, whose
    positions the previous-token head must serve as keys, reaches every position; a second copy that would run past
    n_ctx is cut off. Every non-BOS id is uniform in 1..511.
    """
    toks = torch.randint(TOK_LO, TOK_HI, (batch, n_ctx), generator=g)
    toks[:, 0] = BOS
    for b in range(batch):
        seg = int(torch.randint(SEG_MIN, SEG_MAX + 1, (1,), generator=g))
        start = int(torch.randint(1, n_ctx - 1 - seg, (1,), generator=g))
        end = min(start + 2 * seg, n_ctx)
        toks[b, start + seg:end] = toks[b, start:end - seg]
    return toks


def recipe_floor(n_ctx: int) -> float:
    """Phase-2 loss if every repeated token but the first of the second copy were predicted exactly, the rest uniform.

    Exact expectation over the recipe of train_batch (len(seg) and start uniform).
    """
    total = 0.0
    for seg in range(SEG_MIN, SEG_MAX + 1):
        starts = range(1, n_ctx - 1 - seg)
        predictable = [min(start + 2 * seg, n_ctx) - (start + seg) - 1 for start in starts]
        total += sum(predictable) / len(predictable) / (SEG_MAX - SEG_MIN + 1)
    return math.log(TOK_HI - TOK_LO) * (1 - total / (n_ctx - 1))


def repeated_rows(g: torch.Generator, rows: int, k: int) -> torch.Tensor:
    """[rows, 1 + 2k]: BOS, s, s with s k random ordinary tokens."""
    s = torch.randint(TOK_LO, TOK_HI, (rows, k), generator=g)
    bos = torch.full((rows, 1), BOS, dtype=torch.long)
    return torch.cat([bos, s, s], dim=1)


def prefixed_rows(g: torch.Generator, rows: int, prefix: int, k: int) -> torch.Tensor:
    """[rows, 1 + prefix + 2k]: BOS, prefix random tokens, s, s."""
    pre = torch.randint(TOK_LO, TOK_HI, (rows, prefix), generator=g)
    rep = repeated_rows(g, rows, k)
    return torch.cat([rep[:, :1], pre, rep[:, 1:]], dim=1)


# ----------------------------------------------------------------------------------------------------------------------
# Measurements
# ----------------------------------------------------------------------------------------------------------------------

@torch.no_grad()
def head_scores(model, tokens: torch.Tensor, k: int) -> dict:
    """Per-head induction / previous-token scores on [B, 1+2k] repeated rows; each a [n_layers][n_heads] list."""
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    ind, ind_diag, prev = [], [], []
    q2 = torch.arange(k + 1, 2 * k + 1)  # second copy
    qp = torch.arange(1, 2 * k + 1)
    for layer in range(model.cfg.n_layers):
        pat = cache[f"blocks.{layer}.attn.hook_pattern"]  # [B, head, q, k]
        ind.append(pat[:, :, q2, q2 - (k - 1)].mean(dim=(0, 2)).tolist())
        ind_diag.append(pat.diagonal(offset=-(k - 1), dim1=-2, dim2=-1).mean(dim=(0, 2)).tolist())
        prev.append(pat[:, :, qp, qp - 1].mean(dim=(0, 2)).tolist())
    return {"induction": ind, "induction_diag": ind_diag, "previous_token": prev}


@torch.no_grad()
def induction_at(model, tokens: torch.Tensor, start: int, k: int) -> list:
    """Per-head mean pattern[q, q-(k-1)] over the second copy q in start+k..start+2k-1 (first copy at start)."""
    _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
    q2 = torch.arange(start + k, start + 2 * k)
    return [cache[f"blocks.{layer}.attn.hook_pattern"][:, :, q2, q2 - (k - 1)].mean(dim=(0, 2)).tolist()
            for layer in range(model.cfg.n_layers)]


@torch.no_grad()
def text_check(model, text: str) -> dict:
    """BOS + text + text through the gpt2-tiny tokenizer: loss and top-1 accuracy on the second copy."""
    from tokenizers import Tokenizer

    ids = Tokenizer.from_file(str(TOKENIZER)).encode(text).ids
    k = len(ids)
    tokens = torch.tensor([[BOS] + ids + ids])
    logits = model(tokens)
    lpt = model.loss_fn(logits, tokens, per_token=True)[0]
    pred = logits[0, :-1].argmax(-1)
    hit = (pred == tokens[0, 1:]).float()
    return {"text": text, "k_tokens": k,
            "first_copy_loss": round(lpt[:k].mean().item(), 4),
            "second_copy_loss_after_first_token": round(lpt[k + 1:].mean().item(), 4),
            "second_copy_top1_accuracy_after_first_token": round(hit[k + 1:].mean().item(), 4),
            "induction_score": rounded(induction_at(model, tokens, 1, k))}


@torch.no_grad()
def copy_losses(model, tokens: torch.Tensor, k: int) -> dict:
    """Mean next-token loss on the first copy (targets 1..k) and the second (targets k+1..2k, and k+2..2k)."""
    lpt = model(tokens, return_type="loss", loss_per_token=True)  # [B, 2k]: entry j predicts token j+1
    return {
        "first_copy": lpt[:, 0:k].mean().item(),
        "second_copy": lpt[:, k:2 * k].mean().item(),
        "second_copy_after_first_token": lpt[:, k + 1:2 * k].mean().item(),
    }


def rounded(x, nd=4):
    if isinstance(x, list):
        return [rounded(v, nd) for v in x]
    return round(float(x), nd)


def print_table(scores: dict) -> None:
    print(f"{'head':>6} {'induction':>10} {'ind(diag)':>10} {'ind(+pre)':>10} {'prev-token':>10}")
    for layer, (ind, diag, pre, prev) in enumerate(zip(scores["induction"], scores["induction_diag"],
                                                       scores["induction_prefixed"], scores["previous_token"])):
        for h in range(len(ind)):
            print(f"{f'L{layer}H{h}':>6} {ind[h]:10.4f} {diag[h]:10.4f} {pre[h]:10.4f} {prev[h]:10.4f}")


def top_head(table: list) -> dict:
    best = max(((layer, h, v) for layer, row in enumerate(table) for h, v in enumerate(row)), key=lambda t: t[2])
    return {"layer": best[0], "head": best[1], "score": round(best[2], 4)}


# ----------------------------------------------------------------------------------------------------------------------


def build_model():
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(**CONFIG, seed=MODEL_SEED, device="cpu", dtype=torch.float32)
    torch.manual_seed(MODEL_SEED)
    model = HookedTransformer(cfg, None, move_to_device=False)
    return cfg, model


def config_json(cfg) -> dict:
    out = {}
    for f in TL_CONFIG_FIELDS:
        v = getattr(cfg, f)
        if isinstance(v, float) and v == int(v) and f not in ("attn_scale", "eps", "initializer_range",
                                                             "attn_scores_soft_cap", "output_logits_soft_cap"):
            v = int(v)
        json.dumps(v)  # must be serialisable
        out[f] = v
    return out


def lr_at(step: int, steps: int) -> float:
    """Phase 1: linear warm-up over WARMUP steps to LR, then LR. Phase 2: LR2, cosine decay to 0.1 * LR2 over the
    last DECAY steps."""
    if step < WARMUP:
        return LR * (step + 1) / WARMUP
    if step < SHORT_STEPS:
        return LR
    start = steps - DECAY
    if step < start:
        return LR2
    t = (step - start) / max(1, DECAY - 1)
    return LR2 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def main(argv=None) -> int:
    global SHORT_STEPS, FULL_STEPS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "tests" / "models" / "induction"))
    ap.add_argument("--plan", default=str(ROOT / "tests" / "plans" / "induction.full.json"))
    ap.add_argument("--golden", default=str(ROOT / "tests" / "golden" / "induction.full.safetensors"))
    ap.add_argument("--short-steps", type=int, default=SHORT_STEPS, help="phase-1 steps (committed model: the default)")
    ap.add_argument("--full-steps", type=int, default=FULL_STEPS, help="phase-2 steps (committed model: the default)")
    ap.add_argument("--no-plan", action="store_true", help="write only the model folder")
    args = ap.parse_args(argv)
    SHORT_STEPS, FULL_STEPS = args.short_steps, args.full_steps
    steps = SHORT_STEPS + FULL_STEPS
    t0 = time.time()

    import transformer_lens

    cfg, model = build_model()
    opt = torch.optim.Adam(model.parameters(), lr=LR, betas=BETAS)
    g = torch.Generator().manual_seed(DATA_SEED)
    losses = []
    curve = []
    model.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps)
        tokens = short_batch(g, BATCH) if step < SHORT_STEPS else train_batch(g, BATCH, cfg.n_ctx)
        loss = model(tokens, return_type="loss")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if (step + 1) % 250 == 0 or step == 0:
            window = losses[-250:]
            mean = sum(window) / len(window)
            curve.append({"step": step + 1, "mean_loss_last_250": round(mean, 4)})
            print(f"step {step + 1:5d}  loss {mean:.4f}  lr {lr_at(step, steps):.2e}  ({time.time() - t0:.0f} s)", flush=True)
    model.eval()
    final = losses[-FINAL_LOSS_WINDOW:]
    final_loss = sum(final) / len(final)

    ge = torch.Generator().manual_seed(EVAL_SEED)
    held_train = train_batch(ge, EVAL_ROWS, cfg.n_ctx)
    with torch.no_grad():
        held_loss = model(held_train, return_type="loss").item()
    rows = repeated_rows(ge, EVAL_ROWS, EVAL_K)
    cl = copy_losses(model, rows, EVAL_K)
    scores = head_scores(model, rows, EVAL_K)
    pre_rows = prefixed_rows(ge, EVAL_ROWS, EVAL_PREFIX, EVAL_K)
    scores["induction_prefixed"] = induction_at(model, pre_rows, 1 + EVAL_PREFIX, EVAL_K)
    text = text_check(model, TEXT)
    sweep = {}
    for prefix in SWEEP_PREFIXES:
        rows_p = prefixed_rows(ge, SWEEP_ROWS, prefix, SWEEP_K)
        sweep[str(prefix)] = rounded(induction_at(model, rows_p, 1 + prefix, SWEEP_K)[-1])

    floor = recipe_floor(cfg.n_ctx)
    print(f"\nfinal train loss (mean of last {FINAL_LOSS_WINDOW} steps): {final_loss:.4f} (floor ~{floor:.4f})")
    print(f"held-out loss, training recipe ({EVAL_ROWS} rows): {held_loss:.4f}")
    print(f"held-out [BOS, s, s], k={EVAL_K}, {EVAL_ROWS} rows: first copy {cl['first_copy']:.4f}, "
          f"second copy {cl['second_copy']:.4f} (after its first token {cl['second_copy_after_first_token']:.4f}); "
          f"uniform = ln 511 = {math.log(TOK_HI - TOK_LO):.4f}")
    print(f"\nper-head scores on the same rows (k={EVAL_K}):")
    print_table(scores)
    print(f"(ind(+pre): induction score on [BOS, {EVAL_PREFIX} random tokens, s, s], k={EVAL_K})")
    print(f"layer-1 induction scores by position, [BOS, p random tokens, s, s] with k={SWEEP_K} "
          f"(first copy at p+1..p+{SWEEP_K}):")
    for prefix, row in sweep.items():
        print(f"  p={prefix:>2}: " + " ".join(f"{v:.3f}" for v in row))
    print(f"text check, BOS + {TEXT!r} twice ({text['k_tokens']} tokens each): first copy loss "
          f"{text['first_copy_loss']:.4f}, second copy (after its first token) loss "
          f"{text['second_copy_loss_after_first_token']:.4f}, top-1 accuracy "
          f"{text['second_copy_top1_accuracy_after_first_token']:.4f}")
    ind_top = top_head(scores["induction"])
    prev_top = top_head(scores["previous_token"])
    print(f"top induction head: L{ind_top['layer']}H{ind_top['head']} ({ind_top['score']:.4f}); "
          f"top previous-token head: L{prev_top['layer']}H{prev_top['head']} ({prev_top['score']:.4f})")

    # ---- model folder
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / "config.json").write_text(json.dumps(config_json(cfg), indent=2) + "\n")
    params = {k: v.detach().to(torch.float32).contiguous().clone() for k, v in model.named_parameters()}
    save_safetensors(params, out / "weights.safetensors", {"format": "pt"})
    shutil.copyfile(TOKENIZER, out / "tokenizer.json")

    plan_tokens = repeated_rows(torch.Generator().manual_seed(PLAN_SEED), 1, PLAN_K)
    plan_scores = head_scores(model, plan_tokens, PLAN_K)

    rel = os.path.relpath
    record = {
        "command": "reference/train_induction.sh  (= reference/.venv/bin/python reference/train_induction.py, "
                   "one torch thread)",
        "script": "reference/train_induction.py",
        "model": {"config": CONFIG, "seed": MODEL_SEED, "init": "TransformerLens default (init_mode gpt2)",
                  "tokenizer": "copy of tests/models/gpt2-tiny/tokenizer.json (byte-level BPE, vocab 512, "
                               "<|endoftext|> = id 0 = BOS)"},
        "data": {
            "phase_1": f"steps 1..{SHORT_STEPS}: rows [BOS=0, seg, seg] (1 + 2 len(seg) tokens), one len(seg) uniform "
                       f"in {SEG_MIN}..{SEG_MAX} per batch",
            "phase_2": f"steps {SHORT_STEPS + 1}..{steps}: rows of n_ctx={cfg.n_ctx} tokens [BOS=0, prefix, seg, seg, "
                       f"suffix]; per row len(seg) uniform in {SEG_MIN}..{SEG_MAX}, the first copy starting at a "
                       f"position uniform in 1..(n_ctx-2-len(seg)), the second copy right after it (cut off at n_ctx, "
                       f"at least 2 tokens kept), random tokens before and after",
            "tokens": f"every non-BOS token uniform over ids {TOK_LO}..{TOK_HI - 1}",
            "why_two_phases": "the induction circuit forms much sooner on short rows (fewer positions to attend to); "
                              "phase 2 extends it to later positions and to segments at an offset (reliable for a "
                              "first copy within positions ~1..40, see results.position_sweep)",
            "generator": "one torch.Generator().manual_seed(data_seed) for all batches (see short_batch / train_batch)",
            "data_seed": DATA_SEED,
        },
        "training": {
            "steps": steps, "phase_1_steps": SHORT_STEPS, "phase_2_steps": FULL_STEPS, "batch_size": BATCH, "optimizer": "Adam", "lr_phase_1": LR, "lr_phase_2": LR2,
            "betas": list(BETAS),
            "weight_decay": 0.0,
            "schedule": f"phase 1: linear warm-up over {WARMUP} steps to lr_phase_1, then constant; phase 2: "
                        f"lr_phase_2, cosine decay to 0.1*lr_phase_2 over the last {DECAY} steps",
            "loss": "model(tokens, return_type='loss'): mean next-token cross entropy over all positions",
            "torch_threads": torch.get_num_threads(),
            "loss_curve": curve,
        },
        "results": {
            "final_train_loss": round(final_loss, 4),
            "final_train_loss_window": FINAL_LOSS_WINDOW,
            "train_loss_floor": round(floor, 4),
            "train_loss_floor_note": "ln 511 * (1 - E[predictable targets] / (n_ctx - 1)) over the phase-2 recipe: "
                                     "every second-copy token but the first predicted exactly, the rest uniform",
            "heldout_train_recipe_loss": round(held_loss, 4),
            "heldout_repeated": {"eval_seed": EVAL_SEED, "rows": EVAL_ROWS, "k": EVAL_K,
                                 "tokens": "[BOS, s, s], s = k uniform tokens in 1..511",
                                 **{kk: round(v, 4) for kk, v in cl.items()},
                                 "uniform_loss_ln511": round(math.log(TOK_HI - TOK_LO), 4)},
            "head_scores": {
                "on": f"the held-out [BOS, s, s] rows above (k={EVAL_K})",
                "induction": "mean pattern[q, q-(k-1)] over q in the second copy (k+1..2k)",
                "induction_diag": "mean of the whole pattern diagonal at offset -(k-1) (TransformerLens demo; "
                                  "k+2 entries)",
                "induction_prefixed": f"induction on held-out [BOS, {EVAL_PREFIX} random tokens, s, s] rows (k={EVAL_K})",
                "previous_token": "mean pattern[q, q-1] over q = 1..2k",
                **{kk: rounded(v) for kk, v in scores.items()},
                "top_induction_head": ind_top,
                "top_previous_token_head": prev_top,
            },
            "text_check": text,
            "position_sweep": {"what": f"layer-1 per-head induction score on held-out [BOS, p random tokens, s, s] "
                                       f"rows, k={SWEEP_K}, {SWEEP_ROWS} rows per p; the first copy sits at "
                                       f"p+1..p+{SWEEP_K}",
                               "layer_1_by_p": sweep},
            "plan_row_head_scores": {"k": PLAN_K, "plan_seed": PLAN_SEED,
                                     **{kk: rounded(v) for kk, v in plan_scores.items()}},
        },
        "versions": {"torch": torch.__version__, "transformer_lens": transformer_lens.__version__
                     if hasattr(transformer_lens, "__version__") else _dist_version("transformer-lens"),
                     "python": sys.version.split()[0]},
    }
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    size = sum(p.stat().st_size for p in out.iterdir())
    print(f"\nwrote {rel(out, ROOT)} ({size} bytes)")

    if not args.no_plan:
        plan_path = Path(args.plan)
        plan_rel = lambda p: os.path.relpath(out / p, plan_path.resolve().parent)  # noqa: E731
        plan_text = (
            "{\n"
            f'  "comment": "induction: trained 2-layer attn-only model (reference/train_induction.py), no processing, '
            f'one [BOS, s, s] row with k = {PLAN_K} random tokens (seed {PLAN_SEED}), full cache",\n'
            f'  "model": {{"tl": {{"config": "{plan_rel("config.json")}", '
            f'"weights": "{plan_rel("weights.safetensors")}"}}}},\n'
            f'  "tokens": {json.dumps(plan_tokens.tolist())},\n'
            '  "calls": []\n'
            "}\n"
        )
        json.loads(plan_text)
        plan_path.parent.mkdir(parents=True, exist_ok=True)
        plan_path.write_text(plan_text)
        status = run_one(plan_path, Path(args.golden))
        if status:
            return status
    print(f"done in {time.time() - t0:.0f} s")
    return 0


def _dist_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


if __name__ == "__main__":
    sys.exit(main())
