"""The Opacus names the library relies on, pinned to the supported version (issue 32.3).

Four of them are private to Opacus; an upgrade that changes one must fail here, by name, before
it silently changes what a DP step does.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from secure_fedsa.privacy import opacus_compat

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[1]


def test_the_installed_opacus_is_the_supported_one_and_pyproject_pins_it():
    assert opacus_compat.installed_version() == opacus_compat.SUPPORTED_OPACUS
    pins = re.findall(r'"opacus==([^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert pins == [opacus_compat.SUPPORTED_OPACUS]


def test_a_summed_gradient_can_be_noised_once_only():
    summed = torch.zeros(3)
    opacus_compat.check_not_processed(summed)  # fresh: no error
    opacus_compat.mark_processed(summed)
    with pytest.raises(ValueError):
        opacus_compat.check_not_processed(summed)


def test_closing_a_grad_sample_module_removes_its_hooks():
    grad_sample_module, _ = opacus_compat.hooks_classes()
    model = nn.Linear(4, 2)
    wrapped = grad_sample_module(model, batch_first=True, loss_reduction="sum")
    wrapped(torch.randn(3, 4)).sum().backward()
    assert model.weight.grad_sample.shape == (3, 2, 4)  # hooks computed per-sample gradients
    opacus_compat.close_hooks(wrapped)
    model.weight.grad_sample = None
    model(torch.randn(3, 4)).sum().backward()
    assert getattr(model.weight, "grad_sample", None) is None  # no hook fired any more


def test_the_dp_optimizer_sums_clipped_per_sample_gradients_into_summed_grad():
    grad_sample_module, dp_optimizer = opacus_compat.hooks_classes()
    model = nn.Linear(4, 1, bias=False)
    wrapped = grad_sample_module(model, batch_first=True, loss_reduction="sum")
    optimizer = dp_optimizer(
        torch.optim.SGD(model.parameters(), lr=0.1),
        noise_multiplier=0.0,
        max_grad_norm=1.0,
        expected_batch_size=2,
    )
    x = torch.tensor([[10.0, 0, 0, 0], [0, 0.5, 0, 0]])
    wrapped(x).sum().backward()
    optimizer.pre_step()
    # the first row's gradient (norm 10) is clipped to norm 1, the second (0.5) is kept
    assert torch.allclose(model.weight.summed_grad, torch.tensor([[1.0, 0.5, 0, 0]]))
    opacus_compat.close_hooks(wrapped)


def test_the_ghost_clipping_classes_are_there():
    assert [c.__name__ for c in opacus_compat.ghost_classes()] == [
        "GradSampleModuleFastGradientClipping",
        "DPOptimizerFastGradientClipping",
        "DPLossFastGradientClipping",
    ]


def test_no_other_core_module_imports_opacus():
    offenders = []
    for path in (ROOT / "secure_fedsa").rglob("*.py"):
        if path.name == "opacus_compat.py":
            continue
        for line in path.read_text().splitlines():
            if re.match(r"\s*(from opacus|import opacus)\b", line) and "__version__" not in line:
                offenders.append(f"{path.relative_to(ROOT)}: {line.strip()}")
    # the ledger records opacus.__version__ (public); nothing else reaches Opacus directly
    assert all("ledger.py" in o for o in offenders), offenders
