"""Which tensors each method shares, and how shared tensors become one flat vector.

The sharing policy is the only place that knows the difference between methods:

========  ==========  ==========  ===================================================
method    shared      frozen      reference
========  ==========  ==========  ===================================================
fedsa     A           -           FedSA-LoRA (Guo et al., ICLR 2025): B, head local
fedit     A, B        -           FedIT: plain FedAvg of the LoRA matrices
ffa       B           A           FFA-LoRA (Sun et al., ICLR 2024): A frozen at init
local     -           -           no communication at all
========  ==========  ==========  ===================================================

"A" and "B" are the adapter's two sides (:func:`secure_fedsa.model.encoder.tensor_group`): LoRA's A
and B matrices (also with rsLoRA's scaling), or VeRA's scaling vectors ``lambda_d`` (A side) and
``lambda_b`` (B side). The task head stays on each client unless the run shares it
(``head="shared"``, as FederatedScope's baselines do in the FedSA-LoRA paper): then it joins the
shared tensors of any federated method. A :class:`Manifest` fixes the names, shapes and order of the
shared tensors; its hash binds every encrypted update to that exact layout.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from secure_fedsa.config import FROZEN_GROUPS, SHARED_GROUPS, TENSOR_GROUPS
from secure_fedsa.errors import ConfigError, ModelError
from secure_fedsa.model.encoder import tensor_group


@dataclass(frozen=True)
class SharingPolicy:
    name: str
    shared: frozenset[str]
    frozen: frozenset[str]
    description: str

    @property
    def trained(self) -> frozenset[str]:
        return TENSOR_GROUPS - self.frozen

    def shared_names(self, names: list[str]) -> list[str]:
        """The subset of ``names`` (in order) whose group is shared."""
        return [n for n in names if tensor_group(n) in self.shared]


POLICIES: dict[str, SharingPolicy] = {
    p.name: p
    for p in (
        SharingPolicy(method, SHARED_GROUPS[method], FROZEN_GROUPS.get(method, frozenset()), text)
        for method, text in (
            ("fedsa", "share A; B and head stay local"),
            ("fedit", "share A and B (FedAvg)"),
            ("ffa", "A frozen; share B"),
            ("local", "share nothing (local training)"),
        )
    )
}


def get_policy(method: str, head: str = "local") -> SharingPolicy:
    """The policy of ``method``; with ``head="shared"`` the head is shared too."""
    try:
        policy = POLICIES[method]
    except KeyError:
        raise ConfigError(
            f"unknown method {method!r}: choose one of {', '.join(sorted(POLICIES))}"
        ) from None
    if head == "local":
        return policy
    if head != "shared":
        raise ConfigError(f"unknown head {head!r}: choose local or shared")
    if not policy.shared:
        raise ConfigError(f"--head shared needs a federated method: {method} shares nothing")
    return SharingPolicy(
        policy.name,
        policy.shared | {"head"},
        policy.frozen,
        policy.description.replace("; B and head stay local", "; B stays local") + "; head shared",
    )


@dataclass(frozen=True)
class Manifest:
    """Ordered names and shapes of the shared tensors."""

    entries: tuple[tuple[str, tuple[int, ...]], ...]

    @classmethod
    def from_state(cls, state: Mapping[str, torch.Tensor], names: list[str]) -> Manifest:
        return cls(tuple((n, tuple(int(d) for d in state[n].shape)) for n in names))

    @property
    def names(self) -> list[str]:
        return [n for n, _ in self.entries]

    @property
    def size(self) -> int:
        return int(sum(int(np.prod(s, dtype=np.int64)) for _, s in self.entries))

    @property
    def digest(self) -> str:
        payload = json.dumps([[n, list(s)] for n, s in self.entries], separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()

    def to_list(self) -> list[dict]:
        return [{"name": n, "shape": list(s)} for n, s in self.entries]


def flatten(state: Mapping[str, torch.Tensor], manifest: Manifest) -> np.ndarray:
    """Concatenate the manifest's tensors (float64, in manifest order)."""
    parts = []
    for name, shape in manifest.entries:
        if name not in state:
            raise ModelError(f"shared tensor {name!r} is missing from the client state")
        tensor = state[name]
        if tuple(tensor.shape) != shape:
            raise ModelError(f"shared tensor {name!r} has shape {tuple(tensor.shape)}, not {shape}")
        parts.append(tensor.detach().to(torch.float64).reshape(-1).cpu().numpy())
    if not parts:
        return np.zeros(0, dtype=np.float64)
    return np.concatenate(parts)


def unflatten(vector: np.ndarray, manifest: Manifest) -> dict[str, torch.Tensor]:
    """Inverse of :func:`flatten`; float32 tensors keyed by name."""
    vector = np.asarray(vector)
    if vector.ndim != 1 or vector.shape[0] != manifest.size:
        raise ModelError(
            f"shared vector has {vector.size} values, the manifest needs {manifest.size}"
        )
    out: dict[str, torch.Tensor] = {}
    offset = 0
    for name, shape in manifest.entries:
        count = int(np.prod(shape, dtype=np.int64))
        chunk = vector[offset : offset + count].reshape(shape)
        out[name] = torch.from_numpy(np.ascontiguousarray(chunk, dtype=np.float32))
        offset += count
    return out
