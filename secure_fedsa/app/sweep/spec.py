"""What a sweep runs: a fixed base configuration crossed with methods, budgets and seeds.

A cell is one full federation: (method, target epsilon, seed). A method may name a variant,
``METHOD[+head][@ADAPTER]``: ``fedit+head`` is FedIT with the task head aggregated too (the
FedSA-LoRA paper's baselines), ``fedsa@vera`` is FedSA-VeRA, ``fedsa@rslora`` FedSA-rsLoRA;
without a suffix the base configuration's head and adapter apply. ``epsilon = inf`` means no
differential privacy (``dp=False``); every other epsilon is a per-client budget for the whole
federation. The spec is written to ``sweep.json`` so that resume and ``--plot-only`` know the
cells without the original command line.

Every sweep has its **alone** cells: local-only training without DP (method ``local`` at
``ε = inf``) for every seed, the baseline of the gain from joining (:mod:`joining`). They are added
unless they are already among the cells, or the sweep was made with ``--no-alone`` (``alone``
false). Version 1 of ``sweep.json`` predates them: such a sweep keeps exactly its old cells.
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

SPEC_VERSION = 2
READ_VERSIONS = (1, 2)  # version 1: before the alone cells (read as alone=False)
INF_WORDS = ("inf", "infinity")
ALONE_METHOD = "local"  # with epsilon inf: the alone cell (secure_fedsa.app.sweep.joining)
ALONE_LABEL = "alone (local, no DP)"


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
    from secure_fedsa.model.sharing import POLICIES

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
            # local shares nothing: the sweep's --head is for the federated methods
            "head": "local" if method == "local" else head or base.head,
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
    alone: bool = True  # add the alone cells (local, ε = inf) for every seed

    def alone_added(self) -> bool:
        """Whether :meth:`cells` adds alone cells that the methods × epsilons do not hold."""
        return self.alone and not (ALONE_METHOD in self.methods and math.inf in self.epsilons)

    def cells(self) -> list[Cell]:
        """Every cell, seed by seed, so an interrupted sweep has whole seeds finished first; an
        added alone cell comes first in its seed, so a half-finished seed can already be paired."""
        cells = []
        for seed in self.seeds:
            if self.alone_added():
                cells.append(Cell(ALONE_METHOD, math.inf, seed))
            cells += [Cell(m, epsilon, seed) for epsilon in self.epsilons for m in self.methods]
        return cells

    def table_methods(self) -> tuple[str, ...]:
        """The methods of the summary's tables: those asked for, and ``local`` when added."""
        return self.methods + (
            (ALONE_METHOD,) if self.alone_added() and ALONE_METHOD not in self.methods else ()
        )

    def table_epsilons(self) -> tuple[float, ...]:
        """The budgets of the summary's tables: those asked for, and ``inf`` first when added."""
        if self.alone_added() and math.inf not in self.epsilons:
            return (math.inf, *self.epsilons)
        return self.epsilons

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
            "alone": self.alone,
            "base_config": self.base.to_dict(),
            "command": self.command,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SweepSpec:
        version = data.get("version") if isinstance(data, dict) else None
        if version not in READ_VERSIONS:
            raise ConfigError("sweep.json is not a sweep specification this version can read")
        alone = bool(data.get("alone", True)) if version >= 2 else False
        return cls(
            base=RunConfig.from_dict(data["base_config"]),
            methods=tuple(data["methods"]),
            epsilons=parse_epsilons(",".join(data["epsilons"])),
            seeds=tuple(int(s) for s in data["seeds"]),
            command=data.get("command", ""),
            alone=alone,
        )

    def same_cells(self, other: SweepSpec) -> bool:
        """Whether two specs describe the same sweep: the same base and the same cells (the
        command text may differ, and so may ``alone`` where the alone cells are there anyway)."""
        return self.base == other.base and self.cells() == other.cells()

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
