"""Every Opacus name the library uses, in one place, for the one Opacus version it supports.

The training code (``secure_fedsa.site.training``) and VeRA's per-sample gradients
(``secure_fedsa.model.vera``) reach Opacus only through this module. Most names are Opacus'
public API; four are private and may change in any release:

- ``_check_processed_flag`` and ``_mark_as_processed`` (``opacus.optimizers.optimizer``): the
  flags by which a DP optimizer refuses to add noise twice to one summed gradient. Our
  ``add_noise`` draws the noise from the OS CSPRNG instead of torch's PRNG and must keep them.
- ``GradSampleModule._close``: removes the per-sample-gradient hooks, so that one model object
  can serve several clients in turn.
- ``p.summed_grad``: the clipped, summed per-sample gradients before noise.

``tests/test_opacus_compat.py`` pins :data:`SUPPORTED_OPACUS` to the installed version and checks
each private name still does what we rely on; an Opacus upgrade that breaks one fails there first.
Imports are lazy: importing this module does not import Opacus (``secure-fedsa --help`` stays fast).
"""

from __future__ import annotations

import functools
from typing import Any

import torch

SUPPORTED_OPACUS = "1.6.0"  # pyproject.toml pins the same version


def installed_version() -> str:
    import opacus

    return opacus.__version__


def hooks_classes() -> tuple[type, type]:
    """``(GradSampleModule, DPOptimizer)``: per-sample gradients materialised by hooks."""
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    return GradSampleModule, DPOptimizer


def ghost_classes() -> tuple[type, type, type]:
    """``(GradSampleModuleFastGradientClipping, DPOptimizerFastGradientClipping,
    DPLossFastGradientClipping)``: ghost clipping, per-sample norms without the gradients."""
    from opacus.grad_sample import GradSampleModuleFastGradientClipping
    from opacus.optimizers import DPOptimizerFastGradientClipping
    from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping

    return (
        GradSampleModuleFastGradientClipping,
        DPOptimizerFastGradientClipping,
        DPLossFastGradientClipping,
    )


@functools.cache
def _processed_flags() -> tuple[Any, Any]:
    """Opacus' private ``(_check_processed_flag, _mark_as_processed)``, looked up once: they are
    called for every parameter of every noisy step."""
    from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed

    return _check_processed_flag, _mark_as_processed


def check_not_processed(summed_grad: torch.Tensor) -> None:
    """Raise (Opacus' own error) if noise was already added to this summed gradient."""
    _processed_flags()[0](summed_grad)


def mark_processed(summed_grad: torch.Tensor) -> None:
    """Mark a summed gradient as noised, so that a second ``add_noise`` refuses it."""
    _processed_flags()[1](summed_grad)


def close_hooks(wrapped: Any) -> None:
    """Remove a GradSampleModule's hooks from the model it wraps."""
    wrapped._close()


def register_grad_sampler(layer: type, grad_sampler: Any) -> None:
    """Tell Opacus (both clipping modes) how to compute per-sample gradients of ``layer``."""
    from opacus.grad_sample import register_grad_sampler as register

    register(layer)(grad_sampler)
