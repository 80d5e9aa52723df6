"""VeRA adapters (peft) made trainable under Opacus: per-sample gradients of the scaling vectors.

peft's VeRA layer (``peft.tuners.vera.layer.Linear``) computes

    y = W x + λ_b ⊙ (B (λ_d ⊙ (A x)))

with A (r × in) and B (out × r) frozen random projections shared by every layer and every client
(one seed), and only λ_d (r values, the A side) and λ_b (``out`` values, the B side) trained. peft
keeps λ_d and λ_b in ``nn.ParameterDict`` children, which are never *called*, so Opacus' hooks
(which fire when a module runs) would never see them and DP would not cover them. :func:`rehome`
moves both vectors onto the VeRA layer itself (same ``Parameter`` objects, names
``vera_lambda_d_<adapter>`` / ``vera_lambda_b_<adapter>``; the shared projections are unlinked
from the layer's children, see ``PROJECTIONS``), and :func:`vera_grad_sample` gives Opacus their
exact per-sample gradients:

    ∂L/∂λ_b[s] = Σ_t g[s,t] ⊙ v[s,t],             v = B (λ_d ⊙ h),  h = A x
    ∂L/∂λ_d[s] = Σ_t (Bᵀ (λ_b ⊙ g[s,t])) ⊙ h[s,t]

(g the gradient of the loss with respect to the layer's output). ``tests/test_engine.py`` checks
both against a per-example reference loop. :func:`peft_layout` puts the ParameterDicts back for
as long as peft saves the adapter, so the saved files are ordinary peft VeRA adapters.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

ATTRIBUTES = ("vera_lambda_b", "vera_lambda_d")
# the frozen projections: public (drawn from the federation's seed), the same object in every
# layer and on the model; unlinked from each layer's children so that Opacus, which refuses
# trainable layers holding buffers (BatchNorm's running statistics are private), accepts it
PROJECTIONS = ("vera_A", "vera_B")
_registered: list[bool] = []


def _vera_layers(model: nn.Module) -> Iterator[nn.Module]:
    from peft.tuners.vera.layer import Linear

    for module in model.modules():
        if isinstance(module, Linear):
            yield module


def rehome(model: nn.Module) -> None:
    """Move every VeRA layer's λ vectors from its ParameterDicts onto the layer (idempotent)."""
    register_grad_sampler()
    for layer in _vera_layers(model):
        for attribute in ATTRIBUTES:
            holder = layer._modules.get(attribute)
            if not isinstance(holder, nn.ParameterDict):
                continue  # done already
            params = dict(holder.items())
            del layer._modules[attribute]
            for adapter, param in params.items():
                layer.register_parameter(f"{attribute}_{adapter}", param)
            object.__setattr__(layer, attribute, params)  # what peft's forward indexes
        for attribute in PROJECTIONS:
            holder = layer._modules.pop(attribute, None)
            if holder is not None:
                object.__setattr__(layer, attribute, holder)


@contextmanager
def peft_layout(model: nn.Module) -> Iterator[None]:
    """peft's own layout (ParameterDicts) while the block runs, e.g. to save the adapter."""
    moved = []
    for layer in _vera_layers(model):
        for attribute in ATTRIBUTES:
            params = layer.__dict__.get(attribute)
            if not isinstance(params, dict):
                continue
            del layer.__dict__[attribute]
            for adapter in params:
                del layer._parameters[f"{attribute}_{adapter}"]
            layer._modules[attribute] = nn.ParameterDict(params)
            moved.append(layer)
        for attribute in PROJECTIONS:
            holder = layer.__dict__.pop(attribute, None)
            if holder is not None:
                layer._modules[attribute] = holder
    try:
        yield
    finally:
        if moved:
            rehome(model)


def vera_grad_sample(
    layer: nn.Module, activations: list[torch.Tensor], backprops: torch.Tensor
) -> dict[nn.Parameter, torch.Tensor]:
    """Per-sample gradients of λ_b and λ_d of every active adapter of one VeRA layer."""
    x = activations[0]
    out = {}
    for adapter in layer.active_adapters:
        if adapter not in layer.vera_lambda_d:
            continue
        lambda_d, lambda_b = layer.vera_lambda_d[adapter], layer.vera_lambda_b[adapter]
        a = layer.vera_A[adapter][:, : layer.in_features].to(x.dtype)
        b = layer.vera_B[adapter][: layer.out_features, :].to(x.dtype)
        h = torch.einsum("s...i,ri->s...r", x, a)
        v = torch.einsum("s...r,or->s...o", h * lambda_d, b)
        g = backprops
        reduce = tuple(range(1, g.dim() - 1))  # sum over the sequence (and any other) axes
        if lambda_b.requires_grad:
            out[lambda_b] = (g * v).sum(dim=reduce) if reduce else g * v
        if lambda_d.requires_grad:
            gu = torch.einsum("s...o,or->s...r", g * lambda_b, b)
            out[lambda_d] = (gu * h).sum(dim=reduce) if reduce else gu * h
    return out


def register_grad_sampler() -> None:
    """Tell Opacus (both clipping modes) how to get per-sample gradients of a VeRA layer."""
    if _registered:
        return
    from peft.tuners.vera.layer import Linear

    from secure_fedsa.privacy import opacus_compat

    opacus_compat.register_grad_sampler(Linear, vera_grad_sample)
    _registered.append(True)
