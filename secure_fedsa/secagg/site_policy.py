"""What a site itself requires of every round, whatever the server's run config says (P8).

A Flower site takes the round's settings (masking, threshold, number of clients) from the run
config the server delivers. A server operator could turn masking off or set the threshold to 1,
and the site would encrypt an update that the server plus one client can read. So a site pins
its own policy (its node config, or defaults that pin masking on) and refuses, before training
anything (no privacy budget spent), a round that is weaker: :func:`round_policy_problems` is the
pure check, :func:`check_round_policy` raises :class:`PolicyRefused` with the reasons.

Node config keys (``flower-supernode --node-config``):

- ``require-masking`` (default true): refuse rounds without pairwise masking (and so without
  encryption, which masking needs).
- ``min-masking-threshold`` (default: none): refuse a masking threshold below this number, on top
  of the floor against a lying server, ``floor(2n/3) + 1`` (:func:`secagg.threshold_floor`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from secure_fedsa.errors import ConfigError, SecureFedsaError
from secure_fedsa.secagg.threshold import fixed_threshold, threshold_floor

REQUIRE_MASKING = "require-masking"
MIN_THRESHOLD = "min-masking-threshold"


class PolicyRefused(SecureFedsaError):
    """The server asked for a round weaker than this site's pinned policy; nothing was spent."""


@dataclass(frozen=True)
class PinnedPolicy:
    """A site's own requirements, from its node config (never from the server)."""

    require_masking: bool = True
    min_threshold: int | None = None

    def __post_init__(self) -> None:
        if type(self.require_masking) is not bool:
            raise ConfigError(f"{REQUIRE_MASKING} must be true or false")
        if self.min_threshold is not None and (
            type(self.min_threshold) is not int or self.min_threshold < 1
        ):
            raise ConfigError(f"{MIN_THRESHOLD} must be a whole number >= 1")


@dataclass(frozen=True)
class RoundPolicy:
    """What the server's run config asks of one round."""

    encryption: bool
    masking: bool
    threshold: int | None  # None: every party derives the floor for ``clients``
    clients: int


def pinned_policy(node_config: Mapping[str, object]) -> PinnedPolicy:
    """A site's pinned policy from its node config (strings as Flower passes them, or typed)."""
    require = node_config.get(REQUIRE_MASKING, True)
    if isinstance(require, str):
        if require.lower() not in ("true", "false"):
            raise ConfigError(f"{REQUIRE_MASKING} must be true or false, got {require!r}")
        require = require.lower() == "true"
    minimum = node_config.get(MIN_THRESHOLD)
    if isinstance(minimum, str):
        try:
            minimum = int(minimum)
        except ValueError:
            raise ConfigError(f"{MIN_THRESHOLD} must be a whole number, got {minimum!r}") from None
    return PinnedPolicy(require_masking=bool(require), min_threshold=minimum)  # type: ignore[arg-type]


def round_policy_problems(round_policy: RoundPolicy, pinned: PinnedPolicy) -> list[str]:
    """Why this site must refuse the round (pure; empty: it may take part)."""
    if not pinned.require_masking:
        return []
    if not round_policy.encryption or not round_policy.masking:
        off = "encryption" if not round_policy.encryption else "masking"
        return [
            f"the server's round has {off} off, and this site requires pairwise masking "
            f"({REQUIRE_MASKING}): without it the server and one client can read this site's "
            f"update"
        ]
    if type(round_policy.clients) is not int or round_policy.clients < 1:
        return [f"the server's round names {round_policy.clients!r} clients"]
    threshold = fixed_threshold(round_policy.threshold, round_policy.clients)
    lying_server_floor = threshold_floor(round_policy.clients)
    floor = max(lying_server_floor, pinned.min_threshold or 1)
    if threshold < floor:
        why = (
            f"this site's {MIN_THRESHOLD} is {pinned.min_threshold}"
            if floor > lying_server_floor
            else f"floor(2n/3) + 1 = {floor} for {round_policy.clients} clients (a lying server)"
        )
        return [
            f"the server's masking threshold {threshold} is below {floor}: {why}; ask the "
            "operator to raise masking-threshold"
        ]
    return []


def check_round_policy(round_policy: RoundPolicy, pinned: PinnedPolicy) -> None:
    """Raise PolicyRefused unless the round meets the pinned policy. Call before training."""
    problems = round_policy_problems(round_policy, pinned)
    if problems:
        raise PolicyRefused(
            "refusing this round before training (no privacy budget spent): " + "; ".join(problems)
        )
