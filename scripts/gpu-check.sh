#!/usr/bin/env bash
# The device check for a machine with an NVIDIA GPU: parity of the cuda backend with the TransformerLens goldens and
# with ndarray, then the benchmark on cuda at the three GPT-2-small shapes. A few minutes after the build.
#
# Needs at run time: the NVIDIA driver (libcuda.so), libnvrtc.so and the CUDA headers under CUDA_PATH (or
# /usr/local/cuda); burn-cuda compiles its kernels with NVRTC. Writes target/parity.md, target/bench/results.json and
# target/bench/gpu.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export CUDARC_CUDA_VERSION=${CUDARC_CUDA_VERSION:-12080}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true

echo "== parity: ndarray and cuda against the goldens and each other"
cargo xtask parity --features ndarray,cuda

echo "== benchmark on cuda (forward, run_with_cache and the cache methods; 1x128, 8x128, 4x1024)"
cargo xtask bench --features cuda --out target/bench/gpu.md
