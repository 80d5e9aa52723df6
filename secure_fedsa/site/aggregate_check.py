"""Could honest clients have produced this decrypted aggregate? (promise P7)

A client holding the federation's CKKS key can encrypt anything within the codec's range, so a
validly signed, well-formed update can still carry values no honest training produces (1e5 per
value, a negative weight). Every client checks the decrypted aggregate before loading it; one that
fails is discarded (the client keeps the shared tensors it started the round with) and the
federation goes on. The checks, all pure functions of public quantities:

1. **Weights.** Each client's weight is fixed at set-up in the signed roster (client sizes are
   public), so the summed weight of the named contributors is known exactly: the decrypted total
   weight must equal it within CKKS error (:func:`roster_weight_problem`). A client claiming
   any other weight (4 096, −10) is caught. Without roster weights (keys made before them) the
   old range check applies: each weight n_k / 100 with n_k ≥ 1, at most the codec's bound, so the
   summed weight W of c contributors lies in [c / 100, c · bound].
2. **Finite values.**
3. **How far honest training can move a shared tensor.** Clients train with AdamW (β1 = 0.9,
   β2 = 0.999, no weight decay) from a fresh optimizer every round. The step of one coordinate at
   step t of a round is lr · m̂_t / (√v̂_t + ε), with m̂_t = Σ_i a_i g_i and v̂_t = Σ_i b_i g_i²
   over the gradients g_1..g_t of that coordinate (a_i = (1-β1)β1^(t-i) / (1-β1^t),
   b_i = (1-β2)β2^(t-i) / (1-β2^t)). By Cauchy-Schwarz, |m̂_t| / √v̂_t ≤ √(Σ_i a_i² / b_i) =: r_t
   whatever the gradients are (the bound is reached by g_i ∝ a_i / b_i), so one round of S steps
   moves every coordinate by at most lr · (r_1 + ... + r_S). r_1 = 1 and r_t grows slowly
   (r_6 ≈ 1.016; r_t → (1-β1) / √((1-β2)(1-β1²/β2)) ≈ 7.27 for long rounds). The gradient's size
   does not enter: Adam normalises it, so neither the DP clipping norm nor the noise can push an
   honest step past this bound. Honest clients start every round from the same initial tensors
   plus at most one bounded change per round (averages and kept tensors stay inside the bound),
   so after round r every honest shared coordinate is within r · lr · Σ r_t of its initial value,
   whichever rounds a client missed. An aggregate outside that is not the average of honest
   updates. A client that carries its AdamW state from round to round (``--optimizer-state
   kept``) no longer starts each round fresh, and its r_t tends to 7.27; so every client clamps
   each shared coordinate's change in a round to the fresh-optimizer bound after training
   (:func:`clamp_round_change`), and the bound holds by construction. Honest training rarely
   reaches it (docs/results.md, "A DP recipe for the default job", gives the counts).

What this does not catch: a wrong update that stays inside these bounds (a key-holding client can
still steer the average within them); DP bounds what one record can do, nothing more.

**Reasons and rule P6.** Every problem is an :class:`AggregateProblem`: its text quotes decrypted
quantities and belongs in the client's own files only; its :attr:`~AggregateProblem.check` names
the failed check and nothing decrypted, and is all a file the server side reads may hold
(:func:`shareable_reasons`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

# torch.optim.AdamW defaults, as the engine uses them (weight decay 0)
ADAM_BETA1 = 0.9
ADAM_BETA2 = 0.999
# Each honest weight is n_k / WEIGHT_UNIT with n_k >= 1 (see client.WEIGHT_UNIT).
MIN_WEIGHT = 1 / 100
# CKKS decryption error of an average, far above the measured ~1e-9 and far below any step.
VALUE_SLACK = 1e-6
# CKKS decryption error of a summed weight: ~1e-9 measured per value, the same slack as above
# (relative to the expected total, so that weights in thousands and in units both work).
WEIGHT_SLACK = 1e-6

# the checks, by name: what shared (server-side) files may say about a rejected aggregate
CHECK_WEIGHT = "total weight"
CHECK_FINITE = "finite values"
CHECK_DRIFT = "honest drift bound"
CHECK_CONTRIBUTORS = "contributors"


class AggregateProblem(str):
    """Why an aggregate was rejected. The text may quote decrypted quantities (client's own
    files only); ``check`` names the failed check and nothing decrypted (rule P6)."""

    check: str

    def __new__(cls, check: str, detail: str) -> AggregateProblem:
        problem = super().__new__(cls, detail)
        problem.check = check
        return problem


def shareable_reasons(problems: Iterable[str]) -> list[str]:
    """What a file the server side reads may say about these problems: the names of the failed
    checks only, never a decrypted number (rule P6). Reasons found before decryption (a bad
    signature, a wrong round: plain :class:`str`) quote only the message's public header, but are
    reduced to a fixed phrase too, so that no caller has to judge which text is safe."""
    out: list[str] = []
    for problem in problems:
        name = (
            f"failed check: {problem.check}"
            if isinstance(problem, AggregateProblem)
            else "refused before decryption (signature, envelope or header)"
        )
        if name not in out:
            out.append(name)
    return out


def roster_total_weight(contributors: Iterable[str], weights: Mapping[str, float]) -> float:
    """The exact total weight of ``contributors`` under the roster's fixed ``weights``; raises
    KeyError for a contributor without one."""
    return float(sum(weights[c] for c in sorted(set(contributors))))


def roster_weight_problem(
    total_weight: float, contributors: Iterable[str], weights: Mapping[str, float]
) -> AggregateProblem | None:
    """Why ``total_weight`` (decrypted) is not the roster weight of the named ``contributors``
    (pure; None: equal within CKKS error). The contributors are the survivor set this client
    signed in the consistency round, which at least t clients signed too."""
    named = sorted(set(contributors))
    unknown = [c for c in named if c not in weights]
    if not named or unknown:
        return AggregateProblem(
            CHECK_CONTRIBUTORS,
            f"the aggregate names contributors without a roster weight: {unknown or 'none'}",
        )
    expected = roster_total_weight(named, weights)
    if not math.isfinite(total_weight) or abs(total_weight - expected) > WEIGHT_SLACK * max(
        1.0, expected
    ):
        return AggregateProblem(
            CHECK_WEIGHT,
            f"total weight {total_weight:.9g}, but the roster fixes {expected:.9g} for the "
            f"{len(named)} contributor(s): a client claimed a weight other than its own",
        )
    return None


def adam_ratio_bound(t: int, beta1: float = ADAM_BETA1, beta2: float = ADAM_BETA2) -> float:
    """The largest |m̂_t| / √v̂_t over all gradient sequences, at step t (1-based) of a fresh
    Adam optimizer (Cauchy-Schwarz; reached by g_i ∝ a_i / b_i)."""
    if t < 1:
        raise ValueError(f"step must be >= 1, got {t}")
    ratio = beta1**2 / beta2
    series = t if ratio == 1 else (1 - ratio**t) / (1 - ratio)
    scale = (1 - beta1) ** 2 * (1 - beta2**t) / ((1 - beta1**t) ** 2 * (1 - beta2))
    return math.sqrt(scale * series)


def round_change_bound(*, lr: float, steps: int) -> float:
    """The most one round of ``steps`` fresh-AdamW steps at ``lr`` moves any coordinate."""
    return lr * sum(adam_ratio_bound(t) for t in range(1, steps + 1))


def clamp_round_change(
    start: np.ndarray, trained: np.ndarray, bound: float
) -> tuple[np.ndarray, int]:
    """``trained`` with every coordinate's change from ``start`` limited to ``bound``, and how
    many coordinates were limited. Coordinates within the bound keep their exact value."""
    if start.shape != trained.shape:
        raise ValueError(f"start has shape {start.shape}, trained {trained.shape}")
    if not bound >= 0:
        raise ValueError(f"bound must be >= 0, got {bound}")
    change = trained - start
    over = np.abs(change) > bound
    clamped = np.where(over, start + np.sign(change) * bound, trained)
    return clamped, int(np.count_nonzero(over))


@dataclass(frozen=True)
class Bounds:
    """What honest clients' aggregates obey in one federation."""

    round_change: float  # per coordinate per round (round_change_bound)
    max_weight: float  # largest weight one honest client can send (the codec's bound)


def aggregate_problems(
    total: np.ndarray,
    total_weight: float,
    contributors: int,
    *,
    initial: np.ndarray,
    round: int,
    bounds: Bounds,
    roster_weights: Mapping[str, float] | None = None,
    contributor_ids: Iterable[str] | None = None,
) -> list[str]:
    """Why this decrypted aggregate cannot come from honest clients (empty: it can); each
    problem is an :class:`AggregateProblem`.

    ``total`` is the decrypted weighted sum, ``initial`` the shared tensors every client started
    the federation with, ``round`` the round the aggregate belongs to (1-based). With
    ``roster_weights`` (the signed roster's fixed weights) and ``contributor_ids`` (the survivor
    set this client signed), the total weight must equal theirs exactly; otherwise only the
    range [c / 100, c · bound] is checked.
    """
    if contributors < 1:
        return [
            AggregateProblem(CHECK_CONTRIBUTORS, f"the aggregate names {contributors} contributors")
        ]
    if roster_weights is not None:
        named = list(contributor_ids or [])
        if len(set(named)) != contributors:
            return [
                AggregateProblem(
                    CHECK_CONTRIBUTORS,
                    f"the aggregate counts {contributors} contributors, the survivor set names "
                    f"{len(set(named))}",
                )
            ]
        problem = roster_weight_problem(total_weight, named, roster_weights)
        if problem is not None:
            return [problem]  # dividing by it would tell nothing
        total_weight = roster_total_weight(named, roster_weights)
    else:
        low, high = contributors * MIN_WEIGHT, contributors * bounds.max_weight
        if not math.isfinite(total_weight) or not low * (1 - 1e-9) <= total_weight <= high:
            return [
                AggregateProblem(
                    CHECK_WEIGHT,
                    f"total weight {total_weight:.6g} outside [{low:g}, {high:g}], the range "
                    f"{contributors} honest contributor(s) can have",
                )
            ]
    average = total / total_weight
    if not np.all(np.isfinite(average)):
        return [AggregateProblem(CHECK_FINITE, "the average has non-finite values")]
    allowed = round * bounds.round_change + VALUE_SLACK
    drift = float(np.max(np.abs(average - initial))) if average.size else 0.0
    if drift > allowed:
        return [
            AggregateProblem(
                CHECK_DRIFT,
                f"a shared value moved {drift:.4g} from its initial value, above the "
                f"{allowed:.4g} that {round} round(s) of honest training can reach",
            )
        ]
    return []
