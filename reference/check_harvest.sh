#!/usr/bin/env bash
# Check a `tlens harvest` folder against TransformerLens: reference/check_harvest.sh DIR [--model DIR] [--rows N] [--seed S]
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"; cd "$HERE/.." && exec env TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 CUDA_VISIBLE_DEVICES="" "$HERE/.venv/bin/python" "$HERE/check_harvest.py" "$@"
