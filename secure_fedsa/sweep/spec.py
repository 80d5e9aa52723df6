"""What a sweep runs: a fixed base configuration crossed with methods, budgets and seeds.

A cell is one full federation: (method, target epsilon, seed). A method may name a variant,
``METHOD[+head][@ADAPTER]``: ``fedit+head`` is FedIT with the task head aggregated too (the
FedSA-LoRA paper's baselines), ``fedsa@vera`` is FedSA-VeRA, ``fedsa@rslora`` FedSA-rsLoRA;
without a suffix the base configuration's head and adapter apply. ``epsilon = inf`` means no
differential privacy (``dp=False``); every other epsilon is a per-client budget for the whole
federation. The spec is written to ``sweep.json`` so that resume and ``--plot-only`` know the
cells without the original command line.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from secure_fedsa.config import RunConfig
from secure_fedsa.errors import ConfigError

SPEC_VERSION = 1
INF_WORDS = ("inf", "infinity")


def parse_epsilons(text: str) -> tuple[float, ...]:
    """``"inf,8,4"`` -> ``(inf, 8.0, 4.0)``; duplicates dropped, order kept."""
    values: list[float] = []
    for item in _items(text, "--epsilons"):
        if item.lower() in INF_WORDS:
            value = math.inf
        else:
            try:
                value = float(item)
            except ValueError:
                raise ConfigError(
                    f"--epsilons: {item!r} is not a number "
                    "(give positive numbers, or inf for no DP)"
                ) from None
            if not value > 0 or math.isnan(value):
                raise ConfigError(
                    f"--epsilons: epsilon must be positive, got {item!r} (use inf for no DP)"
                )
        if value not in values:
            values.append(value)
    return tuple(values)


HEAD_SUFFIX = "+head"


def parse_variant(token: str, known: Iterable[str] = ()) -> tuple[str, str | None, str | None]:
    """``"fedit+head@rslora"`` -> ``("fedit", "shared", "rslora")``; ``"fedsa"`` ->
    ``("fedsa", None, None)`` (the base configuration decides)."""
    from secure_fedsa.config import ADAPTERS
    from secure_fedsa.sharing import POLICIES

    known = tuple(known) or tuple(POLICIES)
    rest, _, adapter = token.partition("@")
    head = None
    if rest.endswith(HEAD_SUFFIX):
        rest, head = rest[: -len(HEAD_SUFFIX)], "shared"
    if rest not in known:
        raise ConfigError(
            f"--methods: unknown method {token!r}: choose from {', '.join(known)}, optionally "
            f"with {HEAD_SUFFIX} (head shared) and @ADAPTER ({', '.join(ADAPTERS)})"
        )
    if adapter and adapter not in ADAPTERS:
        raise ConfigError(
            f"--methods: unknown adapter in {token!r}: choose from {', '.join(ADAPTERS)}"
        )
    if head and rest == "local":
        raise ConfigError("--methods: local+head makes no sense: local shares nothing")
    return rest, head, adapter or None


def parse_methods(text: str, known: Iterable[str]) -> tuple[str, ...]:
    """``"fedsa,fedit+head,fedsa@vera"`` -> those variants, each checked (:func:`parse_variant`)."""
    known = tuple(known)
    methods: list[str] = []
    for item in _items(text, "--methods"):
        parse_variant(item, known)
        if item not in methods:
            methods.append(item)
    return tuple(methods)


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"3"`` -> seeds 0, 1, 2; ``"0,4,7"`` (any comma) -> exactly those seeds."""
    items = _items(text, "--seeds")
    try:
        numbers = [int(item) for item in items]
    except ValueError:
        raise ConfigError(
            f"--seeds: give a count (3) or a comma-separated list (0,1,2), got {text!r}"
        ) from None
    if "," not in text:
        if numbers[0] < 1:
            raise ConfigError(f"--seeds: the number of seeds must be at least 1, got {numbers[0]}")
        return tuple(range(numbers[0]))
    if any(n < 0 for n in numbers):
        raise ConfigError(f"--seeds: seeds must be non-negative integers, got {text!r}")
    return tuple(dict.fromkeys(numbers))


def _items(text: str, flag: str) -> list[str]:
    items = [item.strip() for item in (text or "").split(",") if item.strip()]
    if not items:
        raise ConfigError(f"{flag}: the list is empty")
    return items


def format_epsilon(epsilon: float) -> str:
    """The text used in cell names, the CSV and tables: ``inf``, ``8``, ``0.5``."""
    return "inf" if math.isinf(epsilon) else f"{epsilon:g}"


@dataclass(frozen=True)
class Cell:
    method: str
    epsilon: float
    seed: int

    @property
    def name(self) -> str:
        return f"{self.method}-eps{format_epsilon(self.epsilon)}-seed{self.seed}"

    @property
    def private(self) -> bool:
        return not math.isinf(self.epsilon)

    def config(self, base: RunConfig) -> RunConfig:
        """The cell's full configuration: the base with method (head, adapter), budget and seed
        set."""
        method, head, adapter = parse_variant(self.method)
        variant = {
            "method": method,
            "head": head or base.head,
            "adapter": adapter or base.adapter,
            "seed": self.seed,
            "noise_multiplier": None,
        }
        if self.private:
            return base.replace(**variant, dp=True, epsilon=self.epsilon)
        return base.replace(**variant, dp=False, epsilon=None)


@dataclass(frozen=True)
class SweepSpec:
    base: RunConfig
    methods: tuple[str, ...]
    epsilons: tuple[float, ...]
    seeds: tuple[int, ...]
    command: str = ""

    def cells(self) -> list[Cell]:
        """Every cell, seed by seed, so an interrupted sweep has whole seeds finished first."""
        return [
            Cell(method, epsilon, seed)
            for seed in self.seeds
            for epsilon in self.epsilons
            for method in self.methods
        ]

    def check(self) -> None:
        """Build every cell's configuration (RunConfig validates); raises ConfigError."""
        for cell in self.cells():
            cell.config(self.base)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": SPEC_VERSION,
            "methods": list(self.methods),
            "epsilons": [format_epsilon(e) for e in self.epsilons],
            "seeds": list(self.seeds),
            "base_config": self.base.to_dict(),
            "command": self.command,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SweepSpec:
        if not isinstance(data, dict) or data.get("version") != SPEC_VERSION:
            raise ConfigError("sweep.json is not a sweep specification this version can read")
        return cls(
            base=RunConfig.from_dict(data["base_config"]),
            methods=tuple(data["methods"]),
            epsilons=parse_epsilons(",".join(data["epsilons"])),
            seeds=tuple(int(s) for s in data["seeds"]),
            command=data.get("command", ""),
        )

    def same_cells(self, other: SweepSpec) -> bool:
        """Whether two specs describe the same sweep (the command text may differ)."""
        return (
            self.base == other.base
            and self.methods == other.methods
            and self.epsilons == other.epsilons
            and self.seeds == other.seeds
        )

    def digest(self) -> str:
        data = self.to_dict()
        data.pop("command")
        text = json.dumps(data, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:8]

    def title(self) -> str:
        """One line naming what was compared: dataset, clients, partition, encryption."""
        base = self.base
        dataset = "client files" if base.data_files else base.dataset
        natural = bool(base.data_files) or base.client_column is not None
        partition = "natural" if natural else base.partition
        if partition == "dirichlet":
            partition = f"Dirichlet α={base.alpha:g}"
        if base.client_sizes == "lognormal":
            partition += (
                f", log-normal sizes {base.min_train_examples}-{base.max_train_examples} "
                f"(σ={base.size_sigma:g})"
            )
        encryption = "encryption on (CKKS)" if base.encryption else "encryption OFF"
        return f"{dataset}, {base.num_clients} clients, {partition} partition, {encryption}"
