#!/usr/bin/env bash
# The numbers in docs/results.md: the default job (Rotten Tomatoes, 3 clients, Dirichlet 0.5,
# full 6-layer all-MiniLM-L6-v2, LoRA r=8, DP + CKKS on) for every method, and FedSA-LoRA at
# several privacy budgets. Runs one after the other; about 5-8 minutes each on 2 CPU cores.
#
#   bash benchmarks/method_comparison.sh [OUT_DIR]      then
#   python benchmarks/results_table.py OUT_DIR
set -euo pipefail
out=${1:-runs/method-comparison}
common=(--rounds 6 --local-steps 8 --quiet)
for method in fedsa fedit ffa local; do
  [ -f "$out/$method-eps8/summary.json" ] || secure-fedsa run "${common[@]}" --method "$method" --epsilon 8 --out "$out/$method-eps8"
done
for eps in 3 1; do
  [ -f "$out/fedsa-eps$eps/summary.json" ] || secure-fedsa run "${common[@]}" --method fedsa --epsilon "$eps" --out "$out/fedsa-eps$eps"
done
[ -f "$out/fedsa-nodp/summary.json" ] || secure-fedsa run "${common[@]}" --method fedsa --no-dp --out "$out/fedsa-nodp"
