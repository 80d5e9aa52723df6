"""Could honest clients have produced this decrypted aggregate? (promise P7)

A client holding the federation's CKKS key can encrypt anything within the codec's range, so a
validly signed, well-formed update can still carry values no honest training produces (1e5 per
value, a negative weight). Every client checks the decrypted aggregate before loading it; one that
fails is discarded (the client keeps the shared tensors it started the round with) and the
federation goes on. The checks, all pure functions of public quantities:

1. **Weights.** Each honest client sends weight n_k / 100 with n_k ≥ 1 training records, and the
   codec refuses weights above its per-client bound (4 096 by default), so the summed weight W of
   c contributors lies in [c / 100, c · bound]. A negative, zero or inflated weight falls out.
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
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# torch.optim.AdamW defaults, as the engine uses them (weight decay 0)
ADAM_BETA1 = 0.9
ADAM_BETA2 = 0.999
# Each honest weight is n_k / WEIGHT_UNIT with n_k >= 1 (see client.WEIGHT_UNIT).
MIN_WEIGHT = 1 / 100
# CKKS decryption error of an average, far above the measured ~1e-9 and far below any step.
VALUE_SLACK = 1e-6


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
) -> list[str]:
    """Why this decrypted aggregate cannot come from honest clients (empty: it can).

    ``total`` is the decrypted weighted sum, ``initial`` the shared tensors every client started
    the federation with, ``round`` the round the aggregate belongs to (1-based).
    """
    problems: list[str] = []
    low, high = contributors * MIN_WEIGHT, contributors * bounds.max_weight
    if contributors < 1:
        return [f"the aggregate names {contributors} contributors"]
    if not math.isfinite(total_weight) or not low * (1 - 1e-9) <= total_weight <= high:
        problems.append(
            f"total weight {total_weight:.6g} outside [{low:g}, {high:g}], the range "
            f"{contributors} honest contributor(s) can have"
        )
        return problems  # dividing by it would tell nothing
    average = total / total_weight
    if not np.all(np.isfinite(average)):
        return [*problems, "the average has non-finite values"]
    allowed = round * bounds.round_change + VALUE_SLACK
    drift = float(np.max(np.abs(average - initial))) if average.size else 0.0
    if drift > allowed:
        problems.append(
            f"a shared value moved {drift:.4g} from its initial value, above the {allowed:.4g} "
            f"that {round} round(s) of honest training can reach"
        )
    return problems
