#!/usr/bin/env bash
# The numbers in docs/results.md: the default job (`secure-fedsa run` with no options: Rotten
# Tomatoes, 3 clients, Dirichlet 0.5, full 6-layer all-MiniLM-L6-v2, LoRA r=8 on query/value,
# 5 rounds x 6 local steps of batch 128, lr 0.005, clip 1, DP at epsilon 8 and CKKS on: the
# default job before the default clip became 5, pinned here) for every method, then
# FedSA-LoRA at tighter budgets and without DP. Runs one after the other (a few minutes each on
# 2 CPU cores when the machine is otherwise idle); finished runs are skipped on a rerun.
#
#   bash benchmarks/method_comparison.sh [OUT_DIR]      then
#   python benchmarks/results_table.py OUT_DIR
set -euo pipefail
out=${1:-runs/method-comparison}
run() {  # name, then options
  local name=$1
  shift
  [ -f "$out/$name/summary.json" ] ||
    secure-fedsa run --quiet --out "$out/$name" --local-steps 6 --batch-size 128 --lr 0.005 --clip 1 "$@"
}
for method in fedsa fedit ffa local; do
  run "$method-eps8" --method "$method"
done
run fedsa-eps3 --epsilon 3
run fedsa-eps1 --epsilon 1
run fedsa-nodp --no-dp
