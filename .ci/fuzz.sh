#!/usr/bin/env bash
# CI step: builds the libFuzzer targets (fuzz/, see fuzz/README.md) with Clang in
# build-fuzz/ (CPU only, everything instrumented with -fsanitize=fuzzer-no-link,address,
# undefined), replays the committed seed corpora and regression inputs (ctest), checks
# the committed corpus against fuzz/make_seed_corpus, then runs each fuzzer for
# a bounded time (GPURNN_FUZZ_SECONDS, default 60) on a scratch copy of its corpus, so
# the committed corpus is never modified. Any crash, leak, sanitizer report, timeout
# (-timeout=10 per input) or memory blow-up (-rss_limit_mb=2048) fails the script; the
# input that caused it is left in build-fuzz/artifacts/ and its path printed.
# Called by .ci/run after .ci/sanitizers.sh; can be run on its own from a clone's root.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

build=${GPURNN_FUZZ_BUILD_DIR:-build-fuzz}
seconds=${GPURNN_FUZZ_SECONDS:-60}
jobs=${GPURNN_JOBS:-$(nproc)}

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update
    # clang-14's libFuzzer and sanitizer runtimes are in libclang-rt-14-dev (a dependency
    # of Debian 12's clang-14, named explicitly in case that ever changes).
    apt-get install -y clang libclang-rt-14-dev libopenblas-openmp-dev cmake pkg-config
fi

# An allocation over 1 GiB returns NULL (the library answers GPURNN_ERR_OUT_OF_MEMORY,
# which the targets accept, and ASan prints a warning that the log filter below drops)
# instead of tripping libFuzzer's -malloc_limit_mb: a valid checkpoint may describe a
# model larger than the fuzzer's memory (fuzz/README.md).
export ASAN_OPTIONS="halt_on_error=1:detect_leaks=1:abort_on_error=0:allocator_may_return_null=1:max_allocation_size_mb=1024"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
export LSAN_OPTIONS="suppressions=$PWD/.ci/lsan.supp:print_suppressions=0"
# The targets use tiny models; one OpenMP thread keeps runs reproducible and cheap.
export OMP_NUM_THREADS=1

CC=clang CXX=clang++ cmake -S . -B "$build" -DGPURNN_WITH_CUDA=OFF -DGPURNN_BUILD_FUZZERS=ON \
    -DGPURNN_BUILD_TESTS=OFF -DGPURNN_BUILD_EXAMPLES=OFF -DGPURNN_BUILD_BENCH=OFF \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build "$build" -j"$jobs"

scratch=$(mktemp -d "${TMPDIR:-/tmp}/gpurnn-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
export GPURNN_FUZZ_TMPDIR=$scratch

# The committed seeds are still what the fuzzers should start from: the generator writes
# the same fuzz_api byte strings, and every seed checkpoint loads. (The checkpoints' values
# depend on the CPU backend's build, so they are not compared byte for byte.)
mkdir -p "$scratch/seeds/fuzz_checkpoint_load" "$scratch/seeds/fuzz_api"
"$build/fuzz/make_seed_corpus" "$scratch/seeds"
if ! diff -r fuzz/corpus/fuzz_api "$scratch/seeds/fuzz_api" ||
   ! "$build/fuzz/make_seed_corpus" --check fuzz/corpus; then
    echo "fuzz.sh: fuzz/corpus/ is not what fuzz/make_seed_corpus writes, or a seed" \
         "checkpoint does not load; regenerate it (see fuzz/README.md)" >&2
    exit 1
fi

# Seed corpora and regression inputs, replayed once each.
ctest --test-dir "$build" --output-on-failure

mkdir -p "$build/artifacts"
status=0
# -max_len: libFuzzer's default is the largest seed (82 bytes for fuzz_api, too short
# for a long call sequence); checkpoints get room for models a little larger than the
# seeds.
for fuzzer in fuzz_checkpoint_load fuzz_api; do
    case $fuzzer in
    fuzz_checkpoint_load) max_len=8192 ;;
    *) max_len=2048 ;;
    esac
    corpus=$scratch/corpus-$fuzzer
    cp -r "fuzz/corpus/$fuzzer" "$corpus"
    echo "== $fuzzer: ${seconds}s"
    if ! "$build/fuzz/$fuzzer" "$corpus" -max_total_time="$seconds" -max_len=$max_len -timeout=10 \
        -rss_limit_mb=2048 -malloc_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$build/artifacts/$fuzzer-" 2>&1 |
        grep -v "WARNING: AddressSanitizer failed to allocate" | tail -n 80; then
        echo "fuzz.sh: $fuzzer failed; the input is in $build/artifacts/" >&2
        status=1
    fi
done
exit $status
