#!/usr/bin/env bash
# The GPU check, prepared for the day a session is lent a GPU machine (see the device tool's
# README): that machine has CUDA's driver and PyTorch but no Rust and no registry, so the
# binaries are built HERE and carried there.
#
#   benches/gpu.sh build      # here: release builds for cuda (and wgpu), stripped, into .gpu/
#   benches/gpu.sh run        # there: ≤ 5 minutes; prints the tables, writes $OUT/gpu.log
#
# With the device tool: `echo /.gpu/ >> .git/info/exclude` once, `benches/gpu.sh build` here,
# then run(command="benches/gpu.sh run", carry=[".gpu"], timeout_s=420).
#
# What `run` does, each step under its own timeout:
#  1. nvidia-smi: the device, its clocks; the peak it is judged against (H100/H200 SXM: 67 TFLOP/s
#     FP32, 495 TF32, 989 BF16 dense; others: PEAK_TFLOPS=... overrides).
#  2. the layer sweep (benches/moe.rs --quick) on cuda, and on wgpu when a Vulkan driver is there:
#     MoE/dense ratios and the experts' TFLOP/s (its last column) against the FP32 peak.
#  3. training throughput of the default LM (benches/moe.rs --train) on cuda.
#  4. the tests that check numbers on cuda: reference (batched dispatch vs the naive host
#     reference), parity (gradients vs the host), hf (transformers' outputs).
# cuda is burn's CubeCL CUDA backend: it builds without a CUDA toolkit and loads the driver and
# NVRTC at run time.
set -uo pipefail
cd "$(dirname "$0")/.."
DIR=.gpu
TESTS=(reference parity hf)

build() {
    mkdir -p "$DIR"
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/switch-moe/target-gpu}"
    for backend in cuda wgpu; do
        cargo build --release --features "$backend" --bench moe || exit 1
        exe=$(ls -t "$CARGO_TARGET_DIR"/release/deps/moe-* | grep -v '\.d$' | head -n 1)
        strip -o "$DIR/moe-$backend" "$exe"
    done
    for t in "${TESTS[@]}"; do
        cargo test --release --features cuda --test "$t" --no-run || exit 1
        exe=$(ls -t "$CARGO_TARGET_DIR"/release/deps/"$t"-* | grep -v '\.d$' | head -n 1)
        strip -o "$DIR/test-$t" "$exe"
    done
    du -sh "$DIR"/* >&2
    echo "carry $DIR (must stay under 64 MiB with the tree: $(du -sh "$DIR" | cut -f1))" >&2
}

step() { # step SECONDS TITLE CMD...
    local secs=$1 title=$2
    shift 2
    echo "== $title"
    timeout "$secs" "$@"
    local rc=$?
    [[ $rc -eq 124 ]] && echo "   (stopped after ${secs}s)"
    return 0
}

run() {
    local log="${OUT:-/tmp}/gpu.log"
    exec > >(tee "$log") 2>&1
    step 10 "device" nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv
    local name
    name=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
    local peak=${PEAK_TFLOPS:-}
    if [[ -z "$peak" ]]; then
        case "$name" in
            *H100* | *H200*) peak=67 ;; # FP32, SXM
            *A100*) peak=19.5 ;;
            *) peak=unknown ;;
        esac
    fi
    echo "FP32 peak used for the ratio: $peak TFLOP/s ($name)"
    step 120 "layer sweep, cuda (quick)" "$DIR/moe-cuda" --quick
    if ldconfig -p | grep -q libvulkan; then
        step 90 "layer sweep, wgpu (quick)" "$DIR/moe-wgpu" --quick
    else
        echo "== wgpu skipped: no Vulkan loader (see the device README's .gl recipe)"
    fi
    step 60 "training throughput, cuda" "$DIR/moe-cuda" --train
    # The test binaries were built elsewhere: point the hf test at this tree's fixtures.
    export SWITCH_MOE_HF_FIXTURES="$PWD/tests/fixtures/hf"
    for t in "${TESTS[@]}"; do
        step 60 "tests: $t (cuda)" "$DIR/test-$t" --test-threads 1
    done
    if [[ "$peak" != unknown ]]; then
        echo "== experts' TFLOP/s (last column) / FP32 peak $peak:"
        grep -E '^\| +[0-9]' "$log" | awk -F'|' -v p="$peak" '{ printf "T %s E %s: %.3f TFLOP/s = %.1f%% of peak\n", $2, $4, $(NF-1), 100*$(NF-1)/p }'
    fi
}

case "${1:-}" in
    build) build ;;
    run) run ;;
    *)
        echo "usage: benches/gpu.sh build|run (see the header)" >&2
        exit 2
        ;;
esac
