"""The Shamir threshold of secure aggregation, and the floor a server that lies requires (P8).

Pure integer arithmetic, importable without the crypto stack (configuration validation and the CLI's
help use it). The protocol is :mod:`secure_fedsa.secagg.protocol`; docs/crypto.md, "Against a server
that lies", gives the argument.
"""

from __future__ import annotations

from secure_fedsa.errors import ConfigError


def threshold_floor(clients: int) -> int:
    """The smallest threshold secure against a server that lies: ``floor(2n/3) + 1``.

    A server with ``c`` corrupt clients that shows "V present" to some honest clients and
    "V dropped" to others needs ``t`` shares of each of V's two secrets. Each honest client
    reveals one kind of share of V, and the corrupt clients both, so it needs
    ``2t <= n + c``; the consistency round (signed survivor sets) forces one view on every
    honest revealer as well. With ``t > 2n/3`` a coalition of up to ``2t - n - 1`` clients
    (fewer than n/3 at the floor) learns nothing, as in Bonawitz et al., CCS 2017, Section 6
    (active adversary). docs/crypto.md gives the argument.
    """
    if clients < 1:
        raise ConfigError(f"a round needs at least one client, got {clients}")
    return (2 * clients) // 3 + 1


def tolerated_coalition(threshold: int, clients: int) -> int:
    """The largest number of corrupt clients that, with a lying server, cannot unmask an honest
    one: ``2t - n - 1`` (from ``2t > n + c``), and never ``t`` or more. Negative: not even the
    server alone is stopped (it can split the honest clients between two survivor sets)."""
    return min(threshold - 1, 2 * threshold - clients - 1)


def threshold_for_coalition(clients: int, coalition: int) -> int:
    """The smallest threshold at which a lying server with ``coalition`` corrupt clients
    unmasks nobody among ``clients``: at least the floor, and ``2t > n + c``. At the floor a
    coalition of fewer than n/3 is covered; a larger one (2 of 4, say) needs more, up to n."""
    if not 0 <= coalition < clients:
        raise ConfigError(f"a coalition of {coalition} among {clients} clients is not defined")
    return min(clients, max(threshold_floor(clients), (clients + coalition) // 2 + 1))


def default_threshold(clients: int) -> int:
    """The floor against a lying server (:func:`threshold_floor`)."""
    return threshold_floor(clients)


def fixed_threshold(configured: int | None, clients: int) -> int:
    """The threshold a deployment fixes in advance, which every site derives from the run's
    configuration itself (never from the server): ``configured``, or the floor for ``clients``."""
    return configured if configured is not None else default_threshold(clients)


def threshold_problem(threshold: int, clients: int) -> str | None:
    """Why ``threshold`` is unsafe or unusable among ``clients`` holders (pure; None: fine)."""
    if type(threshold) is not int or not 1 <= threshold <= clients:
        return f"the masking threshold must be between 1 and {clients}, got {threshold!r}"
    floor = threshold_floor(clients)
    if threshold < floor:
        return (
            f"a masking threshold of {threshold} among {clients} clients lets a lying server "
            f"with {max(0, 2 * threshold - clients)} client(s) unmask an honest one; use at "
            f"least {floor} (floor(2n/3) + 1)"
        )
    return None
