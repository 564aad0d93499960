#!/usr/bin/env bash
# bench/gpu-check.sh OUTDIR — the whole GPU check of libgpurnn in one go, for a machine
# with an NVIDIA GPU and no network (issue 3, section 5; issue 4):
#   1. records the card, driver, toolkit and commit;
#   2. configures and builds the repository for this GPU (its compute capability, else
#      CMAKE_CUDA_ARCHITECTURES=native, else 90) in $GPURNN_GPU_BUILD_DIR (default
#      <repo>/build-gpu);
#   3. points GPURNN_CUDA_MODULE at the real CUDA module the build made
#      ($BUILD/src/libgpurnn_cuda.so, not the device emulator) for every run that follows,
#      and records which module libgpurnn loads (gpurnn_backend_check's message and the
#      gpurnn libraries mapped into the process; module.log);
#   4. runs the whole ctest suite;
#   5. runs the CUDA tests of gpurnn_tests under compute-sanitizer: memcheck, racecheck
#      and, when the budget allows, synccheck (racecheck and synccheck on a smaller set of
#      the tests that drive the kernels; GPURNN_SANITIZER_FILTER and
#      GPURNN_SANITIZER_QUICK_FILTER override the gtest filters); each tool's summary line
#      goes to sanitizer-summary.txt;
#   6. runs gpurnn-bench: every preset on the CUDA backend beside the cuDNN peer; the
#      CUDA backend and cuDNN at T = 1000, 10000, 100000; one step of V=128 H=1024 B=32
#      at T = 10^6 with checkpointed BPTT (issue 7); then every preset with
#      --backend all --peers (the CPU backend too, and the PyTorch peer if /usr/bin/python3
#      has torch) — each with its table, JSON lines and SVG plot;
#   7. writes every log and a short summary (OUTDIR/summary.md: one line per stage with
#      passed / FAILED / TIMED OUT / not run and its wall time) into OUTDIR.
# Everything runs under timeouts so that the whole script ends within about 9 minutes
# ($GPURNN_GPU_CHECK_BUDGET seconds, default 540); the sanitizer stages leave
# $GPURNN_GPU_CHECK_BENCH_RESERVE seconds (default 290: the caps of the three CUDA bench
# stages) of it to the benchmark. The summary
# is written whatever happens; the exit status is non-zero when a stage failed or timed
# out (configure, build, a test, a sanitizer run, a gpurnn measurement).
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
BENCH_RESERVE=${GPURNN_GPU_CHECK_BENCH_RESERVE:-290}
START=$(date +%s)
DEADLINE=$((START + BUDGET))
JOBS=$(nproc 2>/dev/null || echo 4)
SUMMARY=$OUT/summary.md
FAILED=()
RESERVE=0 # seconds the current stage must leave for the stages after it

# The stages, in the order they run, with what the summary calls them.
STAGES=(configure build build-keep-going module ctest sanitizer-memcheck sanitizer-racecheck
    sanitizer-synccheck bench-cuda sweep million bench)
declare -A STAGE_DESC=(
    [configure]="configure"
    [build]="build"
    [build-keep-going]="build, keep going (after a failed build)"
    [module]="CUDA module: which one libgpurnn loads"
    [ctest]="ctest, whole suite"
    [sanitizer-memcheck]="compute-sanitizer memcheck, CUDA tests"
    [sanitizer-racecheck]="compute-sanitizer racecheck, kernel tests"
    [sanitizer-synccheck]="compute-sanitizer synccheck, kernel tests"
    [bench-cuda]="bench, presets, CUDA + cuDNN (--backend cuda --peers)"
    [sweep]="bench, CUDA sweep T=1e3..1e5"
    [million]="bench, CUDA V=128 H=1024 B=32 T=1e6, checkpointed BPTT"
    [bench]="bench, presets, CPU and CUDA (--backend all --peers)"
)
declare -A STAGE_RESULT=() STAGE_WALL=() STAGE_LIMIT=()

# Seconds left before the deadline, minus a reserve for the summary and $RESERVE for the
# stages after this one, capped at $1 (at least 1).
left() {
    local cap=$1 now rest
    now=$(date +%s)
    rest=$((DEADLINE - now - 10 - RESERVE))
    [ "$rest" -lt 1 ] && rest=1
    [ "$rest" -gt "$cap" ] && rest=$cap
    echo "$rest"
}

# result NAME TEXT : the stage's line in the summary
result() { STAGE_RESULT[$1]=$2; }

# run NAME CAP_SECONDS CMD... : runs CMD under a timeout, output to OUT/NAME.log. Sets
# STEP_RC (124 or 137: timed out; 125: not run, no time left) and the stage's default
# result (passed / FAILED / TIMED OUT), which the caller may replace.
STEP_RC=0
MIN_STAGE=${GPURNN_GPU_CHECK_MIN_STAGE:-5}
run() {
    local name=$1 cap=$2 t0 t1 limit
    shift 2
    limit=$(left "$cap")
    STAGE_LIMIT[$name]=$limit
    if [ "$limit" -lt "$MIN_STAGE" ]; then
        STEP_RC=125
        STAGE_WALL[$name]=0
        result "$name" "NOT RUN: the time budget is spent"
        echo "== $name: not run, ${limit}s left in the budget" | tee -a "$OUT/steps.log"
        return 0
    fi
    t0=$(date +%s)
    echo "== $name (limit ${limit}s): $*" | tee -a "$OUT/steps.log"
    timeout --signal=TERM --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
    STEP_RC=$?
    t1=$(date +%s)
    STAGE_WALL[$name]=$((t1 - t0))
    echo "   $name: exit $STEP_RC after $((t1 - t0))s" | tee -a "$OUT/steps.log"
    case $STEP_RC in
        0) result "$name" "passed" ;;
        124 | 137)
            echo "   $name: TIMED OUT" | tee -a "$OUT/steps.log"
            result "$name" "TIMED OUT (limit ${limit}s)"
            ;;
        *) result "$name" "FAILED (exit $STEP_RC)" ;;
    esac
    return 0
}
timed_out() { [ "$STEP_RC" -eq 124 ] || [ "$STEP_RC" -eq 137 ]; }

write_summary() {
    local end name gpu
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
        echo "- CUDA module: GPURNN_CUDA_MODULE=${GPURNN_CUDA_MODULE:-(unset)}"
        echo "- compute-sanitizer: ${SANITIZER:-not found}"
        echo
        echo "| stage | result | wall s | limit s |"
        echo "|---|---|---|---|"
        for name in "${STAGES[@]}"; do
            # the keep-going build appears only when it ran
            [ "$name" = build-keep-going ] && [ -z "${STAGE_RESULT[$name]:-}" ] && continue
            echo "| ${STAGE_DESC[$name]} | ${STAGE_RESULT[$name]:-not run} | ${STAGE_WALL[$name]:--} | ${STAGE_LIMIT[$name]:--} |"
        done
        echo
        if [ ${#FAILED[@]} -gt 0 ]; then
            printf '**FAILED:** '
            printf '%s; ' "${FAILED[@]}"
            echo
        else
            echo "**All stages passed.**"
        fi
        if [ -s "$OUT/module.log" ]; then
            echo
            echo "## CUDA module"
            echo '```'
            head -20 "$OUT/module.log"
            echo '```'
        fi
        if [ -s "$OUT/ctest.log" ]; then
            echo
            echo "## ctest"
            echo '```'
            grep -E "tests passed|tests failed|\*\*\*Failed|\*\*\*Timeout|\*\*\*Exception|Not Run|Total Test time" "$OUT/ctest.log" | tail -40
            echo '```'
        fi
        if [ -s "$OUT/sanitizer-summary.txt" ]; then
            echo
            echo "## compute-sanitizer"
            echo '```'
            cat "$OUT/sanitizer-summary.txt"
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
        echo "Logs: $(cd "$OUT" && printf '%s ' *)"
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
BUILT=0
run configure 150 cmake -S "$REPO" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="$ARCH"
if [ "$STEP_RC" -ne 0 ] && [ "$ARCH" != 90 ]; then
    mv "$OUT/configure.log" "$OUT/configure-$ARCH.log"
    ARCH=90
    run configure 120 cmake -S "$REPO" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="$ARCH"
fi
if [ "$STEP_RC" -eq 0 ]; then
    result configure "passed (CMAKE_CUDA_ARCHITECTURES=$ARCH; $(grep -m1 'CUDA backend' "$OUT/configure.log" | sed 's/^-- //'))"
    grep -q "CUDA backend: ON" "$OUT/configure.log" || FAILED+=("configure: the CUDA backend is OFF")
    run build 300 cmake --build "$BUILD" -j "$JOBS"
    BUILT=1
    if [ "$STEP_RC" -ne 0 ]; then
        result build "${STAGE_RESULT[build]}, see build.log"
        FAILED+=("build")
        # build what can be built, so the tests and the bench may still run
        run build-keep-going 120 cmake --build "$BUILD" -j "$JOBS" -- -k
    fi
else
    result configure "${STAGE_RESULT[configure]}, see configure.log"
    FAILED+=("configure")
fi

# ---- 3. the CUDA module ------------------------------------------------------------------
# libgpurnn loads its CUDA backend with dlopen: from $GPURNN_CUDA_MODULE when set, else
# from beside libgpurnn.so. Point it at the real module this build made, so that the
# tests, the sanitizer runs and the bench use it and not a device emulator.
MODULE=$BUILD/src/libgpurnn_cuda.so
if [ -f "$MODULE" ]; then
    export GPURNN_CUDA_MODULE=$MODULE
else
    echo "no $MODULE (a build whose CUDA backend is inside libgpurnn.so, or a failed build): GPURNN_CUDA_MODULE left ${GPURNN_CUDA_MODULE:+as }${GPURNN_CUDA_MODULE:-unset}" |
        tee -a "$OUT/steps.log"
fi
if [ "$BUILT" -eq 1 ] && [ -f "$BUILD/src/libgpurnn.so" ]; then
    # A small program of the public API: gpurnn_backend_check's verdict and message, and
    # the gpurnn libraries mapped into the process after it (which module was loaded).
    PROBE_SRC=$BUILD/gpu-check-module-probe.c
    cat >"$PROBE_SRC" <<'EOF'
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpurnn.h"

int main(void)
{
    const char *env = getenv("GPURNN_CUDA_MODULE");
    printf("libgpurnn %s; GPURNN_CUDA_MODULE=%s\n", gpurnn_version(), env ? env : "(unset)");
    gpurnn_status s = gpurnn_backend_check(GPURNN_BACKEND_CUDA);
    const char *msg = gpurnn_last_error();
    printf("gpurnn_backend_check(GPURNN_BACKEND_CUDA): %s%s%s\n", gpurnn_status_string(s),
           msg && *msg ? ": " : "", msg && *msg ? msg : "");
    printf("gpurnn_backend_available(GPURNN_BACKEND_CUDA): %d\n", gpurnn_backend_available(GPURNN_BACKEND_CUDA));
    FILE *f = fopen("/proc/self/maps", "r");
    char line[4096], last[4096] = "";
    while (f && fgets(line, sizeof line, f)) {
        char *path = strchr(line, '/');
        if (!path || !strstr(path, "gpurnn")) continue;
        path[strcspn(path, "\n")] = '\0';
        if (strcmp(path, last)) printf("mapped: %s\n", path);
        snprintf(last, sizeof last, "%s", path);
    }
    if (f) fclose(f);
    return s == GPURNN_OK ? 0 : 1;
}
EOF
    CC_BIN=$(command -v cc || command -v gcc || echo cc)
    # shellcheck disable=SC2016 # the inner shell expands its own positional parameters
    run module 60 bash -c '"$1" -std=c11 -O1 -I"$2/include" -o "$3/gpu-check-module-probe" "$4" -L"$3/src" -lgpurnn -Wl,-rpath,"$3/src" && "$3/gpu-check-module-probe"' \
        _ "$CC_BIN" "$REPO" "$BUILD" "$PROBE_SRC"
    cat "$OUT/module.log"
    if [ "$STEP_RC" -eq 0 ]; then
        loaded=$(grep -m1 -E '^mapped: .*libgpurnn_cuda[^/]*\.so' "$OUT/module.log" | sed 's/^mapped: //')
        if [ -n "${GPURNN_CUDA_MODULE:-}" ] && [ "$loaded" != "$(readlink -f "$GPURNN_CUDA_MODULE")" ]; then
            result module "FAILED: loaded ${loaded:-no module file}, not $GPURNN_CUDA_MODULE"
            FAILED+=("module: not the real CUDA module")
        elif [[ "$loaded" == *emu* ]]; then
            result module "FAILED: the emulator module was loaded ($loaded)"
            FAILED+=("module: emulator")
        else
            result module "passed: CUDA usable, ${loaded:-CUDA backend inside libgpurnn.so (no module mapped)}"
        fi
    elif ! timed_out && [ "$STEP_RC" -ne 125 ]; then
        result module "FAILED (exit $STEP_RC): $(grep -m1 'gpurnn_backend_check' "$OUT/module.log" || echo 'see module.log')"
        FAILED+=("module: the CUDA backend is not usable")
    fi
fi

# ---- 4. tests ----------------------------------------------------------------------------
if [ "$BUILT" -eq 1 ] && [ -f "$BUILD/CTestTestfile.cmake" ]; then
    # On the GPU machine a CUDA test that finds no usable CUDA fails instead of skipping.
    run ctest 200 env GPURNN_TEST_REQUIRE_CUDA=1 ctest --test-dir "$BUILD" --output-on-failure -j "$JOBS" --timeout 120
    line=$(grep -E "tests passed, .* tests failed out of" "$OUT/ctest.log" | tail -1)
    if [ "$STEP_RC" -eq 0 ]; then
        result ctest "passed: ${line:-passed}"
    else
        result ctest "${STAGE_RESULT[ctest]}: ${line:-see ctest.log}"
        FAILED+=("ctest")
    fi
    # the CUDA instances must have run, not skipped
    skipped=$(grep -ciE "skipped|no usable CUDA|no NVIDIA" "$OUT/ctest.log")
    [ "${skipped:-0}" -gt 0 ] && result ctest "${STAGE_RESULT[ctest]}; $skipped log lines mention skips (see ctest.log)"
fi

# ---- 5. compute-sanitizer ----------------------------------------------------------------
# The CUDA instances of gpurnn_tests (.../CUDA), the cross-backend comparisons and the
# checkpoint-across-backends tests, less the few that repeat host-side work hundreds of
# times (file-damage loops); racecheck and synccheck, much slower, get the tests that drive
# every kernel (forward, backward, update, sampling) on small models.
SAN_FILTER=${GPURNN_SANITIZER_FILTER:-'*/CUDA:*CrossBackend*:*AcrossBackends*:CheckpointBackend.*:AutoBackend.*-*EveryDamagedByteIsDetected*:*TruncatedFilesAreFormatErrors*'}
SAN_QUICK_FILTER=${GPURNN_SANITIZER_QUICK_FILTER:-'*ReferenceAgreement*/CUDA:*Gradcheck*/CUDA:*Training*/CUDA:*Sample*/CUDA:*CrossBackend*-*Below1e5*'}
TESTS=$BUILD/tests/gpurnn_tests
SANITIZER=""
for c in "${GPURNN_COMPUTE_SANITIZER:-}" \
    "$(sed -n 's/^CMAKE_CUDA_COMPILER:[A-Z]*=\(.*\)\/nvcc$/\1/p' "$BUILD/CMakeCache.txt" 2>/dev/null)/compute-sanitizer" \
    "$(command -v compute-sanitizer 2>/dev/null)" \
    "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer" \
    /usr/local/cuda/bin/compute-sanitizer \
    /usr/local/cuda/compute-sanitizer/compute-sanitizer \
    /usr/local/cuda-*/bin/compute-sanitizer; do
    if [ -n "$c" ] && [ -f "$c" ] && [ -x "$c" ]; then
        SANITIZER=$c
        break
    fi
done

# sanitize TOOL CAP FILTER [TOOL OPTIONS...] : gpurnn_tests under compute-sanitizer --tool TOOL
sanitize() {
    local tool=$1 cap=$2 filter=$3 name=sanitizer-$1 log summary ok ok_cuda failed skipped
    shift 3
    log=$OUT/$name.log
    if [ -z "$SANITIZER" ]; then
        result "$name" "NOT RUN: compute-sanitizer not found (set GPURNN_COMPUTE_SANITIZER)"
        FAILED+=("$name: compute-sanitizer not found")
        echo "$tool: not run, compute-sanitizer not found" >>"$OUT/sanitizer-summary.txt"
        return 0
    fi
    if [ ! -x "$TESTS" ]; then
        result "$name" "NOT RUN: $TESTS was not built"
        FAILED+=("$name: no gpurnn_tests")
        return 0
    fi
    # --error-exitcode: an error the tool finds makes the run exit 99 (a failing test: 1)
    run "$name" "$cap" "$SANITIZER" --tool "$tool" --error-exitcode 99 --print-limit 50 "$@" \
        "$TESTS" --gtest_filter="$filter" --gtest_color=no
    if [ "$STEP_RC" -eq 125 ]; then
        echo "$tool: not run, the time budget is spent" >>"$OUT/sanitizer-summary.txt"
        FAILED+=("$name: no time left")
        return 0
    fi
    summary=$(grep -E '^=+ *(ERROR|RACECHECK|SYNCCHECK|INITCHECK|LEAK) SUMMARY' "$log" | tail -1 | sed 's/^=* *//')
    ok=$(grep -cE '^\[       OK \] .*\([0-9]+ ms\)' "$log")
    failed=$(grep -cE '^\[  FAILED  \] .*\([0-9]+ ms\)' "$log")
    skipped=$(grep -cE '^\[  SKIPPED \] .*\([0-9]+ ms\)' "$log")
    # the tests that ran on the device: the CUDA instances and the cross-backend ones
    ok_cuda=$(grep -cE '^\[       OK \] .*(/CUDA|CrossBackend).*\([0-9]+ ms\)' "$log")
    local tests="tests: $ok passed ($ok_cuda on CUDA), $failed failed, $skipped skipped"
    echo "$tool: ${summary:-no summary line (killed?)}; $tests; exit $STEP_RC after ${STAGE_WALL[$name]}s (limit ${STAGE_LIMIT[$name]}s)" >>"$OUT/sanitizer-summary.txt"
    case $STEP_RC in
        0)
            if [ "$ok_cuda" -eq 0 ]; then
                result "$name" "FAILED: no CUDA test ran ($tests; filter $filter)"
                FAILED+=("$name: no CUDA test ran")
            else
                result "$name" "passed: ${summary:-?}; $tests"
            fi
            ;;
        99)
            result "$name" "FAILED: ${summary:-errors found}; $tests"
            FAILED+=("$name: errors")
            ;;
        124 | 137)
            result "$name" "TIMED OUT (limit ${STAGE_LIMIT[$name]}s): ${summary:-no summary}; $tests before it"
            FAILED+=("$name: timed out")
            ;;
        *)
            result "$name" "FAILED (exit $STEP_RC): ${summary:-no summary}; $tests"
            FAILED+=("$name: exit $STEP_RC")
            ;;
    esac
    grep -m3 -E '^=+ *(Invalid|Race|Barrier|Error|Program hit|Warning)' "$log" >>"$OUT/sanitizer-summary.txt"
    return 0
}
if [ "$BUILT" -eq 1 ]; then
    : >"$OUT/sanitizer-summary.txt"
    echo "compute-sanitizer: ${SANITIZER:-not found}; GPURNN_CUDA_MODULE=${GPURNN_CUDA_MODULE:-(unset)}" >>"$OUT/sanitizer-summary.txt"
    RESERVE=$BENCH_RESERVE
    sanitize memcheck 90 "$SAN_FILTER"
    sanitize racecheck 50 "$SAN_QUICK_FILTER"
    # synccheck only when the budget still has room for it
    if [ "$(left 30)" -ge 20 ]; then
        sanitize synccheck 30 "$SAN_QUICK_FILTER"
    else
        result sanitizer-synccheck "not run: under 20 s left before the benchmark's share"
        echo "synccheck: not run, no time left in the budget" >>"$OUT/sanitizer-summary.txt"
    fi
    RESERVE=0
fi

# ---- 6. benchmark ------------------------------------------------------------------------
# The GPU figures come first (the CPU backend may be slow on some shapes and must not eat
# their time); then every preset on both backends for the CPU-vs-GPU ratios.
BENCH=$BUILD/bench/gpurnn-bench
bench_step() { # bench_step NAME CAP ARGS... : JSON lines to NAME.jsonl, the table to NAME.txt
    local name=$1 cap=$2
    shift 2
    run "$name" "$cap" "$BENCH" "$@" --json --plot "$OUT/$name.svg"
    if [ -f "$OUT/$name.log" ]; then
        grep '^{' "$OUT/$name.log" >"$OUT/$name.jsonl" || true
        grep -v '^{' "$OUT/$name.log" >"$OUT/$name.txt" || true
        rm -f "$OUT/$name.log"
    fi
    [ "$STEP_RC" -eq 0 ] || FAILED+=("$name")
}
if [ "$BUILT" -eq 1 ] && [ -x "$BENCH" ]; then
    bench_step bench-cuda 90 --preset all --backend cuda --peers --max-time 10 --timeout 60
    bench_step sweep 60 --preset long --seq 1000,10000,100000 --backend cuda --peers \
        --steps 3 --warmup 1 --max-time 10 --timeout 60
    # issue 7: one training step at T = 10^6 with checkpointed BPTT (the full history would
    # be 128 GiB); the table's "ckpt k" and "act MB" columns show what it kept
    bench_step million 140 --vocab 128 --hidden 1024 --batch 32 --seq 1000000 --backend cuda \
        --bptt-checkpoint auto --steps 1 --warmup 0 --max-time 1 --timeout 130
    bench_step bench 240 --preset all --backend all --peers --max-time 10 --timeout 60
    grep '"kind":"step","impl":"gpurnn","backend":"cuda"' "$OUT/bench-cuda.jsonl" 2>/dev/null | grep -q '"status":"ok"' ||
        FAILED+=("no successful CUDA measurement of gpurnn (see bench-cuda.txt)")
else
    result bench "not run: gpurnn-bench not built"
    FAILED+=("gpurnn-bench not built")
fi

[ ${#FAILED[@]} -eq 0 ]
