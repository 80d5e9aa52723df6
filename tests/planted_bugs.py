"""Privacy bugs planted in the run's own process, for the run-level canary audit's power tests.

Each is a context manager that patches the library in this process only while a run trains, so
the run's ledger, files and audit look exactly like an honest run's except for what the bug
changes in the mechanism:

- ``sigma/7``, ``sigma/2``: the noise added is σ·C/7 (σ·C/2) while the optimizer, and so the
  ledger, records σ;
- ``no-clip``: per-sample gradients are summed without clipping (the noise is still σ·C);
- ``accountant/2``: the accountant reports half the ε its events spend, so calibration picks a σ
  whose true ε is about twice the budget, and the ledger records the halved ε.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from unittest import mock

import torch


@contextlib.contextmanager
def noise_divided(factor: float) -> Iterator[None]:
    from secure_fedsa.site import training as engine

    real = engine.gaussian

    def weak(source, shape, std, dtype=torch.float32):  # noqa: ANN001, ANN202
        return real(source, shape, std / factor, dtype=dtype)

    with mock.patch.object(engine, "gaussian", weak):
        yield


@contextlib.contextmanager
def clip_not_applied() -> Iterator[None]:
    from opacus.optimizers.optimizer import DPOptimizer, _check_processed_flag, _mark_as_processed

    def unclipped(self) -> None:  # noqa: ANN001
        for p in self.params:
            _check_processed_flag(p.grad_sample)
            grad = self._get_flat_grad_sample(p).to(p.dtype).sum(0)
            p.summed_grad = grad if p.summed_grad is None else p.summed_grad + grad
            _mark_as_processed(p.grad_sample)

    with mock.patch.object(DPOptimizer, "clip_and_accumulate", unclipped):
        yield


@contextlib.contextmanager
def accountant_halved() -> Iterator[None]:
    from secure_fedsa.privacy import accounting

    real = accounting._pld_epsilon

    def halved(history, delta, interval):  # noqa: ANN001, ANN202
        return real(history, delta, interval) / 2

    with mock.patch.object(accounting, "_pld_epsilon", halved):
        yield


PLANTED: dict[str, Callable[[], contextlib.AbstractContextManager]] = {
    "honest": contextlib.nullcontext,
    "sigma/7": lambda: noise_divided(7.0),
    "sigma/2": lambda: noise_divided(2.0),
    "no-clip": clip_not_applied,
    "accountant/2": accountant_halved,
}
