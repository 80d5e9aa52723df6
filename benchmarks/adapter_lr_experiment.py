"""Experiment (docs/results.md, "A DP recipe for the default job"): train the adapter at a
different learning rate from the task head.

`secure-fedsa run` with AdamW's LoRA/VeRA tensors at ``lr * scale`` and the head at ``lr``; scale 0
freezes the adapter (the head alone learns). Not a product option: it patches the engine's AdamW
factory for this process only, and it recognises the head by its first dimension (the number of
labels, 2 on Rotten Tomatoes), so it only serves two-label datasets.

    python benchmarks/adapter_lr_experiment.py 0 --seed 0 --no-encryption --no-masking \
        --out runs/adapter-frozen-seed0
"""

from __future__ import annotations

import sys

import torch

from secure_fedsa.cli import main
from secure_fedsa.privacy import engine

HEAD_ROWS = 2  # the head's weight is (labels, hidden) and its bias (labels,)


def grouped_adamw(scale: float):  # noqa: ANN201 - an optimizer factory
    def build(params, lr: float) -> torch.optim.Optimizer:  # noqa: ANN001
        params = list(params)
        head = [p for p in params if p.shape[0] == HEAD_ROWS]
        adapter = [p for p in params if p.shape[0] != HEAD_ROWS]
        if len(head) != 2:
            raise SystemExit(f"expected the head's weight and bias, found {len(head)} tensors")
        groups = [{"params": head, "lr": lr}, {"params": adapter, "lr": lr * scale}]
        return torch.optim.AdamW(groups, lr=lr, weight_decay=0.0)

    return build


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    engine.OPTIMIZERS["adamw"] = grouped_adamw(float(sys.argv[1]))
    sys.exit(main(["run", *sys.argv[2:]]))
