"""Could honest clients have produced this decrypted aggregate? (promise P7)

A client holding the federation's CKKS key can encrypt anything within the codec's range, so a
validly signed, well-formed update can still carry values no honest training produces (1e5 per
value, a negated update). Every client checks the decrypted aggregate before loading it; one that
fails is discarded (the client keeps the shared tensors it started the round with) and the
federation goes on. The checks, all pure functions of public quantities:

1. **Contributors and the divisor.** Each client's weight w_k is fixed at set-up in the signed
   roster (client sizes are public) and is not sent: a client encrypts w_k · A_k and nothing
   else. The server's signed aggregate names the clients whose updates it added
   (:func:`contributor_problem`): a client that signed the round's survivor set (masking) requires
   exactly that set, which t clients signed; any client requires every name to be a roster member,
   none twice, as many as the aggregate counts, and its own name among them if it uploaded this
   round. The divisor is W = Σ w_k over the named contributors, from the roster
   (:func:`roster_total_weight`). Keys made before roster weights existed cannot aggregate.
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
   honest step past this bound. A client that carries its AdamW state from round to round
   (``--optimizer-state kept``) no longer starts each round fresh, and its r_t tends to 7.27; so
   every client clamps each shared coordinate's change in a round to the fresh-optimizer bound
   after training (:func:`clamp_round_change`), and the bound B holds by construction. Honest
   training rarely reaches it (docs/results.md, "A DP recipe for the default job", gives the
   counts).

   **The bound ratchets.** It is measured from the shared tensors the client holds, not from the
   initial ones. Every site reachable at the end of a round judges that round's aggregate
   (trained or not, drawn or not), and the judgement is a deterministic function of the
   aggregate and of what the site holds, so sites that judged every round so far hold the same
   shared tensors H (the last aggregate they all loaded, or the initial values) and start the next
   round from H. A site that missed an aggregate some site applied (it was unreachable, or
   refused it for a reason of its own; the server's requests name the last round applied) is
   **behind**: it does not train in the next round but only judges its aggregate, so every
   contributor to the aggregate of round r started from H and moved at most B, and the average of
   their updates is within B of H. A site that judged round j last checks round r's aggregate
   against what it holds with (r − j) · B (:func:`rounds_since`): 1 · B for a site in step. So a
   poison refused in round 1 is refused in round 3 too, unless aggregates the site loaded in
   between moved it toward the poison (each by at most B). A server that sends different sites
   different aggregates splits them: each still moves at most B per round, and afterwards the
   split sites refuse each other's updates, a denial of service, which a server can always cause.

**Why the weight need not travel encrypted.** Until wire version 3 each client also sent its
weight in an extra encrypted slot, and clients divided by the decrypted sum of weights. That slot
never bounded what a client puts in its value slots: a client chooses its whole vector X, and X
changes the sum by X and the average by X / W. What the slot protected was the denominator: a
client that claimed more weight than its own could grow W and outweigh everyone (the range check
of keys without roster weights let a client claim up to 4096 and put the average within 0.002 of
its poison), which the exact check against the roster then refused. With W computed from the
public roster the denominator is not anyone's to choose, so nothing the slot guarded is left
unguarded; what one client controls is X, as it always was. Against the server the slot never
protected anything: CKKS ciphertexts are malleable without any key (a plaintext can be added, a
ciphertext multiplied by a constant), so a server could always set every slot, the weight's
included, to anything; naming other contributors only rescales the average, which it could do
anyway, and with masking the names must be the survivor set t clients signed.

**The limit, stated plainly.** A client's influence on an aggregate it contributes to is bounded
by check 3 alone. A key-holding client that knows the shared tensors can send
X = W · target − (W − w_k) · H (about what the honest clients' sum will be) and move the average
close to any target within B of H, every round; nothing here stops that, with or without the
weight slot: over R rounds it can walk the federation up to R · B, one step per round, in a
direction it chooses. A site that missed k rounds checks its catch-up against (k + 1) · B, so a
server that keeps a site out of k rounds (or names a round k ahead) can move that one site by up
to (k + 1) · B; it cannot move the sites in step. DP bounds what one record can do, nothing more;
it does not bound what one client can do.

**Reasons and rule P6.** Every problem is an :class:`AggregateProblem`: its text quotes decrypted
quantities and belongs in the client's own files only; its :attr:`~AggregateProblem.check` names
the failed check and nothing decrypted, and is all a file the server side reads may hold
(:func:`shareable_reasons`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# torch.optim.AdamW defaults, as the engine uses them (weight decay 0)
ADAM_BETA1 = 0.9
ADAM_BETA2 = 0.999
# CKKS decryption error of an average, far above the measured ~1e-9 and far below any step.
VALUE_SLACK = 1e-6

# the checks, by name: what shared (server-side) files may say about a rejected aggregate
CHECK_WEIGHT = "total weight"
CHECK_FINITE = "finite values"
CHECK_DRIFT = "honest drift bound"
CHECK_CONTRIBUTORS = "contributors"
# the contributors against what only this site knows: the survivor set it signed, its own upload
CHECK_OWN_VIEW = "contributors this site saw"
# checks that every site in step reaches the same verdict on, for the same aggregate: a site that
# refuses an aggregate on these alone is still in step (the ratchet; :func:`still_in_step`)
COMMON_CHECKS = frozenset({CHECK_WEIGHT, CHECK_FINITE, CHECK_DRIFT, CHECK_CONTRIBUTORS})


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


def contributor_problem(
    named: Sequence[str],
    count: int,
    weights: Mapping[str, float],
    *,
    survivors: Iterable[str] | None = None,
    own: str | None = None,
) -> AggregateProblem | None:
    """Why the contributors an aggregate names cannot be its divisor (pure; None: they can).

    ``named`` and ``count`` are the ids and the number the server's signed header gives,
    ``weights`` the roster's fixed weights of its current members. Every name must be a member,
    none twice, as many as ``count`` (at least one); with ``survivors`` (the survivor set this
    client signed in the consistency round, which t clients signed) the names must be exactly
    that set; with ``own`` (this client's id, when it uploaded in this round) its name must be
    among them: a server that drops an honest update and names the others does not get the
    uploader to load the result.
    """
    names = list(named)
    if count < 1 or not names:
        return AggregateProblem(CHECK_CONTRIBUTORS, f"the aggregate names {count} contributors")
    if len(set(names)) != len(names):
        return AggregateProblem(CHECK_CONTRIBUTORS, "the aggregate names a contributor twice")
    if len(names) != count:
        return AggregateProblem(
            CHECK_CONTRIBUTORS,
            f"the aggregate counts {count} contributors but names {len(names)}",
        )
    unknown = sorted(c for c in names if c not in weights)
    if unknown:
        return AggregateProblem(
            CHECK_CONTRIBUTORS,
            f"the aggregate names contributors outside the roster: {', '.join(unknown)}",
        )
    if survivors is not None and set(survivors) != set(names):
        return AggregateProblem(
            CHECK_OWN_VIEW,
            f"the aggregate names {len(names)} contributors that are not the survivor set this "
            "client signed",
        )
    if own is not None and own not in names:
        return AggregateProblem(
            CHECK_OWN_VIEW,
            f"{own} uploaded an update this round, but the aggregate does not name it",
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


def still_in_step(problems: Iterable[str]) -> bool:
    """Whether a site that refused an aggregate for ``problems`` still holds what every site in
    step holds: yes when each problem is one of :data:`COMMON_CHECKS`, which every site in step
    judges alike (they all keep their round start); no when any is about this site's own view
    (its upload not named, another survivor set than it signed) or came before decryption (a
    message only this site may have received). A site not in step sits the next round out."""
    return all(isinstance(p, AggregateProblem) and p.check in COMMON_CHECKS for p in problems)


def rounds_since(round_number: int, judged_round: int | None) -> int:
    """How many rounds of honest training separate the shared tensors a client holds, as of the
    last round whose aggregate it judged (``judged_round``; 0: none yet, it holds the initial
    values; None: unknown, a state saved before the ratchet), from the aggregate of
    ``round_number``. ValueError for an aggregate of a round the client has already passed."""
    if judged_round is None:
        return round_number
    if round_number <= judged_round:
        raise ValueError(f"round {round_number}'s aggregate after round {judged_round}'s")
    return round_number - judged_round


def aggregate_problems(
    total: np.ndarray,
    contributor_ids: Sequence[str],
    contributors: int,
    *,
    reference: np.ndarray,
    rounds: int,
    bounds: Bounds,
    roster_weights: Mapping[str, float] | None,
    survivors: Iterable[str] | None = None,
    own: str | None = None,
) -> list[str]:
    """Why this decrypted aggregate cannot come from honest clients (empty: it can); each
    problem is an :class:`AggregateProblem`.

    ``total`` is the decrypted weighted sum; ``contributor_ids`` and ``contributors`` are the
    ids and the number the server's signed header names; ``roster_weights`` the signed roster's
    fixed weights of its current members (None: a roster without weights, which cannot
    aggregate); ``survivors`` and ``own`` as in :func:`contributor_problem`. ``reference`` is the
    shared tensors this client holds (what it started the round with), ``rounds`` how many rounds
    of honest training separate them from this aggregate (:func:`rounds_since`: 1 for a client in
    step). The average is ``total`` divided by
    ``roster_total_weight(contributor_ids, roster_weights)``.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if roster_weights is None:
        return [
            AggregateProblem(
                CHECK_WEIGHT,
                "the roster fixes no client weights, so the aggregate has no divisor (keys made "
                "before roster weights): make new keys with `secure-fedsa keys init "
                "--client-sizes`",
            )
        ]
    problem = contributor_problem(
        contributor_ids, contributors, roster_weights, survivors=survivors, own=own
    )
    if problem is not None:
        return [problem]
    average = total / roster_total_weight(contributor_ids, roster_weights)
    if not np.all(np.isfinite(average)):
        return [AggregateProblem(CHECK_FINITE, "the average has non-finite values")]
    allowed = rounds * bounds.round_change + VALUE_SLACK
    drift = float(np.max(np.abs(average - reference))) if average.size else 0.0
    if drift > allowed:
        return [
            AggregateProblem(
                CHECK_DRIFT,
                f"a shared value moved {drift:.4g} from the value this client holds, above the "
                f"{allowed:.4g} that {rounds} round(s) of honest training can reach",
            )
        ]
    return []
