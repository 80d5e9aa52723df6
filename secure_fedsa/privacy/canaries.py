"""White-box gradient canaries inside a client's own DP-SGD: the run-level audit (issue 34).

With ``--canaries M`` each client adds M synthetic records to its own training set. Canary j is a
Dirac gradient: a record whose per-sample gradient is zero everywhere except on one coordinate
of the shared tensors (A under FedSA), where it is ``±GRADIENT_FACTOR · clip``. A secret bit b_j,
drawn with probability 1/2 from the client's DP randomness (the OS CSPRNG in every run), picks
the sign: +1 for b_j = 1, −1 for b_j = 0. The canaries are sampled by the same Poisson sampler as
the client's records, clipped with them by the same joint per-sample clipping, summed into the
same noisy sum (:func:`secure_fedsa.site.training.train_dp`), so whatever the run's mechanism
does to a record it does to a canary.

Why a sign and not presence: every ε of this package is stated for replace-one neighbours
(:mod:`secure_fedsa.privacy.accounting`); the two versions of canary j (gradient +g·e_j or
−g·e_j, both clipped to norm C) are two training sets of the same size that differ in one record,
exactly the worst case the accountant composes. So the run is (ε, δ)-DP with respect to each
bit, which is all the one-run analyses need (Steinke, Nasr & Jagielski 2023, "Privacy Auditing
with One (1) Training Run", NeurIPS; their m canaries are "included" by independent fair bits, and
their proof uses only that the mechanism is DP in each bit). A present-or-absent canary would test
add/remove-one, whose ε is about half the replace-one ε the ledger claims, and lose that factor
of power. The canaries do not change any real record's guarantee: the accountant's ε holds for
each record whatever the other records are, and the noisy sum is divided by the expected batch
of the real records (q·n), which the canaries do not change.

Before the first round the bits are committed: the SHA-256 of a random salt and the bits goes into
the ledger's identity (:attr:`~secure_fedsa.privacy.ledger.LedgerIdentity.canary_commitment`),
and the bits, the salt and the canary coordinates stay in ``canaries.json`` in the client's own
directory (like ``state.pt``: never in a shared file, never sent). After each trained round the
client appends, on the M canary coordinates, its own plaintext update (after − before: the values
it released, encrypted, in that round) and the noisy sums its DP steps released there (the
noisy clipped sum of each step, read from the gradient the optimizer consumed, summed over the
round's steps, in units of the clip). ``secure-fedsa audit`` reads the file, checks the
commitment against the ledger and turns the noisy sums into one score per canary
(:func:`noisy_sum_scores`), which it gives to a one-run bound with the bits.

Why the noisy sums and not the update: the sequence of noisy sums is the DP mechanism's output,
the thing the accountant's ε is about; AdamW (and the round clamp) turn it into the update, which
is post-processing and can only lose signal. In the audit's tiny run the noisy sums give the
full Gaussian signal (each canary's score is ±steps + N(0, steps·σ²)); docs/audit.md measures
what scoring the AdamW update lost.

What the file reveals: the bits say nothing about any real record; the M released values and the
M noisy sums per round are coordinates of the client's individual updates and of its DP-SGD
outputs, which are DP (promise P4) but which secure aggregation otherwise hides from the server
(P8). Give the file to the auditor, not the server.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from secure_fedsa.atomic import atomic_write
from secure_fedsa.errors import PrivacyError
from secure_fedsa.privacy.randomness import RandomSource, uniforms

FILE = "canaries.json"
FORMAT = "secure_fedsa.canaries"
# 2: adds each round's noisy sums on the canary coordinates (version 1 had the releases only)
FORMAT_VERSION = 2
# A canary's gradient before clipping has norm GRADIENT_FACTOR · clip: clipped to exactly the clip
# by an honest run, GRADIENT_FACTOR times larger in a run whose clipping does not act.
GRADIENT_FACTOR = 10.0
SALT_BYTES = 16


# --------------------------------------------------------------------------- pure functions
def canary_coordinates(size: int, m: int) -> tuple[int, ...]:
    """M distinct coordinates of a shared vector of ``size`` values, spread evenly over it
    (public: a function of the manifest's size and M, recomputed by the audit)."""
    if isinstance(m, bool) or not isinstance(m, int) or m < 1:
        raise PrivacyError(f"the number of canaries must be a positive integer, got {m!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < m:
        raise PrivacyError(
            f"{m} canaries need {m} coordinates of the shared tensors, which have {size}: "
            "use fewer canaries"
        )
    return tuple((j * size) // m for j in range(m))


def commitment(bits: Sequence[bool], salt: str) -> str:
    """SHA-256 of the salt and the bits: what the ledger holds before training."""
    if not isinstance(salt, str) or len(salt) != 2 * SALT_BYTES:
        raise PrivacyError(f"the salt must be {2 * SALT_BYTES} hex characters")
    text = f"{FORMAT}:{salt}:" + "".join("1" if b else "0" for b in bits)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def scores(releases: Sequence[Sequence[float]], m: int) -> list[float]:
    """One score per canary from the client's released updates on the canary coordinates.

    A canary with bit 1 pushes its coordinate down at every step it is sampled (gradient descent
    on a positive gradient), one with bit 0 up: the score is minus the sum of the updates, high
    for "bit 1"."""
    total = np.zeros(m, dtype=np.float64)
    for values in releases:
        row = np.asarray(values, dtype=np.float64)
        if row.shape != (m,) or not np.all(np.isfinite(row)):
            raise ValueError(f"a release must hold {m} finite values")
        total -= row
    return total.tolist()


def noisy_sum_scores(sums: Sequence[Sequence[float]], m: int) -> list[float]:
    """One score per canary from the noisy sums on the canary coordinates, one row per round: a
    canary with bit 1 adds +1 (in units of the clip) at every step that samples it, one with bit
    0 adds −1, so the score is the sum of its rows, high for "bit 1"."""
    total = np.zeros(m, dtype=np.float64)
    for values in sums:
        row = np.asarray(values, dtype=np.float64)
        if row.shape != (m,) or not np.all(np.isfinite(row)):
            raise ValueError(f"a row of noisy sums must hold {m} finite values")
        total += row
    return total.tolist()


def draw_bits(source: RandomSource, m: int) -> tuple[bool, ...]:
    """M independent fair bits from ``source``."""
    return tuple(bool(u < 0.5) for u in uniforms(source, m))


# --------------------------------------------------------------------------- in training
@dataclass(frozen=True)
class CanaryGradients:
    """The canaries of one round, resolved to the trainable parameters that carry them.

    ``targets[j]`` is the parameter and flat index of canary j's coordinate, ``signs[j]`` its
    sign (±1, from its bit) and ``norm`` the gradient's norm before clipping."""

    targets: tuple[tuple[torch.nn.Parameter, int], ...]
    signs: tuple[float, ...]
    norm: float

    def __post_init__(self) -> None:
        if len(self.targets) != len(self.signs) or not self.targets:
            raise PrivacyError("canaries need one target and one sign each")
        if not (math.isfinite(self.norm) and self.norm > 0):
            raise PrivacyError(f"the canary gradient norm must be > 0, got {self.norm}")

    @property
    def count(self) -> int:
        return len(self.signs)

    def check_trainable(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Raise unless every canary sits on a parameter being trained (else DP-SGD would never
        see it and the audit would pass a mechanism that was not exercised)."""
        trained = {id(p) for p in params}
        if any(id(p) not in trained for p, _ in self.targets):
            raise PrivacyError("a canary's coordinate is not on a trained parameter")

    def rows(
        self, params: Sequence[torch.nn.Parameter], chosen: torch.Tensor
    ) -> list[torch.Tensor]:
        """Per-sample gradient rows of the canaries ``chosen`` (indices into the canaries), one
        tensor of shape (len(chosen), *p.shape) per parameter of ``params``, in that order."""
        out = [torch.zeros((len(chosen), *p.shape), dtype=p.dtype) for p in params]
        where = {id(p): i for i, p in enumerate(params)}
        for row, j in enumerate(chosen.tolist()):
            param, index = self.targets[j]
            out[where[id(param)]].view(len(chosen), -1)[row, index] = self.signs[j] * self.norm
        return out

    def accumulator(self, params: Sequence[torch.nn.Parameter]) -> NoisySums:
        """A :class:`NoisySums` over the canary coordinates of ``params``."""
        self.check_trainable(params)
        return NoisySums(self)


class NoisySums:
    """Sums, over the steps of a round, of the noisy gradient on each canary's coordinate.

    :meth:`add` is called after each DP step with the factor that turns the gradient the
    optimizer consumed (the noisy clipped sum divided by the expected batch) back into the noisy
    clipped sum in units of the clip. That noisy sum is the DP mechanism's output; the optimizer
    (AdamW) and everything after it are post-processing, which can only lose signal."""

    def __init__(self, canaries: CanaryGradients) -> None:
        groups: dict[int, tuple[torch.nn.Parameter, list[int], list[int]]] = {}
        for j, (param, index) in enumerate(canaries.targets):
            groups.setdefault(id(param), (param, [], []))
            groups[id(param)][1].append(j)
            groups[id(param)][2].append(index)
        self._groups = [
            (param, torch.tensor(js), torch.tensor(indices))
            for param, js, indices in groups.values()
        ]
        self._total = torch.zeros(canaries.count, dtype=torch.float64)

    def add(self, factor: float) -> None:
        for param, js, indices in self._groups:
            if param.grad is None:
                raise PrivacyError("a canary's parameter has no gradient after a DP step")
            values = param.grad.detach().reshape(-1)[indices].to(torch.float64)
            self._total[js] += values * factor

    def values(self) -> tuple[float, ...]:
        if not torch.all(torch.isfinite(self._total)):
            raise PrivacyError("the noisy sums on the canary coordinates are not finite")
        return tuple(self._total.tolist())


# --------------------------------------------------------------------------- the client's file
@dataclass
class CanarySet:
    """One client's canaries and what it released on their coordinates (``canaries.json``)."""

    path: Path
    bits: tuple[bool, ...]
    salt: str
    coordinates: tuple[int, ...]
    shared_size: int
    gradient_factor: float = GRADIENT_FACTOR
    releases: dict[int, list[float]] = field(default_factory=dict)  # round -> after − before
    # round -> per canary, the round's noisy clipped sums on its coordinate, in units of the clip
    noisy_sums: dict[int, list[float]] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.bits)

    @property
    def commitment(self) -> str:
        return commitment(self.bits, self.salt)

    @classmethod
    def draw(cls, directory: Path, m: int, shared_size: int, source: RandomSource) -> CanarySet:
        """New canaries (bits and salt from ``source``), written to ``directory`` at once."""
        coordinates = canary_coordinates(shared_size, m)
        canaries = cls(
            path=Path(directory) / FILE,
            bits=draw_bits(source, m),
            salt=source.random_bytes(SALT_BYTES).hex(),
            coordinates=coordinates,
            shared_size=shared_size,
        )
        canaries.save()
        return canaries

    @classmethod
    def load(cls, directory: Path) -> CanarySet:
        """The canaries in ``directory``; PrivacyError if the file is missing or malformed."""
        path = Path(directory) / FILE
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            return cls.from_json(path, doc)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise PrivacyError(f"{path}: cannot read the canaries: {exc}") from None

    @classmethod
    def from_json(cls, path: Path, doc: dict[str, Any]) -> CanarySet:
        problems = document_problems(doc)
        if problems:
            raise ValueError("; ".join(problems))
        return cls(
            path=path,
            bits=tuple(b == 1 for b in doc["bits"]),
            salt=doc["salt"],
            coordinates=tuple(doc["coordinates"]),
            shared_size=doc["shared_size"],
            gradient_factor=float(doc["gradient_factor"]),
            releases={int(r["round"]): list(r["update"]) for r in doc["releases"]},
            noisy_sums={int(r["round"]): list(r["sums"]) for r in doc.get("noisy_sums", [])},
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "note": "private to this client: give it to the auditor only (docs/audit.md)",
            "commitment": self.commitment,
            "salt": self.salt,
            "bits": [int(b) for b in self.bits],
            "coordinates": list(self.coordinates),
            "shared_size": self.shared_size,
            "gradient_factor": self.gradient_factor,
            "releases": [{"round": r, "update": v} for r, v in sorted(self.releases.items())],
            "noisy_sums": [{"round": r, "sums": v} for r, v in sorted(self.noisy_sums.items())],
        }

    def save(self) -> None:
        atomic_write(self.path, json.dumps(self.to_json(), allow_nan=False) + "\n")

    def check_commitment(self, committed: str | None) -> None:
        """Raise unless the ledger committed to exactly these bits."""
        if committed != self.commitment:
            raise PrivacyError(
                f"{self.path}: the canaries do not match the commitment in the privacy ledger "
                "(the file was replaced or edited, or the ledger was made without canaries)"
            )

    def gradients(
        self,
        entries: Sequence[tuple[str, tuple[int, ...]]],
        params: dict[str, torch.nn.Parameter],
        clip: float,
    ) -> CanaryGradients:
        """This round's :class:`CanaryGradients` on ``params`` (the model's parameters by name),
        for the shared vector of the manifest's ``(name, shape)`` entries."""
        located = [locate(entries, c) for c in self.coordinates]
        return CanaryGradients(
            targets=tuple((params[name], index) for name, index in located),
            signs=tuple(1.0 if b else -1.0 for b in self.bits),
            norm=self.gradient_factor * clip,
        )

    def record(
        self,
        round_number: int,
        before: np.ndarray,
        after: np.ndarray,
        noisy_sums: Sequence[float],
    ) -> None:
        """Keep round ``round_number``'s released update on the canary coordinates and the noisy
        sums its DP steps released there (:attr:`~secure_fedsa.site.training.DPRound.
        canary_sums`; a round trained again replaces its earlier, never released, record) and
        write the file."""
        if before.shape != (self.shared_size,) or after.shape != (self.shared_size,):
            raise PrivacyError("the shared vectors do not match the canaries' shared size")
        index = np.asarray(self.coordinates, dtype=np.int64)
        update = (after[index] - before[index]).astype(np.float64)
        sums = np.asarray(noisy_sums, dtype=np.float64)
        if sums.shape != (self.count,):
            raise PrivacyError(f"round {round_number}: need one noisy sum per canary")
        if not (np.all(np.isfinite(update)) and np.all(np.isfinite(sums))):
            raise PrivacyError(f"round {round_number}: the update is not finite")
        self.releases[round_number] = update.tolist()
        self.noisy_sums[round_number] = sums.tolist()
        self.save()


def reopen_canaries(directory: Path, m: int, committed: str | None) -> CanarySet | None:
    """The canaries of a client whose ledger exists: those saved in ``directory``, which must
    match the ledger's commitment ``committed``, and number ``m``; None when neither the ledger
    nor the configuration has canaries. Raises :class:`PrivacyError` otherwise."""
    if committed is None and not m:
        return None
    if committed is None or not m:
        raise PrivacyError(
            f"{directory}: the configuration asks for {m} canaries but the privacy ledger "
            + ("commits to none" if committed is None else "commits to canaries")
            + ": a run keeps the canaries it started with"
        )
    canaries = CanarySet.load(directory)
    canaries.check_commitment(committed)
    if canaries.count != m:
        raise PrivacyError(f"{canaries.path}: {canaries.count} canaries, the run asks for {m}")
    return canaries


def document_problems(doc: Any) -> list[str]:
    """What is wrong with a ``canaries.json`` document (empty: well formed). Pure."""
    if not isinstance(doc, dict):
        return ["not a JSON object"]
    if doc.get("format") != FORMAT or doc.get("format_version") != FORMAT_VERSION:
        return [
            f"not a {FORMAT} version {FORMAT_VERSION} document (a run made with version 1 "
            "canaries cannot be resumed by this release; `secure-fedsa audit` still reads it)"
        ]
    problems = []
    bits, coords = doc.get("bits"), doc.get("coordinates")
    size = doc.get("shared_size")
    if not isinstance(bits, list) or not bits or any(b not in (0, 1) for b in bits):
        problems.append("bits must be a non-empty list of 0 and 1")
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        problems.append("shared_size must be a positive integer")
    elif (
        isinstance(bits, list)
        and bits
        and (size < len(bits) or coords != list(canary_coordinates(size, len(bits))))
    ):
        problems.append("coordinates are not the canary coordinates of this shared size")
    salt = doc.get("salt")
    if not isinstance(salt, str) or len(salt) != 2 * SALT_BYTES:
        problems.append("salt must be a hex string")
    factor = doc.get("gradient_factor")
    if not isinstance(factor, (int, float)) or isinstance(factor, bool) or not factor > 0:
        problems.append("gradient_factor must be > 0")
    for key, values, what in (("releases", "update", "release"), ("noisy_sums", "sums", "sum")):
        rows = doc.get(key)
        if not isinstance(rows, list):
            problems.append(f"{key} must be a list")
        elif isinstance(bits, list):
            for r in rows:
                ok = (
                    isinstance(r, dict)
                    and isinstance(r.get("round"), int)
                    and isinstance(r.get(values), list)
                    and len(r[values]) == len(bits)
                    and all(isinstance(v, (int, float)) for v in r[values])
                )
                if not ok:
                    problems.append(f"each {what} needs a round and one value per canary")
                    break
    if not problems and sorted(r["round"] for r in doc["releases"]) != sorted(
        r["round"] for r in doc["noisy_sums"]
    ):
        problems.append("releases and noisy sums must be recorded for the same rounds")
    return problems


def locate(entries: Sequence[tuple[str, tuple[int, ...]]], coordinate: int) -> tuple[str, int]:
    """The tensor (by name) and flat index inside it of ``coordinate`` of the shared vector that
    concatenates the manifest's ``(name, shape)`` entries in order. Pure."""
    offset = 0
    for name, shape in entries:
        count = math.prod(shape)
        if offset <= coordinate < offset + count:
            return name, coordinate - offset
        offset += count
    raise PrivacyError(f"coordinate {coordinate} is outside the shared vector ({offset} values)")
