#!/usr/bin/env bash
# The device check, on a machine with an NVIDIA GPU (written for an H100/H200, 16 cores): parity of the cuda and
# tch-on-CUDA backends with the TransformerLens goldens, then the benchmark on both, written as the book's cuda column.
#
#   scripts/gpu-check.sh [--dry-run] [--no-tch] [--vs-python]
#
#   --dry-run    print every command instead of running it (preconditions skipped), for a machine without a GPU
#   --no-tch     cuda only, when no CUDA libtorch is at hand
#   --vs-python  also time TransformerLens; bench_tl.py runs it on the CPU with 2 threads, which adds ~3 minutes
#                and gives a GPU-against-CPU ratio, so it is off by default
#
# Needs, per shared/spec/burn-0.21-notes.md: the NVIDIA driver (libcuda.so); libnvrtc.so and the CUDA headers under
# CUDA_PATH or /usr/local/cuda, because burn-cuda compiles its kernels at run time with NVRTC; crates already in
# ~/.cargo (the script builds offline). For tch: libtorch 2.9.0 built for CUDA in TLENS_LIBTORCH_CUDA (the folder
# with lib/libtorch_cuda.so and include/); `cargo xtask libtorch` makes a CPU-only one, which cannot run on the GPU.
# Overrides: CUDARC_CUDA_VERSION (else from the driver and toolkit), TLENS_LIBTORCH_CUDA.
#
# Expected times on an H200, estimated, not yet measured: the builds 4-6 min cold (xtask's parity runs a dev-profile
# `tlens`, its bench a release `tlens-bench`: two builds of the stack, both done up front), nothing when warm; then
# parity ~2 min (72 plans x 2 backends, one process each), the 4x1024 warm-up ~0.5 min, the GPT-2 bench ~1 min, the
# Llama bench ~0.5 min: ~4 min after the build, inside the issue's five minutes. Each step prints its start time.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

dry_run=0 with_tch=1 vs_python=()
for arg in "$@"; do
    case $arg in
        --dry-run) dry_run=1 ;;
        --no-tch) with_tch=0 ;;
        --vs-python) vs_python=(--vs-python) ;;
        -h | --help) sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0"; exit 0 ;;
        *) echo "usage: scripts/gpu-check.sh [--dry-run] [--no-tch] [--vs-python]" >&2; exit 2 ;;
    esac
done

start=$(date +%s)
step() { echo "== $* ($(( $(date +%s) - start )) s)"; }
fail() { echo "gpu-check: $*" >&2; exit 1; }
# Runs a command, or with --dry-run prints it (arguments with other characters than these in single quotes).
run() {
    if [ "$dry_run" = 0 ]; then "$@"; return; fi
    printf '+'
    for a in "$@"; do
        case $a in *[!A-Za-z0-9_./:=,+@%-]* | '') printf " '%s'" "${a//\'/\'\\\'\'}" ;; *) printf ' %s' "$a" ;; esac
    done
    echo
}
setenv() { export "$1=$2"; echo "+ export $1=$2"; }

features=cuda
[ "$with_tch" = 0 ] || features=cuda,tch
# Any folder torch 2.9.0 was pip-installed into (see the precondition below for how).
libtorch=${TLENS_LIBTORCH_CUDA:-$(compgen -G "$HOME/.cache/tlens/torch-2.9.0-cu128/lib/python3*/site-packages/torch" | head -1 || true)}
libtorch=${libtorch:-$HOME/.cache/tlens/torch-2.9.0-cu128/lib/python3.X/site-packages/torch}

if [ "$dry_run" = 1 ]; then
    step "preconditions: skipped (--dry-run)"
    cudarc=${CUDARC_CUDA_VERSION:-12080}
else
    step "preconditions"
    command -v nvidia-smi >/dev/null || fail "nvidia-smi not found: run this on a machine with an NVIDIA GPU and its driver"
    nvidia-smi -L | grep '^GPU ' || fail "nvidia-smi lists no GPU"
    driver=$(nvidia-smi | sed -n 's/.*CUDA Version: *\([0-9]*\.[0-9]*\).*/\1/p' | head -1)

    # The toolkit where cubecl looks for it: CUDA_PATH, /usr/local/cuda, /opt/cuda, /usr (with /usr/bin/nvcc).
    cuda=${CUDA_PATH:-}
    for c in /usr/local/cuda /opt/cuda; do [ -n "$cuda" ] || [ ! -d "$c" ] || cuda=$c; done
    [ -n "$cuda" ] || [ ! -x /usr/bin/nvcc ] || cuda=/usr
    [ -f "$cuda/include/cuda_fp16.h" ] ||
        fail "no CUDA headers (include/cuda_fp16.h) under CUDA_PATH or /usr/local/cuda: burn-cuda's NVRTC kernels need the CUDA toolkit"
    if ! ldconfig -p | grep -q 'libnvrtc\.so'; then
        nvrtc=$(compgen -G "$cuda/lib*/libnvrtc.so*" | head -1 || true)
        [ -n "$nvrtc" ] || fail "libnvrtc.so is neither in the loader's path nor in $cuda/lib64: install the CUDA toolkit's NVRTC"
        setenv LD_LIBRARY_PATH "$(dirname "$nvrtc")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    fi
    toolkit=$({ "$cuda/bin/nvcc" --version 2>/dev/null || nvcc --version 2>/dev/null || true; } |
        sed -n 's/.*release \([0-9]*\.[0-9]*\).*/\1/p')
    echo "driver CUDA ${driver:-?}, toolkit ${toolkit:-?} in $cuda"

    # cudarc's bindings must not be newer than the driver or the NVRTC: the lower of the two, rounded down to a
    # version cudarc 0.19 knows (it has no 12.7), written MAJOR0MINOR0.
    want=$(printf '%s\n' "${driver:-12.8}" "${toolkit:-${driver:-12.8}}" | sort -V | head -1)
    best=
    for v in 11.4 11.5 11.6 11.7 11.8 12.0 12.1 12.2 12.3 12.4 12.5 12.6 12.8 12.9 13.0 13.1 13.2 13.3 13.4; do
        [ "$(printf '%s\n' "$v" "$want" | sort -V | head -1)" != "$v" ] || best=$v
    done
    [ -n "$best" ] || fail "CUDA $want is older than the 11.4 that cudarc 0.19 needs"
    cudarc=${CUDARC_CUDA_VERSION:-${best%.*}0${best#*.}0}

    if [ "$with_tch" = 1 ]; then
        [ -f "$libtorch/lib/libtorch_cuda.so" ] ||
            fail "tch on cuda needs libtorch 2.9.0 built for CUDA at TLENS_LIBTORCH_CUDA (now $libtorch): python3 -m venv ~/.cache/tlens/torch-2.9.0-cu128 && ~/.cache/tlens/torch-2.9.0-cu128/bin/pip install torch==2.9.0 (PyPI's Linux wheel is the CUDA 12.8 build, ~3 GB with its nvidia-* wheels; torch/lib/libtorch_cuda.so finds them by relative path, so point at site-packages/torch itself, not a link to it), or run with --no-tch"
        grep -qs '^2\.9\.0' "$libtorch/build-version" || grep -qs "__version__ = '2\.9\.0" "$libtorch/version.py" ||
            fail "$libtorch is not libtorch 2.9.0, the version burn-tch 0.21 (tch 0.22) links"
    fi
    if [ ${#vs_python[@]} -gt 0 ] && [ ! -x reference/.venv/bin/python ]; then
        fail "--vs-python needs reference/.venv (cargo xtask reference, which needs PyPI)"
    fi
fi

step "environment"
setenv CUDARC_CUDA_VERSION "$cudarc"     # read by cudarc's build script: which CUDA API its bindings target
[ "$with_tch" = 0 ] || setenv LIBTORCH "$libtorch"   # set, so that xtask does not fetch the CPU libtorch
setenv CARGO_NET_OFFLINE "${CARGO_NET_OFFLINE:-true}"   # no network here: fail at once on a missing crate
# The driver's cache of PTX compiled for this GPU (default 256 MiB) is too small to keep every kernel across runs.
setenv CUDA_CACHE_MAXSIZE "${CUDA_CACHE_MAXSIZE:-4294967296}"

step "build: xtask, tlens (dev profile, what parity runs), tlens-bench (release) with --features $features"
# The same commands xtask runs (same features and environment), so that its own builds find nothing to do.
run cargo build --package xtask
run cargo build --bin tlens --no-default-features --features "$features"
run cargo build --release --package tlens-bench --bin tlens-bench --no-default-features --features "$features"

tch_env=(env)
if [ "$with_tch" = 1 ]; then
    tch_env+=(TLENS_TCH_DEVICE=cuda:0)   # crates/backend-tch: tch runs on the CPU unless told otherwise
    # rustc links with --as-needed and nothing calls libtorch_cuda.so directly, so a CUDA libtorch can be dropped
    # from the binary, and libtorch then has no CUDA ("Cannot initialize CUDA without ATen_cuda library"). tch-rs's
    # own build.rs adds `-Wl,--no-as-needed -ltorch`; this project's build.rs does not yet, so preload it instead
    # (cargo and xtask then load it too, unused).
    needed=$(readelf -d target/release/tlens-bench target/debug/tlens 2>/dev/null | grep -c 'NEEDED.*libtorch_cuda' || true)
    if [ "$dry_run" = 1 ] || [ "$needed" -lt 2 ]; then
        echo "libtorch_cuda.so is not linked into tlens/tlens-bench (as with today's build.rs): preloading it for tch"
        tch_env+=("LD_PRELOAD=$libtorch/lib/libtorch_cuda.so${LD_PRELOAD:+:$LD_PRELOAD}")
    fi
fi

# The runs start from target/gpu-check, for its cubecl.toml: burn-cuda's kernel cache is off by default, so each of
# parity's ~70 cuda processes would compile every kernel again with NVRTC; with it they compile once (into target/).
work=$root/target/gpu-check
run mkdir -p "$work"
if [ "$dry_run" = 1 ]; then echo "+ write $work/cubecl.toml: [compilation] cache = \"target\""; else
    printf '[compilation]\ncache = "target"\n' >"$work/cubecl.toml"; fi
run cd "$work"

step "smoke test: one plan on each backend"
plan=$root/tests/plans/gpt2-tiny.full.json
run "$root/target/debug/tlens" --backend cuda eval --plan "$plan" --out "$work/smoke.cuda.safetensors" ||
    fail "the cuda backend cannot run a plan on this GPU (see above)"
if [ "$with_tch" = 1 ]; then
    run "${tch_env[@]}" "$root/target/debug/tlens" --backend tch eval --plan "$plan" --out "$work/smoke.tch.safetensors" ||
        fail "tch cannot run a plan on cuda:0 with the libtorch in $libtorch (see above)"
fi

step "parity with the TransformerLens goldens on $features (exits non-zero on any disagreement)"
run "${tch_env[@]}" cargo xtask parity --features "$features" --out "$root/book/src/parity-results-cuda.md"

# Every `cargo xtask bench` without --update replaces target/bench/results.json: keep a machine's earlier results.
results=$root/target/bench/results.json saved=$root/target/bench/results.before-gpu-check.json
if [ -e "$results" ] && [ ! -e "$saved" ]; then run cp "$results" "$saved"; fi

# tlens-bench has no warm-up: its first repetition includes NVRTC compiling and autotuning each kernel, and at
# 4x1024 (one repetition) that is the whole measurement. One untimed pass at that shape fills the kernel and autotune
# caches (head_results runs run_with_cache, the forward pass included, before its own kernels). Smaller shapes take
# the median of 3, which leaves the first repetition out.
step "warm-up at 4x1024 (not kept)"
run "${tch_env[@]}" cargo xtask bench --features "$features" --shapes 4x1024 --cases head_results \
    --out "$work/warm-up.md"

# xtask sets RAYON_NUM_THREADS, MATMUL_NUM_THREADS, OMP_NUM_THREADS and TLENS_BENCH_THREADS to 2 for every case: the
# GPU backends hardly use CPU threads, so the machine's 16 cores would change little here.
step "bench, GPT-2 small: 8x128 and 4x1024; forward, run_with_cache, head_results"
run "${tch_env[@]}" cargo xtask bench --features "$features" --shapes 8x128,4x1024 \
    --cases forward,run_with_cache,head_results "${vs_python[@]}" --out "$root/book/src/bench-results-cuda.md"
run cp "$results" "$root/target/bench/results-cuda.json"

step "bench, Llama 3.2 1B shape: 1x512; forward, run_with_cache"
run "${tch_env[@]}" cargo xtask bench --features "$features" --model llama-3.2-1b --shapes 1x512 \
    --cases forward,run_with_cache "${vs_python[@]}" --out "$root/book/src/bench-results-llama-cuda.md"
run cp "$results" "$root/target/bench/results-llama-cuda.json"
if [ -e "$saved" ]; then run mv "$saved" "$results"; fi

if [ "$with_tch" = 1 ]; then
    # xtask names the column after the backend, `tch`, as on the CPU; say where it ran.
    step "label the tch column as tch on cuda:0"
    run sed -i '0,/| tch |/s//| tch (cuda:0) |/' "$root/book/src/parity-results-cuda.md"
    for f in bench-results-cuda.md bench-results-llama-cuda.md; do
        run sed -i '0,/| tch: /s//| tch (cuda:0): /' "$root/book/src/$f"
    done
fi

step "done"
written=Wrote
[ "$dry_run" = 0 ] || written="Would have written"
cat <<EOF
$written book/src/parity-results-cuda.md, book/src/bench-results-cuda.md, book/src/bench-results-llama-cuda.md, and
the raw results in target/bench/results-cuda.json and target/bench/results-llama-cuda.json.
Add to book/src/performance.md, under "## Results" (and the Llama table's, likewise, under its own section):
{{#include bench-results-cuda.md}}
and to book/src/parity.md:
{{#include parity-results-cuda.md}}
EOF
