#!/usr/bin/env bash
# ThreadSanitizer check of libgpurnn's thread-safety promises (include/gpurnn.h: different
# models on different threads at once; per-thread last_error; model-free functions from
# any thread). Builds the library and its test program with clang -fsanitize=thread, CPU
# backend only, in its own build directory, and runs the thread tests:
#   Backends/ConcurrentModelsTest.*   (tests/test_threads.cc: 4 models on 4 threads over
#                                      forward/backward/clip/step/sample/save/load, bit for
#                                      bit equal to sequential runs; concurrent saves)
#   Backends/ThreadsTest.*, ThreadLocalErrors.*   (tests/test_init_layout.cc)
#   AllocationFaultHook.*              (the test-only fault countdown is per thread)
#   CpuPool.*                          (tests/test_cpu_pool.cc: the CPU backend's own thread
#                                      pool, with its own thread counts: OMP_NUM_THREADS=1
#                                      below does not keep it to one thread)
# Exits non-zero if a test fails or ThreadSanitizer reports anything.
#
# Why OMP_NUM_THREADS=1 and OPENBLAS_NUM_THREADS=1: the OpenMP runtime and OpenBLAS are
# prebuilt, not instrumented. Their thread pools hand work between threads through
# futexes and atomics that ThreadSanitizer cannot see, so with more than one OpenMP
# thread every parallel loop of the CPU backend would be reported as a race (false
# positives: e.g. the master thread reading per-block sums its team wrote). With one
# OpenMP thread no team is ever started, every library access happens on the calling
# thread, and the concurrency that remains is exactly the one under test: the test's own
# std::threads using the library at the same time. The library's OpenMP regions are
# still compiled in and entered (as teams of one). Even so the runtimes keep per-thread
# pools whose blocks move between threads behind TSan's back (e.g. libomp's __kmp_free
# memsets a block another thread's runtime used), so reports raised from inside those
# uninstrumented libraries, and only those, are ignored (TSAN_OPTIONS below); every
# access made by libgpurnn's or the tests' own code is still checked.
#
# The device emulator is left out (-DGPURNN_DEVICE_EMULATOR=OFF): its fibers switch stacks
# without ThreadSanitizer's fiber annotations, and the emulated CUDA tests run in the main
# suite and under ASan (.ci/sanitizers.sh) already.
#
# Usage: .ci/tsan.sh [build-dir]   (default build-tsan; needs clang, cmake, GoogleTest,
# an OpenBLAS development package; as root with apt-get, it installs them). Run by
# .ci/run after the sanitizer and fuzzing steps.
set -euo pipefail
cd "$(dirname "$0")/.."
build="${1:-build-tsan}"
start=$(date +%s)

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update
  apt-get install -y clang libclang-rt-14-dev libopenblas-openmp-dev libgtest-dev cmake pkg-config
fi

cmake -S . -B "$build" \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_FLAGS="-fsanitize=thread -fno-omit-frame-pointer" \
  -DCMAKE_CXX_FLAGS="-fsanitize=thread -fno-omit-frame-pointer" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=thread" \
  -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=thread" \
  -DGPURNN_WITH_CUDA=OFF -DGPURNN_BUILD_EXAMPLES=OFF -DGPURNN_BUILD_BENCH=OFF \
  -DGPURNN_DEVICE_EMULATOR=OFF
cmake --build "$build" -j"$(nproc)" --target gpurnn_tests gpurnn_fault_tests gpurnn_pool_tests

log="$build/tsan.log"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
# halt_on_error: the first report fails the run; exitcode: what a report exits with.
# ignore_noninstrumented_modules: memory functions called from inside uninstrumented
# libraries (the OpenMP runtimes, OpenBLAS) are not reported (what libomp itself asks for);
# their synchronisation calls (mutexes, thread creation) are still tracked.
export TSAN_OPTIONS="halt_on_error=1 exitcode=66 second_deadlock_stack=1 history_size=4 ignore_noninstrumented_modules=1"
status=0
{
  "$build/tests/gpurnn_tests" --gtest_filter='*ConcurrentModelsTest*:*ThreadsTest*:ThreadLocalErrors.*' &&
  "$build/tests/gpurnn_fault_tests" --gtest_filter='AllocationFaultHook.*' &&
  "$build/tests/gpurnn_pool_tests"
} >"$log" 2>&1 || status=$?
tail -n 30 "$log"
if grep -q "WARNING: ThreadSanitizer" "$log"; then
  echo "tsan.sh: ThreadSanitizer reported a problem (full log: $log)" >&2
  status=${status/#0/1}
fi
echo "tsan.sh: $( [ "$status" -eq 0 ] && echo passed || echo FAILED ) in $(( $(date +%s) - start )) s"
exit "$status"
