#!/usr/bin/env bash
# Privacy-utility trade-off on Rotten Tomatoes critic snippets: FedSA-LoRA against FedIT,
# FFA-LoRA and local-only training, without DP and at epsilon = 8 and 2 (per client, delta = 1e-5).
#
# Setting: the whole bundled corpus (12 808 snippets), 3 clients with Dirichlet label skew
# (alpha = 0.5), CKKS encryption on (it does not change accuracy), one seed.
# Cells: 4 methods x 3 budgets x 1 seed = 12 federations.
#
# Time budget (about 20 minutes on 2 CPU cores): the full 6-layer encoder trains about 55-60
# examples/s, so the example keeps the first 2 pretrained layers (about 3x faster). Each cell
# trains 5 rounds x 4 steps x batch 128 x 3 clients = 7 680 examples (about 1 minute), evaluates
# 100 test examples per client per round and each client's full test split (2 562 snippets) at
# the end, and loads, tokenizes and plans privacy (about 30 s): about 1.5 minutes a cell.
# Timings on shared machines vary by 2-4x; the sweep prints its own estimate of the time left. Interrupted? Run the same command again: finished cells are skipped.
#
# Outputs in runs/privacy-utility-rotten-tomatoes/: results.csv, curve.png, curve.svg,
# summary.md (docs/privacy-utility.png/.svg/.md are copies of the committed run's outputs).
# Extra options are passed through, e.g. `--seeds 3` for a spread over seeds (3x the time).
set -euo pipefail

secure-fedsa sweep \
  --dataset rotten_tomatoes --clients 3 --partition dirichlet --alpha 0.5 \
  --methods fedsa,fedit,ffa,local --epsilons inf,8,2 --seeds 1 \
  --num-layers 2 --rounds 5 --local-steps 4 --batch-size 128 --eval-examples 100 \
  --out runs/privacy-utility-rotten-tomatoes \
  "$@"
