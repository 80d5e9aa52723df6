"""From canary scores and inclusion bits to ε lower bounds, the audit's power and its verdict.

Pure functions over arrays, so that they serve any source of scores: the installed-mechanism
test of ``audit --canary`` today, canaries trained inside a real run later. m canaries were each
included with probability 1/2 (``included``); a higher score means "more likely included".

- **Guesses.** For each pair in :data:`GUESSES` (fractions of m) the k_in highest scores are
  guessed "in", the k_out lowest "out", the rest abstained. Besides the symmetric pairs, two
  guess "in" only: under Poisson sampling an included canary that was never sampled looks
  exactly like one left out, so the lowest scores are a poor guess of "out" while the highest
  remain a sure guess of "in" (``tests/test_audit_canary.py``: σ/7 at q = 0.1 and 30 steps is
  refuted by the top 25 % guessed "in", by none of the symmetric pairs).
- **Bounds.** Each analysis of each set of guesses gives an ε lower bound: ``"epsilon-delta"``
  is the (ε, δ) analysis of Steinke, Nasr & Jagielski, "Privacy Auditing with One (1) Training
  Run", NeurIPS 2023 (:mod:`audits.canary_bound`); ``"gaussian-fdp"`` the f-DP analysis of
  Mahloujifar, Melis & Chaudhuri, "Auditing f-Differential Privacy in One Run", ICML 2025,
  with the Gaussian curve (:mod:`audits.one_run_fdp`). The 5 % error is split evenly over every
  (analysis, guesses) pair (Bonferroni), so the largest of all the bounds is a lower bound at
  95 % confidence.
- **Power.** The ceiling is the bound a perfect attack (every guess right) would reach with the
  same guesses and split: the largest ε the m canaries can certify. A claim above it cannot be
  refuted by this audit, whatever the scores.
- **Verdict.** FAIL when the lower bound exceeds the claimed ε; INCONCLUSIVE when the claim is
  above the ceiling; PASS otherwise: the releases are consistent with the claim at 95 %
  confidence (a lower bound never proves the claim).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import numpy as np

from audits import canary_bound, one_run_fdp

Analysis = Literal["epsilon-delta", "gaussian-fdp"]
AuditVerdict = Literal["PASS", "INCONCLUSIVE", "FAIL"]
CONFIDENCE = 0.95
# (fraction of m guessed "in", fraction guessed "out")
GUESSES: tuple[tuple[float, float], ...] = (
    (0.025, 0.025),
    (0.05, 0.05),
    (0.1, 0.1),
    (0.25, 0.25),
    (0.1, 0.0),
    (0.25, 0.0),
)
ANALYSES: tuple[Analysis, ...] = ("epsilon-delta", "gaussian-fdp")
CITATIONS: dict[Analysis, str] = {
    "epsilon-delta": "Steinke, Nasr & Jagielski, Privacy Auditing with One (1) Training Run, "
    "NeurIPS 2023",
    "gaussian-fdp": "Mahloujifar, Melis & Chaudhuri, Auditing f-Differential Privacy in One Run, "
    "ICML 2025 (Gaussian curve)",
}
LABELS: dict[Analysis, str] = {
    "epsilon-delta": "(ε, δ) analysis (Steinke et al. 2023)",
    "gaussian-fdp": "Gaussian f-DP analysis (Mahloujifar et al. 2025)",
}
# the search for the number of canaries needed stops here
MAX_CANARIES = 10**6


def _epsilon_delta(m: int, r: int, v: int, delta: float, confidence: float) -> float:
    return canary_bound.epsilon_lower_bound(m, r, v, delta=delta, confidence=confidence)


def _gaussian_fdp(m: int, r: int, v: int, delta: float, confidence: float) -> float:
    return one_run_fdp.epsilon_lower_bound(
        m, r, v, delta=delta, confidence=confidence, curve="gaussian"
    )


BOUNDS: dict[Analysis, Callable[[int, int, int, float, float], float]] = {
    "epsilon-delta": _epsilon_delta,
    "gaussian-fdp": _gaussian_fdp,
}


@dataclass(frozen=True)
class Attempt:
    """One analysis of one set of guesses: r guesses, v of them right, and the ε they certify."""

    analysis: Analysis
    k_in: int
    k_out: int
    guesses: int
    correct: int
    lower_bound: float


@dataclass(frozen=True)
class ScoreAudit:
    """The bounds that one set of canary scores gives, and what the same canaries could give."""

    canaries: int
    included: int
    confidence: float
    attempts: tuple[Attempt, ...]
    lower_bounds: dict[str, float]  # per analysis, the best over the guesses
    ceilings: dict[str, float]  # per analysis, a perfect attack's bound

    @property
    def lower_bound(self) -> float:
        return max(self.lower_bounds.values())

    @property
    def ceiling(self) -> float:
        return max(self.ceilings.values())

    def to_dict(self) -> dict[str, object]:
        return {
            "canaries": self.canaries,
            "included": self.included,
            "confidence": self.confidence,
            "epsilon_lower_bound": self.lower_bound,
            "max_certifiable_epsilon": self.ceiling,
            "lower_bounds": dict(self.lower_bounds),
            "ceilings": dict(self.ceilings),
            "tried": [vars(a) for a in self.attempts],
        }


def validate(scores: object, included: object) -> tuple[np.ndarray, np.ndarray]:
    """The scores as finite floats and the inclusion bits as booleans, both of shape (m,)."""
    values = np.asarray(scores)
    bits = np.asarray(included)
    if values.ndim != 1 or bits.ndim != 1:
        raise ValueError(
            f"scores and inclusion bits must be 1-D, got shapes {values.shape}, {bits.shape}"
        )
    if values.shape != bits.shape:
        raise ValueError(f"{values.size} scores but {bits.size} inclusion bits")
    if values.size == 0:
        raise ValueError("no canaries: need at least one score")
    if values.dtype.kind not in "iuf":
        raise TypeError(f"scores must be numbers, got dtype {values.dtype}")
    values = values.astype(float)
    if not np.all(np.isfinite(values)):
        raise ValueError("scores must be finite (a NaN or ∞ score cannot be ranked)")
    if bits.dtype.kind == "b":
        return values, bits
    if bits.dtype.kind not in "iu" or not np.all((bits == 0) | (bits == 1)):
        raise ValueError("inclusion bits must be booleans or 0/1")
    return values, bits.astype(bool)


def guesses(scores: np.ndarray, k_in: int, k_out: int) -> np.ndarray:
    """+1 (in) for the k_in highest scores, −1 (out) for the k_out lowest, 0 (abstain) else.
    Ties are broken by position, which does not depend on the inclusion bits."""
    m = len(scores)
    if k_in < 0 or k_out < 0 or k_in + k_out > m:
        raise ValueError(f"need 0 <= k_in, k_out and k_in + k_out <= {m}, got {k_in}, {k_out}")
    order = np.argsort(scores, kind="stable")
    result = np.zeros(m, dtype=np.int8)
    result[order[:k_out]] = -1
    result[order[m - k_in :]] = 1
    return result


def count_correct(guess: np.ndarray, included: np.ndarray) -> tuple[int, int]:
    """(r guesses made, v correct)."""
    r = int(np.count_nonzero(guess))
    v = int(np.count_nonzero((guess == 1) & included) + np.count_nonzero((guess == -1) & ~included))
    return r, v


def guess_sizes(
    m: int, fractions: Sequence[tuple[float, float]] = GUESSES
) -> tuple[tuple[int, int], ...]:
    """(k_in, k_out) for each pair of fractions: a fraction above 0 guesses at least one canary,
    and together they never guess more than m."""
    if m < 1:
        raise ValueError(f"need at least one canary, got m={m}")
    if not fractions or any(
        not (0 <= f_in <= 0.5 and 0 <= f_out <= 0.5 and f_in + f_out > 0)
        for f_in, f_out in fractions
    ):
        raise ValueError(f"guess fractions must be pairs in [0, 0.5], not both 0: {fractions!r}")
    sizes = []
    for f_in, f_out in fractions:
        k_in, k_out = (max(1, int(f * m)) if f > 0 else 0 for f in (f_in, f_out))
        if k_in + k_out > m:  # only when m is tiny
            k_in, k_out = (m + 1) // 2 if k_in else 0, m // 2 if k_out else 0
        sizes.append((k_in, k_out))
    return tuple(sizes)


def _per_test_confidence(confidence: float, tests: int) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    return 1 - (1 - confidence) / tests


def audit_scores(
    scores: object,
    included: object,
    *,
    delta: float,
    confidence: float = CONFIDENCE,
    fractions: Sequence[tuple[float, float]] = GUESSES,
    analyses: Sequence[Analysis] = ANALYSES,
) -> ScoreAudit:
    """Every analysis of every set of guesses, with the error split over all of them; and the
    ceilings."""
    values, bits = validate(scores, included)
    _check_analyses(analyses)
    m = len(values)
    sizes = guess_sizes(m, fractions)
    per_test = _per_test_confidence(confidence, len(analyses) * len(sizes))
    attempts = []
    for k_in, k_out in sizes:
        r, v = count_correct(guesses(values, k_in, k_out), bits)
        for analysis in analyses:
            bound = BOUNDS[analysis](m, r, v, delta, per_test)
            attempts.append(Attempt(analysis, k_in, k_out, r, v, bound))
    lower = {a: max(t.lower_bound for t in attempts if t.analysis == a) for a in analyses}
    ceilings = certifiable_epsilon(
        m, delta=delta, confidence=confidence, fractions=fractions, analyses=analyses
    )
    return ScoreAudit(m, int(bits.sum()), confidence, tuple(attempts), lower, ceilings)


def certifiable_epsilon(
    m: int,
    *,
    delta: float,
    confidence: float = CONFIDENCE,
    fractions: Sequence[tuple[float, float]] = GUESSES,
    analyses: Sequence[Analysis] = ANALYSES,
) -> dict[str, float]:
    """Per analysis, the largest ε that m canaries can certify: the bound when every guess is
    right, with the same guesses and error split as :func:`audit_scores`."""
    _check_analyses(analyses)
    return dict(_ceilings(m, delta, confidence, tuple(map(tuple, fractions)), tuple(analyses)))


@lru_cache(maxsize=1024)
def _ceilings(
    m: int,
    delta: float,
    confidence: float,
    fractions: tuple[tuple[float, float], ...],
    analyses: tuple[Analysis, ...],
) -> tuple[tuple[str, float], ...]:
    sizes = guess_sizes(m, fractions)
    per_test = _per_test_confidence(confidence, len(analyses) * len(sizes))
    r = max(k_in + k_out for k_in, k_out in sizes)  # all right: more guesses certify more
    return tuple((a, BOUNDS[a](m, r, r, delta, per_test)) for a in analyses)


def canaries_needed(
    epsilon: float,
    *,
    delta: float,
    confidence: float = CONFIDENCE,
    fractions: Sequence[tuple[float, float]] = GUESSES,
    analyses: Sequence[Analysis] = ANALYSES,
    most: int = MAX_CANARIES,
) -> int | None:
    """The fewest canaries whose ceiling (the best analysis's) reaches ``epsilon``; None when
    even ``most`` canaries cannot. Searches by doubling, then bisection, so it assumes the
    ceiling grows with m up to the answer (it does for the Gaussian f-DP analysis; the (ε, δ)
    analysis's ceiling peaks below ε = 6 at δ = 1e-5 and falls after)."""
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise ValueError(f"epsilon must be a finite number > 0, got {epsilon!r}")

    def enough(m: int) -> bool:
        ceilings = certifiable_epsilon(
            m, delta=delta, confidence=confidence, fractions=fractions, analyses=analyses
        )
        return max(ceilings.values()) >= epsilon

    low, high = 1, 2
    while not enough(high):
        if high >= most:
            return None
        low, high = high, min(2 * high, most)
    while high - low > 1:  # enough(high), not enough(low) (or low = 1)
        middle = (low + high) // 2
        if enough(middle):
            high = middle
        else:
            low = middle
    return low if enough(low) else high


# --------------------------------------------------------------------------- chosen guesses
# The run-level audit tests one set of guesses, chosen before any score is read from public
# numbers (m, the claimed ε and δ, the ledger's DP events) among these candidates: the one whose
# bound is highest at the counts likely from the leak the audit is designed to see, DESIGN_LEAK
# times the claimed ε.
CANDIDATE_GUESSES: tuple[tuple[float, float], ...] = (
    (0.025, 0.025),
    (0.05, 0.05),
    (0.1, 0.1),
    (0.15, 0.15),
    (0.2, 0.2),
    (0.25, 0.25),
    (0.05, 0.0),
    (0.1, 0.0),
    (0.25, 0.0),
)
DESIGN_LEAK = 2.0

History = Sequence[tuple[float, float, int]]  # (noise multiplier σ, sampling rate q, steps)


def _history_mu(history: History, scale: float) -> float:
    """μ of the ledger's events with every σ multiplied by ``scale``, for a replace-one pair
    (sensitivity 2 clips): exactly 2·√steps/σ per event without subsampling (q = 1), the central
    limit approximation q·√(steps·(e^{4/σ²} − 1)) of Dong, Roth & Su (2022, Cor. 3.5.1) with it;
    the events compose as √(Σ μ²)."""
    total = 0.0
    for sigma, rate, steps in history:
        inverse = 2.0 / (sigma * scale)
        if rate >= 1:
            total += steps * inverse**2
        else:
            total += rate**2 * steps * math.expm1(min(inverse**2, 700.0))
    return math.sqrt(total)


@dataclass(frozen=True)
class ScoreModel:
    """A model of a canary's score (the sum of the noisy clipped sums on its coordinate, in units
    of the clip) when the ledger's events ran with all their noise multipliers scaled so that
    the run is μ-GDP (:func:`_history_mu`): b·K + N(0, s²) for its sign b = ±1, K the number of
    steps that sampled it (a sum of binomials) and s² = Σ steps·σ². Where every step samples
    every canary (q = 1) it is exact and does not depend on the ledger's σ. Pure; used only to
    choose the guesses, never to bound ε."""

    counts: np.ndarray  # P[K = k], k = 0, 1, …
    scale: float

    @classmethod
    def of(cls, history: History, mu: float) -> ScoreModel:
        from scipy import optimize, stats

        if not (math.isfinite(mu) and mu > 0):
            raise ValueError(f"mu must be a finite number > 0, got {mu!r}")
        pmf = np.ones(1)
        for sigma, rate, steps in history:
            if not (
                math.isfinite(sigma) and sigma > 0 and 0 < rate <= 1
                and isinstance(steps, int) and steps >= 0
            ):  # fmt: skip
                raise ValueError(f"not a noisy DP-SGD event: σ={sigma!r}, q={rate!r}, {steps!r}")
            pmf = np.convolve(pmf, stats.binom.pmf(np.arange(steps + 1), steps, rate))
        if len(pmf) < 2:
            raise ValueError("no step: nothing to model")
        # the noise scale at which the events are μ-GDP (μ falls as the scale grows)
        low = high = 1.0
        while _history_mu(history, high) > mu and high < 1e12:
            high *= 2
        while _history_mu(history, low) < mu and low > 1e-12:
            low /= 2
        if not _history_mu(history, high) <= mu <= _history_mu(history, low):
            raise ValueError(f"no noise scale makes these events {mu}-GDP")
        scale = optimize.brentq(
            lambda c: _history_mu(history, c) - mu, low, high, xtol=1e-12 * low, rtol=1e-10
        )
        spread = math.sqrt(sum(steps * (sigma * scale) ** 2 for sigma, _, steps in history))
        return cls(pmf, spread)

    def cdf(self, x: float, sign: float) -> float:
        from scipy.special import ndtr

        k = np.arange(len(self.counts))
        return float(np.sum(self.counts * ndtr((x - sign * k) / self.scale)))

    def _threshold(self, below: float) -> float:
        """The score below which a fraction ``below`` of all canaries (half + and half −) lie."""
        from scipy import optimize

        reach = len(self.counts) + 40 * self.scale + 1

        def gap(x: float) -> float:
            return (self.cdf(x, 1.0) + self.cdf(x, -1.0)) / 2 - below

        return float(optimize.brentq(gap, -reach, reach, xtol=1e-9 * reach))

    def likely_correct(self, m: int, k_in: int, k_out: int, z: float = 1.645) -> int:
        """A number of right guesses reached with probability about Φ(z) (95 % by default) among
        the k_in highest scores guessed "in" (+) and the k_out lowest guessed "out" (−) of m
        canaries, each + with probability 1/2: the expected number less z standard deviations
        (each side's right guesses counted as a binomial)."""
        mean = variance = 0.0
        for k, below, sign in ((k_in, 1 - k_in / m, 1.0), (k_out, k_out / m, -1.0)):
            if k:
                at = self._threshold(below)
                share = 1 - self.cdf(at, 1.0) if sign > 0 else self.cdf(at, -1.0)
                p = min(1.0, m / 2 * share / k)  # the chance that one of the k guesses is right
                mean += k * p
                variance += k * p * (1 - p)
        return max(0, min(k_in + k_out, math.floor(mean - z * math.sqrt(variance))))


def chosen_guesses(
    m: int,
    history: History,
    *,
    claimed: float,
    delta: float,
    confidence: float = CONFIDENCE,
    analyses: Sequence[Analysis] = ANALYSES,
    candidates: Sequence[tuple[float, float]] = CANDIDATE_GUESSES,
    leak: float = DESIGN_LEAK,
) -> tuple[float, float]:
    """The one set of guesses (fractions of m guessed "in" and "out") the run-level audit tests:
    among ``candidates``, the one whose Gaussian f-DP bound, with the error split over
    ``analyses``, is highest at the number of right guesses reached with 95 % probability
    (:meth:`ScoreModel.likely_correct`) when the canaries leak ``leak`` times the ``claimed`` ε
    (the ledger's events ``history`` with their noise scaled to make them μ-GDP at that ε and δ:
    :class:`ScoreModel`). A function of public numbers only, fixed before any score is read, so
    that testing it alone keeps the stated confidence."""
    _check_analyses(analyses)
    if not (math.isfinite(claimed) and claimed > 0):
        raise ValueError(f"the claimed ε must be a finite number > 0, got {claimed!r}")
    model = ScoreModel.of(history, one_run_fdp.gaussian_mu(leak * claimed, delta))
    per_test = _per_test_confidence(confidence, len(analyses))
    best, best_bound = candidates[0], -1.0
    for fractions, (k_in, k_out) in zip(candidates, guess_sizes(m, candidates), strict=True):
        right = model.likely_correct(m, k_in, k_out)
        bound = _gaussian_fdp(m, k_in + k_out, right, delta, per_test)
        if bound > best_bound:
            best, best_bound = fractions, bound
    return best


def verdict(claimed: float, lower_bound: float, ceiling: float) -> AuditVerdict:
    """FAIL when the lower bound exceeds the claim; INCONCLUSIVE when the claim is above what the
    audit can certify; PASS otherwise."""
    for name, value in (("claimed", claimed), ("lower_bound", lower_bound), ("ceiling", ceiling)):
        if not isinstance(value, int | float) or math.isnan(value) or value < 0:
            raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    if lower_bound > claimed:
        return "FAIL"
    if claimed > ceiling:
        return "INCONCLUSIVE"
    return "PASS"


def verdict_sentence(
    outcome: AuditVerdict, *, claimed: float, lower_bound: float, ceiling: float, subject: str
) -> str:
    """What ``outcome`` means, in one sentence about ``subject`` (e.g. "this run's releases")."""
    level = f"{CONFIDENCE:.0%}".replace("%", " %")
    sentences = {
        "FAIL": f"{subject} leak more than claimed: ε ≥ {lower_bound:.2f} at {level} confidence, "
        f"above the claimed ε = {claimed:.2f}",
        "INCONCLUSIVE": f"these canaries can certify at most ε ≈ {ceiling:.2f}, below the claimed "
        f"ε = {claimed:.2f} (ε lower bound {lower_bound:.2f}): a leak up to the claim could not "
        "be seen",
        "PASS": f"{subject} are consistent with its claim at {level} confidence (claimed "
        f"ε = {claimed:.2f}, ε lower bound {lower_bound:.2f}, certifiable up to "
        f"ε ≈ {ceiling:.2f})",
    }
    return sentences[outcome]


def verdict_finding(
    outcome: dict[str, Any], *, claimed: float, canaries: int, subject: str
) -> tuple[AuditVerdict, str]:
    """The verdict on ``claimed`` of one audit (a :meth:`ScoreAudit.to_dict`) and the finding
    that states it with both analyses' bounds and ceilings."""
    bound, ceiling = outcome["epsilon_lower_bound"], outcome["max_certifiable_epsilon"]
    lower_bounds, ceilings = outcome["lower_bounds"], outcome["ceilings"]
    word = verdict(claimed, bound, ceiling)
    sentence = verdict_sentence(
        word, claimed=claimed, lower_bound=bound, ceiling=ceiling, subject=subject
    )
    bounds = "; ".join(
        f"{LABELS[a]}: ε_LB = {b:.3f}, ceiling ≈ {ceilings[a]:.2f}" for a, b in lower_bounds.items()
    )
    return word, f"{sentence}; {canaries} canaries, {bounds}"


def _check_analyses(analyses: Sequence[Analysis]) -> None:
    if not analyses or any(a not in BOUNDS for a in analyses) or len(set(analyses)) < len(analyses):
        raise ValueError(f"analyses must be distinct names from {ANALYSES}, got {analyses!r}")
