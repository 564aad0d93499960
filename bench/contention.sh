#!/usr/bin/env bash
# bench/contention.sh [BUILD_DIR] [OUTDIR]: how the CPU backend's speed holds up on a busy
# machine. For each CPU preset, gpurnn-bench measures one training step with 1 and 2
# threads, idle and while N busy-loop processes (N = 1 and 2 here, one per taken core)
# compete for the cores; rounds alternate idle and contended runs so that a drift of the
# machine's own load shows up in both. Prints, per preset and thread count, the median
# step time of each round and the contended/idle throughput ratio, and writes the JSON
# records to OUTDIR (default bench/results/contention-<commit>).
#
# The busy loops are plain shell loops (`while :; do :; done`): each keeps one core fully
# busy at the ordinary priority, like a neighbour's job or a CI runner's other work.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
out=${2:-bench/results/contention-$commit}
bench=$build/bench/gpurnn-bench
presets=${GPURNN_CONTENTION_PRESETS:-min-char-rnn,long,batched}
rounds=${GPURNN_CONTENTION_ROUNDS:-2}
max_time=${GPURNN_CONTENTION_MAX_TIME:-4}
[ -x "$bench" ] || { echo "contention.sh: $bench not built" >&2; exit 1; }
mkdir -p "$out"

busy_pids=()
start_busy() { # N
    for ((i = 0; i < $1; i++)); do
        bash -c 'while :; do :; done' &
        busy_pids+=($!)
    done
    sleep 0.5 # let the scheduler spread them
}
stop_busy() {
    if [ ${#busy_pids[@]} -gt 0 ]; then
        kill "${busy_pids[@]}" 2>/dev/null || true
        wait "${busy_pids[@]}" 2>/dev/null || true
    fi
    busy_pids=()
}
trap stop_busy EXIT

# median step seconds of one gpurnn-bench run: PRESET THREADS LOAD ROUND
measure() {
    local preset=$1 threads=$2 load=$3 round=$4 file
    file=$out/$preset-t$threads-load$load-r$round.json
    start_busy "$load"
    "$bench" --backend cpu --preset "$preset" --threads "$threads" --max-time "$max_time" --json \
        >"$file" 2>/dev/null || true
    stop_busy
    awk -F'"median_s":' '/"kind":"step"/ { split($2, v, ","); print v[1]; exit }' "$file"
}

{
    echo "contention.sh at $commit on $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) CPUs"
    echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
    printf '%-13s %7s %5s  %s  %s\n' preset threads load "median step ms per round" "throughput vs idle (per round)"
} | tee "$out/summary.txt"
IFS=, read -r -a preset_list <<<"$presets"
for preset in "${preset_list[@]}"; do
    for threads in 1 2; do
        declare -A ms=()
        for ((r = 1; r <= rounds; r++)); do
            for load in 0 1 2; do
                ms[$load,$r]=$(measure "$preset" "$threads" "$load" "$r")
            done
        done
        for load in 0 1 2; do
            times="" ratios=""
            for ((r = 1; r <= rounds; r++)); do
                t=${ms[$load,$r]:-nan} idle=${ms[0,$r]:-nan}
                times+=$(awk -v t="$t" 'BEGIN { printf " %8.3f", t * 1000 }')
                ratios+=$(awk -v t="$t" -v i="$idle" 'BEGIN { printf " %5.2f", (t > 0 ? i / t : 0) }')
            done
            printf '%-13s %7d %5d %s   %s\n' "$preset" "$threads" "$load" "$times" "$ratios"
        done | tee -a "$out/summary.txt"
        unset ms
    done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/summary.txt"
