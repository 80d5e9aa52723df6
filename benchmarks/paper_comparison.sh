#!/usr/bin/env bash
# FedSA-LoRA as the paper runs it, its variants, and results with confidence (docs/results.md).
#
# Two sweeps, 5 seeds each, DP cells at epsilon per client for the whole federation (delta 1e-5),
# CKKS encryption and pairwise masking on:
#
# 1. Rotten Tomatoes, 3 clients, Dirichlet alpha = 0.5:
#    fedsa, fedit and ffa with the head local (ours) and fedit/ffa with the head shared (the
#    paper's baselines), local, FedSA-rsLoRA and FedSA-VeRA; no DP, epsilon 8 and 3.
#    8 methods x 3 budgets x 5 seeds = 120 cells.
# 2. Tweets, 6 clients, the natural topic split (a stronger, real label skew):
#    the six head/method variants; no DP and epsilon 8. 6 x 2 x 5 = 60 cells.
#
# Setting (as examples/privacy_utility_rotten_tomatoes.sh, where the methods leave the
# majority-class rate): the first 2 pretrained layers, 8 rounds x 6 steps x batch 128,
# 100 test examples per client per round. About 2 minutes a cell on 2 CPU cores, so about
# 6 hours in all: the sweeps run seed by seed and resume, so run this script again in a later
# session to continue (cells with a row in results.csv are kept even when their run directories
# are not there). Commit benchmarks/results/*/{sweep.json,results.csv,summary.md,curve.svg};
# the cells/ directories are ignored.
#
# Extra options are passed through to both sweeps (e.g. --quiet).
set -euo pipefail
cd "$(dirname "$0")/.."

# lr and clip are pinned so that the sweeps resume as the same sweeps when a default changes.
# The DP cells run at clip 5, the default since docs/results.md "A DP recipe for the default job".
# They started at clip 1 (the default then); those DP cells were moved, unchanged, into
# benchmarks/results/rt-dirichlet-0.5-clip1 (no-DP cells never use the clip, so they were kept).
# --adapter-layers all: both layers of the cut encoder, as the sweeps were configured before the
# option existed (their sweep.json reads as "all").
COMMON=(--num-layers 2 --adapter-layers all --rounds 8 --local-steps 6 --batch-size 128 --lr 0.005
  --clip 5 --eval-examples 100 --seeds 5)

secure-fedsa sweep \
  --dataset rotten_tomatoes --clients 3 --partition dirichlet --alpha 0.5 \
  --methods fedsa,fedit,fedit+head,ffa,ffa+head,local,fedsa@rslora,fedsa@vera \
  --epsilons inf,8,3 "${COMMON[@]}" \
  --out benchmarks/results/rt-dirichlet-0.5 \
  "$@"

secure-fedsa sweep \
  --dataset tweets --partition natural --clients 6 \
  --methods fedsa,fedit,fedit+head,ffa,ffa+head,local \
  --epsilons inf,8 "${COMMON[@]}" \
  --out benchmarks/results/tweets-natural \
  "$@"
