#!/usr/bin/env bash
# Privacy-utility sweep on tweets with a natural topic split: each client holds one topic
# (airlines, deflategate, self-driving cars, apple, coachella, claritin), 3 classes
# (negative / neutral / positive) with very different label mixes per topic: strong, real skew.
#
# Setting: all 38 158 tweets, 6 clients (one topic each; the 30 "other" tweets join the smallest
# client), CKKS encryption on, one seed; methods FedSA-LoRA, FedIT, FFA-LoRA, local only, without
# DP and at epsilon = 8 (delta = 1e-5 per client).
# Cells: 4 methods x 2 budgets x 1 seed = 8 federations.
#
# Time budget (estimated, not timed: about 20-25 minutes on 2 CPU cores): the first 2 encoder
# layers; each cell trains 4 rounds x 4 steps x batch 128 x 6 clients = 12 288 examples and
# evaluates each client's full test split (about 7 600 tweets) at the end. The smallest topic
# (claritin, about 1 700 tweets) is small for record-level DP: expect the sweep to print a DP
# warning for it, and expect its accuracy to stay near its majority class at epsilon = 8.
# Interrupted? Run the same command again: finished cells are skipped.
set -euo pipefail

secure-fedsa sweep \
  --dataset tweets --partition natural --clients 6 \
  --methods fedsa,fedit,ffa,local --epsilons inf,8 --seeds 1 \
  --num-layers 2 --rounds 4 --local-steps 4 --batch-size 128 \
  --out runs/tweets-natural-topics \
  "$@"
