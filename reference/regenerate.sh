#!/usr/bin/env bash
# Rebuild the test models, rewrite the generated plans, and run every plan in tests/plans/ through the
# TransformerLens reference, writing tests/golden/<plan-stem>.safetensors. Run reference/setup.sh first.
# Deterministic: a rerun rewrites identical files.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
PY="$HERE/.venv/bin/python"
if [ ! -x "$PY" ]; then
    echo "regenerate.sh: $PY not found; run reference/setup.sh first" >&2
    exit 1
fi
export TOKENIZERS_PARALLELISM=false RAYON_NUM_THREADS=1 OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export PYTHONHASHSEED=0 CUDA_VISIBLE_DEVICES=""
cd "$ROOT"
"$PY" "$HERE/make_models.py"
"$PY" "$HERE/make_plans.py"
# tiny Llama/Mistral/Qwen2/Qwen3/GPT-NeoX/Phi-3/Gemma/Gemma-2/GPT-J/OPT checkpoints (tests/models/hf-*), their plans
# (tests/plans/hf-*.json) and TL's resolved configs (tests/golden/hf-*.tl-config.json)
"$PY" "$HERE/make_families.py"
# intervention / activation-patching / gradient plans (tests/plans/*.hooks*, *.patching, *.grad*): run.hooks,
# run.incl_bwd and patching.get_act_patch_* calls (needs the gpt2-tiny and hf-* checkpoints above)
"$PY" "$HERE/make_interventions.py"
mkdir -p tests/golden
args=()
for plan in tests/plans/*.json; do
    stem="$(basename "$plan" .json)"
    # divergences.json lists tlens's deliberate differences from TL (tests/parity.rs reads it); it is not a plan.
    [ "$stem" = divergences ] && continue
    args+=("$plan" "tests/golden/$stem.safetensors")
done
status=0
"$PY" "$HERE/run_plan.py" "${args[@]}" || status=1
"$PY" "$HERE/hf_logits.py" tests/plans/gpt2-tiny.full.json tests/golden/gpt2-tiny.hf-logits.safetensors || status=1
for plan in tests/plans/hf-*.proc-none.json; do
    fam="$(basename "$plan" .proc-none.json)"
    "$PY" "$HERE/hf_logits.py" "$plan" "tests/golden/$fam.hf-logits.safetensors" --compare-tl || status=1
done
"$PY" "$HERE/summarize.py" || status=1
exit $status
