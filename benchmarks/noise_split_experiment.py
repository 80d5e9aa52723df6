"""Diagnostic (docs/results.md, "A DP recipe for the default job"): where does DP noise cost
accuracy, in the task head or in the adapter?

`secure-fedsa run` with DP as usual (Poisson sampling, per-example clipping, σ calibrated for the
budget), except that the Gaussian noise is added to one group of tensors only: ``head`` (the
adapter gets clipped gradients without noise) or ``adapter`` (the head gets them without noise).
**Not private**: the group left without noise is not covered, whatever the ledger says. Not a
product option: it patches the engine's noise step for this process only, and it recognises the
head by its first dimension (the number of labels, 2 on Rotten Tomatoes).

    python benchmarks/noise_split_experiment.py head --seed 0 --no-encryption --no-masking \
        --out runs/noise-head-only-seed0
"""

from __future__ import annotations

import sys

from secure_fedsa.app.cli import main
from secure_fedsa.privacy.randomness import gaussian
from secure_fedsa.site import training as engine

HEAD_ROWS = 2  # the head's weight is (labels, hidden) and its bias (labels,)


def noise_only_on(group: str):  # noqa: ANN201 - a replacement for engine._add_secure_noise
    from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed

    def add(optimizer, source) -> None:  # noqa: ANN001
        std = optimizer.noise_multiplier * optimizer.max_grad_norm
        heads = [p for p in optimizer.params if p.shape[0] == HEAD_ROWS]
        if len(heads) != 2:
            raise SystemExit(f"expected the head's weight and bias, found {len(heads)} tensors")
        for p in optimizer.params:
            _check_processed_flag(p.summed_grad)
            noisy = (p.shape[0] == HEAD_ROWS) == (group == "head")
            noise = gaussian(source, p.summed_grad.shape, std if noisy else 0.0)
            p.grad = (p.summed_grad + noise.to(p.summed_grad.dtype)).view_as(p)
            _mark_as_processed(p.summed_grad)

    return add


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in ("head", "adapter"):
        raise SystemExit(__doc__)
    engine._add_secure_noise = noise_only_on(sys.argv[1])
    sys.exit(main(["run", *sys.argv[2:]]))
