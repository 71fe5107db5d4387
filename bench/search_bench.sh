#!/usr/bin/env bash
# Issue 13's search benchmark: the same 40 sampled cnn3 configurations run with pruning off,
# with ASHA (eta 3) and with the median rule, for several sampler seeds; then TPE against
# random. One database per run under $OUT (default results/search-bench), then a summary
# table (bench/search_summary.py). Usage:
#   bench/search_bench.sh [SEEDS...]            # default: 0 1 2
#   VARIANTS="random:none random:asha" bench/search_bench.sh 0
# Runs sequentially: one training process at a time on the 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${BIN:-target/release/cifar-sweep}"
OUT="${OUT:-results/search-bench}"
VARIANTS="${VARIANTS:-random:none random:asha random:median tpe:none tpe:asha}"
SEEDS=("$@"); [ ${#SEEDS[@]} -gt 0 ] || SEEDS=(0 1 2)
mkdir -p "$OUT/sweeps"
for seed in "${SEEDS[@]}"; do
  for v in $VARIANTS; do
    sampler="${v%%:*}"; prune="${v##*:}"
    case "$prune" in
      none) rule='kind = "none"' ;;
      asha) rule=$'kind = "asha"\nreduction_factor = 3\ngrace_epochs = 1' ;;
      median) rule=$'kind = "median"\nwarmup_epochs = 1\nstartup_trials = 5' ;;
    esac
    name="cnn3-${sampler}-${prune}-s${seed}"
    file="$OUT/sweeps/$name.toml"
    sed -e "s/@NAME@/$name/; s/@SAMPLER@/$sampler/g; s/@SEED@/$seed/g" bench/search/cnn3_space.toml \
      | awk -v rule="$rule" '{ if ($0 == "@PRUNE@") print rule; else print }' > "$file"
    echo "== $name ($(date -u +%H:%M:%S))"
    "$BIN" run "$file" --db "$OUT/$name.db" --quiet
  done
done
python3 bench/search_summary.py "$OUT"
