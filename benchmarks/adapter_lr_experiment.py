"""Experiment (docs/results.md, "A DP recipe for the default job"): train the adapter and the
task head at different learning rates.

`secure-fedsa run` with AdamW's LoRA/VeRA tensors at ``lr * ADAPTER_SCALE`` and the head at
``lr * HEAD_SCALE`` (1 when omitted); a scale of 0 freezes that group. Keep ADAPTER_SCALE at most
1: the clients clamp each round's change of A to the bound at ``--lr`` (docs/crypto.md). Not a
product option: it patches the engine's AdamW factory for this process only, and it recognises
the head by its first dimension (the number of labels, 2 on Rotten Tomatoes), so it only serves
two-label datasets.

    python benchmarks/adapter_lr_experiment.py 0 --seed 0 --no-encryption --no-masking \
        --out runs/adapter-frozen-seed0
    python benchmarks/adapter_lr_experiment.py 1 0.2 --seed 0 --no-encryption --no-masking \
        --out runs/head-lr-0.2-seed0
"""

from __future__ import annotations

import sys

import torch

from secure_fedsa.app.cli import main
from secure_fedsa.site import training as engine

HEAD_ROWS = 2  # the head's weight is (labels, hidden) and its bias (labels,)


def grouped_adamw(adapter_scale: float, head_scale: float = 1.0):  # noqa: ANN201 - a factory
    def build(params, lr: float) -> torch.optim.Optimizer:  # noqa: ANN001
        params = list(params)
        head = [p for p in params if p.shape[0] == HEAD_ROWS]
        adapter = [p for p in params if p.shape[0] != HEAD_ROWS]
        if len(head) != 2:
            raise SystemExit(f"expected the head's weight and bias, found {len(head)} tensors")
        groups = [
            {"params": head, "lr": lr * head_scale},
            {"params": adapter, "lr": lr * adapter_scale},
        ]
        return torch.optim.AdamW(groups, lr=lr, weight_decay=0.0)

    return build


def _scales(argv: list[str]) -> tuple[list[float], list[str]]:
    scales = []
    while argv and not argv[0].startswith("-") and len(scales) < 2:
        scales.append(float(argv.pop(0)))
    return scales, argv


if __name__ == "__main__":
    scales, rest = _scales(sys.argv[1:])
    if not scales or scales[0] > 1:
        raise SystemExit(__doc__)
    engine.OPTIMIZERS["adamw"] = grouped_adamw(*scales)
    sys.exit(main(["run", *rest]))
