#!/usr/bin/env bash
# bench/checkpoint-bptt.sh BUILD_DIR OUTDIR — the CPU measurements of checkpointed BPTT
# (issue 7) with gpurnn-bench, V=128 H=256 B=1 float32, SGD, $THREADS threads (default 1):
#   1. T = 10^5 with the full history and with checkpoints (k = C = 1024, what the
#      automatic choice picks under a 16 MiB budget), alternating ROUNDS times so that a
#      change in the machine's load hits both alike; each run is 1 warm-up + 3 timed
#      steps, and the summary gives every median and their ratio;
#   2. T = 10^6 with the automatic choice under a 256 MiB budget: one step, peak RSS.
# Writes each run's table to OUTDIR and a summary to OUTDIR/summary.txt.
set -u
if [ $# -ne 2 ]; then
    echo "usage: $0 BUILD_DIR OUTDIR" >&2
    exit 2
fi
BENCH=$1/bench/gpurnn-bench
OUT=$2
ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-1}
mkdir -p "$OUT" || exit 2
common=(--vocab 128 --hidden 256 --batch 1 --backend cpu --threads "$THREADS" --gemm-size 512)
{
    echo "commit: $(git -C "$(dirname "$0")" log -1 --format='%h %s' 2>/dev/null)"
    echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$OUT/summary.txt"
for r in $(seq 1 "$ROUNDS"); do
    for mode in off auto; do
        "$BENCH" "${common[@]}" --seq 100000 --steps 3 --warmup 1 --max-time 600 \
            --bptt-checkpoint "$mode" --activation-budget 16 >"$OUT/t1e5-$mode-$r.txt" 2>&1
        echo "T=1e5 $mode round $r: $(grep '^gpurnn ' "$OUT/t1e5-$mode-$r.txt")" >>"$OUT/summary.txt"
    done
done
"$BENCH" "${common[@]}" --seq 1000000 --steps 1 --warmup 0 --max-time 1 --timeout 1200 \
    --bptt-checkpoint auto --activation-budget 256 >"$OUT/t1e6-auto.txt" 2>&1
echo "T=1e6 auto: $(grep '^gpurnn ' "$OUT/t1e6-auto.txt")" >>"$OUT/summary.txt"
# the median (13th field of a summary line) of each T=1e5 run: checkpointed over full
# history, round by round
awk '/^T=1e5 off/ {off[$4] = $13} /^T=1e5 auto/ {auto[$4] = $13}
     END {for (r in off) if (r in auto) printf "round %s: checkpointed / full = %.3f\n", r, auto[r] / off[r]}' \
    "$OUT/summary.txt" >>"$OUT/summary.txt"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/summary.txt"
cat "$OUT/summary.txt"
