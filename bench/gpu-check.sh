#!/usr/bin/env bash
# bench/gpu-check.sh OUTDIR — the whole GPU check of libgpurnn in one go, for a machine
# with an NVIDIA GPU and no network (issue 3, section 5; issue 4):
#   1. records the card, driver, toolkit and commit;
#   2. configures and builds the repository for this GPU (its compute capability, else
#      CMAKE_CUDA_ARCHITECTURES=native, else 90) in $GPURNN_GPU_BUILD_DIR (default
#      <repo>/build-gpu);
#   3. runs the whole ctest suite;
#   4. runs gpurnn-bench: every preset on the CUDA backend beside the cuDNN peer; the
#      CUDA backend and cuDNN at T = 1000, 10000, 100000; one step of V=128 H=1024 B=32
#      at T = 10^6 with checkpointed BPTT (issue 7); then every preset with
#      --backend all --peers (the CPU backend too, and the PyTorch peer if /usr/bin/python3
#      has torch) — each with its table, JSON lines and SVG plot;
#   5. writes every log and a short summary (OUTDIR/summary.md) into OUTDIR.
# Everything runs under timeouts so that the whole script ends within about 9 minutes
# ($GPURNN_GPU_CHECK_BUDGET seconds, default 540). The summary is written whatever
# happens; the exit status is non-zero when a step failed (configure, build, a test, or
# a gpurnn measurement).
set -u

if [ $# -ne 1 ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
OUT=$1
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
REPO=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${GPURNN_GPU_BUILD_DIR:-$REPO/build-gpu}
BUDGET=${GPURNN_GPU_CHECK_BUDGET:-540}
START=$(date +%s)
DEADLINE=$((START + BUDGET))
JOBS=$(nproc 2>/dev/null || echo 4)
SUMMARY=$OUT/summary.md
FAILED=()

# Seconds left before the deadline, minus a reserve for the summary, capped at $1.
left() {
    local cap=$1 now rest
    now=$(date +%s)
    rest=$((DEADLINE - now - 10))
    [ "$rest" -lt 1 ] && rest=1
    [ "$rest" -gt "$cap" ] && rest=$cap
    echo "$rest"
}

# run NAME CAP_SECONDS CMD... : runs CMD under a timeout, output to OUT/NAME.log
STEP_RC=0
run() {
    local name=$1 cap=$2 t0 t1
    shift 2
    local limit
    limit=$(left "$cap")
    t0=$(date +%s)
    echo "== $name (limit ${limit}s): $*" | tee -a "$OUT/steps.log"
    timeout --signal=TERM --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
    STEP_RC=$?
    t1=$(date +%s)
    echo "   $name: exit $STEP_RC after $((t1 - t0))s" | tee -a "$OUT/steps.log"
    [ "$STEP_RC" -eq 124 ] && echo "   $name: TIMED OUT" | tee -a "$OUT/steps.log"
    return 0
}

CONFIGURE_STATUS="not run"
BUILD_STATUS="not run"
TEST_STATUS="not run"
CUDA_STATUS="not run"
SWEEP_STATUS="not run"
MILLION_STATUS="not run"
BENCH_STATUS="not run"

write_summary() {
    local end
    end=$(date +%s)
    {
        echo "# libgpurnn GPU check"
        echo
        echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'), took $((end - START)) s (budget $BUDGET s)"
        echo "- host: $(hostname 2>/dev/null), $(nproc 2>/dev/null) CPUs, $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//')"
        if [ -s "$OUT/git.txt" ]; then echo "- commit: $(head -1 "$OUT/git.txt")"; fi
        gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>/dev/null | head -1)
        echo "- GPU (name, driver, memory, compute capability): ${gpu:-none found (nvidia-smi failed)}"
        echo "- CUDA toolkit: $( (nvcc --version 2>/dev/null || /usr/local/cuda/bin/nvcc --version 2>/dev/null) | grep -i release | sed 's/.*release/release/')"
        echo "- CUDA architectures: ${ARCH:-?}"
        echo
        echo "| step | result |"
        echo "|---|---|"
        echo "| configure | $CONFIGURE_STATUS |"
        echo "| build | $BUILD_STATUS |"
        echo "| ctest | $TEST_STATUS |"
        echo "| bench, presets, CUDA + cuDNN (--backend cuda --peers) | $CUDA_STATUS |"
        echo "| bench, CUDA sweep T=1e3..1e5 | $SWEEP_STATUS |"
        echo "| bench, CUDA V=128 H=1024 B=32 T=1e6, checkpointed BPTT | $MILLION_STATUS |"
        echo "| bench, presets, CPU and CUDA (--backend all --peers) | $BENCH_STATUS |"
        echo
        if [ ${#FAILED[@]} -gt 0 ]; then
            printf '**FAILED:** '
            printf '%s; ' "${FAILED[@]}"
            echo
        else
            echo "**All steps passed.**"
        fi
        if [ -s "$OUT/ctest.log" ]; then
            echo
            echo "## ctest"
            echo '```'
            grep -E "tests passed|tests failed|\*\*\*Failed|\*\*\*Timeout|\*\*\*Exception|Not Run|Total Test time" "$OUT/ctest.log" | tail -40
            echo '```'
        fi
        for f in bench-cuda sweep million bench; do
            if [ -s "$OUT/$f.txt" ]; then
                echo
                echo "## gpurnn-bench ($f)"
                echo '```'
                grep -vE '^\s*$' "$OUT/$f.txt" | grep -vE '^(gpurnn-bench: libgpurnn|one step =)' | head -80
                echo '```'
            fi
        done
        echo
        echo "Logs: $(cd "$OUT" && ls | tr '\n' ' ')"
    } >"$SUMMARY"
}
trap write_summary EXIT

# ---- 1. machine and commit ---------------------------------------------------------------
{
    nvidia-smi 2>&1
    echo
    nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap,clocks.max.sm --format=csv 2>&1
} >"$OUT/nvidia-smi.txt"
{
    lscpu 2>&1
    echo
    free -m 2>&1
    echo
    (nvcc --version 2>/dev/null || /usr/local/cuda/bin/nvcc --version) 2>&1
    cmake --version 2>&1 | head -1
} >"$OUT/machine.txt"
if git -C "$REPO" rev-parse --git-dir >/dev/null 2>&1; then
    {
        git -C "$REPO" log -1 --format='%h %s (%ci)'
        git -C "$REPO" status --short
    } >"$OUT/git.txt" 2>&1
fi

# ---- 2. configure and build --------------------------------------------------------------
CAP=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
if [ -n "${GPURNN_CUDA_ARCH:-}" ]; then
    ARCH=$GPURNN_CUDA_ARCH
elif [[ "$CAP" =~ ^[0-9]+$ ]]; then
    ARCH=$CAP
elif cmake --version | head -1 | awk '{split($3, v, "."); exit !(v[1] > 3 || (v[1] == 3 && v[2] >= 24))}'; then
    ARCH=native
else
    ARCH=90
fi
run configure 150 cmake -S "$REPO" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="$ARCH"
if [ "$STEP_RC" -ne 0 ] && [ "$ARCH" != 90 ]; then
    mv "$OUT/configure.log" "$OUT/configure-$ARCH.log"
    ARCH=90
    run configure 120 cmake -S "$REPO" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="$ARCH"
fi
if [ "$STEP_RC" -eq 0 ]; then
    CONFIGURE_STATUS="ok (CMAKE_CUDA_ARCHITECTURES=$ARCH; $(grep -m1 'CUDA backend' "$OUT/configure.log" | sed 's/^-- //'))"
    grep -q "CUDA backend: ON" "$OUT/configure.log" || FAILED+=("configure: the CUDA backend is OFF")
    run build 300 cmake --build "$BUILD" -j "$JOBS"
    if [ "$STEP_RC" -eq 0 ]; then
        BUILD_STATUS="ok"
    else
        BUILD_STATUS="FAILED (exit $STEP_RC, see build.log)"
        FAILED+=("build")
        # build what can be built, so the tests and the bench may still run
        run build-keep-going 120 cmake --build "$BUILD" -j "$JOBS" -- -k
    fi
else
    CONFIGURE_STATUS="FAILED (exit $STEP_RC, see configure.log)"
    FAILED+=("configure")
fi

# ---- 3. tests ----------------------------------------------------------------------------
if [ "$BUILD_STATUS" != "not run" ] && [ -f "$BUILD/CTestTestfile.cmake" ]; then
    run ctest 200 ctest --test-dir "$BUILD" --output-on-failure -j "$JOBS" --timeout 120
    line=$(grep -E "tests passed, .* tests failed out of" "$OUT/ctest.log" | tail -1)
    if [ "$STEP_RC" -eq 0 ]; then
        TEST_STATUS="ok: ${line:-passed}"
    else
        TEST_STATUS="FAILED (exit $STEP_RC): ${line:-see ctest.log}"
        FAILED+=("ctest")
    fi
    # the CUDA instances must have run, not skipped
    skipped=$(grep -ciE "skipped|no usable CUDA|no NVIDIA" "$OUT/ctest.log")
    [ "${skipped:-0}" -gt 0 ] && TEST_STATUS="$TEST_STATUS; $skipped log lines mention skips (see ctest.log)"
fi

# ---- 4. benchmark ------------------------------------------------------------------------
# The GPU figures come first (the CPU backend may be slow on some shapes and must not eat
# their time); then every preset on both backends for the CPU-vs-GPU ratios.
BENCH=$BUILD/bench/gpurnn-bench
bench_step() { # bench_step NAME CAP STATUS_VAR ARGS... : JSON lines to NAME.jsonl, the table to NAME.txt
    local name=$1 cap=$2 var=$3
    shift 3
    run "$name" "$cap" "$BENCH" "$@" --json --plot "$OUT/$name.svg"
    grep '^{' "$OUT/$name.log" >"$OUT/$name.jsonl" || true
    grep -v '^{' "$OUT/$name.log" >"$OUT/$name.txt" || true
    rm -f "$OUT/$name.log"
    if [ "$STEP_RC" -eq 0 ]; then
        printf -v "$var" '%s' "ok"
    else
        printf -v "$var" '%s' "FAILED (exit $STEP_RC$([ "$STEP_RC" -eq 124 ] && echo ', timed out'))"
        FAILED+=("$name")
    fi
}
if [ "$BUILD_STATUS" != "not run" ] && [ -x "$BENCH" ]; then
    bench_step bench-cuda 150 CUDA_STATUS --preset all --backend cuda --peers --max-time 10 --timeout 60
    bench_step sweep 120 SWEEP_STATUS --preset long --seq 1000,10000,100000 --backend cuda --peers \
        --steps 3 --warmup 1 --max-time 10 --timeout 60
    # issue 7: one training step at T = 10^6 with checkpointed BPTT (the full history would
    # be 128 GiB); the table's "ckpt k" and "act MB" columns show what it kept
    bench_step million 150 MILLION_STATUS --vocab 128 --hidden 1024 --batch 32 --seq 1000000 --backend cuda \
        --bptt-checkpoint auto --steps 1 --warmup 0 --max-time 1 --timeout 140
    bench_step bench 240 BENCH_STATUS --preset all --backend all --peers --max-time 10 --timeout 60
    grep '"kind":"step","impl":"gpurnn","backend":"cuda"' "$OUT/bench-cuda.jsonl" 2>/dev/null | grep -q '"status":"ok"' ||
        FAILED+=("no successful CUDA measurement of gpurnn (see bench-cuda.txt)")
else
    BENCH_STATUS="not built"
    FAILED+=("gpurnn-bench not built")
fi

[ ${#FAILED[@]} -eq 0 ]
