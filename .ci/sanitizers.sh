#!/usr/bin/env bash
# CI step: the whole CPU test suite, and every CUDA test against the device emulator
# (tests/emulator: the CUDA backend's own sources built as host code, which the sanitizers
# then instrument too), under AddressSanitizer (with LeakSanitizer) and
# UndefinedBehaviorSanitizer. Called by .ci/run after README.md's two commands; can be
# run on its own from the root of a clone (as root on Debian 12, or with the packages
# below already installed).
#
# Builds without nvcc (-DGPURNN_WITH_CUDA=OFF: the real module's host code would not be
# instrumented; the emulated module is) with GCC in build-asan/, every target compiled
# with -fsanitize=address,undefined -fno-sanitize-recover=all (GPURNN_SANITIZE), then
# runs ctest there. Any sanitizer report fails the test that triggered it, and so this
# script: ASan and UBSan stop the process with a non-zero status at the first report,
# and LeakSanitizer fails it at exit. gpurnn-bench is not built (it has no tests), and the
# package tests are left out (tests/CMakeLists.txt says why).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

build=${GPURNN_ASAN_BUILD_DIR:-build-asan}
jobs=${GPURNN_JOBS:-$(nproc)}

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update
    apt-get install -y libopenblas-openmp-dev libgtest-dev libboost-context-dev cmake g++ pkg-config
fi

# halt_on_error: stop at the first report. detect_leaks: LeakSanitizer at exit.
# abort_on_error=0 keeps the exit status non-zero but plain (no core dumps).
# allocator_may_return_null=1: an allocation too large to satisfy returns NULL, as glibc's
# does, instead of ASan stopping the process; BadInputTest.ModelCreateOutOfMemory asks
# for terabytes on purpose to check that model_create answers GPURNN_ERR_OUT_OF_MEMORY.
export ASAN_OPTIONS="halt_on_error=1:detect_leaks=1:abort_on_error=0:allocator_may_return_null=1:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1:strict_init_order=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
# Only third-party leaks may be listed there, each with its reason.
export LSAN_OPTIONS="suppressions=$PWD/.ci/lsan.supp:print_suppressions=0"

cmake -S . -B "$build" -DGPURNN_WITH_CUDA=OFF -DGPURNN_SANITIZE=address,undefined \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGPURNN_BUILD_BENCH=OFF \
    -DCMAKE_C_COMPILER=gcc -DCMAKE_CXX_COMPILER=g++
cmake --build "$build" -j"$jobs"
# Left out here, and only here: the five longest emulated CUDA checks, which repeat kernels
# the shorter emulated tests run under the sanitizers too, over many more entries or steps
# (full gradient checks, checkpointed BPTT over several chunks, four models at once). The
# main suite (README's test command) runs them without sanitizers. Here they were 1,387 s
# of the 3,161 s the tests took together (1,644 s of wall time at -j2, at 448d471).
long_emulated='^emu:(Backends/GradcheckTest\.Float64AllTensorsBelow1e5|Backends/BpttCheckpointTest\.(BitIdenticalToTheFullHistory|GradcheckFloat64Below1e5)|Backends/ConcurrentModelsTest\.|CellsCuda/CellLongTest\.)'
ctest --test-dir "$build" --output-on-failure -j"$jobs" -E "$long_emulated"
